"""fairseq criterion ``ps_kd_label_smoothed_cross_entropy``: PS-KD on top of label-smoothed cross-entropy.

Per non-pad target token t, with ``LS_t`` the stock label-smoothed loss and ``KD_t = -sum_c p_prev(c) log p(c)``
the soft cross-entropy against the previous epoch's prediction for the same token::

    loss = sum_t [(1 - a) * LS_t + a * KD_t]     (tokens without a previous-epoch prediction: LS_t)

which is the cross-entropy against ``q = (1 - a) * LS-target + a * p_prev`` (cross-entropy is linear in its target).
``a`` follows the official schedule on fairseq's 1-based epochs, ``a_e = alpha_T * e / E`` with ``E = --max-epoch``;
without ``--max-epoch`` it grows per update, ``a = alpha_T * (u + 1) / --max-update``. Epoch 1 has no previous
epoch, so its loss is the stock loss (the official code starts from one-hot targets). The KD term and the top-k
store writes only happen in training (``model.training``); validation and ``a = 0`` run the stock code path, so the
loss is the stock criterion's bit for bit.

This module is the only place the criterion is registered; ``pskd_fairseq_plugin`` (the ``--user-dir`` folder)
imports it by its package name, so importing both never registers it twice.
"""
# No `from __future__ import annotations` here: fairseq reads the config dataclass's field types at runtime.
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig, label_smoothed_nll_loss,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from omegaconf import II

from pskd.core.schedules import check_alpha, linear_alpha, linear_alpha_per_update

from . import fairseq_glue
from .errors import PSKDError
from .teachers import SnapshotKD, TopKKD

__all__ = ["PSKDLabelSmoothedCrossEntropyConfig", "PSKDLabelSmoothedCrossEntropyCriterion", "CRITERION_NAME"]

CRITERION_NAME = "ps_kd_label_smoothed_cross_entropy"
TEACHER_MODES = ChoiceEnum(["snapshot", "topk"])
logger = logging.getLogger(__name__)


@dataclass
class PSKDLabelSmoothedCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    alpha_T: float = field(default=0.8, metadata={
        "help": "PS-KD's final alpha a_T in [0, 1] (the weight of the previous epoch's predictions in the target at "
                "the last epoch); 0 gives the stock label-smoothed criterion"})
    pskd_teacher: TEACHER_MODES = field(default="snapshot", metadata={
        "help": "where the previous epoch's predictions come from: 'snapshot' (a frozen copy of the model taken at "
                "the start of each epoch, one extra forward pass) or 'topk' (each token's top-k predictions of the "
                "previous epoch, memory-mapped on disk, no extra forward pass)"})
    pskd_topk: int = field(default=8, metadata={"help": "predictions kept per target token in topk mode"})
    pskd_store_path: Optional[str] = field(default=None, metadata={
        "help": "folder of the topk store (default: <save-dir>/pskd_topk_store); it must stay beside the "
                "checkpoints that refer to it"})
    # Read from the rest of the configuration: the schedule's length and where things live.
    max_epoch: int = II("optimization.max_epoch")
    max_update: int = II("optimization.max_update")
    save_dir: str = II("checkpoint.save_dir")
    train_subset: str = II("dataset.train_subset")


