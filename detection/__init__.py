"""PS-KD for MMDetection 3.x, as a plugin: ``custom_imports=dict(imports=['pskd.detection'])``.

Importing this package registers, in mmdet's registries:

- ``PSKDHook`` (HOOKS): snapshot teacher, alpha schedule, teacher state in checkpoints;
- ``PSKDStandardRoIHead`` (MODELS): two-stage heads (Faster R-CNN), soft-CE on the student's RoIs;
- ``PSKDRetinaHead`` (MODELS): RetinaNet, quality focal loss against soft sigmoid targets.

Nothing of mmdet is copied: the classes subclass mmdet's and override only their classification losses.
"""
from .context import PSKDContext, PSKDHeadMixin
from .errors import PSKDError
from .hook import PSKDHook, find_pskd_heads
from .retina_head import PSKDRetinaHead
from .roi_head import PSKDStandardRoIHead

__all__ = [
    "PSKDContext", "PSKDError", "PSKDHeadMixin", "PSKDHook", "PSKDRetinaHead", "PSKDStandardRoIHead",
    "find_pskd_heads",
]
