"""State shared by :class:`~pskd.detection.hook.PSKDHook` and the PS-KD heads during one training run.

The hook owns the snapshot teacher and the schedule; the heads compute the losses. They meet in a
:class:`PSKDContext` that the hook attaches to every PS-KD head as a plain (non-module) attribute, so the teacher
never becomes a submodule of the student: it stays out of ``parameters()``, the optimizer, DDP and the student's
state dict.

The teacher must see the same inputs as the student. A detection head only receives features, so the context
records the preprocessed batch with a forward pre-hook on the student's backbone (the exact tensor the student's
``extract_feat`` consumes, after the data preprocessor and its batch augmentations) and runs the teacher's
backbone and neck on it at most once per training step, on demand.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any

import torch
from torch import nn

from pskd.core.teacher import SnapshotTeacher

__all__ = ["PSKDContext", "PSKDHeadMixin"]


def _capture_inputs(ctx_ref: weakref.ref, module: nn.Module, args: tuple) -> None:
    """Forward pre-hook body: remember the student backbone's input during a training forward pass."""
    ctx = ctx_ref()
    # Only training forwards with autograd feed a loss; validation (eval mode) and the teacher (always eval,
    # no_grad) must not overwrite the batch of the current step.
    if ctx is not None and module.training and torch.is_grad_enabled() and args:
        ctx.set_inputs(args[0])


class PSKDContext:
    """Teacher, current alpha and the current batch, as seen by the PS-KD heads.

    Args:
        teacher: the snapshot teacher (a frozen copy of the whole detector).
    """

    def __init__(self, teacher: SnapshotTeacher):
        self.teacher = teacher
        self.alpha: float = 0.0
        self._inputs: torch.Tensor | None = None
        self._feats: tuple[torch.Tensor, ...] | None = None
        self._handle: Any = None

    # deepcopy (e.g. the snapshot teacher copying the student while a context is attached) must not copy the
    # context, which holds the teacher itself: the copy's heads get ``None`` and compute stock losses.
    def __deepcopy__(self, memo: dict) -> None:
        return None

    def attach(self, detector: nn.Module, heads: list[nn.Module]) -> None:
        """Hook the detector's backbone and point the PS-KD heads at this context."""
        self.detach(detector, heads)
        # A weak reference inside a partial: a deepcopy of the backbone keeps a harmless hook pointing here.
        hook = functools.partial(_capture_inputs, weakref.ref(self))
        self._handle = detector.backbone.register_forward_pre_hook(hook)
        for head in heads:
            head.pskd_context = self

    def detach(self, detector: nn.Module, heads: list[nn.Module]) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for head in heads:
            if head.__dict__.get("pskd_context") is self:
                del head.pskd_context
        self.reset()

    def set_inputs(self, inputs: torch.Tensor) -> None:
        self._inputs = inputs
        self._feats = None

    def reset(self) -> None:
        """Forget the current batch (called after every training step so no tensor outlives its step)."""
        self._inputs = None
        self._feats = None

    @property
    def teacher_model(self) -> nn.Module:
        if not self.teacher.ready:
            raise RuntimeError("PS-KD teacher requested before the first snapshot was taken")
        model = self.teacher.model
        model.eval()  # a model.train() on some parent tree must never reach the teacher
        return model

    @torch.no_grad()
    def teacher_feats(self) -> tuple[torch.Tensor, ...]:
        """The teacher's backbone + neck features of the current batch (computed once per step)."""
        if self._feats is None:
            if self._inputs is None:
                raise RuntimeError(
                    "PS-KD head: no batch recorded for the teacher; the detector's backbone was not called in "
                    "training mode before the head's loss")
            self._feats = self.teacher_model.extract_feat(self._inputs)
        return self._feats


class PSKDHeadMixin:
    """Marks a head as PS-KD capable and gives it the current alpha and teacher through :class:`PSKDContext`.

    Without an attached context (no :class:`PSKDHook` in the config, or outside training) alpha is 0 and the head
    computes exactly its parent's stock loss.
    """

    pskd_context: PSKDContext | None = None

    @property
    def pskd_alpha(self) -> float:
        ctx = self.pskd_context
        if ctx is None or not ctx.teacher.ready:
            return 0.0
        return float(ctx.alpha)
