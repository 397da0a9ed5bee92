"""PS-KD's mmdet plugin: losses against the stock mmdet losses, a real mini training, resume, bad input, plugin load.

Mini trainings use the real data fetched by ``python scripts/fetch_data.py`` (data/fmnist-det: real Fashion-MNIST
objects in synthetic scenes); they are skipped with that hint when it is missing.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mmengine checkpoints under torch >= 2.6

import pytest  # noqa: E402

pytest.importorskip("mmdet")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MessageHub, MMLogger  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.visualization import Visualizer  # noqa: E402

from pskd.core.teacher import SnapshotTeacher  # noqa: E402
from pskd.detection import PSKDContext, PSKDHook, find_pskd_heads  # noqa: E402
from pskd.detection.cli import epoch_history  # noqa: E402
from pskd.detection.cli import main as cli_main  # noqa: E402
from pskd.detection.losses import balanced_quality_focal_loss, dense_soft_target_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "detection"
FMNIST = ROOT / "data" / "fmnist-det" / "annotations" / "train.json"
needs_data = pytest.mark.skipif(not FMNIST.is_file(), reason="mini data missing: run python scripts/fetch_data.py")

# A few images and iterations: enough to run every code path (epoch 0 stock, epoch 1 with the teacher) and mAP.
TINY = {"train_dataloader.dataset.indices": 16, "val_dataloader.dataset.indices": 8,
        "test_dataloader.dataset.indices": 8, "train_dataloader.batch_size": 8, "train_cfg.max_epochs": 2,
        "train_cfg.val_interval": 2, "default_hooks.checkpoint.interval": 1,
        "default_hooks.checkpoint.max_keep_ckpts": 3, "default_hooks.logger.interval": 1}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture(autouse=True)
def _fresh_mmengine_globals():
    """Each Runner registers global singletons (logger, visualizer, message hub, scope); start every test clean."""
    yield
    for cls in (MMLogger, Visualizer, MessageHub, DefaultScope):
        cls._instance_dict.clear()


def _model_cfg(name: str, **head_type) -> dict:
    cfg = Config.fromfile(str(CONFIGS / name))
    model = copy.deepcopy(cfg.model)
    for path, type_ in head_type.items():
        model[path]["type"] = type_
    return model


def _build(model_cfg: dict) -> torch.nn.Module:
    register_all_modules()
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.train()


def _batch(model, num_classes: int, seed: int = 0):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(batch_size=2, image_shapes=(3, 128, 128), num_items=[3, 2], num_classes=num_classes)
    return model.data_preprocessor(packed, True)


def _losses(model, data, seed: int = 1) -> dict:
    torch.manual_seed(seed)  # RPN proposal sampling and RoI sampling draw random numbers
    return model.loss(data["inputs"], data["data_samples"])


def _with_teacher(model, teacher_from=None, noise: float = 0.0) -> PSKDContext:
    teacher = SnapshotTeacher(teacher_from or model)
    if noise:
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in teacher.model.parameters():
                p.add_(noise * torch.randn(p.shape, generator=gen))
    ctx = PSKDContext(teacher)
    ctx.attach(model, find_pskd_heads(model))
    return ctx


def _assert_equal_losses(a: dict, b: dict, keys=None) -> None:
    keys = keys or a.keys()
    for k in keys:
        va, vb = a[k], b[k]
        for x, y in zip(va if isinstance(va, list) else [va], vb if isinstance(vb, list) else [vb]):
            assert torch.equal(x, y), f"{k}: {x} != {y}"


# ---------------------------------------------------------------------------------------------- two-stage head
def test_roi_head_alpha_zero_is_stock_loss():
    stock = _build(_model_cfg("mini_faster-rcnn_fmnist-det.py"))
    pskd = _build(_model_cfg("mini_faster-rcnn_fmnist-det_pskd.py"))
    assert type(pskd.roi_head).__name__ == "PSKDStandardRoIHead"
    pskd.load_state_dict(stock.state_dict())
    data = _batch(stock, 10)
    ref = _losses(stock, data)
    _assert_equal_losses(ref, _losses(pskd, data))  # no hook at all
    ctx = _with_teacher(pskd, noise=0.1)
    ctx.alpha = 0.0
    _assert_equal_losses(ref, _losses(pskd, data))  # hook attached, a = 0
    assert ctx._feats is None  # ... and the teacher was never run


def test_roi_head_kd_term_from_first_principles():
    model = _build(_model_cfg("mini_faster-rcnn_fmnist-det_pskd.py"))
    data = _batch(model, 10)
    ctx = _with_teacher(model, noise=0.05)
    captured = {}
    model.roi_head.bbox_head.register_forward_hook(lambda m, i, o: captured.__setitem__("student", o[0].detach()))
    ctx.teacher.model.roi_head.bbox_head.register_forward_hook(
        lambda m, i, o: captured.__setitem__("teacher", o[0].detach()))
    by_alpha = {}
    for alpha in (0.0, 0.5, 1.0):
        ctx.alpha = alpha
        by_alpha[alpha] = _losses(model, data)
        ctx.reset()
    # sampling, regression, accuracy and the RPN are untouched
    for alpha in (0.5, 1.0):
        _assert_equal_losses(by_alpha[0.0], by_alpha[alpha], ["loss_bbox", "acc", "loss_rpn_cls", "loss_rpn_bbox"])
    # a = 1: mean over the sampled RoIs (all weight 1) of -sum_c softmax(teacher)_c * log_softmax(student)_c
    s, t = captured["student"], captured["teacher"]
    assert s.shape == t.shape and s.shape[1] == 11  # 10 classes + background, same RoIs
    expected = -(torch.softmax(t, -1) * torch.log_softmax(s, -1)).sum(-1).mean()
    torch.testing.assert_close(by_alpha[1.0]["loss_cls"], expected)
    # the loss is (1 - a) * CE + a * soft-CE
    torch.testing.assert_close(by_alpha[0.5]["loss_cls"], 0.5 * (by_alpha[0.0]["loss_cls"] + by_alpha[1.0]["loss_cls"]))


# ---------------------------------------------------------------------------------------------- one-stage head
def test_retina_head_alpha_zero_is_stock_loss():
    stock = _build(_model_cfg("mini_retinanet_fmnist-det.py"))
    pskd = _build(_model_cfg("mini_retinanet_fmnist-det_pskd.py"))
    assert type(pskd.bbox_head).__name__ == "PSKDRetinaHead"
    pskd.load_state_dict(stock.state_dict())
    data = _batch(stock, 10)
    ref = _losses(stock, data)
    _assert_equal_losses(ref, _losses(pskd, data))
    ctx = _with_teacher(pskd, noise=0.1)
    ctx.alpha = 0.0
    _assert_equal_losses(ref, _losses(pskd, data))
    assert ctx._feats is None


def test_retina_head_soft_targets():
    # norm_eval: BN uses running statistics in train mode too, so a teacher with the student's weights gives
    # exactly the student's outputs
    cfg = _model_cfg("mini_retinanet_fmnist-det_pskd.py")
    cfg["backbone"]["norm_eval"] = True
    model = _build(cfg)
    data = _batch(model, 10)
    stock = _losses(model, data)
    ctx = _with_teacher(model)
    # a -> 0: the balanced QFL meets the stock focal loss (same anchors, ignore mask, avg_factor, all levels)
    ctx.alpha = 1e-7
    tiny = _losses(model, data)
    for a, b in zip(tiny["loss_cls"], stock["loss_cls"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    _assert_equal_losses(stock, tiny, ["loss_bbox"])
    # a = 1 with teacher == student: the target is the model's own sigmoid, the QFL optimum: loss exactly 0
    ctx.alpha = 1.0
    ctx.reset()
    at_optimum = _losses(model, data)
    for level in at_optimum["loss_cls"]:
        assert level.item() == 0.0
    # a different teacher gives a positive loss, still with untouched regression
    ctx.detach(model, find_pskd_heads(model))
    ctx = _with_teacher(model, noise=0.05)
    ctx.alpha = 0.5
    other = _losses(model, data)
    assert all(level.item() > 0 for level in other["loss_cls"])
    _assert_equal_losses(stock, other, ["loss_bbox"])


def test_balanced_qfl_is_focal_at_one_hot_and_minimal_at_target():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=gen) * 3
    onehot = F.one_hot(torch.randint(0, 6, (64,), generator=gen), 6)[:, :5].float()
    ours = balanced_quality_focal_loss(logits, onehot, beta=2.0, alpha=0.25)
    stock = py_sigmoid_focal_loss(logits, onehot, gamma=2.0, alpha=0.25, reduction="none")
    torch.testing.assert_close(ours, stock)
    # optimum at p = target for soft targets: zero loss and zero gradient there, positive elsewhere
    target = torch.rand(64, 5, generator=gen)
    at_target = torch.logit(target).requires_grad_()
    loss = balanced_quality_focal_loss(at_target, target, alpha=0.25).sum()
    loss.backward()
    assert loss.item() < 1e-10 and at_target.grad.abs().max() < 1e-5
    assert (balanced_quality_focal_loss(at_target.detach() + 0.3, target, alpha=0.25) > 0).all()
    # unweighted anchors are ignored; normalisation by avg_factor
    labels = torch.tensor([0, 5, 2, 5])
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0])
    s, t = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    got = dense_soft_target_loss(s, t, labels, weights, alpha=0.3, avg_factor=2.0, focal_alpha=0.25)
    target = 0.7 * F.one_hot(labels, 6)[:, :5] + 0.3 * torch.sigmoid(t)
    p = torch.sigmoid(s)
    manual = (p - target).abs() ** 2 * (-0.25 * target * torch.log(p) - 0.75 * (1 - target) * torch.log(1 - p))
    torch.testing.assert_close(got, (manual.sum(-1) * weights).sum() / 2.0)


# ---------------------------------------------------------------------------------------------- real trainings
def _train(tmp_path: Path, config: str, *extra: str, out: bool = True) -> int:
    args = ["train", str(CONFIGS / config), "--work-dir", str(tmp_path), "--seed", "0",
            "--cfg-options", *TINY_ARGS, *extra]
    if out:
        args += ["--out", str(tmp_path / "metrics.json")]
    return cli_main(args)


@needs_data
@pytest.mark.slow
def test_mini_training_computes_map_and_test_writes_metrics(tmp_path):
    assert _train(tmp_path, "mini_faster-rcnn_fmnist-det_pskd.py") == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["task"] == "detection" and record["config"].endswith("mini_faster-rcnn_fmnist-det_pskd.py")
    assert 0.0 <= record["metrics"]["mAP"] <= 1.0 and 0.0 <= record["metrics"]["mAP_50"] <= 1.0
    ckpt = torch.load(tmp_path / "epoch_2.pth", map_location="cpu", weights_only=False)
    assert ckpt["pskd"]["teacher"]["epoch"] == 1  # epoch 1 ran with the snapshot taken at its start
    assert not any("teacher" in k for k in ckpt["state_dict"])

    out = tmp_path / "test" / "m.json"
    assert cli_main(["test", str(CONFIGS / "mini_faster-rcnn_fmnist-det_pskd.py"), str(tmp_path / "epoch_2.pth"),
                     "--work-dir", str(tmp_path / "test"), "--out", str(out),
                     "--cfg-options", "test_dataloader.dataset.indices=8"]) == 0
    tested = json.loads(out.read_text())
    assert tested["metrics"]["mAP"] == pytest.approx(record["metrics"]["mAP"])
    assert not list(out.parent.glob(".m.json.*"))  # the temporary file was renamed away
    # per-epoch curves for the harness's plots: mean training loss and PS-KD's alpha (0 while no teacher exists)
    assert [h["epoch"] for h in record["history"]] == [0, 1]
    assert record["history"][0]["alpha"] == 0.0 and record["history"][-1]["alpha"] == pytest.approx(0.8)
    assert record["history"][-1]["val_mAP"] == pytest.approx(record["metrics"]["mAP"])


def test_epoch_history_from_mmengine_scalars(tmp_path):
    rows = [{"loss": 2.0, "pskd_alpha": 0.0, "epoch": 1, "iter": 1, "step": 1},
            {"loss": 1.0, "pskd_alpha": 0.0, "epoch": 1, "iter": 2, "step": 2},
            {"coco/bbox_mAP": 0.1, "coco/bbox_mAP_50": 0.3, "coco/bbox_mAP_l": -1.0, "step": 1},
            {"loss": 0.5, "pskd_alpha": 0.4, "epoch": 2, "iter": 3, "step": 3}]
    path = tmp_path / "scalars.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"loss": 0.2, "ep')  # last line cut by a crash
    assert epoch_history(str(path)) == [{"epoch": 0, "train_loss": 1.5, "alpha": 0.0, "val_mAP": 0.1,
                                         "val_mAP_50": 0.3},
                                        {"epoch": 1, "train_loss": 0.5, "alpha": 0.4}]
    assert epoch_history(str(tmp_path / "missing.json")) == []
    iter_based = tmp_path / "iters.json"  # IterBasedTrainLoop: no epochs, validation keyed by iteration
    iter_based.write_text(json.dumps({"loss": 1.0, "iter": 500, "step": 500}) + "\n"
                          + json.dumps({"coco/bbox_mAP": 0.2, "step": 500}) + "\n")
    assert epoch_history(str(iter_based)) == []


@needs_data
@pytest.mark.slow
def test_resume_restores_teacher(tmp_path):
    config = "mini_retinanet_fmnist-det_pskd.py"
    assert _train(tmp_path, config, out=False) == 0
    saved = torch.load(tmp_path / "epoch_1.pth", map_location="cpu", weights_only=False)["pskd"]["teacher"]

    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Probe(Hook):
        priority = "HIGHEST"  # before_train runs after the resume has loaded everything

        def before_train(self, runner) -> None:
            teacher = next(h for h in runner.hooks if isinstance(h, PSKDHook)).teacher
            self.epoch = teacher.epoch
            self.state = {k: v.clone() for k, v in teacher.model.state_dict().items()}

    cfg = Config.fromfile(str(CONFIGS / config))
    cfg.merge_from_dict(TINY)
    cfg.work_dir, cfg.resume, cfg.load_from = str(tmp_path / "resumed"), True, str(tmp_path / "epoch_1.pth")
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    runner.train()  # resumes into epoch 1, whose teacher is refreshed from the resumed weights
    assert probe.epoch == saved["epoch"] == 0
    assert probe.state.keys() == saved["model"].keys()
    assert all(torch.equal(probe.state[k], saved["model"][k]) for k in saved["model"])
    # the epoch-1 teacher of the resumed run is the one of the uninterrupted run
    first = torch.load(tmp_path / "epoch_2.pth", map_location="cpu", weights_only=False)["pskd"]["teacher"]
    again = torch.load(tmp_path / "resumed" / "epoch_2.pth", map_location="cpu", weights_only=False)["pskd"]["teacher"]
    assert first["epoch"] == again["epoch"] == 1
    assert all(torch.equal(first["model"][k], again["model"][k]) for k in first["model"])


# ---------------------------------------------------------------------------------------------- bad input
def _cli_error(capsys, args) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pskd-det: error: "), err
    return err[0]


@needs_data
def test_bad_input_one_line_errors(tmp_path, capsys):
    pskd_cfg = str(CONFIGS / "mini_faster-rcnn_fmnist-det_pskd.py")
    work = ["--work-dir", str(tmp_path / "w")]
    assert "alpha_T must be in [0, 1]" in _cli_error(
        capsys, ["train", pskd_cfg, *work, "--cfg-options", "custom_hooks.0.alpha_T=1.5"])
    assert "model.roi_head.type=StandardRoIHead" in _cli_error(
        capsys, ["train", pskd_cfg, *work, "--cfg-options", "model.roi_head.type=StandardRoIHead"])
    msg = _cli_error(capsys, ["train", pskd_cfg, *work, "--cfg-options",
                              "train_dataloader.dataset.ann_file=annotations/nope.json"])
    assert "train_dataloader.dataset.ann_file" in msg and "nope.json" in msg
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
                                 "annotations": [], "categories": [{"id": 1, "name": "Tree"}]}))
    assert "no boxes" in _cli_error(capsys, ["train", pskd_cfg, *work, "--cfg-options",
                                             f"train_dataloader.dataset.ann_file={empty}"])
    baseline_ckpt = tmp_path / "baseline.pth"
    torch.save({"meta": {"epoch": 1, "iter": 2}, "state_dict": {}}, baseline_ckpt)
    assert "no PS-KD teacher state" in _cli_error(capsys, ["train", pskd_cfg, *work, "--resume", str(baseline_ckpt)])
    assert "not found" in _cli_error(capsys, ["train", str(tmp_path / "missing.py")])
    # a failing test run leaves an existing metrics file alone
    out = tmp_path / "metrics.json"
    out.write_text("previous")
    assert "not found" in _cli_error(capsys, ["test", pskd_cfg, str(tmp_path / "none.pth"), "--out", str(out), *work])
    assert out.read_text() == "previous"
    assert not (tmp_path / "w").exists()  # every error came before the Runner wrote anything


# ---------------------------------------------------------------------------------------------- plugin loading
@needs_data
def test_stock_runner_loads_plugin_through_custom_imports(tmp_path):
    """What mmdet's tools/train.py does: Config.fromfile + Runner.from_cfg + train, nothing imported from pskd first."""
    code = f"""
import sys
from mmengine.config import Config
from mmengine.runner import Runner
assert 'pskd.detection' not in sys.modules
cfg = Config.fromfile({str(CONFIGS / 'mini_faster-rcnn_fmnist-det_pskd.py')!r})
assert 'pskd.detection' in sys.modules  # custom_imports did it
cfg.work_dir = {str(tmp_path)!r}
cfg.train_dataloader.dataset.indices = 8  # one iteration per epoch: epoch 1 runs with the teacher
cfg.val_dataloader.dataset.indices = 8  # mmengine validates after the last epoch
cfg.train_cfg.max_epochs = 2
runner = Runner.from_cfg(cfg)
assert type(runner.model.roi_head).__name__ == 'PSKDStandardRoIHead'
assert [type(h).__name__ for h in runner.hooks].count('PSKDHook') == 1
runner.train()
assert runner.message_hub.get_scalar('train/pskd_alpha').current() == 0.8
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
