"""Run one job: its commands as subprocesses, with logs, a deadline, and an atomic status record.

Each command runs in its own process group so that a timeout or an interrupt ends the whole tree (data-loader
workers, torchrun's children), not just the top process.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pskd.core.io import atomic_write_json

from .files import read_json
from .jobs import Job, valid_metrics
from .tasks import Command

__all__ = ["run_job", "fail_job", "kill_all", "reset_interrupt", "tail", "Wrapper"]

# (command, job) -> argv actually started; the torchrun executor wraps distributed commands here.
Wrapper = Callable[[Command, Job], list[str]]

_running: dict[int, subprocess.Popen] = {}
_lock = threading.Lock()
_interrupted = threading.Event()
TERM_GRACE_S = 10.0


def tail(path: Path, lines: int = 8) -> str:
    """The last non-empty ``lines`` lines of a text file ('' if it is missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it after a grace period."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def reset_interrupt() -> None:
    """Forget an earlier :func:`kill_all` (a new run starts in the same process)."""
    _interrupted.clear()


def kill_all() -> None:
    """End every job subprocess this process started (called on Ctrl-C / SIGTERM of the harness)."""
    _interrupted.set()
    with _lock:
        procs = list(_running.values())
    for proc in procs:
        _kill(proc)


def _no_wrap(cmd: Command, job: Job) -> list[str]:
    return list(cmd.argv)


def _finish(job: Job, status: dict, state: str, reason: str, t0: float) -> dict:
    status.update(state=state, reason=reason, ended=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  duration_s=round(time.monotonic() - t0, 2))
    if state != "ok":
        status["tail"] = tail(job.dir / "stderr.log") or tail(job.dir / "stdout.log")
    atomic_write_json(job.dir / "status.json", status)
    return status


def _claim(job: Job) -> dict:
    """Prepare the job's folder for an attempt; returns the previous attempt's status record.

    Outputs of another spec (checkpoints an adapter would resume from, a stale metrics.json) are removed first; a
    stale result must not survive a rerun either: if this attempt fails, the job must read as failed.
    """
    old_spec = read_json(job.dir / "job.json")
    if isinstance(old_spec, dict) and old_spec.get("spec_hash") != job.spec_hash():
        shutil.rmtree(job.dir, ignore_errors=True)
    job.dir.mkdir(parents=True, exist_ok=True)
    previous = read_json(job.dir / "status.json") or {}
    atomic_write_json(job.dir / "job.json", {**job.spec(), "spec_hash": job.spec_hash()})
    job.metrics_path.unlink(missing_ok=True)
    return previous


def fail_job(job: Job, reason: str) -> dict:
    """Record a job as failed without running it (e.g. its preparation failed)."""
    _claim(job)
    (job.dir / "stderr.log").write_text(reason + "\n")
    return _finish(job, {"id": job.id, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, "failed", reason,
                   time.monotonic())


def run_job(job: Job, wrap: Wrapper | None = None, extra_env: dict[str, str] | None = None) -> dict:
    """Run a job to completion and return its status record (also written to ``job.dir/status.json``).

    Never raises for a failing job: a missing data set, a non-zero exit, a timeout or a missing metrics file all
    end as ``state`` ``failed``/``timeout`` with a ``reason`` and the last lines of stderr.

    Args:
        job: the job.
        wrap: turns a command into the argv to start (default: unchanged).
        extra_env: environment added on top of the job's own (GPU assignment, thread counts).
    """
    wrap = wrap or _no_wrap
    previous = _claim(job)
    t0 = time.monotonic()
    status = {"id": job.id, "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "host": socket.gethostname(), "attempt": int(previous.get("attempt", 0)) + 1}
    atomic_write_json(job.dir / "status.json", status)
    out_log, err_log = job.dir / "stdout.log", job.dir / "stderr.log"
    out_log.write_text("")
    err_log.write_text("")

    missing = list(job.problems) + [msg for path, msg in job.require_paths.items() if not Path(path).exists()]
    if missing:
        err_log.write_text("\n".join(missing) + "\n")
        return _finish(job, status, "failed", "missing input: " + "; ".join(missing), t0)

    env = {**os.environ, **job.env, **(extra_env or {})}
    deadline = None if job.timeout is None else t0 + job.timeout
    for cmd in job.commands:
        argv = wrap(cmd, job)
        exe = argv[0]
        if shutil.which(exe, path=env.get("PATH")) is None and not Path(exe).is_file():
            msg = f"command not found: {exe} (is its adapter installed? `make setup` installs all of them)"
            with open(err_log, "a") as f:
                f.write(msg + "\n")
            return _finish(job, status, "failed", msg, t0)
        with open(out_log, "a") as out, open(err_log, "a") as err:
            header = f"== [{cmd.name}] {' '.join(argv)}\n"
            out.write(header)
            err.write(header)
            out.flush()
            err.flush()
            proc = subprocess.Popen(argv, cwd=job.cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            with _lock:
                _running[proc.pid] = proc
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                rc = proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return _finish(job, status, "timeout", f"timed out after {job.timeout:.0f} s in step {cmd.name!r}",
                               t0)
            except BaseException:
                _kill(proc)
                raise
            finally:
                with _lock:
                    _running.pop(proc.pid, None)
        if rc != 0:
            status["returncode"] = rc
            if _interrupted.is_set():
                return _finish(job, status, "failed", "interrupted (rerun on resume)", t0)
            last = tail(err_log, 1)
            last = "" if last.startswith("== [") else f": {last[-300:]}"  # the header: the command said nothing
            return _finish(job, status, "failed", f"step {cmd.name!r} exited with code {rc}{last}", t0)
    if job.kind == "train" and not valid_metrics(read_json(job.metrics_path)):
        return _finish(job, status, "failed", "finished but left no valid metrics.json", t0)
    return _finish(job, status, "ok", "", t0)
