"""Target policies: every compared method behind one interface.

A policy is told a batch's logits, labels and sample ids and returns the loss; after the optimizer step it may
remember something (``observe``); at the end of an epoch it may roll its memory over (``end_epoch``).

===============  ==========================================================================================
``ce``           cross-entropy with one-hot targets
``ls``           label smoothing, ``(1 - eps) y + eps / K``
``cs_kd``        class-wise self-KD (Yun et al. 2020): CE + lambda T^2 KL(p(x'/T) || p(x/T)), x' same class
``tf_kd_self``   teacher-free KD with a pre-trained copy of the network as teacher (Yuan et al. 2020)
``tf_kd_reg``    teacher-free KD with a virtual teacher putting ``correct_prob`` on the true class
``pskd``         progressive self-KD: CE against ``(1 - a_t) y + a_t p_{t-1}``
===============  ==========================================================================================

Every policy combines with CutMix: it builds per-sample target distributions and mixes them with
:func:`pskd.core.cutmix.mix_targets` the same way the images were mixed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cutmix import Mix, mix_targets
from .losses import soft_cross_entropy
from .schedules import AlphaSchedule, check_alpha
from .stores import PredictionStore
from .targets import check_labels, one_hot, smooth_one_hot

__all__ = ["TargetPolicy", "CrossEntropy", "LabelSmoothing", "CSKD", "TFKDSelf", "TFKDReg", "PSKD",
           "build_policy", "METHODS"]


class TargetPolicy:
    """Base policy: plain cross-entropy against (possibly mixed) one-hot targets.

    Attributes:
        needs_partner: the data loader must supply a same-class partner batch (CS-KD).
        needs_teacher: the trainer must supply logits of a fixed pre-trained teacher (TF-KD self).
        needs_sample_ids: the loader must supply dataset indices (PS-KD's store).
    """

    name = "ce"
    needs_partner = False
    needs_teacher = False
    needs_sample_ids = False

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)

    def hard_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return one_hot(labels, self.num_classes)

    def alpha(self, epoch: int) -> float:
        """The weight of self-knowledge at ``epoch`` (0 for methods without it); for logging."""
        return 0.0

    def targets(self, labels: torch.Tensor, sample_ids: torch.Tensor | None, epoch: int) -> torch.Tensor:
        """Per-sample target distributions (B, C) before any mixing."""
        return self.hard_targets(labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None,
             epoch: int = 0, *, mix: Mix | None = None, partner_logits: torch.Tensor | None = None,
             teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss for one batch.

        Args:
            logits: (B, C) student outputs for the (possibly CutMix-ed) batch.
            labels: (B,) integer labels of the un-mixed samples.
            sample_ids: (B,) dataset indices (PS-KD only).
            epoch: 0-based epoch.
            mix: the CutMix applied to this batch, if any.
            partner_logits: CS-KD's outputs on the same-class partner batch.
            teacher_logits: TF-KD self's pre-trained teacher outputs on the same batch.
        """
        check_labels(labels, self.num_classes, "training batch")
        target = self.targets(labels.to(logits.device), sample_ids, epoch).to(logits.device)
        return soft_cross_entropy(logits, mix_targets(target, mix))

    def observe(self, sample_ids: torch.Tensor | None, logits: torch.Tensor, mix: Mix | None = None) -> None:
        """Called after the optimizer step with the same forward pass's logits."""

    def end_epoch(self) -> None:
        """Called once after the last step of every epoch."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CrossEntropy(TargetPolicy):
    name = "ce"


class LabelSmoothing(TargetPolicy):
    """Label smoothing with ``eps`` (the paper's baseline uses 0.1)."""

    name = "ls"

    def __init__(self, num_classes: int, eps: float = 0.1):
        super().__init__(num_classes)
        self.eps = float(eps)

    def hard_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return smooth_one_hot(labels, self.num_classes, self.eps)


def _kl_elementwise_mean(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
                         ) -> torch.Tensor:
    """``nn.KLDivLoss()`` with its legacy default ``reduction='mean'`` (averaged over all B*C elements), which is
    what the TF-KD reference code uses and what its published multipliers are tuned for."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = teacher_probs.detach().float()
    return (t * (torch.log(t.clamp_min(1e-12)) - log_s)).mean()


class CSKD(TargetPolicy):
    """Class-wise self-KD: ``CE(x) + lambda * T^2 * KL(softmax(f(x')/T) || softmax(f(x)/T))``.

    ``x'`` is another training sample of the same class (the loader pairs them); no gradient flows through
    ``f(x')``. With CutMix, the partner distribution is mixed with the same permutation and area.
    """

    name = "cs_kd"
    needs_partner = True

    def __init__(self, num_classes: int, temperature: float = 4.0, lam: float = 1.0):
        super().__init__(num_classes)
        self.temperature, self.lam = float(temperature), float(lam)

    def loss(self, logits, labels, sample_ids=None, epoch=0, *, mix=None, partner_logits=None, teacher_logits=None):
        ce = super().loss(logits, labels, sample_ids, epoch, mix=mix)
        if partner_logits is None:
            raise ValueError("cs_kd needs partner_logits (outputs on same-class partner samples)")
        t = self.temperature
        partner = mix_targets(F.softmax(partner_logits.detach().float() / t, dim=-1), mix)
        kl = (partner * (torch.log(partner.clamp_min(1e-12)) - F.log_softmax(logits.float() / t, -1))).sum(-1)
        return ce + self.lam * t * t * kl.mean()


class TFKDSelf(TargetPolicy):
    """Teacher-free KD, "self" form: ``(1 - a) CE + a * T^2 * multiplier * KL(teacher/T || student/T)``.

    The teacher is a pre-trained copy of the same network (the trainer supplies its logits). Defaults are the
    published ResNet-18 / CIFAR-100 values (a 0.95, T 6, multiplier 50).
    """

    name = "tf_kd_self"
    needs_teacher = True

    def __init__(self, num_classes: int, alpha: float = 0.95, temperature: float = 6.0, multiplier: float = 50.0):
        super().__init__(num_classes)
        self.a, self.temperature, self.multiplier = check_alpha(alpha, "tf_kd alpha"), float(temperature), \
            float(multiplier)
        # Hinton's form: both sides softened by T and the KL scaled by T^2.
        self.student_temperature, self.kd_scale = self.temperature, self.temperature ** 2

    def alpha(self, epoch: int) -> float:
        return self.a

    def _teacher_probs(self, labels, teacher_logits):
        if teacher_logits is None:
            raise ValueError("tf_kd_self needs teacher_logits from the pre-trained teacher")
        return F.softmax(teacher_logits.detach().float() / self.temperature, dim=-1)

    def loss(self, logits, labels, sample_ids=None, epoch=0, *, mix=None, partner_logits=None, teacher_logits=None):
        ce = super().loss(logits, labels, sample_ids, epoch, mix=mix)
        teacher = mix_targets(self._teacher_probs(labels.to(logits.device), teacher_logits), mix)
        kd = _kl_elementwise_mean(logits, teacher, self.student_temperature) * self.multiplier * self.kd_scale
        return (1.0 - self.a) * ce + self.a * kd


class TFKDReg(TFKDSelf):
    """Teacher-free KD, "reg" form: a virtual teacher with ``correct_prob`` on the true class, the rest uniform,
    softened by ``softmax(teacher / T)`` and compared with the student at T = 1, as in the reference code; defaults are the published ResNet-18 values
    (a 0.1, T 20, multiplier 100)."""

    name = "tf_kd_reg"
    needs_teacher = False

    def __init__(self, num_classes: int, alpha: float = 0.1, temperature: float = 20.0, multiplier: float = 100.0,
                 correct_prob: float = 0.99):
        super().__init__(num_classes, alpha, temperature, multiplier)
        self.correct_prob = float(correct_prob)
        # The reference code softens only the virtual teacher; the student's log-softmax is at T = 1, no T^2.
        self.student_temperature, self.kd_scale = 1.0, 1.0

    def _teacher_probs(self, labels, teacher_logits):
        k = self.num_classes
        virtual = one_hot(labels, k) * (self.correct_prob - (1 - self.correct_prob) / (k - 1)) \
            + (1 - self.correct_prob) / (k - 1)
        return F.softmax(virtual / self.temperature, dim=-1)


class PSKD(TargetPolicy):
    """Progressive self-knowledge distillation.

    Target at epoch t: ``(1 - a_t) * y + a_t * p_{t-1}``, where ``p_{t-1}`` is the softmax this model gave the same
    sample in the previous epoch (read from ``store``; the hard label where the store has no row yet, i.e. the
    whole first epoch) and ``a_t`` follows ``schedule``. ``y`` is one-hot, or label-smoothed with ``ls_eps > 0``.

    On CutMix-ed batches nothing is written to the store: a prediction on a mixed image is not this sample's
    prediction, so the row keeps its last un-mixed value.
    """

    name = "pskd"
    needs_sample_ids = True

    def __init__(self, num_classes: int, store: PredictionStore, schedule: AlphaSchedule, ls_eps: float = 0.0):
        super().__init__(num_classes)
        if store.num_classes != num_classes:
            raise ValueError(f"prediction store has {store.num_classes} classes, the model {num_classes}")
        self.store, self.schedule, self.ls_eps = store, schedule, float(ls_eps)

    def hard_targets(self, labels: torch.Tensor) -> torch.Tensor:
        if self.ls_eps > 0:
            return smooth_one_hot(labels, self.num_classes, self.ls_eps)
        return one_hot(labels, self.num_classes)

    def alpha(self, epoch: int) -> float:
        return self.schedule(epoch=epoch)

    def targets(self, labels, sample_ids, epoch):
        if sample_ids is None:
            raise ValueError("pskd needs the dataset's sample ids with every batch")
        hard = self.hard_targets(labels)
        past, valid = self.store.gather(sample_ids)
        past = past.to(hard.device)
        past = torch.where(valid.to(hard.device)[:, None], past, one_hot(labels, self.num_classes))
        a = self.alpha(epoch)
        return (1.0 - a) * hard + a * past

    def observe(self, sample_ids, logits, mix=None):
        if mix is None:
            self.store.write(sample_ids, F.softmax(logits.detach().float(), dim=-1))

    def end_epoch(self) -> None:
        self.store.end_epoch()

    def state_dict(self) -> dict:
        return {"store": self.store.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "store" not in state:
            raise KeyError("PS-KD state has no prediction store")
        self.store.load_state_dict(state["store"])


METHODS = {cls.name: cls for cls in (CrossEntropy, LabelSmoothing, CSKD, TFKDSelf, TFKDReg, PSKD)}


def build_policy(method: str, num_classes: int, **kwargs) -> TargetPolicy:
    """Factory by method name; ``kwargs`` go to the policy's constructor (PS-KD needs ``store`` and
    ``schedule``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](num_classes, **kwargs)
