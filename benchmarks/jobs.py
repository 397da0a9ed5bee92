"""Jobs: the expansion of a suite into runnable units, their directories, specs and states.

Layout of a run directory::

    RUN_DIR/run.json, suite.yaml                      what was run, by which command
    RUN_DIR/prepare/<entry>/                          once-per-entry preparation (e.g. a binarised corpus)
    RUN_DIR/jobs/<entry>/<model>/<method>/seed<k>/    job.json, status.json, stdout.log, stderr.log, metrics.json

A job is finished when its ``metrics.json`` is valid and its ``job.json`` describes the same spec (a suite edited
between runs reruns the jobs it changed); anything else is rerun on resume.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import read_json
from .suite import Suite, TaskEntry, parse_duration
from .tasks import Command, JobContext

__all__ = ["Job", "expand", "filter_jobs", "job_state", "valid_metrics", "expand_vars"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Job:
    """One runnable unit: a training (``kind='train'``) or an entry's shared preparation (``kind='prepare'``).

    Attributes:
        id: ``<entry>/<model>/<method>/seed<k>`` or ``prepare/<entry>``.
        dir: the job's own directory.
        commands: run in order; the job fails at the first non-zero exit.
        after: ids of jobs that must succeed first (the entry's preparation).
        problems: reasons known before running why the job cannot run (e.g. an unset data variable).
        require_paths: paths that must exist when the job starts, with the message to give if one does not.
        timeout: seconds for the whole job, or None.
    """

    id: str
    kind: str
    dir: Path
    commands: list[Command]
    entry: str
    task: str
    model: str = ""
    method: str = ""
    method_base: str = ""
    seed: int = 0
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    after: list[str] = field(default_factory=list)
    nproc: int = 1
    baseline: str = ""
    paper: str | None = None
    problems: list[str] = field(default_factory=list)
    require_paths: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The resolved spec written to ``job.json`` (everything that defines the job's result)."""
        return {
            "id": self.id, "kind": self.kind, "entry": self.entry, "task": self.task, "model": self.model,
            "method": self.method, "method_base": self.method_base, "seed": self.seed,
            "commands": [c.to_dict() for c in self.commands], "env": self.env, "cwd": self.cwd,
            "after": self.after, "nproc": self.nproc, "timeout": self.timeout, "baseline": self.baseline,
            "paper": self.paper, "settings": self.settings,
        }

    def spec_hash(self) -> str:
        # The timeout and the baseline do not change a result: editing them must not rerun finished jobs.
        spec = {k: v for k, v in self.spec().items() if k not in ("timeout", "baseline", "paper")}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.json"


def expand_vars(value: str) -> tuple[str, list[str]]:
    """Expand ``${VAR}`` and ``${VAR:-default}``; returns the text and the names of unset variables."""
    missing: list[str] = []

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        missing.append(name)
        return m.group(0)

    return _VAR.sub(sub, value), missing


def _resolve_path(value: str, cwd: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (cwd / path).resolve())


def _resolve(value: Any, problems: list[str], what: str) -> Any:
    """Expand variables in strings (recursively in lists and mappings), noting unset ones as problems."""
    if isinstance(value, str):
        text, missing = expand_vars(value)
        for name in missing:
            problems.append(f"{what}: environment variable {name} is not set")
        return text
    if isinstance(value, list):
        return [_resolve(v, problems, what) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, problems, f"{what}.{k}") for k, v in value.items()}
    return value


