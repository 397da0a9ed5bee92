"""The pskd-cls command line: outputs of train and eval, and one-line errors for bad input (run as subprocesses)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pskd.vision_cls.cli import main
from test_cls_data import make_fake_fmnist

BASE = ["model.name=tiny_cnn", "data.val_split=60", "data.test_subset=100", "train.batch_size=32",
        "train.epochs=2", "optim.lr=0.05", "train.device=cpu", "train.threads=1", "train.progress=off"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PSKD_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pskd.vision_cls.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-epoch PS-KD run, a stopped 1-epoch one, and data sets to break them with."""
    tmp = tmp_path_factory.mktemp("cli")
    root = make_fake_fmnist(tmp / "data", 600, 200)
    make_fake_fmnist(tmp / "bigger", 1200, 200)
    make_fake_fmnist(tmp / "badlabel", 600, 200, bad_label=12)
    (tmp / "empty" / "train").mkdir(parents=True)
    (tmp / "empty" / "val").mkdir(parents=True)
    done = cli("train", f"data.root={root}", *BASE, "method.name=pskd", f"train.out_dir={tmp / 'done'}")
    assert done.returncode == 0, done.stderr
    stopped = cli("train", f"data.root={root}", *BASE, "method.name=pskd", "train.stop_after_epochs=1",
                  f"train.out_dir={tmp / 'stopped'}")
    assert stopped.returncode == 0, stopped.stderr
    return {"tmp": tmp, "root": root, "done": tmp / "done", "stopped": tmp / "stopped", "stdout": done.stdout}


def test_train_outputs(run):
    out = run["done"]
    for name in ("config.yaml", "last.pt", "best.pt", "log.csv", "metrics.json", "reliability.png"):
        assert (out / name).is_file(), name
    assert "# pskd-cls resolved config" in run["stdout"] and "alpha_T: 0.8" in (out / "config.yaml").read_text()
    res = json.loads((out / "metrics.json").read_text())
    assert list(res) == ["task", "method", "seed", "dataset", "model", "metrics", "reliability", "history", "command"]
    assert (res["task"], res["method"], res["seed"], res["dataset"], res["model"]) == \
        ("classification", "pskd", 0, "fashion_mnist", "tiny_cnn")
    assert list(res["metrics"]) == ["top1_err", "top5_err", "nll", "ece", "aurc", "eaurc"]
    assert [h["epoch"] for h in res["history"]] == [0, 1] and [h["alpha"] for h in res["history"]] == [0.4, 0.8]
    assert {"train_loss", "val_top1_err", "val_nll", "val_ece", "lr"} <= set(res["history"][0])
    assert res["command"].startswith("pskd-cls train data.root=")
    assert sum(res["reliability"]["count"]) == 100
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "log.csv").read_text().splitlines()) == 3
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert any((out / "tb").glob("events.*")), "no TensorBoard events"


