"""``pskd-cls``: train and evaluate image classifiers with PS-KD and its baselines.

    pskd-cls train --config configs/cls/fmnist_small_cnn.yaml method.name=pskd train.out_dir=runs/fm_pskd
    pskd-cls train --config ... --resume auto           # continue the run in train.out_dir
    pskd-cls eval --checkpoint runs/fm_pskd/best.pt     # metrics.json + reliability.png

Errors in the input (unknown keys, bad values, missing data, foreign checkpoints) and a non-finite loss are reported
in one line (``pskd-cls: error: ...``) with a non-zero exit status; set PSKD_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import config_help, load_config
from .errors import CheckpointError, ConfigError, PskdError

__all__ = ["main", "build_parser"]

_TRAIN_EPILOG = """\
overrides: any number of section.key=value (value parsed as YAML), applied after the --config files, e.g.
  method.name=pskd method.alpha_T=0.8 optim.lr=0.05 'optim.milestones=[150,225]' train.out_dir=runs/x

configuration keys (section.key (type, default): meaning):
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pskd-cls", description="Image classification with progressive "
                                     "self-knowledge distillation (PS-KD) and its baselines.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval}")
    tr = sub.add_parser("train", help="train a model (also under torchrun for DDP)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train a classifier; writes config.yaml, last.pt, best.pt, log.csv, tb/, and at "
                                    "the end metrics.json + reliability.png (test split, best-on-validation model) "
                                    "into train.out_dir. DDP: torchrun --nproc_per_node N -m pskd.vision_cls.cli "
                                    "train ...",
                        epilog=_TRAIN_EPILOG + config_help())
    tr.add_argument("--config", "-c", action="append", default=[], metavar="YAML",
                    help="config file (repeatable; later files win; a file may list 'base:' files it extends)")
    tr.add_argument("--resume", metavar="auto|PATH", default=None,
                    help="'auto': continue from train.out_dir/last.pt if it exists (else start); PATH: from that "
                         "checkpoint. Restores model, optimizer, scheduler, RNG and the PS-KD store; on CPU the "
                         "result is bit-identical to an uninterrupted run")
    tr.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    ev = sub.add_parser("eval", help="evaluate a checkpoint: metrics.json + reliability.png",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Evaluate a pskd-cls checkpoint on a split: top-1/top-5 error, NLL, ECE, AURC, "
                                    "E-AURC, reliability diagram. The run's config comes from the checkpoint; "
                                    "overrides may change data.* and train.* runtime keys (e.g. data.root, "
                                    "train.device).")
    ev.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt or last.pt of a run")
    ev.add_argument("--out", metavar="DIR", default=None,
                    help="output folder (default: <checkpoint folder>/eval-<split>)")
    ev.add_argument("--split", choices=("test", "val"), default="test", help="which split (default: test)")
    ev.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def _train(args) -> int:
    from .evaluate import command_line
    from .train import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, resume=args.resume, command=command_line())
    return 0


def _eval(args) -> int:
    from .checkpoint import check_compatible, load_checkpoint
    from .data import build_data
    from .evaluate import command_line, evaluate, results_dict, write_results
    from .loader import EvalLoader
    from .models import build_model
    from .train import setup_runtime

    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    allowed = ("data.", "train.device", "train.eval_batch_size", "train.threads", "train.amp")
    for item in args.overrides:
        if not item.split("=", 1)[0].startswith(allowed):
            raise ConfigError(f"eval override {item!r}: only data.* and train.device/eval_batch_size/threads/amp "
                              "may change when evaluating a checkpoint")
    cfg = load_config(None, args.overrides, base=ckpt["config"])
    _, _, device = setup_runtime(cfg)
    data = build_data(cfg.data)
    expected = {"model": cfg.model.name, "num_classes": data.num_classes, "in_channels": data.in_channels}
    check_compatible(ckpt["meta"], expected, ckpt_path)
    model = build_model(cfg.model.name, data.num_classes, data.in_channels).to(device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not fit model {cfg.model.name}: "
                              f"{str(e).splitlines()[0]}") from None
    split = data.test if args.split == "test" else data.val
    if split is None:
        raise ConfigError("this run has no validation split (data.val_split=0); use --split test")
    loader = EvalLoader(data, split, cfg.train.eval_batch_size, device, channels_last=cfg.train.channels_last)
    metrics, reliability = evaluate(model, loader, cfg.train.amp)
    out = Path(args.out) if args.out else ckpt_path.parent / f"eval-{args.split}"
    results = results_dict(cfg, metrics, reliability, ckpt.get("history", []), command_line())
    write_results(out, results)
    print(" ".join(f"{k} {results['metrics'][k]:.4g}" for k in results["metrics"]) + f" (n={metrics['n']})")
    print(f"wrote {out / 'metrics.json'} and {out / 'reliability.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pskd-cls``; returns the exit status (0 ok, 1 training failure, 2 bad input)."""
    parser = build_parser()
    # Overrides may come before or after options (`train --resume auto a.b=1`); argparse's intermixed parsing does
    # not work with sub-commands, so leftover key=value tokens are collected here.
    args, extra = parser.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(args.overrides) + extra
    try:
        return _train(args) if args.command == "train" else _eval(args)
    except PskdError as e:
        return _fail(e, e.exit_code)
    except (ValueError, FileNotFoundError, KeyError, IndexError) as e:
        # The core library reports bad input (labels outside [0, C), alpha out of range, ...) as ValueError etc.
        return _fail(e, 2)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _fail(e: BaseException, code: int) -> int:
    if os.environ.get("PSKD_DEBUG"):
        raise e
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
        msg = f"missing key {msg}"
    print(f"pskd-cls: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
