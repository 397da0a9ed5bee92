"""What every task module provides: how to turn one resolved job into the adapter's command lines.

A task module knows one adapter's command line and nothing else; changing an adapter's CLI touches one file.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Command", "JobContext", "Task", "console_script"]


@dataclass
class Command:
    """One subprocess of a job.

    Attributes:
        argv: the command line; ``argv[0]`` is a console script (``pskd-cls``) or an executable path.
        distributed: the command trains a model and may be started under ``torchrun`` (one process per GPU).
        name: short label for logs (``train``, ``test``, ``prepare``).
    """

    argv: list[str]
    distributed: bool = False
    name: str = "run"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "argv": list(self.argv), "distributed": self.distributed}


@dataclass
class JobContext:
    """Everything a task module needs to build one job's commands.

    Attributes:
        out_dir: the job's own directory; the adapter writes ``out_dir/metrics.json`` there.
        model, method, seed: the job's coordinates (``method`` is the adapter's method, e.g. ``pskd+cutmix``).
        config: the adapter config file (the model's, else the entry's; resolved to an absolute path), or None.
        method_config: the method variant's own config file, or None (the task decides how it combines).
        epochs: number of epochs, or None for the config's own.
        data: data paths by name (absolute).
        overrides: merged ``key: value`` overrides (task < model < method).
        nproc: processes per job (GPUs); the task may add a distributed-launcher flag when > 1.
        prepare_dir: the task's shared preparation directory (data binarised once for all jobs), or None.
        options: the task entry's task-specific keys (see ``Task.extra_keys``).
    """

    out_dir: Path
    model: str
    method: str
    seed: int
    config: str | None = None
    method_config: str | None = None
    epochs: int | None = None
    data: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    nproc: int = 1
    prepare_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


def console_script(name: str) -> str:
    """Path of a console script, preferring the one next to the running interpreter.

    ``make bench`` may run with the venv's python but without the venv on PATH; the adapters' scripts live next
    to that python. Falls back to the bare name (resolved through PATH when the job runs).
    """
    local = Path(sys.executable).parent / name
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name) or name


def format_value(value: Any) -> str:
    """Render an override value for a ``key=value`` command-line argument (YAML-style booleans and lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


class Task:
    """Base class of a task: the suite keys it accepts and the commands it runs.

    Attributes:
        name: the ``task:`` value in a suite.
        methods: the base method names the adapter knows (None: any name is accepted).
        baseline: the method the report compares every other method with.
        extra_keys: suite keys this task accepts besides the common ones.
        metrics_order: the metrics shown first in tables, in this order.
    """

    name: str = ""
    methods: tuple[str, ...] | None = None
    baseline: str = ""
    extra_keys: frozenset[str] = frozenset()
    metrics_order: tuple[str, ...] = ()

    def check_method(self, method: str) -> str | None:
        """None if the adapter knows ``method``, else a one-line reason."""
        if self.methods is None or method in self.methods:
            return None
        return f"unknown method {method!r} for task {self.name!r}; known: {', '.join(self.methods)}"

    def clean_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The metrics to aggregate from an adapter's ``metrics.json`` (default: all of them)."""
        return metrics

    def validate(self, entry: dict[str, Any]) -> list[str]:
        """Task-specific checks of a suite entry; returns messages (empty when valid)."""
        return []

    def prepare(self, ctx: JobContext) -> list[Command]:
        """Commands run once per suite entry before its jobs (e.g. binarising a corpus); none by default."""
        return []

    def commands(self, ctx: JobContext) -> list[Command]:
        """The job's commands, in order; the last one must leave ``ctx.out_dir / 'metrics.json'``."""
        raise NotImplementedError
