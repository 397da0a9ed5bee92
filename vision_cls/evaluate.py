"""Evaluation: predictions over a split, the paper's metrics, the metrics JSON and the reliability diagram.

The metrics JSON is what the benchmark harness reads; its shape is fixed::

    {"task": "classification", "method": ..., "seed": ..., "dataset": ..., "model": ...,
     "metrics": {"top1_err", "top5_err", "nll", "ece", "aurc", "eaurc"},
     "reliability": {"edges", "count", "accuracy", "confidence"}, "history": [...], "command": "..."}
"""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pskd.core import classification_metrics, reliability_diagram

from .checkpoint import atomic_write_json
from .config import Config
from .loader import EvalLoader

__all__ = ["predict", "evaluate", "method_label", "results_dict", "write_results", "plot_reliability", "METRIC_KEYS"]

METRIC_KEYS = ("top1_err", "top5_err", "nll", "ece", "aurc", "eaurc")


@torch.no_grad()
def predict(model: nn.Module, loader: EvalLoader, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (float64, CPU) and labels over the loader's whole split, gathered from every rank."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    dev = loader.device
    for batch in loader:
        with torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=amp):
            logits = model(batch.images)
        probs.append(torch.softmax(logits.float(), dim=-1).double().cpu())
        labels.append(batch.labels.cpu())
    model.train(was_training)
    c = loader.data.num_classes
    p = torch.cat(probs) if probs else torch.zeros(0, c, dtype=torch.float64)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        p, y = _gather(p, y, loader.shard_size, len(loader.split))
    return p, y


def _gather(p: torch.Tensor, y: torch.Tensor, shard: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Shards are contiguous and padded to one length so that a plain all_gather reassembles the split in order.
    world = dist.get_world_size()
    pad_p = torch.zeros(shard, p.shape[1], dtype=p.dtype)
    pad_y = torch.zeros(shard, dtype=y.dtype)
    pad_p[:len(p)], pad_y[:len(y)] = p, y
    ps, ys = [torch.empty_like(pad_p) for _ in range(world)], [torch.empty_like(pad_y) for _ in range(world)]
    dist.all_gather(ps, pad_p)
    dist.all_gather(ys, pad_y)
    return torch.cat(ps)[:total], torch.cat(ys)[:total]


def evaluate(model: nn.Module, loader: EvalLoader, amp: bool = False) -> tuple[dict, dict]:
    """(metrics, reliability-diagram data) of ``model`` on the loader's split."""
    p, y = predict(model, loader, amp)
    metrics = classification_metrics(p, y)
    conf, pred = p.max(1)
    return metrics, reliability_diagram(conf, (pred == y).double())


def method_label(cfg: Config) -> str:
    """The method's name as reported: e.g. ``pskd``, or ``pskd+cutmix`` when CutMix is on."""
    return cfg.method.name + ("+cutmix" if cfg.cutmix.prob > 0 else "")


def command_line(argv: list[str] | None = None) -> str:
    return "pskd-cls " + shlex.join(sys.argv[1:] if argv is None else argv)


def results_dict(cfg: Config, metrics: dict, reliability: dict, history: list[dict], command: str) -> dict:
    return {"task": "classification", "method": method_label(cfg), "seed": cfg.train.seed, "dataset": cfg.data.name,
            "model": cfg.model.name, "metrics": {k: float(metrics[k]) for k in METRIC_KEYS},
            "reliability": reliability, "history": history, "command": command}


def write_results(out_dir: str | os.PathLike, results: dict) -> None:
    """``metrics.json`` and ``reliability.png`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    atomic_write_json(results, out / "metrics.json")
    plot_reliability(results["reliability"], results["metrics"], out / "reliability.png",
                     f"{results['model']} {results['method']} on {results['dataset']}")


def plot_reliability(rel: dict, metrics: dict, path: str | os.PathLike, title: str = "") -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, gap shaded, bin counts below."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    import matplotlib.pyplot as plt

    edges, acc, conf, count = rel["edges"], rel["accuracy"], rel["confidence"], rel["count"]
    width = edges[1] - edges[0]
    centers = [e + width / 2 for e in edges[:-1]]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers, acc, width=width * 0.95, color="tab:blue", edgecolor="k", label="accuracy")
    ax.bar(centers, [c - a if n else 0 for a, c, n in zip(acc, conf, count)], bottom=acc, width=width * 0.95,
           color="tab:red", alpha=0.35, edgecolor="r", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {metrics['ece']:.2f}%  top-1 err {metrics['top1_err']:.2f}%", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(centers, count, width=width * 0.95, color="gray")
    ax2.set_yscale("log")
    ax2.set_xlabel("confidence")
    ax2.set_ylabel("samples")
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