@register_criterion(CRITERION_NAME, dataclass=PSKDLabelSmoothedCrossEntropyConfig)
class PSKDLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed cross-entropy whose target is progressively refined with the model's own past predictions.

    The teacher (snapshot copy or top-k store) is held in a plain attribute, never as a submodule: the criterion
    keeps no parameters, so fairseq neither optimises it, wraps it in DDP, nor saves it as "criterion"; its state
    goes into the checkpoint's ``task_state["pskd"]`` (see :mod:`pskd.translation.fairseq_glue`).
    """

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 alpha_T=0.8, pskd_teacher="snapshot", pskd_topk=8, pskd_store_path=None, max_epoch=0,
                 max_update=0, save_dir="checkpoints", train_subset="train"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size=ignore_prefix_size,
                         report_accuracy=report_accuracy)
        try:
            self.alpha_T = check_alpha(alpha_T, "--alpha-T")
        except ValueError as err:
            raise PSKDError(str(err)) from None
        self.mode = str(pskd_teacher)
        self.max_epoch, self.max_update = int(max_epoch or 0), int(max_update or 0)
        self.train_subset = train_subset
        if self.alpha_T > 0 and self.max_epoch <= 0 and self.max_update <= 0:
            raise PSKDError("PS-KD's alpha schedule needs the run's length: set --max-epoch (epoch schedule) or "
                            "--max-update (per-update schedule)")
        if self.mode == "snapshot":
            self.impl = SnapshotKD()
        elif self.mode == "topk":
            if pskd_topk < 1:
                raise PSKDError(f"--pskd-topk must be >= 1, got {pskd_topk}")
            path = pskd_store_path or os.path.join(save_dir or ".", "pskd_topk_store")
            self.impl = TopKKD(path, pskd_topk)
        else:
            raise PSKDError(f"--pskd-teacher must be 'snapshot' or 'topk', got {pskd_teacher!r}")
        self.epoch: int | None = None  # fairseq epoch in progress (1-based); None before the first begin_epoch
        self.num_updates = 0
        self.ignore_grad = False
        fairseq_glue.install_load_watch()
        fairseq_glue.attach(task, self)

    # ------------------------------------------------------------------------------------------ schedule
    @property
    def active(self) -> bool:
        """Whether PS-KD does anything at all (False at alpha_T = 0: the stock criterion, no teacher, no store)."""
        return self.alpha_T > 0

    def alpha(self) -> float:
        """a for the current step; 0 while there is no previous epoch to learn from."""
        if not self.active or not self.impl.ready:
            return 0.0
        if self.max_epoch > 0:
            return linear_alpha(self.alpha_T, self.epoch - 1, self.max_epoch)
        return linear_alpha_per_update(self.alpha_T, self.num_updates, self.max_update)

    def set_step(self, update_num: int, ignore_grad: bool) -> None:
        """Called by the task's train_step hook before each (sub-)batch."""
        self.num_updates, self.ignore_grad = int(update_num), bool(ignore_grad)

    # ------------------------------------------------------------------------------------------ epochs
    def begin_epoch(self, epoch: int, model) -> None:
        """Take the snapshot / swap the store at an epoch boundary, or restore them on a resume."""
        if not self.active:
            self.epoch = epoch
            return
        first = self.epoch is None
        path, saved = fairseq_glue.take_loaded_state() if first else (None, None)
        if first:
            path, saved = self._share_resume_state(path, saved)
        if not first:
            if epoch == self.epoch:
                return
            if epoch != self.epoch + 1:
                raise PSKDError(f"epoch jumped from {self.epoch} to {epoch}; PS-KD needs consecutive epochs")
            how = "next"
        elif epoch == 1:
            how = "resume" if saved and saved.get("epoch") == 1 else "fresh"
        else:
            if saved is None:
                where = path or "(none loaded)"
                raise PSKDError(f"checkpoint {where} resumes at epoch {epoch} but has no PS-KD teacher "
                                "state (not trained with this criterion?); use --reset-dataloader to start PS-KD at "
                                "epoch 1")
            if saved.get("mode") != self.mode:
                raise PSKDError(f"checkpoint {path} was trained with --pskd-teacher {saved.get('mode')}, this run "
                                f"uses {self.mode}")
            if saved.get("epoch") == epoch:
                how = "resume"
            elif saved.get("epoch") == epoch - 1:
                how = "next"
            else:
                raise PSKDError(f"checkpoint {path}'s PS-KD state is from epoch {saved.get('epoch')}, but training "
                                f"resumes at epoch {epoch}")
        self.impl.begin_epoch(epoch, model, how, saved, self)
        self.epoch = epoch
        logger.info("PS-KD (%s teacher) epoch %d (%s): alpha_T=%g, previous-epoch predictions %s", self.mode, epoch,
                    how, self.alpha_T, "in use" if self.impl.ready else "not available yet")

    @staticmethod
    def _share_resume_state(path, saved):
        """Only the rank that read the checkpoint saw its PS-KD entry: give it to every data-parallel rank."""
        from fairseq.distributed import utils as dist_utils

        _, world_size, group = fairseq_glue.data_parallel()
        if world_size <= 1:
            return path, saved
        return dist_utils.broadcast_object((path, saved), src_rank=0, group=group)

    def pskd_state_dict(self) -> dict[str, Any]:
        """What goes into the checkpoint's ``task_state["pskd"]`` (plain dicts and tensors)."""
        state = {"version": 1, "mode": self.mode, "epoch": self.epoch, "alpha_T": self.alpha_T}
        if self.active:
            state.update(self.impl.state_dict())
        return state

    # ------------------------------------------------------------------------------------------ loss
    def forward(self, model, sample, reduce=True):
        if not (model.training and self.active):  # validation / PS-KD off: the stock criterion, bit for bit
            return super().forward(model, sample, reduce=reduce)
        if self.epoch is None:
            raise RuntimeError("the PS-KD criterion trained before any epoch began: call begin_epoch(epoch, model) "
                               "(fairseq's trainer does this through the task's begin_epoch hook)")
        net_output = model(**sample["net_input"])
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        cache: dict = {}
        alpha = self.alpha()
        if alpha > 0:
            loss, nll_loss, kd_sum, kd_tokens = self._mixed_loss(model, sample, lprobs, target, alpha, reduce, cache)
        else:
            loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps, ignore_index=self.padding_idx,
                                                     reduce=reduce)
            kd_sum, kd_tokens = 0.0, 0
        if not self.ignore_grad:  # a dummy batch (uneven shards) repeats a batch already seen: do not record it
            self.impl.observe(self, sample, lprobs, target, cache)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            # Summed over workers and steps by fairseq, so log alpha weighted by sample size and divide later.
            "pskd_alpha": alpha * sample_size,
            "pskd_kd": kd_sum,
            "pskd_kd_tokens": kd_tokens,
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def _mixed_loss(self, model, sample, lprobs, target, alpha, reduce, cache):
        """Per-token ``(1 - a) LS_t + a KD_t`` (``LS_t`` where no previous prediction exists), summed."""
        lprobs_sum = lprobs.sum(-1)
        pad = target.eq(self.padding_idx)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).masked_fill(pad, 0.0)
        smooth = (-lprobs_sum).masked_fill(pad, 0.0)
        eps_i = self.eps / (lprobs.size(-1) - 1)  # the stock criterion's smoothing (fairseq >= 0.12.3)
        ls = (1.0 - self.eps - eps_i) * nll + eps_i * smooth
        kd, has = self.impl.kd(self, model, sample, lprobs, target, lprobs_sum, cache)
        has = has & ~pad
        kd = kd.masked_fill(~has, 0.0)
        loss = torch.where(has, (1.0 - alpha) * ls + alpha * kd, ls)
        kd_sum, kd_tokens = kd.detach().sum(), int(has.sum())
        if reduce:
            return loss.sum(), nll.sum(), kd_sum, kd_tokens
        return loss.unsqueeze(-1), nll.unsqueeze(-1), kd_sum, kd_tokens

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if not any("pskd_alpha" in log for log in logging_outputs):
            return  # validation: no PS-KD entries
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs if "pskd_alpha" in log)
        alpha = sum(log.get("pskd_alpha", 0) for log in logging_outputs)
        if sample_size > 0:
            metrics.log_scalar("alpha", utils.item(alpha) / utils.item(sample_size), sample_size, round=4)
        kd_tokens = sum(log.get("pskd_kd_tokens", 0) for log in logging_outputs)
        if kd_tokens > 0:
            kd = sum(log.get("pskd_kd", 0) for log in logging_outputs)
            metrics.log_scalar("kd_loss", utils.item(kd) / kd_tokens / math.log(2), kd_tokens, round=3)
