"""Collect the jobs of a run directory and aggregate their metrics over seeds.

Tables are long-format pandas frames; the report formats them. Standard deviations are sample standard deviations
(ddof=1) over seeds, NaN for a single seed. The difference to the baseline is the difference of the means, taken
within the same suite entry and model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .files import read_json
from .jobs import is_number, valid_metrics
from .paper import paper_value
from .tasks import TASKS

__all__ = ["RunData", "collect", "summarize", "metric_order", "lower_is_better"]

KEYS = ["entry", "task", "model", "method", "seed"]
_LOWER = ("err", "nll", "ece", "aurc", "loss", "ppl", "time", "brier")


def lower_is_better(metric: str) -> bool:
    """Direction of a metric, from its name (errors, losses, calibration errors: lower is better)."""
    return any(tag in metric.lower() for tag in _LOWER)


@dataclass
class RunData:
    """Everything read from a run directory.

    Attributes:
        jobs: one dict per job directory: its spec (job.json), ``status`` and, when finished, ``result``
            (the metrics.json content).
        results: long frame ``entry, task, model, method, seed, metric, value`` of the finished jobs.
        history: long frame ``entry, task, model, method, seed, epoch, key, value`` from the ``history`` lists.
        order: job ids in suite order (from run.json), to order methods and models as the suite does.
        run: run.json (suite, command, dates), or {}.
    """

    jobs: list[dict[str, Any]]
    results: pd.DataFrame
    history: pd.DataFrame
    order: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def finished(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j.get("result") is not None]

    def failed(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j.get("result") is None]

    def not_run(self) -> list[str]:
        """Job ids of the suite (run.json) that never started: interrupted before them, or filtered out."""
        seen = {j.get("id") for j in self.jobs}
        return [i for i in self.order if i not in seen and not i.startswith("prepare/")]


def collect(run_dir: str | Path) -> RunData:
    """Read every job under ``run_dir/jobs`` (and the preparations under ``run_dir/prepare``)."""
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json") or {}
    order = list(run.get("jobs", []))
    rank = {jid: i for i, jid in enumerate(order)}
    jobs, rows, hist = [], [], []
    specs = sorted(list(run_dir.glob("prepare/*/job.json")) + list(run_dir.glob("jobs/**/job.json")))
    for spec_path in specs:
        spec = read_json(spec_path)
        if not isinstance(spec, dict):
            continue
        status = read_json(spec_path.parent / "status.json") or {}
        spec["status"] = status
        metrics = read_json(spec_path.parent / "metrics.json") if spec.get("kind") == "train" else None
        ok = status.get("state") in ("ok", None) and valid_metrics(metrics)
        spec["result"] = metrics if ok else None
        jobs.append(spec)
        if not ok:
            continue
        key = {k: spec.get(k) for k in KEYS}
        task = TASKS.get(spec.get("task"))
        for name, value in (task.clean_metrics(metrics["metrics"]) if task else metrics["metrics"]).items():
            if is_number(value):
                rows.append({**key, "metric": name, "value": float(value)})
        for i, h in enumerate(metrics.get("history") or []):
            if not isinstance(h, dict):
                continue
            epoch = h.get("epoch", i)
            for name, value in h.items():
                if name != "epoch" and is_number(value):
                    hist.append({**key, "epoch": epoch, "key": name, "value": float(value)})
    jobs.sort(key=lambda j: (rank.get(j.get("id"), len(rank)), str(j.get("id"))))
    # A successful preparation is neither a result nor a failure: keep it out of the job list.
    jobs = [j for j in jobs if not (j.get("kind") == "prepare" and j["status"].get("state") == "ok")]
    results = pd.DataFrame(rows, columns=KEYS + ["metric", "value"])
    history = pd.DataFrame(hist, columns=KEYS + ["epoch", "key", "value"])
    return RunData(jobs=jobs, results=results, history=history, order=order, run=run)


def metric_order(task: str, metrics: list[str]) -> list[str]:
    """The task's headline metrics first (in its order), then the others alphabetically."""
    head = [m for m in getattr(TASKS.get(task), "metrics_order", ()) if m in metrics]
    return head + sorted(m for m in metrics if m not in head)


def summarize(data: RunData) -> pd.DataFrame:
    """Mean, std and count over seeds per (entry, model, method, metric), the baseline's mean and the difference
    to it, and the paper's number where the entry names a paper table.

    Returns:
        columns ``entry, task, model, method, metric, n, mean, std, baseline, baseline_mean, diff, paper``;
        rows in suite order (entries, models, methods as first seen in run.json) and headline metrics first.
    """
    cols = ["entry", "task", "model", "method", "metric", "n", "mean", "std", "baseline", "baseline_mean", "diff",
            "paper"]
    if data.results.empty:
        return pd.DataFrame(columns=cols)
    grouped = (data.results.groupby(["entry", "task", "model", "method", "metric"], sort=False)["value"]
               .agg(n="count", mean="mean", std=lambda s: s.std(ddof=1) if s.count() > 1 else math.nan)
               .reset_index())
    meta = {(j["entry"], j["model"], j["method"]): j for j in data.finished()}
    baselines = {j["entry"]: j.get("baseline") for j in data.jobs}
    means = {(r.entry, r.model, r.method, r.metric): r.mean for r in grouped.itertuples()}
    out = []
    for r in grouped.itertuples():
        base = baselines.get(r.entry)
        base_mean = means.get((r.entry, r.model, base, r.metric), math.nan)
        paper = meta.get((r.entry, r.model, r.method), {}).get("paper")
        p = paper_value(paper, r.model, r.method, r.metric)
        out.append({"entry": r.entry, "task": r.task, "model": r.model, "method": r.method, "metric": r.metric,
                    "n": int(r.n), "mean": r.mean, "std": r.std, "baseline": base, "baseline_mean": base_mean,
                    "diff": r.mean - base_mean, "paper": math.nan if p is None else p})
    df = pd.DataFrame(out, columns=cols)
    # Suite order: the order in which (entry, model, method) first appear in run.json's job list.
    order = [tuple(jid.split("/")[:3]) for jid in data.order if not jid.startswith("prepare/")]
    seen = list(dict.fromkeys(order))
    rank = {k: i for i, k in enumerate(seen)}
    df["_rank"] = [rank.get((e, m, me), len(rank)) for e, m, me in zip(df.entry, df.model, df.method)]
    metric_rank = {}
    for task, sub in df.groupby("task"):
        for i, m in enumerate(metric_order(task, list(sub.metric.unique()))):
            metric_rank[(task, m)] = i
    df["_mrank"] = [metric_rank[(t, m)] for t, m in zip(df.task, df.metric)]
    df = df.sort_values(["_rank", "entry", "model", "method", "_mrank"], kind="stable")
    return df.drop(columns=["_rank", "_mrank"]).reset_index(drop=True)
