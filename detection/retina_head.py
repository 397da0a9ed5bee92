"""One-stage PS-KD: a RetinaHead whose classification loss uses the snapshot teacher's sigmoid as soft target.

Target at every anchor the stock loss trains: ``(1 - a) * onehot + a * sigmoid(teacher logits)`` (background
anchors have an all-zero one-hot row), learned with a quality focal loss whose minimum is at ``p = target``; the
plain focal loss has no such property for soft targets. The QFL keeps the stock focal ``alpha`` balance and uses
``beta = gamma``, so it equals the stock focal loss at one-hot targets; anchor assignment, ignored anchors, the
``avg_factor`` normalisation and box regression are mmdet's. At a = 0 the stock focal-loss path runs unchanged.
"""
from __future__ import annotations

from collections import deque
from typing import List

import torch
from mmdet.models.dense_heads import RetinaHead
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor

from .context import PSKDHeadMixin
from .errors import PSKDError
from .losses import dense_soft_target_loss

__all__ = ["PSKDRetinaHead"]


@MODELS.register_module()
class PSKDRetinaHead(PSKDHeadMixin, RetinaHead):
    """:class:`mmdet.models.dense_heads.RetinaHead` with the PS-KD soft-target classification loss.

    Takes RetinaHead's arguments plus:

    Args:
        pskd_focal_alpha: ``'stock'`` (default) to keep the stock FocalLoss alpha balance in the QFL, or None for
            the unbalanced QFL of GFL (the core's ``quality_focal_loss``).
    """

    def __init__(self, *args, pskd_focal_alpha: str | None = "stock", **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.loss_cls) is not FocalLoss or not self.loss_cls.use_sigmoid or self.loss_cls.activated:
            raise PSKDError(
                f"model.bbox_head.loss_cls is {type(self.loss_cls).__name__}: PSKDRetinaHead needs mmdet's sigmoid "
                "FocalLoss (use_sigmoid=True, activated=False)")
        if pskd_focal_alpha not in ("stock", None):
            raise PSKDError(f"model.bbox_head.pskd_focal_alpha must be 'stock' or None, got {pskd_focal_alpha!r}")
        self.pskd_focal_alpha = pskd_focal_alpha
        self._pskd_levels: deque | None = None
        self._pskd_step_alpha = 0.0

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict], batch_gt_instances_ignore: OptInstanceList = None) -> dict:
        alpha = self.pskd_alpha
        if alpha == 0.0:
            return super().loss_by_feat(cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                                        batch_gt_instances_ignore)
        with torch.no_grad():
            teacher = self.pskd_context.teacher_model
            teacher_scores = teacher.bbox_head(self.pskd_context.teacher_feats())[0]
        if [t.shape for t in teacher_scores] != [s.shape for s in cls_scores]:
            raise RuntimeError("PS-KD teacher and student classification maps differ in shape")
        # AnchorHead.loss_by_feat computes the targets and maps loss_by_feat_single over the levels in order
        # (multi_apply); feeding the teacher's maps level by level through a queue reuses it without copying it.
        self._pskd_levels = deque(teacher_scores)
        self._pskd_step_alpha = alpha
        try:
            losses = super().loss_by_feat(cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                                          batch_gt_instances_ignore)
            if self._pskd_levels:
                raise RuntimeError("PS-KD: not every teacher level was consumed by loss_by_feat_single")
        finally:
            self._pskd_levels = None
        return losses

    def loss_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, anchors: Tensor, labels: Tensor,
                            label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
                            avg_factor: int) -> tuple:
        loss_cls, loss_bbox = super().loss_by_feat_single(cls_score, bbox_pred, anchors, labels, label_weights,
                                                          bbox_targets, bbox_weights, avg_factor)
        if self._pskd_levels is None:
            return loss_cls, loss_bbox
        teacher_score = self._pskd_levels.popleft()
        channels = self.cls_out_channels
        focal = self.loss_cls
        loss_cls = dense_soft_target_loss(
            cls_score.permute(0, 2, 3, 1).reshape(-1, channels),
            teacher_score.permute(0, 2, 3, 1).reshape(-1, channels),
            labels.reshape(-1), label_weights.reshape(-1), alpha=self._pskd_step_alpha, avg_factor=avg_factor,
            beta=focal.gamma, focal_alpha=focal.alpha if self.pskd_focal_alpha == "stock" else None,
            loss_weight=focal.loss_weight)
        return loss_cls, loss_bbox
