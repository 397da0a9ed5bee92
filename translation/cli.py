"""``pskd-mt``: prepare data, train with fairseq (PS-KD criterion loaded as a plugin), evaluate BLEU / chrF.

Examples::

    pskd-mt prepare --recipe mini_ding_de_en --dest work/ding
    pskd-mt train work/ding --recipe mini_ding_de_en --save-dir work/ding/pskd --method pskd --teacher topk
    pskd-mt eval work/ding --checkpoint work/ding/pskd/checkpoint_last.pt --out work/ding/pskd/test.json

    # any fairseq-train option after "--" is passed through (and wins over the recipe's):
    pskd-mt train work/ding --save-dir run --method pskd -- --max-epoch 3 --lr 1e-3

Bad input (alpha outside [0, 1], missing or mismatched data, a store or checkpoint from another run) ends with one
line on stderr and exit status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .errors import PSKDError

__all__ = ["main", "build_train_argv"]

# fairseq checkpoints hold plain Python objects that torch >= 2.6's weights_only loading refuses; see
# pskd_fairseq_plugin/__init__.py. Only load checkpoints you trust.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pskd-mt", description="PS-KD for fairseq translation.")
    p.epilog = "train / eval: options after -- go to fairseq-train / fairseq-generate unchanged"
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("prepare", help="sentencepiece + fairseq-preprocess a corpus from its local files")
    pr.add_argument("--recipe", default="mini_ding_de_en", help="recipe name or YAML path")
    pr.add_argument("--dest", required=True, help="output data folder (must not exist unless --overwrite)")
    pr.add_argument("--raw-dir", help="corpus folder (default: the recipe's)")
    pr.add_argument("--src", help="source language (default: the recipe's)")
    pr.add_argument("--tgt", help="target language (default: the recipe's)")
    pr.add_argument("--limit-train", type=int, help="keep this many random training pairs (default: the recipe's "
                    "data.limit_train, else all)")
    pr.add_argument("--vocab-size", type=int, help="sentencepiece vocabulary size (default: the recipe's)")
    pr.add_argument("--workers", type=int, default=1)
    pr.add_argument("--seed", type=int, default=0, help="seed of the --limit-train subset")
    pr.add_argument("--overwrite", action="store_true", help="replace --dest once the new folder is complete")

    tr = sub.add_parser("train", help="fairseq-train with the recipe's options and the PS-KD plugin")
    tr.add_argument("data", help="folder made by pskd-mt prepare (or any fairseq-preprocess output)")
    tr.add_argument("--recipe", default="mini_ding_de_en", help="recipe name or YAML path")
    tr.add_argument("--save-dir", required=True)
    tr.add_argument("--method", choices=["ls", "pskd"], default="pskd",
                    help="ls: stock label_smoothed_cross_entropy; pskd: ps_kd_label_smoothed_cross_entropy")
    tr.add_argument("--teacher", choices=["snapshot", "topk"], help="PS-KD teacher (default: the recipe's)")
    tr.add_argument("--alpha-T", dest="alpha_T", type=float, help="PS-KD final alpha (default: the recipe's)")
    tr.add_argument("--topk", type=int, help="predictions kept per token in topk mode (default: the recipe's)")
    tr.add_argument("--store-path", help="topk store folder (default: <save-dir>/pskd_topk_store)")
    tr.add_argument("--seed", type=int, default=1)
    tr.add_argument("--max-epoch", type=int, help="override the recipe's number of epochs")
    tr.add_argument("--dry-run", action="store_true", help="print the fairseq-train command and stop")

    ev = sub.add_parser("eval", help="fairseq-generate + sacreBLEU BLEU / chrF, written to a JSON file")
    ev.add_argument("data", help="folder made by pskd-mt prepare")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--subset", default="test", choices=["valid", "test"])
    ev.add_argument("--recipe", default="mini_ding_de_en", help="recipe whose generate options to use")
    ev.add_argument("--out", help="metrics JSON (default: <checkpoint dir>/eval_<subset>.json)")
    ev.add_argument("--beam", type=int, help="override the recipe's beam size")
    return p


def _data_languages(data: Path, recipe: dict) -> tuple[str, str]:
    meta = data / "pskd_data.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return m["src"], m["tgt"]
    src, tgt = recipe["data"].get("src"), recipe["data"].get("tgt")
    if not src or not tgt:
        raise PSKDError(f"{data} has no pskd_data.json and the recipe names no languages")
    return src, tgt


def build_train_argv(args: argparse.Namespace) -> list[str]:
    """The fairseq-train argument list for ``pskd-mt train`` (validated: raises PSKDError on bad input)."""
    import torch

    from pskd.core.schedules import check_alpha

    from . import plugin_dir
    from .data import check_binarized
    from .recipes import load_recipe, to_cli_args

    recipe = load_recipe(args.recipe)
    pskd = dict(recipe.get("pskd") or {})
    alpha = args.alpha_T if args.alpha_T is not None else pskd.get("alpha-T", 0.8)
    try:
        alpha = check_alpha(alpha, "--alpha-T")
    except ValueError as err:
        raise PSKDError(str(err)) from None
    data = Path(args.data)
    src, tgt = _data_languages(data, recipe) if data.is_dir() else (None, None)
    if src is None:
        raise PSKDError(f"data folder {data} not found; make it with `pskd-mt prepare`")
    check_binarized(data, src, tgt, splits=("train", "valid"))
    train_opts = dict(recipe["train"])
    if args.max_epoch is not None:
        train_opts["max-epoch"] = args.max_epoch
    argv = [str(data), "--user-dir", plugin_dir(), "--task", "translation", "--source-lang", src,
            "--target-lang", tgt, "--save-dir", args.save_dir, "--seed", str(args.seed), *to_cli_args(train_opts)]
    if args.method == "ls":
        argv += ["--criterion", "label_smoothed_cross_entropy"]
    else:
        teacher = args.teacher or pskd.get("pskd-teacher", "snapshot")
        topk = args.topk if args.topk is not None else pskd.get("pskd-topk", 8)
        argv += ["--criterion", "ps_kd_label_smoothed_cross_entropy", "--alpha-T", str(alpha),
                 "--pskd-teacher", teacher, "--pskd-topk", str(topk)]
        if args.store_path:
            argv += ["--pskd-store-path", args.store_path]
    if not torch.cuda.is_available():
        argv.append("--cpu")
    return argv + list(args.passthrough)


def _train(args: argparse.Namespace) -> int:
    argv = build_train_argv(args)
    if args.dry_run:
        print(shlex.join(["fairseq-train", *argv]))
        return 0
    from fairseq_cli import train as fairseq_train

    saved = sys.argv
    sys.argv = ["fairseq-train", *argv]
    try:
        fairseq_train.cli_main()
    finally:
        sys.argv = saved
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .recipes import load_recipe, to_cli_args

    recipe = load_recipe(args.recipe)
    gen = dict(recipe.get("generate") or {"beam": 5})
    if args.beam is not None:
        gen["beam"] = args.beam
    out = args.out or str(Path(args.checkpoint).parent / f"eval_{args.subset}.json")
    result = evaluate(args.data, args.checkpoint, out, subset=args.subset,
                      generate_args=to_cli_args(gen) + list(args.passthrough))
    print(json.dumps({**result["metrics"], "out": out}))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare
    from .recipes import load_recipe

    meta = prepare(load_recipe(args.recipe), args.dest, raw_dir=args.raw_dir, src=args.src, tgt=args.tgt,
                   limit_train=args.limit_train, vocab_size=args.vocab_size, overwrite=args.overwrite,
                   workers=args.workers, seed=args.seed)
    print(json.dumps({"dest": args.dest, "counts": meta["counts"], "src": meta["src"], "tgt": meta["tgt"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" goes to fairseq as is (argparse's REMAINDER would also swallow our options).
    cut = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:cut])
    args.passthrough = argv[cut + 1:]
    if args.passthrough and args.command == "prepare":
        print("pskd-mt prepare: error: prepare takes no pass-through options after --", file=sys.stderr)
        return 2
    try:
        return {"prepare": _prepare, "train": _train, "eval": _eval}[args.command](args)
    except PSKDError as err:
        print(f"pskd-mt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
