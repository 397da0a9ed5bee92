"""Hard targets (one-hot, label-smoothed) and their progressive refinement with past predictions."""
from __future__ import annotations

import torch

__all__ = ["check_labels", "one_hot", "smooth_one_hot", "refine_targets"]


def check_labels(labels: torch.Tensor, num_classes: int, where: str = "labels") -> None:
    """Raise a one-line ValueError if any label lies outside ``[0, num_classes)``.

    Args:
        labels: integer class indices of any shape.
        num_classes: number of classes.
        where: what to call the labels in the message (a dataset or batch name).
    """
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{where}: label {bad} is outside [0, {num_classes}) for a {num_classes}-class model")


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot rows for integer ``labels`` (shape ``labels.shape + (num_classes,)``)."""
    check_labels(labels, num_classes)
    out = torch.zeros(*labels.shape, num_classes, dtype=dtype, device=labels.device)
    return out.scatter_(-1, labels.long().unsqueeze(-1), 1.0)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, eps: float, dtype: torch.dtype = torch.float32
                   ) -> torch.Tensor:
    """Label smoothing as in the paper's baseline: ``(1 - eps) * y + eps / K``."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1], got {eps}")
    return one_hot(labels, num_classes, dtype) * (1.0 - eps) + eps / num_classes


def refine_targets(hard: torch.Tensor, past: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """PS-KD target ``(1 - alpha) * hard + alpha * past``, detached.

    Args:
        hard: hard target distribution (one-hot or label-smoothed), shape (..., C).
        past: the model's predictions from the previous epoch, same shape.
        alpha: scalar or per-row tensor broadcastable to ``hard``.
    """
    if hard.shape != past.shape:
        raise ValueError(f"hard targets {tuple(hard.shape)} and past predictions {tuple(past.shape)} differ in shape")
    past = past.to(dtype=hard.dtype, device=hard.device)
    return ((1.0 - alpha) * hard + alpha * past).detach()
