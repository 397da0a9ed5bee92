"""``task: shell``: any command line that writes ``{out_dir}/metrics.json``.

Used by the tests (a python one-liner stands in for a training) and for plugging in an external trainer without
writing a task module. ``command`` is a list of argv lists (or one argv list); each string is formatted with
``{python}``, ``{out_dir}``, ``{seed}``, ``{method}``, ``{model}``, ``{epochs}``, ``{config}``, ``{prepare_dir}``
and ``{overrides}`` (the merged overrides as JSON); other braces are left alone, so python one-liners with dict
literals need no escaping. ``prepare_command`` (same shape) runs once per entry.
"""
from __future__ import annotations

import json
import re
import sys
from typing import Any

from .base import Command, JobContext, Task


def _argv_lists(value: Any) -> list[list[str]]:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [value]
    return [list(v) for v in (value or [])]


def _check_command(value: Any, key: str) -> list[str]:
    lists = _argv_lists(value) if isinstance(value, list) else None
    if not lists or not all(argv and all(isinstance(a, str) for a in argv) for argv in lists):
        return [f"{key} must be a list of strings or a list of such lists"]
    return []


class ShellTask(Task):
    """A task whose commands are given in the suite itself."""

    name = "shell"
    methods = None
    baseline = "ce"
    extra_keys = frozenset({"command", "prepare_command"})

    def validate(self, entry: dict[str, Any]) -> list[str]:
        errors = [] if "command" in entry else ["task 'shell' needs a 'command'"]
        if "command" in entry:
            errors += _check_command(entry["command"], "command")
        if "prepare_command" in entry:
            errors += _check_command(entry["prepare_command"], "prepare_command")
        return errors

    @staticmethod
    def _format(lists: list[list[str]], ctx: JobContext, name: str) -> list[Command]:
        fields = {
            "python": sys.executable, "out_dir": str(ctx.out_dir), "seed": ctx.seed, "method": ctx.method,
            "model": ctx.model, "epochs": "" if ctx.epochs is None else ctx.epochs, "config": ctx.config or "",
            "prepare_dir": str(ctx.prepare_dir or ""), "overrides": json.dumps(ctx.overrides, sort_keys=True),
        }
        pattern = re.compile(r"\{(" + "|".join(fields) + r")\}")
        return [Command([pattern.sub(lambda m: str(fields[m.group(1)]), a) for a in argv], distributed=True, name=name)
                for argv in lists]

    def prepare(self, ctx: JobContext) -> list[Command]:
        return self._format(_argv_lists(ctx.options.get("prepare_command")), ctx, "prepare")

    def commands(self, ctx: JobContext) -> list[Command]:
        return self._format(_argv_lists(ctx.options["command"]), ctx, "run")
