#!/usr/bin/env python3
"""Mini classification benchmark: Fashion-MNIST, small CNN, ce / ls / cs_kd / tf_kd_reg / pskd / pskd+CutMix x 3 seeds.

    python benchmarks/bench_cls.py [--seeds 3] [--jobs 2] [--out runs/bench_cls] [section.key=value ...]

Every job is one ``pskd-cls train --config configs/cls/fmnist_small_cnn.yaml method.name=M train.seed=S ...`` (the
same config the ``mini`` suite of ``pskd-bench`` uses), two at a time with one thread each; each writes its
``metrics.json`` (test metrics of the best-on-validation epoch). The script then prints a markdown table of
mean +- std (sample std over seeds) per method and metric. A job whose ``metrics.json`` was written by the exact same
command is reused, so an interrupted benchmark continues where it stopped.

The config trains on a 5,000-image subset of the training set (4,000 train + 1,000 validation) for 12 epochs without
augmentation, so that the small CNN over-fits the way the paper's networks over-fit CIFAR (training error near 0,
growing over-confidence) in about a CPU minute per job; the test set is all 10,000 Fashion-MNIST test images.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cls" / "fmnist_small_cnn.yaml"
METHODS = {"ce": [], "ls": [], "cs_kd": [], "tf_kd_reg": [], "pskd": [], "pskd+cutmix": ["cutmix.prob=0.5"]}
METRICS = [("top1_err", "top-1 err %"), ("top5_err", "top-5 err %"), ("nll", "NLL"), ("ece", "ECE %"),
           ("aurc", "AURC x1e3"), ("eaurc", "E-AURC x1e3")]


def job_command(method: str, seed: int, out: Path, overrides: list[str]) -> list[str]:
    name = method.split("+")[0]
    return [sys.executable, "-m", "pskd.vision_cls.cli", "train", "--config", str(CONFIG), "--resume", "auto",
            f"method.name={name}", *METHODS[method], f"train.seed={seed}", "train.threads=1", "train.progress=off",
            "train.tensorboard=false", *overrides, f"train.out_dir={out}"]


def run_job(cmd: list[str], out: Path) -> tuple[dict, float]:
    """Run one job unless its metrics.json came from this very command; returns (results, seconds)."""
    metrics = out / "metrics.json"
    expected = "pskd-cls " + " ".join(cmd[3:])
    if metrics.exists():
        res = json.loads(metrics.read_text())
        if res.get("command", "").split() == expected.split():
            return res, 0.0
        shutil.rmtree(out)  # made by another command: start over rather than mix settings
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"job {out} failed:\n{r.stderr[-2000:]}")
    return json.loads(metrics.read_text()), time.perf_counter() - start


def table(results: dict[str, list[dict]]) -> str:
    head = "| method | " + " | ".join(label for _, label in METRICS) + " | final train err % |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    means = {m: {k: statistics.mean(r["metrics"][k] for r in rs) for k, _ in METRICS} for m, rs in results.items()}
    best = {k: min(means[m][k] for m in results) for k, _ in METRICS}
    for method, rs in results.items():
        cells = []
        for k, _ in METRICS:
            vals = [r["metrics"][k] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            digits = 3 if k == "nll" else 2
            cell = f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"
            cells.append(f"**{cell}**" if means[method][k] == best[k] else cell)
        train_err = statistics.mean(r["history"][-1]["train_top1_err"] for r in rs)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {train_err:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="jobs at once (one thread each)")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_cls"))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("overrides", nargs="*", help="extra pskd-cls overrides for every job (section.key=value)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"bench_cls: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not (REPO / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists() and \
            not any(o.startswith("data.root=") for o in args.overrides):
        sys.exit("bench_cls: Fashion-MNIST not found in data/fashion-mnist; run `make data` or "
                 "`python scripts/fetch_data.py --only fashion-mnist`")
    jobs = [(m, s, Path(args.out) / m / f"seed{s}") for m in methods for s in range(args.seeds)]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(m, s): pool.submit(run_job, job_command(m, s, out, args.overrides), out) for m, s, out in jobs}
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for (m, s), fut in futures.items():
            res, secs = fut.result()
            results[m].append(res)
            print(f"{m:12s} seed {s}: top1_err {res['metrics']['top1_err']:.2f} ece {res['metrics']['ece']:.2f} "
                  f"({secs:.0f}s{', reused' if secs == 0 else ''})", flush=True)
    wall = time.perf_counter() - start
    print(f"\nFashion-MNIST (10k test images), small_cnn, {args.seeds} seeds, mean ± std; wall time "
          f"{wall / 60:.1f} min with {args.jobs} jobs at once on {os.cpu_count()} cores\n")
    print(table(results))
    print(f"\ncommand: python benchmarks/bench_cls.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
