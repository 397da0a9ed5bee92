"""Two-stage PS-KD: a StandardRoIHead whose RoI classification loss mixes in the snapshot teacher's softmax.

``loss_cls = (1 - a) * CE(labels) + a * soft-CE(softmax(teacher logits over classes + background))``, the teacher
being run under no_grad on the same batch (its own backbone and neck) and on the student's sampled RoIs. Proposal
generation, sampling, box regression and the accuracy metric are mmdet's, untouched. At a = 0 the stock code
path runs unchanged (the teacher is not even called).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from torch import Tensor

from pskd.core.losses import mix_with_kd
from .context import PSKDHeadMixin
from .errors import PSKDError
from .losses import roi_soft_ce_loss

__all__ = ["PSKDStandardRoIHead"]


@MODELS.register_module()
class PSKDStandardRoIHead(PSKDHeadMixin, StandardRoIHead):
    """:class:`mmdet.models.roi_heads.StandardRoIHead` with the PS-KD classification loss.

    Takes exactly StandardRoIHead's arguments; switch a config with ``model.roi_head.type='PSKDStandardRoIHead'``.
    Needs a softmax ``CrossEntropyLoss`` on the bbox head (the stock Faster R-CNN setting).
    """

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        super().init_bbox_head(bbox_roi_extractor, bbox_head)
        loss_cls = self.bbox_head.loss_cls
        problem = None
        if type(loss_cls) is not CrossEntropyLoss:
            problem = f"loss_cls is {type(loss_cls).__name__}"
        elif loss_cls.use_sigmoid or loss_cls.use_mask:
            problem = "loss_cls uses sigmoid/mask cross-entropy"
        elif loss_cls.class_weight is not None:
            problem = "loss_cls has a class_weight"
        elif getattr(self.bbox_head, "custom_cls_channels", False):
            problem = "the bbox head has custom classification channels"
        if problem is not None:
            raise PSKDError(
                f"model.roi_head.bbox_head ({type(self.bbox_head).__name__}): {problem}; PSKDStandardRoIHead needs a "
                "softmax CrossEntropyLoss over classes + background without class weights")

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: List[SamplingResult]) -> dict:
        alpha = self.pskd_alpha
        if alpha == 0.0:
            return super().bbox_loss(x, sampling_results)

        # The stock bbox_loss body, keeping the targets that it would drop: the KD term needs the same
        # label weights and normaliser as the stock CE.
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        loss_and_target = self.bbox_head.loss_and_target(
            cls_score=bbox_results["cls_score"], bbox_pred=bbox_results["bbox_pred"], rois=rois,
            sampling_results=sampling_results, rcnn_train_cfg=self.train_cfg)
        losses = loss_and_target["loss_bbox"]
        cls_score = bbox_results["cls_score"]
        if "loss_cls" in losses and cls_score.numel() > 0:
            _, label_weights = loss_and_target["bbox_targets"][:2]
            with torch.no_grad():
                teacher = self.pskd_context.teacher_model
                teacher_score = teacher.roi_head._bbox_forward(self.pskd_context.teacher_feats(), rois)["cls_score"]
            # the stock bbox head's own normaliser (BBoxHead.loss)
            avg_factor = max(torch.sum(label_weights > 0).float().item(), 1.0)
            kd = roi_soft_ce_loss(cls_score, teacher_score, label_weights, avg_factor,
                                  loss_weight=self.bbox_head.loss_cls.loss_weight)
            losses["loss_cls"] = mix_with_kd(losses["loss_cls"], kd, alpha)
        bbox_results.update(loss_bbox=losses)
        return bbox_results