def test_eval_matches_train_and_first_principles(run):
    out = run["tmp"] / "eval"
    r = cli("eval", "--checkpoint", str(run["done"] / "best.pt"), "--out", str(out), "train.threads=1")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "metrics.json").read_text())
    assert res["metrics"] == json.loads((run["done"] / "metrics.json").read_text())["metrics"]
    assert (out / "reliability.png").is_file() and res["command"].startswith("pskd-cls eval --checkpoint")
    # Top-1 error and NLL recomputed by hand from the checkpoint and the raw test images.
    from pskd.vision_cls.models import build_model
    from test_cls_data import _rows
    import gzip
    import numpy as np

    ckpt = torch.load(run["done"] / "best.pt", weights_only=False)
    model = build_model("tiny_cnn", 10, 1).eval()
    model.load_state_dict(ckpt["model"])
    x = torch.from_numpy(_rows(run["root"] / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")[:100].copy()).float()
    with gzip.open(run["root"] / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        y = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8)[:100].astype(np.int64))
    with torch.no_grad():
        p = torch.softmax(model((x / 255 - 0.2860) / 0.3530).double(), 1)
    assert res["metrics"]["top1_err"] == pytest.approx(100 * (p.argmax(1) != y).double().mean().item())
    assert res["metrics"]["nll"] == pytest.approx(-p[torch.arange(100), y].log().mean().item(), rel=1e-6)


def _bad_cases(run) -> dict[str, tuple[list[str], str, int]]:
    t, root, done, stopped = run["tmp"], run["root"], run["done"], run["stopped"]
    # Config errors are aimed at the finished run (must not touch it); data errors at a folder that must stay unmade.
    train = ["train", f"data.root={root}", *BASE, "train.tensorboard=false", f"train.out_dir={done}"]
    fresh = ["train", f"data.root={root}", *BASE, "train.tensorboard=false", f"train.out_dir={t / 'fresh'}"]
    resume = ["train", f"data.root={root}", *BASE, "train.tensorboard=false", "method.name=pskd",
              f"train.out_dir={stopped}", "--resume", "auto"]
    return {
        "unknown method": (train + ["method.name=psdk"], "unknown method.name 'psdk'", 2),
        "unknown model": (train + ["model.name=resnet9000"], "unknown model.name 'resnet9000'", 2),
        "alpha_T > 1": (train + ["method.alpha_T=1.2"], "method.alpha_T must be in [0, 1], got 1.2", 2),
        "unknown key": (train + ["train.epoch=3"], "unknown config key 'train.epoch'", 2),
        "missing data": (fresh[:1] + [f"data.root={t / 'nowhere'}"] + fresh[2:],
                         "Fashion-MNIST not found: no train-images-idx3-ubyte.gz", 2),
        "empty folder": (fresh + ["data.name=imagefolder", f"data.root={t / 'empty'}"], "is empty", 2),
        "label outside [0,C)": (fresh[:1] + [f"data.root={t / 'badlabel'}"] + fresh[2:],
                                "train-labels-idx1-ubyte.gz: label 12 is outside [0, 10)", 2),
        "num_classes too small": (fresh + ["data.num_classes=5"], "label 9 is outside [0, 5)", 2),
        "out_dir taken": (train + ["method.name=pskd"], "already holds a run", 2),
        "resume other model": (resume + ["model.name=small_cnn"], "model.name is 'small_cnn' here but 'tiny_cnn'", 2),
        "resume other data size": (["train", f"data.root={t / 'bigger'}"] + resume[2:],
                                   "was made with training-set size 540, this run has 1140", 2),
        "teacher other model": (fresh + ["model.name=small_cnn", "method.name=tf_kd_self",
                                         f"method.teacher={done / 'best.pt'}"],
                                "was made with model 'tiny_cnn', this run has 'small_cnn'", 2),
        "eval other classes": (["eval", "--checkpoint", str(done / "best.pt"), "data.num_classes=20",
                                "--out", str(t / "n3")], "was made with number of classes 10, this run has 20", 2),
        "eval corrupt file": (["eval", "--checkpoint", str(done / "log.csv"), "--out", str(t / "n4")],
                              "cannot be read", 2),
        "eval missing file": (["eval", "--checkpoint", str(t / "nope.pt")], "nope.pt does not exist", 2),
        "nan loss": (train + ["optim.lr=1e30", f"train.out_dir={t / 'nan'}"], "the training loss is nan", 1),
    }


def test_bad_input_one_line_errors_and_nothing_overwritten(run):
    before = {k: digest(run[k]) for k in ("done", "stopped")}
    cases = _bad_cases(run)
    with ThreadPoolExecutor(2) as pool:  # each case is a fresh interpreter; two at a time on two cores
        results = dict(zip(cases, pool.map(lambda c: cli(*c[0]), cases.values())))
    failures = []
    for name, (_, expected, code) in cases.items():
        r = results[name]
        lines = r.stderr.strip().splitlines()
        ok = (r.returncode == code and len(lines) == 1 and lines[0].startswith("pskd-cls: error: ")
              and expected in lines[0])
        if not ok:
            failures.append(f"{name}: exit {r.returncode}, stderr {r.stderr[-400:]!r}")
    assert not failures, "\n".join(failures)
    assert {k: digest(run[k]) for k in ("done", "stopped")} == before
    assert not (run["tmp"] / "nan" / "last.pt").exists() and not (run["tmp"] / "fresh").exists()


def test_nan_mid_run_keeps_earlier_checkpoints(run, monkeypatch, capsys, tmp_path):
    import shutil

    from pskd.core import PSKD

    out = tmp_path / "stopped"
    shutil.copytree(run["stopped"], out)
    before = digest(out)
    monkeypatch.setattr(PSKD, "loss", lambda self, logits, *a, **k: logits.sum() * float("nan"))
    code = main(["train", f"data.root={run['root']}", *BASE, "method.name=pskd", f"train.out_dir={out}",
                 "train.tensorboard=false", "--resume", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "the training loss is nan at epoch 2, step 1" in err[0]
    after = digest(out)
    assert {k: v for k, v in after.items() if k != "config.yaml"} == \
        {k: v for k, v in before.items() if k != "config.yaml"}


def test_help_lists_keys():
    r = cli("train", "--help")
    assert r.returncode == 0 and "method.alpha_T (float, default 0.8)" in r.stdout and "--resume" in r.stdout
