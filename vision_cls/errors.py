"""Errors that reach the user as one line (``pskd-cls: error: ...``) instead of a traceback."""
from __future__ import annotations

__all__ = ["PskdError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class PskdError(Exception):
    """Base class: a problem with the user's input or run, reported in one line with a non-zero exit."""

    exit_code = 2


class ConfigError(PskdError):
    """An unknown key, a bad value or an inconsistent combination in the configuration."""


class DataError(PskdError):
    """A data set that is missing, empty or malformed (labels outside [0, C), ...)."""


class CheckpointError(PskdError):
    """A checkpoint that is missing, unreadable or belongs to another model or data set."""


class TrainingError(PskdError):
    """A run that cannot continue (non-finite loss); earlier checkpoints are kept."""

    exit_code = 1
