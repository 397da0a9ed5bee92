#!/usr/bin/env python
"""Mini detection benchmark: stock vs PS-KD on the two mini sets x N seeds, through the ``pskd-det`` CLI.

Usage::

    python benchmarks/bench_detection.py [--detector faster-rcnn|retinanet] [--seeds 0 1 2]
        [--datasets deepforest fmnist-det] [--work-root work_dirs/bench_detection] [--parallel 2] [--threads 1]
        [--cfg-options K=V ...]

Each job is ``python -m pskd.detection.cli train CONFIG --seed S --work-dir D --out D/metrics.json``, one process
per job, ``--parallel`` processes at a time with ``--threads`` torch threads each (on a shared 2-core machine two
single-threaded jobs beat one two-threaded job by far: OpenMP threads spin when the cores are oversubscribed).
The script prints a markdown table of COCO mAP and
mAP@0.5 (mean +- sample std over seeds) and writes it, with every per-seed number, to ``<work-root>/summary.json``.
Data: ``python scripts/fetch_data.py``. fmnist-det: the objects are real Fashion-MNIST images, the scenes are
synthetic composites.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "detection"
DATASET_NOTES = {
    "deepforest": "DeepForest tree crowns (real aerial photos)",
    "fmnist-det": "Fashion-MNIST scenes (objects real, scenes synthetic)",
}


def _run_job(config: Path, seed: int, work_dir: Path, cfg_options: list[str], threads: int) -> dict:
    metrics_path = work_dir / "metrics.json"
    cmd = [sys.executable, "-m", "pskd.detection.cli", "train", str(config), "--seed", str(seed),
           "--work-dir", str(work_dir), "--out", str(metrics_path)]
    if cfg_options:
        cmd += ["--cfg-options", *cfg_options]
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(work_dir / "bench.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        # wait4 gives this child's own CPU time: on a shared machine wall time says little about the cost
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (work_dir / "bench.log").read_text().strip().splitlines()[-1:]
        raise SystemExit(f"bench_detection: job failed ({' '.join(cmd)}): {tail[0] if tail else proc.returncode}")
    metrics = json.loads(metrics_path.read_text())["metrics"]
    return {"seed": seed, "mAP": metrics["mAP"], "mAP_50": metrics["mAP_50"], "seconds": round(seconds, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1)}


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} +- {100 * std:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", choices=["faster-rcnn", "retinanet"], default="faster-rcnn")
    parser.add_argument("--datasets", nargs="+", default=["deepforest", "fmnist-det"], choices=list(DATASET_NOTES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work-root", default=str(ROOT / "work_dirs" / "bench_detection"))
    parser.add_argument("--parallel", type=int, default=2, help="jobs run at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="passed to every job, e.g. train_cfg.max_epochs=6")
    args = parser.parse_args(argv)

    work_root = Path(args.work_root)
    jobs = [(dataset, method, CONFIGS / f"mini_{args.detector}_{dataset}{suffix}.py", seed)
            for dataset in args.datasets for method, suffix in (("baseline", ""), ("PS-KD", "_pskd"))
            for seed in args.seeds]
    missing = [str(config) for _, _, config, _ in jobs if not config.is_file()]
    if missing:
        raise SystemExit(f"bench_detection: config {missing[0]} not found")

    def run(job: tuple) -> dict:
        dataset, method, config, seed = job
        out = _run_job(config, seed, work_root / f"{config.stem}_seed{seed}", args.cfg_options, args.threads)
        print(f"{config.name} seed {seed}: mAP {out['mAP']:.3f} mAP_50 {out['mAP_50']:.3f} ({out['seconds']:.0f} s, "
              f"{out['cpu_seconds']:.0f} CPU s)", file=sys.stderr, flush=True)
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        outputs = list(pool.map(run, jobs))
    total = time.perf_counter() - start
    results: dict[str, dict[str, list[dict]]] = {}
    for (dataset, method, _, _), out in zip(jobs, outputs):
        results.setdefault(dataset, {}).setdefault(method, []).append(out)

    lines = [f"| data set ({args.detector}, tiny R-18 from scratch) | method | mAP | mAP@0.5 | CPU s / run |",
             "|---|---|---|---|---|"]
    for dataset, by_method in results.items():
        for method, jobs in by_method.items():
            lines.append(f"| {DATASET_NOTES[dataset]} | {method} | {_mean_std([j['mAP'] for j in jobs])} | "
                         f"{_mean_std([j['mAP_50'] for j in jobs])} | "
                         f"{statistics.fmean(j['cpu_seconds'] for j in jobs):.0f} |")
    table = "\n".join(lines)
    print(table)
    cpu = sum(j["cpu_seconds"] for by_method in results.values() for jobs in by_method.values() for j in jobs)
    print(f"\nCOCO-style mAP in %, mean +- sample std over seeds {args.seeds}; wall time {total / 60:.1f} min on "
          f"{os.cpu_count()} CPU cores ({args.parallel} jobs at a time, {args.threads} thread(s) each), "
          f"{cpu / 60:.1f} CPU-minutes in all.")
    summary = {"detector": args.detector, "seeds": args.seeds, "cfg_options": args.cfg_options,
               "parallel": args.parallel, "threads": args.threads,
               "total_seconds": round(total, 1), "cpu_seconds": round(cpu, 1), "results": results, "table": table}
    work_root.mkdir(parents=True, exist_ok=True)
    tmp = work_root / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, work_root / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
