"""The PS-KD classification terms of the detection heads, normalised exactly like mmdet's stock losses.

Both heads keep mmdet's weighting: per-sample ``label_weights`` (0 for ignored anchors/RoIs) and the stock
``avg_factor``, through mmdet's own ``weight_reduce_loss``, so at a matched target the PS-KD term has the same
scale as the loss it replaces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss

from pskd.core.losses import quality_focal_loss, soft_cross_entropy

__all__ = ["roi_soft_ce_loss", "balanced_quality_focal_loss", "dense_soft_target_loss"]


def roi_soft_ce_loss(cls_score: torch.Tensor, teacher_score: torch.Tensor, label_weights: torch.Tensor,
                     avg_factor: float, loss_weight: float = 1.0) -> torch.Tensor:
    """Soft-CE of the student's RoI logits against the teacher's softmax over classes + background.

    Args:
        cls_score: (N, C + 1) student logits.
        teacher_score: (N, C + 1) teacher logits on the same RoIs.
        label_weights: (N,) the stock per-RoI weights.
        avg_factor: the stock normaliser (number of RoIs with a positive weight).
        loss_weight: the stock ``loss_cls.loss_weight``.
    """
    target = F.softmax(teacher_score.detach().float(), dim=-1)
    per_roi = soft_cross_entropy(cls_score, target, reduction="none")
    return loss_weight * weight_reduce_loss(per_roi, label_weights.float(), "mean", avg_factor)


def balanced_quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0,
                                alpha: float | None = None) -> torch.Tensor:
    """Element-wise quality focal loss, optionally with the focal loss' alpha balance.

    ``alpha=None`` is :func:`pskd.core.losses.quality_focal_loss`: ``|t - p|^beta * BCE(x, t)``. With ``alpha``
    the positive and negative parts are weighted like mmdet's FocalLoss:
    ``|t - p|^beta * (alpha * t * -log p + (1 - alpha) * (1 - t) * -log(1 - p))``. At one-hot targets this is
    exactly the sigmoid focal loss with ``gamma = beta``, so switching from the stock loss (a = 0) to PS-KD (a > 0)
    does not re-weight positives against negatives; and since ``|t - p|^beta`` vanishes only at ``p = t`` while the
    bracket stays positive, the minimum over ``p`` is still ``p = t`` for any soft target.
    """
    if alpha is None:
        return quality_focal_loss(logits, target, beta=beta, reduction="none")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"focal alpha must be in (0, 1), got {alpha}")
    x = logits.float()
    t = target.detach().float()
    modulator = (torch.sigmoid(x) - t).abs().pow(beta)
    # (1 - alpha) * BCE with pos_weight alpha / (1 - alpha) = alpha * t * -log p + (1 - alpha) * (1 - t) * -log(1-p)
    pos_weight = torch.tensor(alpha / (1.0 - alpha), device=x.device, dtype=x.dtype)
    bce = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")
    return (1.0 - alpha) * bce * modulator


def dense_soft_target_loss(cls_score: torch.Tensor, teacher_score: torch.Tensor, labels: torch.Tensor,
                           label_weights: torch.Tensor, alpha: float, avg_factor: float, beta: float = 2.0,
                           focal_alpha: float | None = 0.25, loss_weight: float = 1.0) -> torch.Tensor:
    """PS-KD loss of a sigmoid dense head: QFL against ``(1 - a) * onehot + a * sigmoid(teacher)``.

    Args:
        cls_score: (N, C) student logits, one row per anchor.
        teacher_score: (N, C) teacher logits at the same anchors.
        labels: (N,) stock labels; the background label is ``C`` (its one-hot row is all zeros).
        label_weights: (N,) stock anchor weights; 0 for ignored and invalid anchors, which stay ignored (their hard
            target is undefined, and keeping the stock mask keeps ``avg_factor`` meaningful).
        alpha: PS-KD alpha for this step.
        avg_factor: the stock normaliser (number of positive anchors for RetinaNet).
        beta: QFL exponent (the stock focal gamma).
        focal_alpha: the stock focal alpha balance, or None for plain QFL.
        loss_weight: the stock ``loss_cls.loss_weight``.
    """
    num_classes = cls_score.size(-1)
    onehot = F.one_hot(labels.long(), num_classes + 1)[:, :num_classes].float()
    target = (1.0 - alpha) * onehot + alpha * torch.sigmoid(teacher_score.detach().float())
    loss = balanced_quality_focal_loss(cls_score, target, beta=beta, alpha=focal_alpha)
    return loss_weight * weight_reduce_loss(loss, label_weights.float().view(-1, 1), "mean", avg_factor)
