"""Executors: run a list of jobs locally (N at once), under torchrun (one process per GPU), or on Slurm.

All of them honour the jobs' ``after`` dependencies (an entry's preparation runs before its jobs; if it fails, its
jobs are recorded as failed without running), never stop at a failing job, and report progress per finished job.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from .jobs import Job
from .progress import Progress
from .runner import fail_job, kill_all, reset_interrupt, run_job
from .tasks import Command
from .tasks.base import console_script

__all__ = ["LocalExecutor", "TorchrunExecutor", "SlurmExecutor", "slurm_parameters", "torchrun_argv",
           "make_executor"]


def _blocked(job: Job, results: dict[str, dict]) -> str | None:
    """Why a job cannot run because of its dependencies, or None."""
    for dep in job.after:
        st = results.get(dep)
        if st is not None and st.get("state") != "ok":
            return f"{dep} failed: {st.get('reason', '')}"
    return None


def torchrun_argv(cmd: Command, nproc: int) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N --no-python <argv>`` for a distributed command with N > 1.

    ``--no-python`` lets torchrun start a console script (``pskd-cls``) directly; ``--standalone`` picks a free
    rendezvous port, so several jobs can run side by side on one machine.
    """
    if not cmd.distributed or nproc <= 1:
        return list(cmd.argv)
    return [console_script("torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", *cmd.argv]


class LocalExecutor:
    """Runs jobs on this machine, ``jobs`` at a time (threads waiting on subprocesses).

    When several jobs share the CPU, each gets ``cpu_count // jobs`` threads (``OMP_NUM_THREADS``) unless the user
    set it: N trainings each using every core run slower together than one after the other.

    Args:
        jobs: how many jobs run at once.
    """

    name = "local"

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))

    @property
    def workers(self) -> int:
        return self.jobs

    def wrap(self, cmd: Command, job: Job) -> list[str]:
        return list(cmd.argv)

    def slot_env(self, slot: int) -> dict[str, str]:
        if self.workers <= 1 or "OMP_NUM_THREADS" in os.environ:
            return {}
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def _run(self, job: Job, slot: int) -> dict:
        return run_job(job, wrap=self.wrap, extra_env=self.slot_env(slot))

    def run(self, jobs: list[Job], progress: Progress) -> dict[str, dict]:
        """Run the jobs; returns their status records by id. Ctrl-C ends all running job processes."""
        reset_interrupt()
        results: dict[str, dict] = {}
        queue = list(jobs)
        ids = {j.id for j in jobs}
        free = list(range(self.workers))
        running: dict[Future, tuple[Job, int]] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            try:
                while queue or running:
                    for job in list(queue):
                        reason = _blocked(job, results)
                        if reason:
                            queue.remove(job)
                            results[job.id] = fail_job(job, f"not run: {reason}")
                            progress.update(job, results[job.id])
                        elif free and all(d in results or d not in ids for d in job.after):
                            queue.remove(job)
                            slot = free.pop(0)
                            running[pool.submit(self._run, job, slot)] = (job, slot)
                    if not running:
                        continue
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        job, slot = running.pop(fut)
                        free.append(slot)
                        try:
                            results[job.id] = fut.result()
                        except Exception as e:  # a bug in the harness itself must not lose the other jobs
                            results[job.id] = fail_job(job, f"harness error: {type(e).__name__}: {e}")
                        progress.update(job, results[job.id])
            except BaseException:
                kill_all()
                raise
        return results


