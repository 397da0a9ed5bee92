"""Fast in-process tests of the PS-KD fairseq criterion, its teachers and its top-k token store.

A tiny real fairseq transformer and translation task on random token sequences; every loss is checked against a
first-principles computation with dense targets (pskd.core.soft_cross_entropy).
"""
from __future__ import annotations

import math
import os
from argparse import Namespace

import pytest
import torch

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

from fairseq import options, tasks  # noqa: E402
from fairseq.criterions import CRITERION_REGISTRY  # noqa: E402
from fairseq.data import LanguagePairDataset  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402
from fairseq.logging import metrics  # noqa: E402

from pskd.core import TopKStore, soft_cross_entropy  # noqa: E402
from pskd.translation import plugin_dir  # noqa: E402
from pskd.translation.criterion import CRITERION_NAME, PSKDLabelSmoothedCrossEntropyCriterion  # noqa: E402
from pskd.translation.errors import PSKDError  # noqa: E402
from pskd.translation.teachers import topk_soft_cross_entropy  # noqa: E402

VOCAB = 40
EPS = 0.1


@pytest.fixture()
def dict_dir(tmp_path):
    for lang in ("de", "en"):
        (tmp_path / f"dict.{lang}.txt").write_text("".join(f"w{i} 1\n" for i in range(VOCAB)))
    return tmp_path


def _build(dict_dir, criterion: str, extra: list[str] = ()):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(dict_dir), "--task", "translation", "-s", "de", "-t", "en", "--arch", "transformer",
        "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--dropout", "0.0", "--criterion", criterion, "--label-smoothing",
        str(EPS), "--save-dir", str(dict_dir / "ckpt"), "--cpu", *extra])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    return task, model, task.build_criterion(cfg.criterion)


