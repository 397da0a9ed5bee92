"""Resume: k epochs + ``--resume auto`` must equal an uninterrupted run bit for bit on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from pskd.vision_cls.cli import main
from test_cls_data import make_fake_fmnist

TIMING = {"epoch_time_s", "train_images_per_s"}


def _args(root, out, *extra):
    return ["train", f"data.root={root}", "data.train_subset=400", "data.val_split=80", "data.test_subset=100",
            "model.name=tiny_cnn", "train.batch_size=32", "train.epochs=3", "optim.lr=0.05", "optim.schedule=cosine",
            "train.device=cpu", "train.threads=1", "train.progress=off", "train.tensorboard=false",
            f"train.out_dir={out}", *extra]


def _same_state(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{path}[{i}]")


@pytest.mark.parametrize("method", [
    ["method.name=pskd", "cutmix.prob=0.5"],
    ["method.name=pskd", "method.store.kind=memmap", "method.store.dtype=fp16"],
    ["method.name=cs_kd"],
], ids=["pskd_ram_cutmix", "pskd_memmap", "cs_kd"])
def test_resume_is_bit_identical(tmp_path, method):
    root = make_fake_fmnist(tmp_path / "data")
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(root, full, *method)) == 0
    assert main(_args(root, part, *method, "train.stop_after_epochs=2")) == 0
    assert not (part / "metrics.json").exists() and (part / "last.pt").exists()
    assert main(_args(root, part, *method) + ["--resume", "auto"]) == 0

    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(part / "last.pt", weights_only=False)
    for key in ("model", "optimizer", "scheduler", "best_val", "best_epoch", "epoch"):
        _same_state(a[key], b[key], key)
    ra, rb = json.loads((full / "metrics.json").read_text()), json.loads((part / "metrics.json").read_text())
    assert ra["metrics"] == rb["metrics"]
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in ra["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING} for row in rb["history"]]
    if "method.name=pskd" in method and "method.store.kind=memmap" not in method:
        pa = torch.load(full / "policy-e0003.rank0.pt", weights_only=False)
        pb = torch.load(part / "policy-e0003.rank0.pt", weights_only=False)
        _same_state(pa["policy"], pb["policy"], "policy")
        assert sorted(p.name for p in part.glob("policy-*")) == ["policy-e0003.rank0.pt"]  # older ones removed


def test_resume_refuses_a_changed_config(tmp_path, capsys):
    root = make_fake_fmnist(tmp_path / "data")
    out = tmp_path / "run"
    assert main(_args(root, out, "method.name=pskd", "train.stop_after_epochs=1")) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(_args(root, out, "method.name=pskd", "method.alpha_T=0.3") + ["--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pskd-cls: error: method.alpha_T is 0.3 here but 0.8 in") and err.count("\n") == 1
    assert (out / "last.pt").read_bytes() == before
