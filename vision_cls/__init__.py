"""pskd.vision_cls: image classification with PS-KD and its baselines (the ``pskd-cls`` command).

Modules: :mod:`.config` (schema, YAML, overrides), :mod:`.data` (data sets with sample ids), :mod:`.loader`
(batches, augmentation, CS-KD partners), :mod:`.models` (the paper's networks), :mod:`.train` (the trainer),
:mod:`.evaluate` (metrics JSON, reliability diagram), :mod:`.checkpoint` (atomic files), :mod:`.cli`.
"""
from .config import Config, load_config
from .errors import CheckpointError, ConfigError, DataError, PskdError, TrainingError

__all__ = ["Config", "load_config", "PskdError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]
