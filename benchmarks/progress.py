"""Progress lines for a running suite: jobs done / total, failures, elapsed time and ETA.

Plain lines (one per finished job) rather than a redrawn bar: ``make bench`` output usually goes to a CI log or a
file, where a bar's carriage returns are noise.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import TextIO

from .jobs import Job

__all__ = ["Progress", "fmt_duration"]


def fmt_duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Counts finished jobs and estimates the time left.

    The ETA sums, over the jobs not finished yet, the mean duration of the finished jobs of the same suite entry
    (entries differ by orders of magnitude: a detection job is not a classification job), falling back to the
    mean over all finished jobs, and divides by the number of jobs running at once.

    Args:
        jobs: the jobs that will run (already-finished ones excluded).
        skipped: how many jobs were already finished and are skipped.
        workers: how many jobs run at once.
        stream: where lines go.
    """

    def __init__(self, jobs: list[Job], skipped: int = 0, workers: int = 1, stream: TextIO | None = None):
        self.pending = {j.id: j.entry for j in jobs}
        self.total = len(jobs) + skipped
        self.done = skipped
        self.failed = 0
        self.workers = max(1, workers)
        self.stream = stream or sys.stdout
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.t0 = time.monotonic()

    def eta(self) -> float | None:
        if not self.pending:
            return 0.0
        every = [d for ds in self.durations.values() for d in ds]
        if not every:
            return None
        overall = sum(every) / len(every)
        mean = {k: sum(v) / len(v) for k, v in self.durations.items()}
        return sum(mean.get(entry, overall) for entry in self.pending.values()) / self.workers

    def update(self, job: Job, status: dict) -> str:
        """Record a finished job and print (and return) its progress line."""
        self.pending.pop(job.id, None)
        self.done += 1
        ok = status.get("state") == "ok"
        self.failed += not ok
        if status.get("duration_s") is not None and ok:
            self.durations[job.entry].append(float(status["duration_s"]))
        what = "ok" if ok else f"{status.get('state', 'failed').upper()}: {status.get('reason', '')}"
        line = (f"[pskd-bench] jobs {self.done}/{self.total} done" + (f", {self.failed} failed" if self.failed else "")
                + f" | elapsed {fmt_duration(time.monotonic() - self.t0)}, ETA {fmt_duration(self.eta())}"
                + f" | {job.id} {what} ({fmt_duration(status.get('duration_s'))})")
        print(line, file=self.stream, flush=True)
        return line
