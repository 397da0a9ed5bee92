"""Suite files: load a YAML suite by name or path and validate it strictly.

Every problem is reported with the file and the key path (``tasks.fmnist.methods[2]``), all at once, in one
:class:`SuiteError`; a suite that loads is safe to expand into jobs (:mod:`.jobs`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .tasks import TASKS, Task

__all__ = ["SuiteError", "Variant", "TaskEntry", "Suite", "SUITES_DIR", "find_suite", "list_suites", "load_suite",
           "parse_duration"]

SUITES_DIR = Path(__file__).resolve().parent / "suites"

TOP_KEYS = {"name", "description", "seeds", "tasks", "defaults", "jobs", "executor", "nproc", "slurm",
            "budget_minutes"}
# Keys every task entry accepts; a task module adds its own (Task.extra_keys).
ENTRY_KEYS = {"task", "description", "models", "methods", "seeds", "config", "epochs", "data", "overrides",
              "timeout", "baseline", "paper", "nproc", "env"}
MODEL_KEYS = {"name", "config", "overrides"}
METHOD_KEYS = {"name", "method", "config", "overrides"}
SLURM_KEYS = {"partition", "account", "qos", "constraint", "cpus_per_task", "mem_gb", "gpus_per_node",
              "timeout_min", "array_parallelism", "additional"}
EXECUTORS = ("local", "torchrun", "slurm")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SuiteError(ValueError):
    """A suite file is invalid; the message names the file and every offending key."""


@dataclass
class Variant:
    """A model or a method of a task entry.

    Attributes:
        name: label used in job paths and tables.
        base: what the adapter is told (the method name, e.g. ``pskd`` for a label ``pskd-topk``).
        config: a model- or method-specific config file, or None.
        overrides: extra ``key: value`` overrides for this variant.
    """

    name: str
    base: str
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskEntry:
    """One entry of ``tasks:``: a task run on one data set with some models, methods and seeds."""

    name: str
    task: Task
    models: list[Variant]
    methods: list[Variant]
    seeds: list[int]
    settings: dict[str, Any]

    @property
    def baseline(self) -> str:
        return self.settings.get("baseline", self.task.baseline)


@dataclass
class Suite:
    """A validated suite."""

    name: str
    path: Path
    description: str
    entries: list[TaskEntry]
    jobs: int = 1
    executor: str = "local"
    nproc: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    budget_minutes: float | None = None
    text: str = ""


def list_suites() -> list[str]:
    """Names of the suites shipped in ``benchmarks/suites/``."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find_suite(name_or_path: str) -> Path:
    """Resolve a suite name (``mini``) or a path to a YAML file.

    Raises:
        SuiteError: if neither a file nor a shipped suite of that name exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise SuiteError(f"no suite {name_or_path!r}: not a file, and not one of {', '.join(list_suites())}")


def parse_duration(value: Any) -> float:
    """Seconds in a duration: a number (seconds) or a string like ``90s``, ``25m``, ``2h``, ``1h30m``, ``7d``.

    Raises:
        ValueError: if the value is not a positive duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = r"(\d+(?:\.\d+)?)\s*([dhms])"
        parts = re.findall(unit, text)
        if not parts or re.sub(unit, "", text).strip():
            raise ValueError(f"not a duration: {value!r} (use seconds or e.g. 90s, 25m, 2h, 1h30m, 7d)")
        seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


