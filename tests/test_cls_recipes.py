"""Every recipe in configs/cls loads, states the paper's settings, and trains for one step on random tensors of its
data set's shape (CIFAR-100: 3x32x32, 100 classes; ImageNet: 3x224x224, 1000 classes) with the real network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pskd.vision_cls.train as train_module
from pskd.vision_cls.config import load_config
from pskd.vision_cls.train import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cls"
CIFAR = sorted(p for p in (CONFIGS / "cifar100").glob("*_*.yaml"))
IMAGENET = sorted((CONFIGS / "imagenet").glob("resnet152_*.yaml"))
MODELS = ["preact_resnet18", "resnet101_cifar", "densenet121_cifar", "resnext29_8x64d", "pyramidnet200_a240"]
METHODS = ["ce", "ls", "cs_kd", "tf_kd_reg", "pskd"]
SHAPE = {"cifar100": (32, 100), "imagenet": (224, 1000)}


def test_every_reference_row_has_a_recipe():
    assert sorted(p.stem for p in CIFAR) == sorted(f"{m}_{k}" for m in MODELS for k in METHODS)
    assert sorted(p.stem for p in IMAGENET) == sorted(f"resnet152_{k}" for k in METHODS)


_last_model: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    _last_model.clear()


@pytest.fixture
def shared_models(monkeypatch):
    """Build each network once for the five recipes that use it (recipes run grouped by model): building
    ResNet-152 costs more than its training step on a CPU."""
    real = train_module.build_model

    def build(name, num_classes, in_channels=3):
        key = (name, num_classes, in_channels)
        if key not in _last_model:
            _last_model.clear()
            _last_model[key] = real(name, num_classes, in_channels)
        return _last_model[key]

    monkeypatch.setattr(train_module, "build_model", build)


@pytest.mark.parametrize("path", CIFAR + IMAGENET, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_trains_one_step(path, shared_models):
    cfg = load_config([str(path)])
    model, method = path.stem.split("_", 1) if path.parent.name == "imagenet" else \
        (next(m for m in MODELS if path.stem.startswith(m)), path.stem[len(next(m for m in MODELS
                                                                               if path.stem.startswith(m))) + 1:])
    assert (cfg.model.name, cfg.method.name) == (model, method)
    assert cfg.train.out_dir == f"runs/{path.parent.name}/{path.stem}"
    if path.parent.name == "cifar100":  # REFERENCE.md section 2
        assert (cfg.data.name, cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.momentum,
                cfg.optim.nesterov, cfg.optim.weight_decay, cfg.optim.milestones, cfg.optim.gamma) == \
            ("cifar100", 300, 128, 0.1, 0.9, True, 5e-4, [150, 225], 0.1)
        assert (cfg.data.augment, cfg.data.crop_padding) == ("crop_flip", 4)
        if method == "pskd":
            assert cfg.method.alpha_T == 0.8
    else:
        assert (cfg.data.name, cfg.train.batch_size, cfg.data.augment) == ("imagenet", 256, "imagenet")
    size, classes = SHAPE[cfg.data.name]
    smoke = load_config([str(path)], ["data.name=random", "data.random_size=2", f"data.image_size={size}",
                                      f"data.num_classes={classes}", "data.channels=3", "data.val_split=0",
                                      "data.augment=crop_flip", "train.batch_size=2", "train.device=cpu",
                                      "train.amp=false", "train.channels_last=false"])
    t = Trainer(smoke)
    assert t.data.train.images.shape == (2, 3, size, size)
    t.train_loader.set_epoch(0)
    batch = next(iter(t.train_loader))
    loss, logits = t.train_step(batch, 0, torch.Generator().manual_seed(0))
    assert logits.shape == (2, classes) and torch.isfinite(loss)
