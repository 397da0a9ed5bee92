"""``pskd-bench``: run a benchmark suite and report on it.

Examples::

    pskd-bench run mini                                  # the default of `make bench`: writes runs/bench/mini/
    pskd-bench run paper-cifar100 --executor slurm --jobs 16
    pskd-bench run mini --filter method=pskd* --dry-run  # show the jobs and their command lines
    pskd-bench report runs/bench/mini --copy-to benchmarks/results/mini-2026-01-01
    pskd-bench suites                                    # the shipped suites
"""
from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pskd.core.io import atomic_write_json, atomic_write_text

from .executors import make_executor
from .files import read_json
from .jobs import expand, filter_jobs, job_state
from .progress import Progress, fmt_duration
from .suite import SuiteError, list_suites, load_suite

__all__ = ["main"]

REPORT_FILES = ("report.md", "summary.csv", "results.csv", "failures.csv", "run.json", "suite.yaml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pskd-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite (resumes: finished jobs are skipped)")
    r.add_argument("suite", help="a shipped suite name (see `pskd-bench suites`) or a path to a suite YAML file")
    r.add_argument("--out", help="run directory (default: runs/bench/<suite name>)")
    r.add_argument("--jobs", type=int, help="jobs at once (default: the suite's `jobs`, else 1)")
    r.add_argument("--executor", choices=["local", "torchrun", "slurm"], help="default: the suite's, else local")
    r.add_argument("--nproc", type=int, help="processes (GPUs) per job for torchrun/slurm (default: the suite's)")
    r.add_argument("--filter", action="append", default=[], metavar="PATTERN",
                   help="keep matching jobs: key=glob[,glob] (key: entry, task, model, method, seed) or a glob on "
                        "the job id, e.g. 'fmnist/*/pskd/*'; repeat to combine (all must match)")
    r.add_argument("--dry-run", action="store_true", help="list the jobs, their state and commands; run nothing")
    r.add_argument("--force", action="store_true", help="rerun finished jobs too")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    r.add_argument("--slurm-cluster", help=argparse.SUPPRESS)  # submitit 'local'/'debug', for testing
    rep = sub.add_parser("report", help="(re)write the report of a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument("--copy-to", metavar="DIR",
                     help="also copy the report, tables and plots to DIR (e.g. benchmarks/results/<name>)")
    sub.add_parser("suites", help="list the shipped suites")
    return p


def _git_commit(cwd: Path) -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _on_sigterm(signum, frame):  # a cancelled CI job or scancel: stop the job processes like Ctrl-C does
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    run_dir = Path(args.out or Path("runs") / "bench" / suite.name).resolve()
    all_jobs = expand(suite, run_dir, nproc=args.nproc)
    jobs = filter_jobs(all_jobs, args.filter)
    if not jobs:
        print(f"pskd-bench: no job of suite {suite.name} matches {args.filter}", file=sys.stderr)
        return 2
    states = {j.id: job_state(j) for j in jobs}
    if args.dry_run:
        for j in jobs:
            print(f"{j.id}  [{states[j.id]}]")
            for problem in j.problems:
                print(f"    ! {problem}")
            for c in j.commands:
                print("    $ " + shlex.join(c.argv))
        counts = {s: sum(v == s for v in states.values()) for s in ("done", "failed", "pending")}
        print(f"{len(jobs)} jobs: {counts['done']} done, {counts['failed']} failed, {counts['pending']} to run")
        return 0

    todo = [j for j in jobs if args.force or states[j.id] != "done"]
    kind = args.executor or suite.executor
    n_jobs = args.jobs or suite.jobs
    executor = make_executor(kind, run_dir, jobs=n_jobs, nproc=args.nproc or suite.nproc, slurm=suite.slurm,
                             cluster=args.slurm_cluster)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Two runs writing the same job folders would corrupt each other's results: one run per directory at a time.
    lock = open(run_dir / ".lock", "w")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"pskd-bench: another pskd-bench run is using {run_dir}", file=sys.stderr)
        return 2
    atomic_write_text(run_dir / "suite.yaml", suite.text)
    t0 = time.time()
    run = {
        "suite": suite.name, "suite_path": str(suite.path), "description": suite.description,
        "command": shlex.join(["pskd-bench", *args.argv]), "cwd": os.getcwd(), "run_dir": str(run_dir),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": socket.gethostname(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": _version("torch"), "pskd": _version("pskd"),
        "git": _git_commit(Path.cwd()), "executor": kind, "jobs_at_once": executor.workers,
        "entries": {e.name: {"task": e.task.name, "description": e.settings.get("description", "")}
                    for e in suite.entries},
        "jobs": [j.id for j in all_jobs], "skipped_as_finished": len(jobs) - len(todo),
    }
    atomic_write_json(run_dir / "run.json", run)
    skipped = len(jobs) - len(todo)
    print(f"pskd-bench: suite {suite.name}: {len(jobs)} jobs, {skipped} finished earlier (skipped), "
          f"{len(todo)} to run; executor {kind} x{executor.workers}; run dir {run_dir}", flush=True)
    previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupted = False
    try:
        results = executor.run(todo, Progress(todo, skipped=skipped, workers=executor.workers))
    except KeyboardInterrupt:
        interrupted = True
        results = {}
        print("pskd-bench: interrupted; finished jobs are kept, `pskd-bench run` again resumes", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    wall = time.time() - t0
    run.update(finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"), wall_time=fmt_duration(wall))
    atomic_write_json(run_dir / "run.json", run)
    print(write_and_print(run_dir, plots=not args.no_plots))
    if suite.budget_minutes and wall > 60 * suite.budget_minutes and len(todo) == len(jobs):
        print(f"pskd-bench: warning: took {fmt_duration(wall)}, over the suite's budget of "
              f"{suite.budget_minutes} minutes", file=sys.stderr)
    failed = [i for i, st in results.items() if st.get("state") != "ok"]
    lock.close()
    return 130 if interrupted else (1 if failed else 0)


def write_and_print(run_dir: Path, plots: bool = True) -> str:
    """Write the report of ``run_dir`` and return the text to print."""
    from .report import write_report  # pandas/matplotlib only once there is something to report

    text = write_report(run_dir, plots=plots)
    return f"\n{text}\nReport: {run_dir / 'report.md'} (tables: summary.csv, results.csv; plots: plots/)"


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "jobs").is_dir() and read_json(run_dir / "run.json") is None:
        print(f"pskd-bench: {run_dir} is not a run directory (no jobs/ and no run.json)", file=sys.stderr)
        return 2
    print(write_and_print(run_dir, plots=not args.no_plots))
    if args.copy_to:
        dest = Path(args.copy_to)
        dest.mkdir(parents=True, exist_ok=True)
        for name in REPORT_FILES:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, dest / name)
        if (run_dir / "plots").is_dir():
            shutil.copytree(run_dir / "plots", dest / "plots", dirs_exist_ok=True)
        print(f"Copied the report to {dest}")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    for name in list_suites():
        try:
            s = load_suite(name)
            print(f"{name:18s} {s.description.strip().splitlines()[0] if s.description.strip() else ''}")
        except SuiteError as e:
            print(f"{name:18s} INVALID: {e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pskd-bench``; returns the exit code (1 if any job failed, 2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv  # recorded in run.json: the exact command of the run
    try:
        return {"run": cmd_run, "report": cmd_report, "suites": cmd_suites}[args.command](args)
    except (SuiteError, ValueError) as e:
        print(f"pskd-bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
