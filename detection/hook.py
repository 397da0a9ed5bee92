"""PSKDHook: the snapshot teacher and the alpha schedule of PS-KD on mmengine's Runner.

At the start of every training epoch the hook copies the student into a frozen, eval-mode snapshot teacher
(``p_{t-1}`` = the model as it was at the end of epoch t-1) and sets ``a_t = a_T * (e + 1) / E``. There is no
previous epoch in epoch 0, so its target is the label (the official code's store starts one-hot) and its loss is
the stock loss. With an iteration-based loop the teacher is refreshed every ``refresh_interval`` iterations and
alpha grows per update (``core.schedules.linear_alpha_per_update``).

The teacher is held by this hook (and reached by the heads through :class:`~pskd.detection.context.PSKDContext`),
never registered as a submodule: mmengine's model wrapper, the optimizer and the student's state dict never see it.
Its state goes into ``checkpoint['pskd']`` so that a resume is exact, also mid-epoch.
"""
from __future__ import annotations

from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmdet.registry import HOOKS
from torch import nn

from pskd.core.schedules import check_alpha, linear_alpha, linear_alpha_per_update
from pskd.core.teacher import SnapshotTeacher, unwrap_model
from .context import PSKDContext, PSKDHeadMixin
from .errors import PSKDError

__all__ = ["PSKDHook", "find_pskd_heads"]

CKPT_KEY = "pskd"


def find_pskd_heads(detector: nn.Module) -> list[nn.Module]:
    """The PS-KD capable heads of a detector."""
    return [m for m in detector.modules() if isinstance(m, PSKDHeadMixin)]


def _head_names(detector: nn.Module) -> str:
    names = [f"model.{n}.type={type(getattr(detector, n)).__name__}" for n in ("roi_head", "bbox_head")
             if isinstance(getattr(detector, n, None), nn.Module)]
    return ", ".join(names) or f"model.type={type(detector).__name__} (no roi_head/bbox_head)"


