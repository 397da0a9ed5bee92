"""The exceptions every pskd entry point turns into a one-line message and a non-zero exit."""
from __future__ import annotations

__all__ = ["PskdError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class PskdError(ValueError):
    """A problem with the user's input or run; the message names the file or field and says what to do.

    It subclasses ``ValueError`` so callers that already catch bad values keep working, and takes one message
    argument because mmengine's registry re-raises build errors as ``type(e)(prefixed_message)``.
    """

    exit_code = 2


class ConfigError(PskdError):
    """An unknown key, a bad value or an inconsistent combination in a configuration."""


class DataError(PskdError):
    """A data set that is missing, empty or malformed (labels outside [0, C), no annotations, ...)."""


class CheckpointError(PskdError):
    """A checkpoint or store that is missing, unreadable, or belongs to another model or data set."""


class TrainingError(PskdError):
    """A run that cannot continue (a non-finite loss); earlier checkpoints are kept."""

    exit_code = 1
