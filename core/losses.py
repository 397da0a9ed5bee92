"""Soft-target losses shared by every adapter.

All losses compute in float32 even under AMP: soft targets near 0/1 and log-probabilities lose too much in
half precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "soft_cross_entropy", "kd_kl_div", "soft_binary_cross_entropy", "quality_focal_loss", "mix_with_kd",
]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against a target distribution: ``sum_c -target_c * log_softmax(logits)_c`` per row.

    Args:
        logits: (..., C) unnormalised scores.
        target: (..., C) target distribution; treated as data (no gradient flows into it).
        reduction: 'mean' over rows (the paper's batch average), 'sum', or 'none' for per-row losses.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and soft targets {tuple(target.shape)} differ in shape")
    logp = F.log_softmax(logits.float(), dim=-1)
    loss = -(target.detach().float() * logp).sum(dim=-1)
    return _reduce(loss, reduction)


def kd_kl_div(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
              reduction: str = "mean") -> torch.Tensor:
    """Hinton-style ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per row (teacher detached)."""
    t = float(temperature)
    if t <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    loss = (log_p.exp() * (log_p - log_s)).sum(dim=-1) * (t * t)
    return _reduce(loss, reduction)


def soft_binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Element-wise sigmoid cross-entropy against soft targets in [0, 1]."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.detach().float(), reduction="none")
    return _reduce(loss, reduction)


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Quality focal loss (Li et al., GFL 2020): ``|target - sigmoid(x)|^beta * BCE(x, target)``, element-wise.

    Unlike the focal loss, its minimum over the prediction lies at ``sigmoid(x) = target`` for any soft target,
    which is what distilling soft targets into a sigmoid head needs.
    """
    x = logits.float()
    t = target.detach().float()
    modulator = (torch.sigmoid(x) - t).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none") * modulator
    return _reduce(loss, reduction)


def mix_with_kd(stock_loss: torch.Tensor, kd_loss: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * stock_loss + alpha * kd_loss``; exactly ``stock_loss`` when alpha is 0.

    Cross-entropy is linear in its target, so PS-KD's ``CE((1 - a) y + a p_teacher, p)`` equals this mix of the
    stock loss and a soft-CE term. At alpha 0 the stock loss is returned as is (not ``1.0 * x + 0.0 * y``), so a
    missing or non-finite KD term cannot leak into it and the result is bit-identical to the stock loss.
    """
    if alpha == 0 or kd_loss is None:
        if alpha != 0:
            raise ValueError(f"alpha is {alpha} but no KD loss was given")
        return stock_loss
    return (1.0 - alpha) * stock_loss + alpha * kd_loss