def _entry_jobs(suite: Suite, entry: TaskEntry, run_dir: Path, cwd: Path, nproc: int | None) -> list[Job]:
    s = entry.settings
    problems: list[str] = []
    require: dict[str, str] = {}
    data: dict[str, str] = {}
    for key, spec in (s.get("data") or {}).items():
        path, hint = (spec.get("path"), spec.get("hint", "")) if isinstance(spec, dict) else (spec, "")
        before = len(problems)
        path = _resolve(str(path), problems, f"data.{key}")
        data[key] = _resolve_path(path, cwd)
        if len(problems) > before:
            problems[-1] += f" ({hint})" if hint else ""
        else:
            require[data[key]] = f"data set {key!r} not found at {data[key]}" + (f" ({hint})" if hint else "")
    timeout = parse_duration(s["timeout"]) if "timeout" in s else None
    env = {str(k): str(v) for k, v in _resolve(s.get("env") or {}, problems, "env").items()}
    entry_nproc = nproc or s.get("nproc") or suite.nproc
    options = {k: _resolve(s[k], problems, k) for k in entry.task.extra_keys if k in s}
    base_overrides = _resolve(s.get("overrides") or {}, problems, "overrides")

    def config_of(value: str | None, problems: list[str], require: dict[str, str]) -> str | None:
        if value is None:
            return None
        text = _resolve(str(value), problems, "config")
        # A relative config is taken from the current directory when it exists there; otherwise it is passed on
        # unchanged (the adapter may know it as a built-in name). A file path that does not exist fails its jobs
        # with a clear message instead of an adapter's traceback.
        if (cwd / text).exists():
            return _resolve_path(text, cwd)
        if text.endswith((".py", ".yaml", ".yml")):
            require[_resolve_path(text, cwd)] = f"config file {text} not found (relative to {cwd})"
        return text

    common = dict(entry=entry.name, task=entry.task.name, cwd=str(cwd), nproc=entry_nproc, baseline=entry.baseline,
                  paper=s.get("paper"), env=env, timeout=timeout)
    jobs: list[Job] = []
    prep_dir = run_dir / "prepare" / entry.name
    prep_problems, prep_require = list(problems), dict(require)
    prep_ctx = JobContext(out_dir=prep_dir, model="", method="", seed=0,
                          config=config_of(s.get("config"), prep_problems, prep_require), epochs=s.get("epochs"),
                          data=data, overrides=base_overrides, nproc=1, options=options)
    prep_cmds = entry.task.prepare(prep_ctx)
    after, prep_hash = [], None
    if prep_cmds:
        prep = Job(id=f"prepare/{entry.name}", kind="prepare", dir=prep_dir, commands=prep_cmds,
                   problems=prep_problems, require_paths=prep_require, settings={"data": data}, **common)
        jobs.append(prep)
        # A changed preparation (other data, vocabulary) changes the spec of every job trained on it.
        after, prep_hash = [prep.id], prep.spec_hash()
    for model in entry.models:
        for method in entry.methods:
            # Problems of one model or method (an unset variable in its overrides) stay with its own jobs.
            job_problems, job_require = list(problems), dict(require)
            overrides = {**base_overrides, **_resolve(model.overrides, job_problems, "overrides"),
                         **_resolve(method.overrides, job_problems, "overrides")}
            config = config_of(model.config or s.get("config"), job_problems, job_require)
            method_config = config_of(method.config, job_problems, job_require)
            settings = {"config": config, "method_config": method_config, "epochs": s.get("epochs"), "data": data,
                        "overrides": overrides, "prepare": prep_hash}
            for seed in entry.seeds:
                out = run_dir / "jobs" / entry.name / model.name / method.name / f"seed{seed}"
                ctx = JobContext(out_dir=out, model=model.base, method=method.base, seed=seed, config=config,
                                 method_config=method_config, epochs=s.get("epochs"), data=data,
                                 overrides=overrides, nproc=entry_nproc,
                                 prepare_dir=prep_dir if prep_cmds else None, options=options)
                jobs.append(Job(id=f"{entry.name}/{model.name}/{method.name}/seed{seed}", kind="train", dir=out,
                                commands=entry.task.commands(ctx), model=model.name, method=method.name,
                                method_base=method.base, seed=seed, after=list(after),
                                problems=sorted(set(job_problems)), require_paths=job_require, settings=settings,
                                **common))
    return jobs


def expand(suite: Suite, run_dir: str | os.PathLike, cwd: str | os.PathLike | None = None,
           nproc: int | None = None) -> list[Job]:
    """All jobs of a suite: each entry's preparation (if any), then models x methods x seeds.

    Args:
        suite: a validated suite.
        run_dir: the run directory.
        cwd: directory relative paths are resolved against and commands run in (default: the current one).
        nproc: processes per job, overriding the suite's ``nproc``.
    """
    run_dir = Path(run_dir).resolve()
    cwd = Path(cwd or os.getcwd()).resolve()
    return [job for entry in suite.entries for job in _entry_jobs(suite, entry, run_dir, cwd, nproc)]


def _match(job: Job, pattern: str) -> bool:
    if "=" in pattern:
        key, _, glob = pattern.partition("=")
        fields = {"task": job.task, "entry": job.entry, "model": job.model, "method": job.method,
                  "seed": str(job.seed)}
        if key not in fields:
            raise ValueError(f"--filter key {key!r} unknown; use one of {', '.join(fields)} or a glob on the job id")
        return any(fnmatch.fnmatchcase(fields[key], g) for g in glob.split(","))
    return fnmatch.fnmatchcase(job.id, pattern)


def filter_jobs(jobs: Iterable[Job], patterns: Iterable[str]) -> list[Job]:
    """Keep the jobs matching every pattern (``key=glob[,glob]`` on entry/task/model/method/seed, or a glob on the
    job id such as ``fmnist/*/pskd/*``). Preparations needed by a kept job are kept too."""
    jobs = list(jobs)
    patterns = [p for p in patterns if p]
    if not patterns:
        return jobs
    kept = [j for j in jobs if j.kind == "train" and all(_match(j, p) for p in patterns)]
    needed = {a for j in kept for a in j.after}
    return [j for j in jobs if j.id in needed] + kept


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def valid_metrics(obj: Any) -> bool:
    """True for an adapter's ``metrics.json`` content: a mapping whose ``metrics`` mapping holds a number.

    Other entries may be null (a NaN metric) or text (mmdet's per-class tables); the aggregation skips them.
    """
    return isinstance(obj, dict) and isinstance(obj.get("metrics"), dict) and any(
        is_number(v) for v in obj["metrics"].values())


def job_state(job: Job) -> str:
    """``done`` (valid result for this exact spec), ``failed`` (last attempt failed) or ``pending``."""
    spec = read_json(job.dir / "job.json") or {}
    status = read_json(job.dir / "status.json") or {}
    same = spec.get("spec_hash") == job.spec_hash()
    if job.kind == "train":
        if same and valid_metrics(read_json(job.metrics_path)) and status.get("state") in ("ok", None):
            return "done"
    elif same and status.get("state") == "ok":
        return "done"
    return "failed" if same and status.get("state") in ("failed", "timeout") else "pending"

