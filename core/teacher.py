"""Snapshot teacher: a frozen copy of the student taken at each epoch boundary.

For detection and translation a per-sample prediction table is impossible (anchors, RoIs and tokens change
between epochs), so ``p_{t-1}`` comes from the model as it was at the end of epoch t-1, run under no_grad on the
inputs the student sees. The copy is held in a plain attribute of this object, never registered as a submodule
of the student, so it stays out of ``parameters()``, the optimizer, DDP and the student's state dict.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["SnapshotTeacher", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / FSDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class SnapshotTeacher:
    """Frozen, eval-mode copy of a model, refreshed from the student once per epoch.

    Args:
        student: the model being trained (wrappers such as DDP are unwrapped).
    """

    def __init__(self, student: nn.Module | None = None):
        self.model: nn.Module | None = None
        self.epoch: int = -1  # epoch at whose start the snapshot was taken; -1: none yet
        if student is not None:
            self.refresh(student, epoch=0)

    @property
    def ready(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def refresh(self, student: nn.Module, epoch: int) -> None:
        """Copy the student's current weights and buffers into the teacher (allocating it on first use)."""
        src = unwrap_model(student)
        if self.model is None:
            # deepcopy keeps the architecture and device; grads are never needed on the teacher.
            self.model = copy.deepcopy(src)
            for p in self.model.parameters():
                p.requires_grad_(False)
        else:
            self.model.load_state_dict(src.state_dict())
        self.model.eval()
        self.epoch = int(epoch)

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        if self.model is None:
            raise RuntimeError("the snapshot teacher has not been taken yet: call refresh(student, epoch) first")
        self.model.eval()  # a caller's model.train() on the whole tree must not reach the teacher
        return self.model(*args, **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": None if self.model is None else self.model.state_dict()}

    def load_state_dict(self, state: dict, student: nn.Module | None = None) -> None:
        """Restore a teacher; ``student`` supplies the architecture when none has been built yet."""
        if "model" not in state or "epoch" not in state:
            raise KeyError("snapshot teacher state needs 'model' and 'epoch' entries")
        self.epoch = int(state["epoch"])
        if state["model"] is None:
            self.model = None
            return
        if self.model is None:
            if student is None:
                raise ValueError("restoring a snapshot teacher needs the student model for its architecture")
            self.refresh(student, self.epoch)
        self.model.load_state_dict(state["model"])
        self.model.eval()
