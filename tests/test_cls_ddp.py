"""torchrun DDP with two gloo processes on the CPU: rank-0 outputs, per-rank PS-KD store files, and a resumed
DDP run that equals an uninterrupted one bit for bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from test_cls_data import make_fake_fmnist
from test_cls_resume import TIMING, _same_state


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pskd.vision_cls.cli", "train", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_two_process_gloo_run_and_resume(tmp_path):
    root = make_fake_fmnist(tmp_path / "data", 400, 100)
    common = [f"data.root={root}", "data.val_split=64", "model.name=tiny_cnn", "train.batch_size=32",
              "train.epochs=3", "optim.lr=0.05", "method.name=pskd", "method.store.dtype=fp16", "cutmix.prob=0.3",
              "train.device=cpu", "train.progress=off", "train.tensorboard=false"]
    full, part = tmp_path / "full", tmp_path / "part"
    r = torchrun(*common, f"train.out_dir={full}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 3/3") == 1  # only rank 0 logs
    res = json.loads((full / "metrics.json").read_text())
    assert res["method"] == "pskd+cutmix" and len(res["history"]) == 3
    assert sorted(p.name for p in full.glob("policy-*")) == ["policy-e0003.rank0.pt", "policy-e0003.rank1.pt"]
    shards = [torch.load(full / f"policy-e0003.rank{r}.pt", weights_only=False)["policy"]["store"] for r in (0, 1)]
    assert [s["kind"] for s in shards] == ["RoutedStore"] * 2
    assert all(s["local"]["shape"][0] == 168 for s in shards)  # 336 training samples / 2 ranks: half a table each

    r = torchrun(*common, f"train.out_dir={part}", "train.stop_after_epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(*common, f"train.out_dir={part}", "--resume", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(part / "last.pt", weights_only=False)
    for key in ("model", "optimizer", "epoch", "best_val"):
        _same_state(a[key], b[key], key)
    rb = json.loads((part / "metrics.json").read_text())
    assert rb["metrics"] == res["metrics"]
    assert [{k: v for k, v in h.items() if k not in TIMING} for h in rb["history"]] == \
        [{k: v for k, v in h.items() if k not in TIMING} for h in res["history"]]
