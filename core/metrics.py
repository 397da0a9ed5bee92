"""Classification metrics exactly as the PS-KD paper computes them (REFERENCE.md section 4).

Errors and ECE are in percent, AURC and E-AURC x 1000, NLL is the mean cross-entropy in nats.
"""
from __future__ import annotations

import math

import torch

__all__ = ["classification_metrics", "reliability_diagram", "ece", "aurc_eaurc"]


def _check(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must be ({probs.shape[0]},), got shape {tuple(labels.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("metrics need at least one sample")
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    return probs.double(), labels


def ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 10) -> float:
    """Expected calibration error in %: equal-width bins over (0, 1], sum of (|B|/n) * |acc(B) - conf(B)|."""
    bins = reliability_diagram(confidence, correct, n_bins)
    n = confidence.numel()
    return 100.0 * sum(c / n * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"])
                       if c > 0)


def reliability_diagram(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 10) -> dict:
    """Per-bin counts, accuracy and mean confidence for equal-width bins ``(i/n_bins, (i+1)/n_bins]``.

    Returns:
        dict with lists ``edges`` (n_bins + 1), ``count``, ``accuracy`` and ``confidence`` (n_bins each; empty bins
        have accuracy and confidence 0).
    """
    confidence = confidence.double().flatten()
    correct = correct.double().flatten()
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 goes to the first bin.
    idx = (torch.ceil(confidence * n_bins) - 1).clamp(0, n_bins - 1).long()
    count = torch.bincount(idx, minlength=n_bins).double()
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=confidence, minlength=n_bins)
    safe = count.clamp_min(1)
    return {
        "edges": [i / n_bins for i in range(n_bins + 1)],
        "count": [int(c) for c in count.tolist()],
        "accuracy": (acc_sum / safe).tolist(),
        "confidence": (conf_sum / safe).tolist(),
    }


def aurc_eaurc(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[float, float]:
    """AURC and E-AURC, both x 1000.

    Samples are sorted by confidence, descending; the risk at coverage k is the error rate among the top k;
    AURC is the mean of that curve over k = 1..n. E-AURC subtracts the AURC of an ideal ranking,
    ``(1/n) * sum_{i=1..r} i / (n - r + i)`` with r errors. Ties in confidence keep their input order (stable
    sort), as the official code's sort does.
    """
    n = confidence.numel()
    order = torch.sort(confidence.double().flatten(), descending=True, stable=True).indices
    errors = (1.0 - correct.double().flatten()[order])
    risks = torch.cumsum(errors, 0) / torch.arange(1, n + 1, dtype=torch.float64)
    aurc = float(risks.mean())
    r = int(errors.sum())
    optimal = sum(i / (n - r + i) for i in range(1, r + 1)) / n
    return 1000.0 * aurc, 1000.0 * (aurc - optimal)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict:
    """All of the paper's classification metrics for softmax outputs ``probs`` (N, C) and integer ``labels`` (N,).

    Returns:
        dict with ``top1_err``, ``top5_err`` (%), ``nll`` (nats), ``ece`` (%), ``aurc``, ``eaurc`` (x 1000),
        and ``n`` (the sample count). With fewer than 5 classes top-5 error is 0.
    """
    probs, labels = _check(probs, labels)
    n, c = probs.shape
    confidence, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    topk = probs.topk(min(5, c), dim=1).indices
    top5_correct = (topk == labels[:, None]).any(dim=1).double()
    p_true = probs.gather(1, labels[:, None]).squeeze(1)
    # Clamp before log: a probability that underflowed to 0 would give an infinite NLL for one sample.
    nll = float(-torch.log(p_true.clamp_min(1e-300)).mean())
    aurc, eaurc = aurc_eaurc(confidence, correct)
    out = {
        "top1_err": 100.0 * (1.0 - float(correct.mean())),
        "top5_err": 100.0 * (1.0 - float(top5_correct.mean())),
        "nll": nll,
        "ece": ece(confidence, correct, n_bins),
        "aurc": aurc,
        "eaurc": eaurc,
        "n": n,
    }
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"metric {k} is not finite ({v}); are the probabilities valid?")
    return out
