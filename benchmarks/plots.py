"""Figures of a run (PNG, matplotlib Agg): reliability diagrams, validation metrics vs epoch, alpha schedules."""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and compute nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from pskd.core.io import atomic_path  # noqa: E402

from .aggregate import RunData  # noqa: E402

__all__ = ["make_plots", "pooled_reliability"]

MAX_PANELS = 9


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", p) for p in parts if p and p != "default")


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def pooled_reliability(diagrams: list[dict]) -> dict | None:
    """Pool per-seed reliability diagrams: counts add, accuracy and confidence are count-weighted means.

    Returns None if the diagrams are missing or have different bin edges.
    """
    diagrams = [d for d in diagrams if isinstance(d, dict) and "edges" in d and "count" in d]
    if not diagrams or any(d["edges"] != diagrams[0]["edges"] for d in diagrams):
        return None
    count = np.sum([np.asarray(d["count"], float) for d in diagrams], axis=0)
    safe = np.maximum(count, 1)
    acc = np.sum([np.asarray(d["accuracy"], float) * np.asarray(d["count"], float) for d in diagrams], axis=0) / safe
    conf = np.sum([np.asarray(d["confidence"], float) * np.asarray(d["count"], float) for d in diagrams], axis=0) / safe
    return {"edges": list(diagrams[0]["edges"]), "count": count.tolist(), "accuracy": acc.tolist(),
            "confidence": conf.tolist()}


def _reliability(data: RunData, out: Path) -> list[Path]:
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for j in data.finished():
        rel = j["result"].get("reliability")
        if rel:
            groups.setdefault((j["entry"], j["model"]), {}).setdefault(j["method"], []).append(rel)
    paths = []
    for (entry, model), by_method in groups.items():
        methods = list(by_method)[:MAX_PANELS]
        fig, axes = _grid(len(methods))
        for ax, method in zip(axes, methods):
            d = pooled_reliability(by_method[method])
            if d is None:
                ax.set_title(f"{method}: bins differ across seeds")
                continue
            edges = np.asarray(d["edges"])
            centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
            count, acc, conf = (np.asarray(d[k]) for k in ("count", "accuracy", "confidence"))
            shown = count > 0
            n = count.sum()
            ece = 100 * float(np.sum(count[shown] / n * np.abs(acc[shown] - conf[shown]))) if n else float("nan")
            ax.bar(centers[shown], acc[shown], width[shown], edgecolor="black", color="tab:blue", label="accuracy")
            gap_low = np.minimum(acc, conf)[shown]
            ax.bar(centers[shown], np.abs(conf - acc)[shown], width[shown], bottom=gap_low, color="tab:red",
                   alpha=0.3, edgecolor="tab:red", hatch="//", label="gap to confidence")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
                   title=f"{method} (ECE {ece:.2f}%, {_seeds(len(by_method[method]))} pooled)")
            ax.legend(loc="upper left", fontsize=8)
        fig.suptitle(f"Reliability: {entry}" + ("" if model == "default" else f" / {model}"))
        paths.append(_save(fig, out / f"reliability_{_slug(entry, model)}.png"))
    return paths


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _curves(ax: plt.Axes, sub: pd.DataFrame) -> None:
    """One line per method: mean over seeds, shaded +- std."""
    for method, msub in sub.groupby("method", sort=False):
        stats = msub.groupby("epoch")["value"].agg(["mean", "std"]).reset_index()
        ax.plot(stats["epoch"], stats["mean"], marker="o", ms=3, label=method)
        if stats["std"].notna().any():
            ax.fill_between(stats["epoch"], stats["mean"] - stats["std"].fillna(0),
                            stats["mean"] + stats["std"].fillna(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _history(data: RunData, out: Path) -> list[Path]:
    paths = []
    if data.history.empty:
        return paths
    for (entry, model), sub in data.history.groupby(["entry", "model"], sort=False):
        # Validation metrics first (what the figure is for), then training curves, then the rest (lr, timings).
        # Throughput and timings are not learning curves; alpha has its own figure.
        keys = [k for k in dict.fromkeys(sub["key"]) if k != "alpha" and "time" not in k and "per_s" not in k]
        keys = sorted(keys, key=lambda k: 0 if k.startswith("val") else 1 if k.startswith("train") else 2)
        keys = keys[:MAX_PANELS]
        if keys:
            fig, axes = _grid(len(keys))
            for ax, key in zip(axes, keys):
                _curves(ax, sub[sub.key == key])
                ax.set_title(key)
            axes[0].legend(fontsize=8)
            fig.suptitle(f"Metrics vs epoch: {entry}" + ("" if model == "default" else f" / {model}"))
            paths.append(_save(fig, out / f"history_{_slug(entry, model)}.png"))
        alpha = sub[sub.key == "alpha"]
        if not alpha.empty:
            fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
            _curves(ax, alpha)
            ax.set(ylabel="alpha", title=f"Alpha schedule: {entry}" + ("" if model == "default" else f" / {model}"))
            ax.legend(fontsize=8)
            paths.append(_save(fig, out / f"alpha_{_slug(entry, model)}.png"))
    return paths


def make_plots(data: RunData, out_dir: str | Path) -> list[Path]:
    """Write every figure of a run to ``out_dir``; returns their paths (none when nothing can be drawn)."""
    out = Path(out_dir)
    return _reliability(data, out) + _history(data, out)