def _dataset(task, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    eos = task.target_dictionary.eos()

    def seq():
        length = int(torch.randint(2, 7, (1,), generator=g))
        return torch.cat([torch.randint(4, 4 + VOCAB, (length,), generator=g), torch.tensor([eos])])

    src, tgt = [seq() for _ in range(n)], [seq() for _ in range(n)]
    return LanguagePairDataset(src, [len(s) for s in src], task.source_dictionary, tgt, [len(t) for t in tgt],
                               task.target_dictionary)


def _batch(dataset, ids):
    return dataset.collater([dataset[i] for i in ids])


def _ls_target(target, vocab, pad):
    """fairseq >= 0.12.3's label-smoothed target: 1 - eps on the label, eps / (V - 1) elsewhere."""
    eps_i = EPS / (vocab - 1)
    q = torch.full((target.numel(), vocab), eps_i)
    q.scatter_(1, target.view(-1, 1), 1.0 - EPS)
    return q, target.view(-1).ne(pad)


def _lprobs(model, sample):
    out = model(**sample["net_input"])
    return model.get_normalized_probs(out, log_probs=True).view(-1, len(model.decoder.dictionary))


def test_alpha_zero_is_the_stock_criterion(dict_dir):
    task, model, stock = _build(dict_dir, "label_smoothed_cross_entropy")
    ds = _dataset(task)
    sample = _batch(ds, range(6))
    model.train()
    torch.manual_seed(1)
    ref = stock(model, sample)
    for extra in (["--alpha-T", "0"], ["--alpha-T", "0.7", "--max-epoch", "3"],
                  ["--alpha-T", "0.7", "--max-epoch", "3", "--pskd-teacher", "topk"]):
        _, _, crit = _build(dict_dir, CRITERION_NAME, extra)
        crit.task.datasets["train"] = ds
        crit.begin_epoch(1, model)  # epoch 1: no previous epoch, so a = 0 whatever alpha_T
        torch.manual_seed(1)
        loss, size, log = crit(model, sample)
        assert torch.equal(loss, ref[0]) and torch.equal(log["nll_loss"], ref[2]["nll_loss"]) and size == ref[1]
        assert log.get("pskd_alpha", 0) == 0  # absent at alpha_T = 0 (the stock code path)
    # in validation the KD term is off even when a teacher exists
    _, _, crit = _build(dict_dir, CRITERION_NAME, ["--alpha-T", "0.7", "--max-epoch", "3"])
    crit.begin_epoch(1, model)
    crit.begin_epoch(2, model)
    model.eval()
    assert crit.alpha() > 0
    assert torch.equal(crit(model, sample)[0], stock(model, sample)[0])


def test_snapshot_loss_matches_dense_soft_target(dict_dir):
    task, model, crit = _build(dict_dir, CRITERION_NAME, ["--alpha-T", "0.8", "--max-epoch", "4"])
    ds = _dataset(task)
    sample = _batch(ds, range(8))
    crit.begin_epoch(1, model)
    crit.begin_epoch(2, model)  # snapshot = the model now
    with torch.no_grad():  # move the student away from the snapshot
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.train()
    assert crit.alpha() == pytest.approx(0.8 * 2 / 4)
    loss, size, log = crit(model, sample)
    with torch.no_grad():
        teacher_p = _lprobs(crit.impl.teacher.model, sample).exp()
    lp_model = _lprobs(model, sample)
    q_ls, keep = _ls_target(sample["target"], lp_model.size(-1), task.target_dictionary.pad())
    a = 0.4
    q = (1 - a) * q_ls + a * teacher_p
    expected = soft_cross_entropy(lp_model[keep], q[keep], reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert log["pskd_alpha"] == pytest.approx(a * size)
    assert log["pskd_kd_tokens"] == int(keep.sum())
    # the snapshot is no submodule: no parameters on the criterion, nothing added to the model's state dict
    assert list(crit.parameters()) == []
    assert set(model.state_dict()) == set(crit.impl.teacher.model.state_dict())
    assert not crit.impl.teacher.model.training
    assert all(not p.requires_grad for p in crit.impl.teacher.model.parameters())


def test_topk_formula_equals_core_dense_rows():
    torch.manual_seed(0)
    vocab, k, n = 30, 5, 7
    lprobs = torch.log_softmax(torch.randn(n, vocab), -1)
    probs = torch.softmax(torch.randn(n, vocab) * 2, -1)
    store = TopKStore(n, vocab, k=k)
    store.write(torch.arange(n), probs)
    dense, _ = store.gather(torch.arange(n))
    values, indices = probs.topk(k, -1)
    values = values.half().float()  # what the store keeps
    got = topk_soft_cross_entropy(lprobs, lprobs.sum(-1), values, indices)
    expected = soft_cross_entropy(lprobs, dense, reduction="none")
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_topk_mode_reads_last_epoch_and_matches_dense_target(dict_dir):
    task, model, crit = _build(dict_dir, CRITERION_NAME,
                               ["--alpha-T", "0.6", "--max-epoch", "3", "--pskd-teacher", "topk", "--pskd-topk", "4"])
    ds = _dataset(task)
    task.datasets["train"] = ds
    model.train()
    batches = [_batch(ds, [0, 3, 5, 7]), _batch(ds, [1, 2, 4, 6, 8, 9, 10, 11])]
    crit.begin_epoch(1, model)
    with torch.no_grad():
        epoch1 = [_lprobs(model, b).exp() for b in batches]
        for b in batches:
            crit(model, b)
    crit.begin_epoch(2, model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = 0.6 * 2 / 3
    for b, probs in zip(batches, epoch1):
        loss, _, log = crit(model, b)
        lp = _lprobs(model, b)
        q_ls, keep = _ls_target(b["target"], lp.size(-1), task.target_dictionary.pad())
        v, i = probs.topk(4, -1)
        dense = torch.zeros_like(probs).scatter_(1, i, v.half().float())
        rest = (1 - v.half().float().sum(-1, keepdim=True)).clamp_min(0) / (lp.size(-1) - 4)
        dense = torch.where(dense > 0, dense, rest.expand_as(dense))
        expected = soft_cross_entropy(lp[keep], ((1 - a) * q_ls + a * dense)[keep], reduction="sum")
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
        assert log["pskd_kd_tokens"] == int(keep.sum())


def test_alpha_schedules_and_logging(dict_dir):
    _, model, crit = _build(dict_dir, CRITERION_NAME, ["--alpha-T", "0.8", "--max-epoch", "5"])
    crit.begin_epoch(1, model)
    assert crit.alpha() == 0  # epoch 1: no previous epoch
    for e in range(2, 6):
        crit.begin_epoch(e, model)
        assert crit.alpha() == pytest.approx(0.8 * e / 5)
    _, model, crit = _build(dict_dir, CRITERION_NAME, ["--alpha-T", "0.8", "--max-update", "10"])
    crit.begin_epoch(1, model)
    crit.begin_epoch(2, model)
    crit.set_step(4, False)
    assert crit.alpha() == pytest.approx(0.8 * 5 / 10)
    # fairseq sums logging outputs over workers: alpha is logged weighted by sample size
    logs = [{"loss": 10.0, "nll_loss": 8.0, "ntokens": 10, "nsentences": 2, "sample_size": 10, "pskd_alpha": 0.2 * 10,
             "pskd_kd": 5.0, "pskd_kd_tokens": 10},
            {"loss": 30.0, "nll_loss": 24.0, "ntokens": 30, "nsentences": 4, "sample_size": 30, "pskd_alpha": 0.6 * 30,
             "pskd_kd": 15.0, "pskd_kd_tokens": 30}]
    summed = {k: logs[0][k] + logs[1][k] for k in logs[0]}
    for outputs in (logs, [summed]):
        with metrics.aggregate(new_root=True) as agg:
            PSKDLabelSmoothedCrossEntropyCriterion.reduce_metrics(outputs)
        assert agg.get_smoothed_value("alpha") == pytest.approx(0.5)
        assert agg.get_smoothed_value("kd_loss") == pytest.approx(0.5 / math.log(2), abs=1e-3)


def test_bad_alpha_and_missing_length(dict_dir):
    with pytest.raises(PSKDError, match="alpha"):
        _build(dict_dir, CRITERION_NAME, ["--alpha-T", "1.5", "--max-epoch", "2"])
    with pytest.raises(PSKDError, match="max-epoch"):
        _build(dict_dir, CRITERION_NAME, ["--alpha-T", "0.5"])


def test_registered_once_with_plugin_and_package():
    from fairseq import utils

    utils.import_user_module(Namespace(user_dir=plugin_dir()))
    utils.import_user_module(Namespace(user_dir=plugin_dir()))
    assert CRITERION_REGISTRY[CRITERION_NAME] is PSKDLabelSmoothedCrossEntropyCriterion


def test_score_and_generate_parsing_from_first_principles(tmp_path):
    from pskd.translation.evaluate import parse_generate, score

    refs = ["The cat sat on the mat.", "He was unfazed by the delay.", "Too many cooks spoil the broth."]
    assert score(refs, refs)["bleu"] == pytest.approx(100.0) and score(refs, refs)["chrf"] == pytest.approx(100.0)
    assert score(["", "", ""], refs)["bleu"] == 0.0
    # BLEU by hand for one sentence: hypothesis = reference minus its last word
    hyp = ["The cat sat on the"]
    ref = ["The cat sat on the mat"]
    precisions = [5 / 5, 4 / 4, 3 / 3, 2 / 2]
    brevity = math.exp(1 - 6 / 5)
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert score(hyp, ref)["bleu"] == pytest.approx(expected, abs=1e-3)
    out = tmp_path / "generate-test.txt"
    out.write_text("S-1\tsrc\nD-1\t-0.5\tHe was unfazed.\nD-0\t-0.1\t\nH-2\t-1\tx\n")
    hyps, found = parse_generate(out, 3)
    assert hyps == ["", "He was unfazed.", ""] and found == 2
