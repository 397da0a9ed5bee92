"""Metrics against hand-computed values, a naive re-implementation and torchmetrics."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pskd.core.metrics import aurc_eaurc, classification_metrics, ece, reliability_diagram


def naive_ece(conf, correct, n_bins=10):
    total = 0.0
    n = len(conf)
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        members = [k for k in range(n) if (lo < conf[k] <= hi) or (i == 0 and conf[k] == 0)]
        if members:
            acc = sum(correct[k] for k in members) / len(members)
            cf = sum(conf[k] for k in members) / len(members)
            total += len(members) / n * abs(acc - cf)
    return 100 * total


def naive_aurc(conf, correct):
    order = sorted(range(len(conf)), key=lambda k: -conf[k])  # Python's sort is stable, like the metric's
    n = len(conf)
    risks = [sum(1 - correct[order[j]] for j in range(k)) / k for k in range(1, n + 1)]
    aurc = sum(risks) / n
    r = n - sum(correct)
    opt = sum(i / (n - r + i) for i in range(1, r + 1)) / n
    return 1000 * aurc, 1000 * (aurc - opt)


def test_hand_computed_four_samples():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 0])  # correct, correct, wrong, wrong
    m = classification_metrics(probs, labels)
    assert m["top1_err"] == pytest.approx(50.0)
    assert m["top5_err"] == pytest.approx(0.0)  # two classes: the true one is always in the top 5
    assert m["nll"] == pytest.approx(-(torch.log(torch.tensor([0.9, 0.8, 0.4, 0.3]))).mean().item())
    # bins: 0.9 -> (0.8,0.9] acc 1; 0.8 -> (0.7,0.8] acc 1; 0.6 -> (0.5,0.6] acc 0; 0.7 -> (0.6,0.7] acc 0
    assert m["ece"] == pytest.approx(100 * (0.1 + 0.2 + 0.6 + 0.7) / 4)
    # sorted by confidence: 0.9 ok, 0.8 ok, 0.7 wrong, 0.6 wrong -> risks 0, 0, 1/3, 2/4
    aurc = (0 + 0 + 1 / 3 + 0.5) / 4
    assert m["aurc"] == pytest.approx(1000 * aurc)
    opt = (1 / 3 + 2 / 4) / 4  # r = 2 errors, n = 4: i / (n - r + i) for i = 1, 2
    assert m["eaurc"] == pytest.approx(1000 * (aurc - opt))
    # a perfect ranking (all errors last) has E-AURC 0
    assert m["eaurc"] == pytest.approx(0.0, abs=1e-9)


def test_top5_error():
    probs = torch.softmax(torch.arange(10.0).repeat(3, 1), -1)  # ranking 9, 8, 7, 6, 5, ...
    labels = torch.tensor([9, 5, 4])
    assert classification_metrics(probs, labels)["top5_err"] == pytest.approx(100 / 3)


def test_reliability_diagram_counts():
    conf = torch.tensor([0.05, 0.15, 0.15, 1.0])
    d = reliability_diagram(conf, torch.tensor([1, 0, 1, 1]))
    assert d["count"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert d["accuracy"][1] == pytest.approx(0.5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_matches_naive_implementation(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(n, c, generator=g), -1)
    labels = torch.randint(c, (n,), generator=g)
    conf, pred = probs.max(1)
    correct = (pred == labels).int().tolist()
    m = classification_metrics(probs, labels)
    assert m["ece"] == pytest.approx(naive_ece(conf.double().tolist(), correct), abs=1e-9)
    aurc, eaurc = naive_aurc(conf.double().tolist(), correct)
    assert m["aurc"] == pytest.approx(aurc, abs=1e-9)
    assert m["eaurc"] == pytest.approx(eaurc, abs=1e-9)
    assert m["eaurc"] >= -1e-9


def test_ece_matches_torchmetrics():
    torchmetrics = pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(500, 10, generator=g), -1)
    labels = torch.randint(10, (500,), generator=g)
    ref = torchmetrics.classification.MulticlassCalibrationError(num_classes=10, n_bins=10, norm="l1")
    assert classification_metrics(probs, labels)["ece"] == pytest.approx(100 * ref(probs, labels).item(), abs=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(torch.full((2, 3), 1 / 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        classification_metrics(torch.ones(3), torch.tensor([0, 1, 2]))
