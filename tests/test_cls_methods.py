"""Every method (with and without CutMix) takes a training step through the real trainer; stores; lr schedules."""
from __future__ import annotations

import pytest
import torch

from pskd.core import PSKD
from pskd.vision_cls.checkpoint import atomic_save
from pskd.vision_cls.config import load_config
from pskd.vision_cls.train import Trainer, lr_factor

TINY = ["data.name=random", "data.random_size=24", "data.image_size=16", "data.channels=3", "data.val_split=0",
        "model.name=tiny_cnn", "train.batch_size=8", "train.epochs=2", "train.device=cpu", "train.threads=1"]


def _trainer(tmp_path, *overrides) -> Trainer:
    return Trainer(load_config(None, TINY + list(overrides)), out_dir=str(tmp_path))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "best.pt"
    t = _trainer(path.parent)
    t.train_epoch(0)
    atomic_save(t.state_dict(), path)
    return path


@pytest.mark.parametrize("cutmix", [0.0, 1.0])
@pytest.mark.parametrize("method", ["ce", "ls", "cs_kd", "tf_kd_self", "tf_kd_reg", "pskd"])
def test_each_method_one_step(tmp_path, teacher_ckpt, method, cutmix):
    extra = [f"method.teacher={teacher_ckpt}"] if method == "tf_kd_self" else []
    t = _trainer(tmp_path, f"method.name={method}", f"cutmix.prob={cutmix}", *extra)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train_loader.set_epoch(0)
    batch = next(iter(t.train_loader))
    assert (batch.partner_images is not None) == (method == "cs_kd")
    loss, logits = t.train_step(batch, 0, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logits.shape == (8, 10)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    if method == "pskd":  # the step's predictions were stored for the next epoch, unless the batch was mixed
        _, valid = t.policy.store.gather(batch.ids)
        assert valid.all() == (cutmix == 0.0)


@pytest.mark.parametrize("store", [["method.store.kind=ram", "method.store.dtype=fp16"],
                                   ["method.store.kind=memmap"], ["method.store.kind=topk", "method.store.k=3"]])
def test_pskd_store_kinds_two_epochs(tmp_path, store):
    t = _trainer(tmp_path, "method.name=pskd", "method.alpha_T=0.5", *store)
    assert isinstance(t.policy, PSKD)
    stats = t.train_epoch(0)
    t.policy.end_epoch()
    probs, valid = t.policy.store.gather(torch.arange(24))
    assert valid.all() and torch.allclose(probs.sum(1), torch.ones(24), atol=1e-2)
    assert t.policy.alpha(1) == 0.5 and torch.isfinite(torch.tensor(t.train_epoch(1)["train_loss"]))
    assert stats["train_images_per_s"] > 0
    if "method.store.kind=memmap" in store:
        assert any((tmp_path / "store").iterdir())


def test_lr_schedules():
    cfg = load_config(None, ["train.epochs=300"])
    assert [lr_factor(cfg, e) for e in (0, 149, 150, 224, 225, 299)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = load_config(None, ["train.epochs=10", "optim.schedule=cosine", "optim.warmup_epochs=2", "optim.min_lr=0.01"])
    f = [lr_factor(cos, e) for e in range(10)]
    assert f[:2] == pytest.approx([1 / 3, 2 / 3]) and f[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(f[2:], f[3:])) and f[-1] > 0.1
