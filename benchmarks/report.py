"""Write a run's report: ``report.md``, ``summary.csv``, ``results.csv``, ``failures.csv`` and ``plots/*.png``."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from pskd.core.io import atomic_write_text

from .aggregate import RunData, collect, lower_is_better, summarize
from .paper import load_paper, paper_table
from .tasks import TASKS

__all__ = ["write_report", "summary_markdown", "fmt"]

MAX_MD_METRICS = 8  # wider tables stop being readable; summary.csv has every metric


def fmt(x: float, signed: bool = False) -> str:
    """A metric value for a table: 1 decimal from 100 up, 2 from 1 up, 3 below ('-' for NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    digits = 1 if a >= 100 else 2 if a >= 1 else 3
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _mean_std(r: pd.Series) -> str:
    return fmt(r["mean"]) + ("" if math.isnan(r["std"]) else f" ± {fmt(r['std'])}")


def _cell(r: pd.Series, best: bool) -> str:
    text = _mean_std(r)
    if best:
        text = f"**{text}**"
    if r["method"] != r["baseline"] and not math.isnan(r["diff"]):
        text += f" ({fmt(r['diff'], signed=True)})"
    return text


def _shown_metrics(sub: pd.DataFrame) -> list[str]:
    """The task's headline metrics when it has some, else the first few (summary.csv has them all)."""
    metrics = list(dict.fromkeys(sub["metric"]))  # already in headline-first order (summarize)
    head = [m for m in getattr(TASKS.get(sub["task"].iloc[0]), "metrics_order", ()) if m in metrics]
    return head or metrics[:MAX_MD_METRICS]


def _table(rows: list[list[str]]) -> str:
    head, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def summary_markdown(summary: pd.DataFrame, run: dict | None = None) -> str:
    """One table per (entry, model): methods x headline metrics, ``mean ± std (diff to baseline)``, best in bold."""
    if summary.empty:
        return "_No finished jobs._\n"
    entries = (run or {}).get("entries", {})
    parts = []
    for (entry, model), sub in summary.groupby(["entry", "model"], sort=False):
        task = sub["task"].iloc[0]
        baseline = sub["baseline"].iloc[0]
        seeds = int(sub["n"].max())
        title = f"### {entry} ({task})" + ("" if model == "default" else f", model {model}")
        parts.append(f"{title}: {seeds} seed{'s' if seeds != 1 else ''}, baseline `{baseline}`")
        desc = entries.get(entry, {}).get("description")
        if desc:
            parts.append(f"\n{desc.strip()}")
        metrics = _shown_metrics(sub)
        best = {}
        for m in metrics:
            col = sub[sub.metric == m]["mean"]
            # No bold where every method has the same value: nothing is best.
            best[m] = (col.min() if lower_is_better(m) else col.max()) if col.nunique() > 1 else None
        rows = [["method", *metrics]]
        for method, msub in sub.groupby("method", sort=False):
            by_metric = {r["metric"]: r for _, r in msub.iterrows()}
            label = f"{method} (baseline)" if method == baseline and "baseline" not in method else method
            rows.append([label] + [_cell(by_metric[m], by_metric[m]["mean"] == best[m]) if m in by_metric else "-"
                                   for m in metrics])
        parts.append("\n" + _table(rows) + "\n")
    return "\n".join(parts) + "\n"


def _paper_markdown(summary: pd.DataFrame, data: RunData) -> str:
    tables = {j["entry"]: j.get("paper") for j in data.jobs if j.get("paper")}
    if not tables:
        return ""
    parts = ["## The paper's numbers side by side\n", f"Source: {load_paper()['source']}", "",
             f"Units: {load_paper()['units']}.", ""]
    for entry, name in tables.items():
        t = paper_table(name)
        if t is None:
            parts.append(f"- `{entry}`: no paper table named {name!r} in paper_numbers.yaml\n")
            continue
        parts.append(f"### {entry} vs {t.get('title', name)}\n")
        if t.get("source"):
            parts.append(f"Source of this table: {t['source']}.\n")
        if t.get("note"):
            parts.append(f"{t['note']}\n")
        sub = summary[(summary.entry == entry) & summary.metric.isin(t.get("metrics", []))]
        if sub.empty:
            continue
        for model, msub in sub.groupby("model", sort=False):
            metrics = [m for m in t["metrics"] if m in set(msub.metric)]
            rows = [["model", "method", *[f"{m} {who}" for m in metrics for who in ("ours", "paper")]]]
            for method, xsub in msub.groupby("method", sort=False):
                by = {r["metric"]: r for _, r in xsub.iterrows()}
                cells = []
                for m in metrics:
                    r = by.get(m)
                    cells += ["-", "-"] if r is None else [_mean_std(r), fmt(r["paper"])]
                rows.append([model, method, *cells])
            parts.append(_table(rows) + "\n")
    return "\n".join(parts) + "\n"


def _failures(data: RunData) -> list[dict]:
    out = []
    for j in data.failed():
        st = j.get("status", {})
        state = st.get("state", "pending")
        reason = st.get("reason") or ("interrupted or still running" if state == "running" else "")
        out.append({"job": j["id"], "state": state, "reason": reason, "stderr_tail": st.get("tail", ""),
                    "log": str(Path("prepare" if j.get("kind") == "prepare" else "jobs") /
                               (j["id"].split("/", 1)[1] if j.get("kind") == "prepare" else j["id"]) / "stderr.log")})
    return out


def failures_markdown(failures: list[dict], not_run: list[str] = (), with_tail: bool = True) -> str:
    """The failed jobs, each with its reason (and the last lines of its stderr), and the jobs not run yet."""
    parts = []
    if failures:
        parts.append(f"## Failed jobs ({len(failures)})\n")
        for f in failures:
            parts.append(f"- `{f['job']}`: {f['state']}: {f['reason']} (log: `{f['log']}`)")
            if with_tail and f["stderr_tail"]:
                parts.append("  ```\n" + "\n".join("  " + ln for ln in f["stderr_tail"].splitlines()) + "\n  ```")
    if not_run:
        parts.append(f"\n## Not run ({len(not_run)}: interrupted before them, or filtered out)\n")
        parts.append(", ".join(f"`{i}`" for i in not_run))
    return "\n".join(parts) + "\n" if parts else ""


def write_report(run_dir: str | Path, plots: bool = True) -> str:
    """Collect ``run_dir``, write the report files, and return the markdown summary for the terminal.

    Returns:
        the per-entry summary tables plus the list of failed jobs (without stderr tails).
    """
    run_dir = Path(run_dir)
    data = collect(run_dir)
    summary = summarize(data)
    atomic_write_text(run_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(run_dir / "results.csv", data.results.to_csv(index=False))
    failures = _failures(data)
    atomic_write_text(run_dir / "failures.csv", pd.DataFrame(
        failures, columns=["job", "state", "reason", "stderr_tail", "log"]).to_csv(index=False))

    images: list[Path] = []
    if plots:
        from .plots import make_plots  # matplotlib only when plotting

        images = make_plots(data, run_dir / "plots")

    run = data.run
    n_ok, n_failed, not_run = len(data.finished()), len(failures), data.not_run()
    head = [f"# pskd-bench report: {run.get('suite', run_dir.name)}\n"]
    if run:
        head += [f"- Command: `{run.get('command', '')}`",
                 f"- Suite file: `{run.get('suite_path', '')}` (copied to `suite.yaml`)",
                 f"- Started: {run.get('started', '?')}; finished: {run.get('finished', '?')}"
                 + (f"; wall time {run['wall_time']}" if run.get("wall_time") else "")
                 + (f" (resumed: {run['skipped_as_finished']} jobs had finished in an earlier invocation)"
                    if run.get("skipped_as_finished") else ""),
                 f"- Machine: {run.get('host', '?')}, {run.get('cpus', '?')} CPUs, Python {run.get('python', '?')}"
                 + (f", torch {run['torch']}" if run.get("torch") else "")]
    head += [f"- Jobs: {n_ok} finished, {n_failed} failed" + (f", {len(not_run)} not run" if not_run else ""), ""]
    explain = ("Cells: mean ± sample std over seeds, and in parentheses the difference of the means to the baseline "
               "method of the same model. Lower is better for errors, NLL, ECE and AURC; higher for accuracy, mAP "
               "and BLEU. Best mean per column in bold. Every metric is in `summary.csv` (per-seed values in "
               "`results.csv`).\n")
    tables = summary_markdown(summary, run)
    body = ["## Results\n", explain, tables, _paper_markdown(summary, data), failures_markdown(failures, not_run)]
    if images:
        body.append("## Plots\n")
        body += [f"![{p.stem}](plots/{p.name})\n" for p in images]
    atomic_write_text(run_dir / "report.md", "\n".join(head + body))
    return tables + failures_markdown(failures, not_run, with_tail=False)
