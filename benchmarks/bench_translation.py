#!/usr/bin/env python3
"""Mini translation benchmark: label smoothing vs PS-KD + label smoothing (snapshot and top-k teachers).

Runs everything through the ``pskd-mt`` CLI (prepare once, then train + eval per method and seed) on the Ding
de->en mini recipe and prints a markdown table of test BLEU / chrF, mean +- sample std over seeds::

    python benchmarks/bench_translation.py --work runs/bench_mt --seeds 1 2 3 [--threads 1] [-- fairseq-train options]

Results (one JSON per run plus ``summary.json``) go under ``--work``; runs already finished there are reused, so
an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = {  # name -> pskd-mt train options
    "ls": ["--method", "ls"],
    "pskd-snapshot": ["--method", "pskd", "--teacher", "snapshot"],
    "pskd-topk": ["--method", "pskd", "--teacher", "topk"],
}
LABELS = {"ls": "label smoothing 0.1", "pskd-snapshot": "PS-KD + LS, snapshot teacher",
          "pskd-topk": "PS-KD + LS, top-k teacher"}


def pskd_mt(*args: str, log: Path | None = None, threads: int | None = None) -> None:
    cmd = [sys.executable, "-m", "pskd.translation.cli", *map(str, args)]
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        tail = Path(log).read_text()[-2000:] if log else ""
        sys.exit(f"bench_translation: `pskd-mt {args[0]}` failed (exit {proc.returncode}); log {log}\n{tail}")


def mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench_mt", help="folder for data, runs and results")
    p.add_argument("--recipe", default="mini_ding_de_en")
    p.add_argument("--raw-dir", default=None, help="corpus folder (default: the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--alpha-T", dest="alpha_T", type=float, help="PS-KD alpha_T (default: the recipe's)")
    p.add_argument("--max-epoch", type=int, help="override the recipe's epochs")
    p.add_argument("--limit-train", type=int, help="train on a random subset of this many pairs")
    p.add_argument("--beam", type=int, help="override the recipe's beam")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (1 is much faster on a busy machine)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.fairseq_args = argv[cut + 1:]  # after --: extra fairseq-train options for every run

    work = Path(args.work).resolve()
    data = work / "data"
    t0 = time.time()
    if not (data / "pskd_data.json").is_file():
        prep = ["prepare", "--recipe", args.recipe, "--dest", data]
        prep += ["--raw-dir", args.raw_dir] if args.raw_dir else []
        prep += ["--limit-train", args.limit_train] if args.limit_train else []
        work.mkdir(parents=True, exist_ok=True)
        pskd_mt(*prep, log=work / "prepare.log", threads=args.threads)
    prep_time = time.time() - t0
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            run = work / f"{method}_seed{seed}"
            out = run / "test.json"
            if not out.is_file():
                train = ["train", data, "--recipe", args.recipe, "--save-dir", run, "--seed", seed,
                         *METHODS[method]]
                train += ["--alpha-T", args.alpha_T] if args.alpha_T is not None and method != "ls" else []
                train += ["--max-epoch", args.max_epoch] if args.max_epoch else []
                extra = args.fairseq_args
                start = time.time()
                run.mkdir(parents=True, exist_ok=True)
                pskd_mt(*train, "--", *extra, log=run / "train.log", threads=args.threads)
                train_s = time.time() - start
                start = time.time()
                ev = ["eval", data, "--recipe", args.recipe, "--checkpoint", run / "checkpoint_last.pt", "--out", out]
                ev += ["--beam", args.beam] if args.beam else []
                pskd_mt(*ev, log=run / "eval.log", threads=args.threads)
                result = json.loads(out.read_text())
                result.update(train_seconds=round(train_s, 1), eval_seconds=round(time.time() - start, 1))
                out.write_text(json.dumps(result, indent=1))
            result = json.loads(out.read_text())
            results[method].append(result)
            print(f"[bench] {method} seed {seed}: BLEU {result['metrics']['bleu']:.2f} chrF "
                  f"{result['metrics']['chrf']:.2f} NLL {result['metrics'].get('nll', float('nan')):.3f} (train {result.get('train_seconds', '?')} s, eval "
                  f"{result.get('eval_seconds', '?')} s)", file=sys.stderr)

    lines = ["| method | test BLEU | test chrF | test NLL (nats/token) | BLEU per seed | train s / run |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for method, rs in results.items():
        bleu = [r["metrics"]["bleu"] for r in rs]
        chrf = [r["metrics"]["chrf"] for r in rs]
        nll = [r["metrics"].get("nll", float("nan")) for r in rs]
        secs = [r.get("train_seconds", float("nan")) for r in rs]
        summary[method] = {"bleu": bleu, "chrf": chrf, "nll": nll, "train_seconds": secs}
        lines.append(f"| {LABELS[method]} | {mean_std(bleu)} | {mean_std(chrf)} | {mean_std(nll, 3)} | "
                     f"{', '.join(f'{b:.2f}' for b in bleu)} | {statistics.mean(secs):.0f} |")
    table = "\n".join(lines)
    total = time.time() - t0
    (work / "summary.json").write_text(json.dumps({"seeds": args.seeds, "results": summary, "table": table,
                                                   "prepare_seconds": round(prep_time, 1),
                                                   "total_seconds": round(total, 1)}, indent=1))
    print(table)
    print(f"\n{len(args.seeds)} seeds x {len(args.methods)} methods, {total / 60:.1f} min in total "
          f"(mean +- sample std over seeds; sacreBLEU on detokenised test output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
