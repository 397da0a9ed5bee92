"""PSKDHook on mmengine's RunnerTestCase: schedule, teacher refresh, checkpoints, isolation from the optimizer.

A toy detector (linear backbone + a PS-KD classification head) keeps these tests at a few seconds; the real mmdet
heads are tested in test_detection.py.
"""
from __future__ import annotations

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mmengine checkpoints under torch >= 2.6

import pytest  # noqa: E402

pytest.importorskip("mmdet")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import HOOKS as ENGINE_HOOKS  # noqa: E402
from mmengine.registry import MODELS as ENGINE_MODELS  # noqa: E402
from mmengine.testing import RunnerTestCase  # noqa: E402
from torch import nn  # noqa: E402

from pskd.core.losses import mix_with_kd, soft_cross_entropy  # noqa: E402
from pskd.detection import PSKDError, PSKDHeadMixin, PSKDHook  # noqa: E402


class ToyPSKDHead(PSKDHeadMixin, nn.Module):
    """Softmax classifier whose loss is PS-KD's mix, with the teacher's head run on the teacher's features."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.seen_alpha: list[float] = []

    def loss(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.fc(feats)
        stock = F.cross_entropy(logits, labels)
        alpha = self.pskd_alpha
        self.seen_alpha.append(alpha)
        if alpha == 0.0:
            return stock
        with torch.no_grad():
            teacher_logits = self.pskd_context.teacher_model.bbox_head.fc(self.pskd_context.teacher_feats())
        return mix_with_kd(stock, soft_cross_entropy(logits, teacher_logits.softmax(-1)), alpha)


class ToyDetector(BaseModel):
    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = nn.Linear(2, 2)
        self.bbox_head = ToyPSKDHead()

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(inputs)

    def forward(self, inputs, data_samples=None, mode="tensor"):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        feats = self.extract_feat(inputs)
        if mode == "loss":
            labels = torch.stack(data_samples).long() if isinstance(data_samples, list) else data_samples.long()
            return dict(loss=self.bbox_head.loss(feats, labels))
        return self.bbox_head.fc(feats)


class ToyPlainDetector(ToyDetector):
    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.bbox_head = nn.Linear(2, 3)  # a head without PS-KD support


class RecordTeacher(Hook):
    """Records, per epoch, the student's weights at epoch start and the teacher's weights during the epoch."""

    priority = "LOWEST"  # after PSKDHook's refresh

    def __init__(self):
        self.student_at_start: dict[int, dict] = {}
        self.teacher_during: dict[int, dict] = {}
        self.pskd: PSKDHook | None = None

    def before_train_epoch(self, runner) -> None:
        self.pskd = next(h for h in runner.hooks if isinstance(h, PSKDHook))
        self.student_at_start[runner.epoch] = {k: v.clone() for k, v in runner.model.state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.teacher_during[runner.epoch] = {k: v.clone() for k, v in self.pskd.teacher.model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestPSKDHook(RunnerTestCase):
    def setUp(self) -> None:
        super().setUp()
        ENGINE_MODELS.register_module(module=ToyDetector, force=True)
        ENGINE_MODELS.register_module(module=ToyPlainDetector, force=True)
        ENGINE_HOOKS.register_module(module=RecordTeacher, force=True)
        # PSKDHook lives in mmdet's registry: resolve names in mmdet's scope (toy modules fall back to mmengine's)
        self.epoch_based_cfg.default_scope = "mmdet"
        self.iter_based_cfg.default_scope = "mmdet"
        self.epoch_based_cfg.model = dict(type="ToyDetector")
        self.epoch_based_cfg.train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=10)
        self.epoch_based_cfg.custom_hooks = [dict(type="PSKDHook", alpha_T=0.8), dict(type="RecordTeacher")]
        self.iter_based_cfg.model = dict(type="ToyDetector")
        self.iter_based_cfg.custom_hooks = [dict(type="PSKDHook", alpha_T=0.8, refresh_interval=4)]

    def tearDown(self) -> None:
        for name in ("ToyDetector", "ToyPlainDetector"):
            ENGINE_MODELS.module_dict.pop(name, None)
        ENGINE_HOOKS.module_dict.pop("RecordTeacher", None)
        super().tearDown()

    def _hook(self, runner, cls=PSKDHook):
        return next(h for h in runner.hooks if isinstance(h, cls))

    def test_epoch_schedule_and_refresh(self):
        runner = self.build_runner(self.epoch_based_cfg)
        runner.train()
        head = runner.model.bbox_head
        per_epoch = [head.seen_alpha[i * 4] for i in range(4)]  # 12 samples / batch 3 = 4 iterations per epoch
        # epoch 0 has no previous epoch (target = label); then a_T * (e + 1) / E
        assert per_epoch == pytest.approx([0.0, 0.8 * 2 / 4, 0.8 * 3 / 4, 0.8])
        rec = self._hook(runner, RecordTeacher)
        for epoch in range(4):
            # the teacher of epoch e is the student as it was at the start of epoch e (= end of e - 1)
            assert _same(rec.teacher_during[epoch], rec.student_at_start[epoch])
        assert not _same(rec.teacher_during[3], rec.teacher_during[1])
        # the context is detached after training: no reference to the teacher stays in the model
        assert head.pskd_context is None

    def test_teacher_outside_model_optimizer_and_state_dict(self):
        runner = self.build_runner(self.epoch_based_cfg)
        runner.train()
        hook = self._hook(runner)
        teacher = hook.teacher.model
        assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
        teacher_ids = {id(p) for p in teacher.parameters()}
        optim_ids = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}
        assert not teacher_ids & optim_ids
        assert optim_ids == {id(p) for p in runner.model.parameters()}
        assert set(runner.model.state_dict()) == {"backbone.weight", "backbone.bias", "bbox_head.fc.weight",
                                                   "bbox_head.fc.bias"}

    def test_iteration_schedule(self):
        runner = self.build_runner(self.iter_based_cfg)
        runner.train()
        seen = runner.model.bbox_head.seen_alpha
        expected = [0.0 if i < 4 else 0.8 * (i + 1) / 12 for i in range(12)]
        assert seen == pytest.approx(expected)
        assert self._hook(runner).teacher.epoch == 2  # refreshed at iterations 0, 4 and 8

    def test_checkpoint_saves_and_resume_restores_teacher(self):
        cfg = self.epoch_based_cfg.copy()
        cfg.custom_hooks = [dict(type="PSKDHook", alpha_T=0.8)]
        cfg.default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=1))
        runner = self.build_runner(cfg)
        runner.train()
        ckpt = torch.load(os.path.join(self.temp_dir.name, "epoch_2.pth"), map_location="cpu", weights_only=False)
        saved = ckpt["pskd"]["teacher"]
        assert saved["epoch"] == 1 and ckpt["pskd"]["alpha_T"] == 0.8

        resume_cfg = cfg.copy()
        resume_cfg.resume = True
        resume_cfg.load_from = os.path.join(self.temp_dir.name, "epoch_2.pth")
        resumed = self.build_runner(resume_cfg)
        resumed.load_or_resume()
        teacher = self._hook(resumed).teacher
        assert teacher.epoch == 1
        assert _same(teacher.model.state_dict(), saved["model"])
        resumed.train()  # continues with epochs 2 and 3
        assert resumed.epoch == 4

    def test_resume_without_teacher_state_is_an_error(self):
        cfg = self.epoch_based_cfg.copy()
        cfg.custom_hooks = []
        cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=10)
        cfg.default_hooks = dict(checkpoint=dict(type="CheckpointHook", interval=1))
        self.build_runner(cfg).train()  # a run without PS-KD
        path = os.path.join(self.temp_dir.name, "epoch_1.pth")

        resume_cfg = self.epoch_based_cfg.copy()
        resume_cfg.custom_hooks = [dict(type="PSKDHook", alpha_T=0.8)]
        resume_cfg.resume, resume_cfg.load_from = True, path
        with pytest.raises(PSKDError, match="no PS-KD teacher state"):
            self.build_runner(resume_cfg).load_or_resume()

        # documented fallback: rebuild the teacher from the checkpoint's weights, with a warning
        resume_cfg.custom_hooks = [dict(type="PSKDHook", alpha_T=0.8, allow_missing_teacher=True)]
        runner = self.build_runner(resume_cfg)
        runner.train()
        assert self._hook(runner).teacher.epoch == 3

    def test_head_without_pskd_support_is_an_error(self):
        cfg = self.epoch_based_cfg.copy()
        cfg.model = dict(type="ToyPlainDetector")
        cfg.custom_hooks = [dict(type="PSKDHook")]
        with pytest.raises(PSKDError, match="no PS-KD head"):
            self.build_runner(cfg).train()

    def test_alpha_out_of_range_is_an_error(self):
        for bad in (1.5, -0.1, float("nan"), "x"):
            with pytest.raises(PSKDError, match="alpha_T"):
                PSKDHook(alpha_T=bad)