class _Checker:
    """Collects error messages with their key paths."""

    def __init__(self, path: Path):
        self.path = path
        self.errors: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}" if where else msg)

    def keys(self, obj: Any, allowed: set[str] | frozenset[str], where: str) -> bool:
        if not isinstance(obj, dict):
            self.err(where, f"must be a mapping, got {type(obj).__name__}")
            return False
        for key in obj:
            if key not in allowed:
                self.err(f"{where}.{key}" if where else str(key),
                         f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
        return True

    def raise_if_any(self) -> None:
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            raise SuiteError(f"invalid suite {self.path}:\n{lines}")


def _seeds(value: Any, where: str, c: _Checker) -> list[int]:
    # An integer n means seeds 0..n-1; a list names them.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            c.err(where, f"duplicate seeds in {value}")
        return list(value)
    c.err(where, f"must be a positive integer or a non-empty list of integers, got {value!r}")
    return []


def _variants(value: Any, where: str, kind: str, c: _Checker) -> list[Variant]:
    """Parse ``models:``/``methods:``: a list of names or of mappings ``{name, method|config, overrides}``."""
    if not isinstance(value, list) or not value:
        c.err(where, f"must be a non-empty list of {kind} names or mappings")
        return []
    out: list[Variant] = []
    allowed = METHOD_KEYS if kind == "method" else MODEL_KEYS
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if isinstance(item, str):
            out.append(Variant(name=item, base=item))
            continue
        if not c.keys(item, allowed, w):
            continue
        name = item.get("name")
        if not isinstance(name, str):
            c.err(w, "needs a 'name'")
            continue
        overrides = item.get("overrides", {})
        if not isinstance(overrides, dict):
            c.err(f"{w}.overrides", "must be a mapping")
            overrides = {}
        out.append(Variant(name=name, base=str(item.get("method", name)), config=item.get("config"),
                           overrides=dict(overrides)))
    names = [v.name for v in out]
    for v in out:
        if not NAME_RE.match(v.name):
            c.err(where, f"{kind} name {v.name!r} must be letters, digits and _.+- (it becomes a folder name)")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        c.err(where, f"duplicate {kind} {dup!r}")
    return out


def _entry(name: str, raw: Any, defaults: dict[str, Any], top_seeds: list[int] | None, c: _Checker
           ) -> TaskEntry | None:
    where = f"tasks.{name}"
    if not NAME_RE.match(str(name)):
        c.err(where, "task entry names must be letters, digits and _.+- (they become folder names)")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        c.err(where, f"must be a mapping, got {type(raw).__name__}")
        return None
    entry = {**defaults, **raw}
    task_name = entry.get("task", name)
    task = TASKS.get(task_name)
    if task is None:
        c.err(f"{where}.task", f"unknown task {task_name!r}; known: {', '.join(TASKS)}")
        return None
    c.keys(entry, ENTRY_KEYS | task.extra_keys, where)
    for key in ("data", "overrides", "env"):
        if key in entry and not isinstance(entry[key], dict):
            c.err(f"{where}.{key}", "must be a mapping")
    for key, spec in (entry.get("data") if isinstance(entry.get("data"), dict) else {}).items():
        if isinstance(spec, dict):
            if c.keys(spec, {"path", "hint"}, f"{where}.data.{key}") and not isinstance(spec.get("path"), str):
                c.err(f"{where}.data.{key}", "needs a 'path'")
        elif not isinstance(spec, str):
            c.err(f"{where}.data.{key}", "must be a path or a mapping {path, hint}")
    if "timeout" in entry:
        try:
            parse_duration(entry["timeout"])
        except ValueError as e:
            c.err(f"{where}.timeout", str(e))
    for key in ("epochs", "nproc"):
        v = entry.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            c.err(f"{where}.{key}", f"must be a positive integer, got {v!r}")
    for msg in task.validate(entry):
        c.err(where, msg)
    # A suite may leave out the baseline method: the report then shows no differences for that entry.
    models = _variants(entry.get("models", ["default"]), f"{where}.models", "model", c)
    methods = _variants(entry.get("methods"), f"{where}.methods", "method", c)
    for i, m in enumerate(methods):
        reason = task.check_method(m.base)
        if reason:
            c.err(f"{where}.methods[{i}]", reason)
    if "seeds" in entry:
        seeds = _seeds(entry["seeds"], f"{where}.seeds", c)
    elif top_seeds is not None:
        seeds = top_seeds
    else:
        seeds = [0]
    return TaskEntry(name=str(name), task=task, models=models, methods=methods, seeds=seeds, settings=entry)


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite.

    Args:
        name_or_path: a shipped suite's name (``mini``) or a path to a YAML file.

    Raises:
        SuiteError: naming the file and each unknown or invalid key, task or method.
    """
    path = find_suite(name_or_path)
    text = path.read_text(encoding="utf-8")
    c = _Checker(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"invalid suite {path}: not valid YAML: {e}") from None
    if not c.keys(raw, TOP_KEYS, ""):
        c.raise_if_any()
    top_seeds = _seeds(raw["seeds"], "seeds", c) if "seeds" in raw else None
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        c.err("defaults", "must be a mapping")
        defaults = {}
    tasks = raw.get("tasks")
    entries: list[TaskEntry] = []
    if not isinstance(tasks, dict) or not tasks:
        c.err("tasks", "must be a non-empty mapping of entry name -> settings")
    else:
        for name, entry_raw in tasks.items():
            entry = _entry(str(name), entry_raw, defaults, top_seeds, c)
            if entry is not None:
                entries.append(entry)
    executor = raw.get("executor", "local")
    if executor not in EXECUTORS:
        c.err("executor", f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    for key in ("jobs", "nproc"):
        v = raw.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            c.err(key, f"must be a positive integer, got {v!r}")
    slurm = raw.get("slurm") or {}
    c.keys(slurm, SLURM_KEYS, "slurm")
    c.raise_if_any()
    return Suite(name=str(raw.get("name", path.stem)), path=path.resolve(), description=str(raw.get("description", "")),
                 entries=entries, jobs=raw.get("jobs", 1), executor=executor, nproc=raw.get("nproc", 1),
                 slurm=dict(slurm), budget_minutes=raw.get("budget_minutes"), text=text)