class TorchrunExecutor(LocalExecutor):
    """Local multi-GPU: distributed commands start under torchrun with the job's ``nproc`` processes.

    With G visible GPUs and ``nproc`` per job, up to ``G // nproc`` jobs run side by side (capped by ``jobs``),
    each seeing its own GPUs through ``CUDA_VISIBLE_DEVICES``.

    Args:
        jobs: upper bound on jobs at once.
        nproc: processes (GPUs) per job.
        gpus: the GPU ids to use (default: ``CUDA_VISIBLE_DEVICES`` or all GPUs torch sees).
    """

    name = "torchrun"

    def __init__(self, jobs: int = 1, nproc: int = 1, gpus: list[str] | None = None):
        super().__init__(jobs)
        self.nproc = max(1, int(nproc))
        self.gpus = gpus if gpus is not None else _visible_gpus()

    @property
    def workers(self) -> int:
        if not self.gpus:
            return self.jobs
        return max(1, min(self.jobs, len(self.gpus) // self.nproc))

    def wrap(self, cmd: Command, job: Job) -> list[str]:
        return torchrun_argv(cmd, job.nproc)

    def slot_env(self, slot: int) -> dict[str, str]:
        if not self.gpus:
            return super().slot_env(slot)
        mine = self.gpus[slot * self.nproc:(slot + 1) * self.nproc]
        return {"CUDA_VISIBLE_DEVICES": ",".join(mine)}


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch  # lazily: listing jobs or writing a report must not pay for importing torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def slurm_parameters(job: Job, cfg: dict[str, Any]) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for one job.

    One task per node: torchrun, started inside the allocation, spawns the ``nproc`` workers. The Slurm time limit
    is the job's timeout plus 5 minutes, so the harness's own timeout (which records a clean ``timeout`` state)
    fires first.

    Args:
        job: the job.
        cfg: the suite's ``slurm:`` mapping (partition, account, qos, constraint, cpus_per_task, mem_gb,
            gpus_per_node, timeout_min, array_parallelism, additional).
    """
    if job.timeout is not None:
        timeout_min = math.ceil(job.timeout / 60) + 5
    else:
        timeout_min = int(cfg.get("timeout_min", 24 * 60))
    params: dict[str, Any] = {
        "name": "pskd-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", job.id),
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": int(cfg.get("gpus_per_node", job.nproc if job.kind == "train" else 0)),
        "cpus_per_task": int(cfg.get("cpus_per_task", 8 * max(1, job.nproc))),
        "timeout_min": timeout_min,
    }
    if "mem_gb" in cfg:
        params["mem_gb"] = cfg["mem_gb"]
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        if key in cfg:
            params[f"slurm_{key}"] = cfg[key]
    if cfg.get("additional"):
        params["slurm_additional_parameters"] = dict(cfg["additional"])
    return params


def _slurm_entry(job: Job) -> dict:
    """What runs inside the Slurm allocation (module-level so that submitit can pickle it)."""
    return run_job(job, wrap=lambda cmd, j: torchrun_argv(cmd, j.nproc))


class SlurmExecutor:
    """Submits jobs to Slurm with submitit, in dependency waves, and polls until they finish.

    Args:
        folder: where submitit keeps its pickles and Slurm logs.
        cfg: the suite's ``slurm:`` mapping (see :func:`slurm_parameters`).
        jobs: upper bound on jobs running at once (Slurm array parallelism), unless ``cfg`` sets it.
        cluster: submitit's cluster (None: auto-detect Slurm; ``local`` or ``debug`` for testing).
        poll_s: seconds between polls.
    """

    name = "slurm"

    def __init__(self, folder: str | os.PathLike, cfg: dict[str, Any] | None = None, jobs: int = 1,
                 cluster: str | None = None, poll_s: float = 15.0):
        self.folder = Path(folder)
        self.cfg = dict(cfg or {})
        self.cfg.setdefault("array_parallelism", max(1, jobs))
        self.cluster = cluster
        self.poll_s = poll_s
        self.workers = max(1, jobs)

    def run(self, jobs: list[Job], progress: Progress) -> dict[str, dict]:
        import submitit  # lazily: only Slurm users need it

        results: dict[str, dict] = {}
        remaining = list(jobs)
        ids = {j.id for j in jobs}
        while remaining:
            wave = [j for j in remaining if all(d in results or d not in ids for d in j.after)]
            if not wave:  # cannot happen with the dependencies expand() makes; never spin on it
                wave = remaining
            remaining = [j for j in remaining if j not in wave]
            groups: dict[str, list[Job]] = {}
            for job in wave:
                reason = _blocked(job, results)
                if reason:
                    results[job.id] = fail_job(job, f"not run: {reason}")
                    progress.update(job, results[job.id])
                    continue
                params = slurm_parameters(job, self.cfg)
                params["name"] = "pskd-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", job.entry)
                groups.setdefault(json.dumps(params, sort_keys=True), []).append(job)
            submitted = []
            for key, group in groups.items():
                # One Slurm job array per group of jobs with the same resources: array parallelism applies.
                ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
                ex.update_parameters(**json.loads(key))
                with ex.batch():
                    handles = [ex.submit(_slurm_entry, job) for job in group]
                submitted += list(zip(group, handles))
            try:
                while submitted:
                    for job, sj in list(submitted):
                        if not sj.done():
                            continue
                        submitted.remove((job, sj))
                        try:
                            results[job.id] = sj.result()
                        except Exception as e:  # the allocation died (preempted, OOM-killed, time limit)
                            results[job.id] = fail_job(job, f"Slurm job {sj.job_id} failed: {str(e)[-500:]}")
                        progress.update(job, results[job.id])
                    if submitted:
                        time.sleep(self.poll_s)
            except KeyboardInterrupt:
                for _, sj in submitted:
                    sj.cancel(check=False)
                raise
        return results


def make_executor(kind: str, run_dir: Path, jobs: int = 1, nproc: int = 1, slurm: dict[str, Any] | None = None,
                  cluster: str | None = None):
    """Build the executor named ``kind`` (``local``, ``torchrun`` or ``slurm``)."""
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "torchrun":
        return TorchrunExecutor(jobs, nproc)
    if kind == "slurm":
        return SlurmExecutor(run_dir / "slurm", slurm, jobs, cluster=cluster)
    raise ValueError(f"unknown executor {kind!r}; choose local, torchrun or slurm")
