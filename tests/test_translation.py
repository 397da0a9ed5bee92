"""End-to-end tests of pskd-mt and the fairseq plugin on the real Ding de->en mini data (subprocesses).

A 1,000-pair subset and a 1+1-layer transformer keep every training to a few seconds. Covered: prepare; a 2-epoch
training in both teacher modes with BLEU / chrF; an exact mid-epoch resume in both modes; stock fairseq-train
picking the criterion up through --user-dir; one-line errors on bad input with nothing overwritten.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DING = REPO / "data" / "ding-de-en"
ENV = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
        "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--max-tokens", "2048", "--warmup-updates", "20", "--log-interval", "5",
        "--validate-interval", "1"]
MODES = ("snapshot", "topk")

pytestmark = pytest.mark.slow


def pskd_mt(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pskd.translation.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"pskd-mt {args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def train(data, save_dir, mode, *extra, check=True) -> subprocess.CompletedProcess:
    return pskd_mt("train", data, "--save-dir", save_dir, "--method", "pskd", "--teacher", mode, "--alpha-T", "0.5",
                   "--max-epoch", "2", "--seed", "3", "--", *TINY, *extra, check=check)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("pskd-mt "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


def tree_digest(path: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("mt")


@pytest.fixture(scope="module")
def data(work):
    if not (DING / "train.de").is_file():
        pytest.skip("Ding data missing: run python scripts/fetch_data.py --only ding-de-en")
    dest = work / "data"
    pskd_mt("prepare", "--dest", dest, "--raw-dir", DING, "--limit-train", 1000, "--vocab-size", 1000)
    return dest


@pytest.fixture(scope="module")
def runs(work, data):
    """Two epochs in each teacher mode (the first one launched with stock fairseq-train), then BLEU on test.

    Each run stops after epoch 1 and resumes for epoch 2 (an epoch-boundary resume). The copy made in between is
    where test_resume_inside_an_epoch_is_exact continues from: fairseq-fixed 0.12.3.1 composes the batches from
    seed + the epoch at which its iterator is created, so only runs that all (re)start epoch 2 from a checkpoint
    see identical batches in it and can be compared bit for bit.
    """
    out = {}
    for mode in MODES:
        save = work / f"run_{mode}"
        if mode == "topk":  # stock fairseq-train with the plugin, same arguments as pskd-mt would pass
            argv = pskd_mt("train", data, "--save-dir", save, "--method", "pskd", "--teacher", mode, "--alpha-T",
                           "0.5", "--max-epoch", "2", "--seed", "3", "--dry-run", "--", *TINY,
                           "--max-epoch", "1").stdout.strip()
            argv = shlex.split(argv)
            assert argv[0] == "fairseq-train"
            proc = subprocess.run([str(Path(sys.executable).parent / "fairseq-train"), *argv[1:]],
                                  capture_output=True, text=True, env=ENV)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        else:
            proc = train(data, save, mode, "--max-epoch", "1")
        log = proc.stdout + proc.stderr
        shutil.copytree(save, work / f"resume_{mode}")
        proc = train(data, save, mode)
        pskd_mt("eval", data, "--checkpoint", save / "checkpoint_last.pt", "--beam", 1, "--out", save / "test.json")
        out[mode] = (save, log + proc.stdout + proc.stderr)
    return out


def test_prepare_layout(data):
    meta = json.loads((data / "pskd_data.json").read_text())
    assert meta["src"] == "de" and meta["tgt"] == "en" and meta["counts"]["train"] == 1000
    for name in ("dict.de.txt", "dict.en.txt", "spm.model", "raw/test.en", "train.de-en.en.bin", "test.de-en.de.idx"):
        assert (data / name).is_file(), name


@pytest.mark.parametrize("mode", MODES)
def test_mini_training_with_bleu(runs, mode):
    save, log = runs[mode]
    result = json.loads((save / "test.json").read_text())
    # BLEU / chrF of every test sentence were computed (a 1+1-layer model after 2 short epochs may still output
    # little more than spaces, so their values are not asserted; test_score_from_first_principles checks the scorer)
    assert result["task"] == "translation" and result["num_sentences"] == result["translated"] == 1000
    assert 0.0 <= result["metrics"]["bleu"] <= 100.0 and 0.0 <= result["metrics"]["chrf"] <= 100.0
    alphas = {int(e): float(a) for e, a in re.findall(r"epoch (\d+) \| .*?\| alpha ([\d.]+)", log)}
    assert alphas.get(1) == 0.0 and alphas.get(2) == pytest.approx(0.5), alphas  # a_e = 0.5 * e / 2, none in epoch 1
    assert "criterion: PSKDLabelSmoothedCrossEntropyCriterion" in log
    state = load(save / "checkpoint_last.pt")
    pskd = state["task_state"]["pskd"]
    assert pskd["mode"] == mode and pskd["epoch"] == 2
    assert not any(k.startswith("teacher") for k in state["model"])  # the snapshot is no part of the model
    if mode == "topk":
        assert (save / "pskd_topk_store" / "rank0" / "epoch0002.values.bin").is_file()


def test_eval_nll_matches_fairseq_validation(work, data, runs):
    """pskd-mt eval's NLL on the valid split = fairseq's own validation nll_loss after the last epoch (bits)."""
    save, log = runs["snapshot"]
    pskd_mt("eval", data, "--checkpoint", save / "checkpoint_last.pt", "--subset", "valid", "--beam", 1,
            "--out", save / "valid.json")
    nll = json.loads((save / "valid.json").read_text())["metrics"]["nll"]
    fairseq_bits = [float(x) for x in re.findall(r"valid on 'valid' subset \| loss [\d.]+ \| nll_loss ([\d.]+)", log)]
    assert nll / math.log(2) == pytest.approx(fairseq_bits[-1], abs=2e-3)


@pytest.mark.parametrize("mode", MODES)
def test_resume_inside_an_epoch_is_exact(work, data, runs, mode):
    ref_dir = runs[mode][0]
    ref = load(ref_dir / "checkpoint_last.pt")
    per_epoch = ref["optimizer_history"][-1]["num_updates"] // 2
    save = work / f"resume_{mode}"  # the reference run's state after epoch 1
    train(data, save, mode, "--max-update", per_epoch + 2)  # epoch 2, stopped after two updates
    mid = load(save / "checkpoint_last.pt")
    assert mid["extra_state"]["train_iterator"]["iterations_in_epoch"] == 2
    assert mid["task_state"]["pskd"]["epoch"] == 2
    train(data, save, mode)  # resumes inside epoch 2 from checkpoint_last.pt and finishes it
    got = load(save / "checkpoint_last.pt")
    assert got["optimizer_history"][-1]["num_updates"] == ref["optimizer_history"][-1]["num_updates"]
    for name, tensor in ref["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    if mode == "snapshot":  # the teacher came from the checkpoint, not from the model as it was at the restart
        teacher, ref_teacher = got["task_state"]["pskd"]["teacher"], ref["task_state"]["pskd"]["teacher"]
        assert teacher["epoch"] == ref_teacher["epoch"] == 2
        for name, tensor in ref_teacher["model"].items():
            assert torch.equal(tensor, teacher["model"][name]), name
    else:  # both epochs' predictions, including the rows written before the stop, are the uninterrupted run's
        for f in sorted((ref_dir / "pskd_topk_store" / "rank0").glob("epoch*.bin")):
            other = save / "pskd_topk_store" / "rank0" / f.name
            assert f.read_bytes() == other.read_bytes(), f.name


def test_stock_fairseq_train_picks_the_criterion_up(runs):
    log = runs["topk"][1]  # its first epoch ran under the stock fairseq-train console script
    assert "criterion: PSKDLabelSmoothedCrossEntropyCriterion" in log
    assert "PS-KD (topk teacher) epoch 1 (fresh)" in log and "PS-KD (topk teacher) epoch 2 (next)" in log


def test_bad_input_one_line_and_nothing_overwritten(work, data, runs):
    # alpha outside [0, 1]
    err = one_line_error(pskd_mt("train", data, "--save-dir", work / "bad_alpha", "--alpha-T", "1.5", check=False))
    assert "alpha" in err and not (work / "bad_alpha").exists()
    # missing data files (and an existing destination is never replaced without --overwrite)
    err = one_line_error(pskd_mt("prepare", "--dest", work / "bad_prep", "--raw-dir", work / "nowhere", check=False))
    assert "fetch_data.py" in err and not (work / "bad_prep").exists()
    digest = tree_digest(data)
    err = one_line_error(pskd_mt("prepare", "--dest", data, "--raw-dir", DING, check=False))
    assert "exists" in err and tree_digest(data) == digest
    # a dictionary that does not match the data
    other = work / "bad_dict"
    shutil.copytree(data, other)
    lines = (other / "dict.en.txt").read_text().splitlines()
    (other / "dict.en.txt").write_text("\n".join(lines[:50]) + "\n")
    err = one_line_error(pskd_mt("train", other, "--save-dir", work / "bad_dict_run", check=False))
    assert "dictionary" in err and not (work / "bad_dict_run").exists()
    # a top-k store made for another data set (here: training on the test split with run_topk's store)
    store = runs["topk"][0] / "pskd_topk_store"
    digest = tree_digest(store)
    proc = train(data, work / "bad_store", "topk", "--pskd-store-path", store, "--train-subset", "test",
                 check=False)
    assert "another data set" in one_line_error(proc) and tree_digest(store) == digest
    # a checkpoint without PS-KD teacher state, resumed past epoch 1
    save = work / "no_teacher"
    save.mkdir()
    state = load(runs["snapshot"][0] / "checkpoint_last.pt")
    del state["task_state"]["pskd"]
    torch.save(state, save / "checkpoint_last.pt")
    digest = tree_digest(save)
    proc = train(data, save, "snapshot", "--max-epoch", "3", check=False)
    assert "no PS-KD teacher state" in one_line_error(proc) and tree_digest(save) == digest