@HOOKS.register_module()
class PSKDHook(Hook):
    """Progressive self-knowledge distillation for mmdet detectors with a PS-KD head.

    Args:
        alpha_T: final alpha, in [0, 1].
        refresh_interval: iteration-based loops only: iterations between teacher refreshes (an "epoch");
            defaults to the length of the training dataloader.
        allow_missing_teacher: when resuming from a checkpoint without PS-KD state, rebuild the teacher from the
            checkpoint's weights with a warning instead of failing. This is exact for checkpoints saved at an
            epoch boundary (the teacher of the next epoch is that model), not for mid-epoch ones.
    """

    priority = "NORMAL"

    def __init__(self, alpha_T: float = 0.8, refresh_interval: Optional[int] = None,
                 allow_missing_teacher: bool = False):
        try:
            self.alpha_T = check_alpha(alpha_T, name="custom_hooks.PSKDHook.alpha_T")
        except ValueError as err:
            raise PSKDError(str(err)) from None
        if refresh_interval is not None and int(refresh_interval) <= 0:
            raise PSKDError(f"custom_hooks.PSKDHook.refresh_interval must be positive, got {refresh_interval}")
        self.refresh_interval = None if refresh_interval is None else int(refresh_interval)
        self.allow_missing_teacher = bool(allow_missing_teacher)
        self.teacher = SnapshotTeacher()
        self.context = PSKDContext(self.teacher)
        self._heads: list[nn.Module] = []
        self._by_epoch = True

    # ---------------------------------------------------------------- run boundaries
    def before_train(self, runner) -> None:
        student = unwrap_model(runner.model)
        heads = find_pskd_heads(student)
        if not heads:
            raise PSKDError(
                f"custom_hooks has PSKDHook but the model has no PS-KD head ({_head_names(student)}); use "
                "roi_head type='PSKDStandardRoIHead' (two-stage) or bbox_head type='PSKDRetinaHead' (RetinaNet)")
        if not hasattr(student, "extract_feat") or not isinstance(getattr(student, "backbone", None), nn.Module):
            raise PSKDError(f"model.type={type(student).__name__}: PS-KD needs a detector with backbone/extract_feat")
        self._by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        if not self._by_epoch and self.refresh_interval is None:
            self.refresh_interval = max(len(runner.train_dataloader), 1)
        # Build the teacher before attaching the context, so the copy is made from a clean student.
        if not self.teacher.ready:
            self.teacher.refresh(student, epoch=self._period(runner))
        self._heads = heads
        self.context.attach(student, heads)
        print_log(f"PS-KD: alpha_T={self.alpha_T}, "
                  + (f"epoch schedule over {runner.max_epochs} epochs" if self._by_epoch else
                     f"per-update schedule over {runner.max_iters} iterations, teacher refreshed every "
                     f"{self.refresh_interval} iterations")
                  + f", heads: {', '.join(type(h).__name__ for h in heads)}", logger="current")

    def after_train(self, runner) -> None:
        self.context.detach(unwrap_model(runner.model), self._heads)
        self._heads = []

    # ---------------------------------------------------------------- schedule
    def _period(self, runner) -> int:
        """The teacher period index: the epoch, or the iteration block of an iteration-based loop."""
        if self._by_epoch:
            return runner.epoch
        return runner.iter // self.refresh_interval

    def _alpha(self, runner, period: int) -> float:
        if period == 0:
            return 0.0  # no previous epoch yet: the target is the label (p_{-1} = y)
        if self._by_epoch:
            return linear_alpha(self.alpha_T, runner.epoch, runner.max_epochs)
        return linear_alpha_per_update(self.alpha_T, runner.iter, runner.max_iters)

    def _maybe_refresh(self, runner) -> None:
        period = self._period(runner)
        if self.teacher.epoch != period:
            # A teacher restored from a mid-period checkpoint already is this period's snapshot: keep it.
            self.teacher.refresh(unwrap_model(runner.model), epoch=period)
        self.context.alpha = self._alpha(runner, period)

    def before_train_epoch(self, runner) -> None:
        if self._by_epoch:
            self._maybe_refresh(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self._by_epoch:
            self._maybe_refresh(runner)
        runner.message_hub.update_scalar("train/pskd_alpha", self.context.alpha)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.context.reset()

    # ---------------------------------------------------------------- checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = {"version": 1, "alpha_T": self.alpha_T, "teacher": self.teacher.state_dict()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.load_checkpoint also serves `load_from` (weights for a new run, or for testing): a new run takes
        # its own snapshots, so only a resume restores the teacher.
        if not getattr(runner, "_resume", False):
            return
        state = checkpoint.get(CKPT_KEY)
        if state is None:
            if not self.allow_missing_teacher:
                raise PSKDError(
                    f"resume checkpoint {getattr(runner, '_load_from', None) or '(latest in work_dir)'} has no PS-KD "
                    f"teacher state ('{CKPT_KEY}' entry): it was not saved by a run with PSKDHook; set "
                    "custom_hooks PSKDHook allow_missing_teacher=True to rebuild the teacher from its weights")
            print_log("PS-KD: the resume checkpoint has no teacher state; the teacher is rebuilt from the loaded "
                      "weights at the next refresh (exact only for checkpoints saved at an epoch boundary)",
                      logger="current", level=30)
            self.teacher = SnapshotTeacher()
            self.context.teacher = self.teacher
            return
        if float(state.get("alpha_T", self.alpha_T)) != self.alpha_T:
            print_log(f"PS-KD: resuming with alpha_T={self.alpha_T}, the checkpoint used {state['alpha_T']}",
                      logger="current", level=30)
        # The checkpoint's model weights are loaded into the student after this hook; the student here only
        # supplies the architecture for the teacher copy.
        self.teacher.load_state_dict(state["teacher"], student=unwrap_model(runner.model))
