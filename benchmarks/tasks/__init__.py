"""Task registry: one module per adapter command line (cls, det, mt) plus ``shell`` for custom commands."""
from __future__ import annotations

from .base import Command, JobContext, Task
from .cls import ClassificationTask
from .det import DetectionTask
from .mt import TranslationTask
from .shell import ShellTask

TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(), DetectionTask(), TranslationTask(), ShellTask())}

__all__ = ["TASKS", "Command", "JobContext", "Task"]
