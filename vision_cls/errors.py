"""The errors pskd-cls reports as one line (``pskd-cls: error: ...``): pskd's one hierarchy, from the core.

Re-exported so that adapter code and users can write ``from pskd.vision_cls import ConfigError``; the classes are
:mod:`pskd.core.errors`' own, so an error raised by the core and one raised here are caught by the same clause.
"""
from pskd.core.errors import CheckpointError, ConfigError, DataError, PskdError, TrainingError

__all__ = ["PskdError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]
