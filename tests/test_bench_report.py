"""Aggregation, report and plots of the benchmark harness, on synthetic metrics.json fixtures."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from pskd.benchmarks.aggregate import collect, summarize
from pskd.benchmarks.cli import main
from pskd.benchmarks.jobs import expand
from pskd.benchmarks.paper import load_paper, paper_value
from pskd.benchmarks.plots import pooled_reliability
from pskd.benchmarks.report import fmt
from pskd.benchmarks.suite import load_suite
from pskd.core.io import atomic_write_json

# Per-seed top-1 errors and NLLs of the fixtures, and what the tables must show.
TOP1 = {"ce": [20.0, 21.0, 22.0], "ls": [18.0, 19.5, 20.5], "pskd": [16.0, 16.0, 19.0]}
NLL = {"ce": [0.9, 1.0, 1.1], "ls": [0.8, 0.8, 0.8], "pskd": [0.7, 0.6, 0.5]}


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def metrics_for(method: str, seed: int) -> dict:
    history = [{"epoch": e, "alpha": 0.8 * (e + 1) / 3 if method == "pskd" else 0.0, "val_top1_err": 30.0 - e - seed,
                "train_loss": 2.0 - 0.5 * e} for e in range(3)]
    # Two bins; the seeds' counts differ so that pooling must weight by count.
    reliability = {"edges": [0.0, 0.5, 1.0], "count": [2 + seed, 8], "accuracy": [0.5, 0.75],
                   "confidence": [0.4, 0.8]}
    return {"task": "classification", "method": method, "seed": seed,
            "metrics": {"top1_err": TOP1[method][seed], "nll": NLL[method][seed], "extra": 1.0},
            "history": history, "reliability": reliability}


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run directory as a finished run leaves it: job.json, status.json and metrics.json per job."""
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(textwrap.dedent("""
        name: fixture
        seeds: 3
        tasks:
          c100:
            task: cls
            paper: cifar100
            description: A synthetic stand-in for CIFAR-100.
            models: [preact_resnet18]
            methods: [ce, ls, pskd, cs_kd]
    """))
    out = tmp_path / "run"
    jobs = expand(load_suite(str(suite_path)), out)
    atomic_write_json(out / "run.json", {"suite": "fixture", "command": "pskd-bench run fixture",
                                         "jobs": [j.id for j in jobs],
                                         "entries": {"c100": {"task": "cls", "description": "A synthetic stand-in."}}})
    for job in jobs:
        job.dir.mkdir(parents=True)
        atomic_write_json(job.dir / "job.json", {**job.spec(), "spec_hash": job.spec_hash()})
        if job.method == "cs_kd":  # every cs_kd job failed
            atomic_write_json(job.dir / "status.json", {"state": "failed", "reason": "step 'train' exited with code 1",
                                                        "tail": "CUDA out of memory"})
            continue
        atomic_write_json(job.dir / "status.json", {"state": "ok", "duration_s": 1.0})
        atomic_write_json(job.metrics_path, metrics_for(job.method, job.seed))
    return out


def test_collect_reads_every_job(run_dir):
    data = collect(run_dir)
    assert len(data.jobs) == 12 and len(data.finished()) == 9 and len(data.failed()) == 3
    assert len(data.results) == 9 * 3
    assert set(data.history.key) == {"alpha", "val_top1_err", "train_loss"}


def test_mean_std_and_difference_to_baseline(run_dir):
    s = summarize(collect(run_dir)).set_index(["method", "metric"])
    for method in TOP1:
        row = s.loc[(method, "top1_err")]
        assert row["n"] == 3
        assert row["mean"] == pytest.approx(sum(TOP1[method]) / 3)
        assert row["std"] == pytest.approx(sample_std(TOP1[method]))
        assert row["diff"] == pytest.approx(sum(TOP1[method]) / 3 - 21.0)
        assert row["baseline"] == "ce"
    assert s.loc[("pskd", "top1_err"), "diff"] == pytest.approx(17.0 - 21.0)
    assert s.loc[("ls", "nll"), "diff"] == pytest.approx(0.8 - 1.0)
    assert s.loc[("ls", "nll"), "std"] == pytest.approx(0.0)
    # Suite order for methods, headline metrics first, unknown metrics after them.
    summary = summarize(collect(run_dir))
    assert list(dict.fromkeys(summary.method)) == ["ce", "ls", "pskd"]
    assert list(dict.fromkeys(summary.metric)) == ["top1_err", "nll", "extra"]


def test_paper_numbers_side_by_side(run_dir):
    s = summarize(collect(run_dir)).set_index(["method", "metric"])
    assert s.loc[("ce", "top1_err"), "paper"] == 24.18
    assert s.loc[("pskd", "nll"), "paper"] == 0.76
    assert s.loc[("ls", "top1_err"), "paper"] == 20.94
    assert math.isnan(s.loc[("ce", "extra"), "paper"])
    assert paper_value("imagenet", "resnet152", "pskd", "ece") == 2.51
    assert paper_value("cifar100", "pyramidnet200_a240", "tf_kd_reg", "aurc") == 37.04  # alias of the README's TF-KD
    assert paper_value("iwslt15-de-en", "transformer", "pskd", "bleu") == 36.2
    assert paper_value(None, "x", "ce", "top1_err") is None
    assert "lgcnsai/PS-KD-Pytorch" in load_paper()["source"]


def test_paper_numbers_match_reference_md():
    """Every CIFAR-100 and ImageNet row of REFERENCE.md section 3 is in the data file, if the file is here."""
    ref = Path("/work/shared/REFERENCE.md")
    if not ref.exists():
        pytest.skip("REFERENCE.md is not on this machine")
    text = ref.read_text()
    tables = load_paper()["tables"]
    for model, row in tables["cifar100"]["rows"].items():
        for values in row.values():
            assert " | ".join(f"{v:.2f}" for v in values) in text, (model, values)
    for values in tables["imagenet"]["rows"]["resnet152"].values():
        assert " | ".join(f"{v:.2f}" for v in values) in text


def test_report_files_and_content(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    for name in ("report.md", "summary.csv", "results.csv", "failures.csv"):
        assert (run_dir / name).exists(), name
    md = (run_dir / "report.md").read_text()
    # ce: 21 ± 1; ls: 19.33 ± 1.26 (-1.67); pskd: 17 ± 1.73 (-4.00), the best top-1 in bold.
    # The task's headline metrics only; the others are in summary.csv.
    assert "| method | top1_err | nll |\n" in md
    assert "| ce (baseline) | 21.00 ± 1.00 | 1.00 ± 0.100 |\n" in md
    assert "| ls | 19.33 ± 1.26 (-1.67) |" in md
    assert "| pskd | **17.00 ± 1.73** (-4.00) | **0.600 ± 0.100** (-0.400) |" in md
    assert "A synthetic stand-in." in md
    assert "| preact_resnet18 | pskd | 17.00 ± 1.73 | 20.82 | 0.600 ± 0.100 | 0.760 |" in md
    assert "## Failed jobs (3)" in md and "CUDA out of memory" in md
    assert "| pskd | **17.00 ± 1.73** (-4.00)" in printed and "c100/preact_resnet18/cs_kd/seed0" in printed
    csv = pd.read_csv(run_dir / "summary.csv")
    row = csv[(csv.method == "pskd") & (csv.metric == "top1_err")].iloc[0]
    assert row["mean"] == pytest.approx(17.0) and row["diff"] == pytest.approx(-4.0) and row["paper"] == 20.82
    assert len(pd.read_csv(run_dir / "results.csv")) == 27
    assert len(pd.read_csv(run_dir / "failures.csv")) == 3
    for png in ("reliability_c100_preact_resnet18.png", "history_c100_preact_resnet18.png",
                "alpha_c100_preact_resnet18.png"):
        path = run_dir / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"](plots/{png})" in md


def test_report_copy_to(run_dir, tmp_path):
    dest = tmp_path / "published"
    assert main(["report", str(run_dir), "--no-plots", "--copy-to", str(dest)]) == 0
    assert (dest / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert (dest / "summary.csv").exists() and (dest / "run.json").exists()


def test_report_on_a_non_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_pooled_reliability_weights_by_count():
    a = {"edges": [0, 0.5, 1], "count": [1, 3], "accuracy": [1.0, 0.0], "confidence": [0.2, 0.6]}
    b = {"edges": [0, 0.5, 1], "count": [3, 1], "accuracy": [0.0, 1.0], "confidence": [0.4, 1.0]}
    p = pooled_reliability([a, b])
    assert p["count"] == [4, 4]
    assert p["accuracy"] == pytest.approx([0.25, 0.25])
    assert p["confidence"] == pytest.approx([(0.2 + 1.2) / 4, (1.8 + 1.0) / 4])
    assert pooled_reliability([a, {**b, "edges": [0, 0.3, 1]}]) is None


def test_fmt():
    assert fmt(123.456) == "123.5" and fmt(21.0) == "21.00" and fmt(0.61234) == "0.612"
    assert fmt(-4.0, signed=True) == "-4.00" and fmt(0.25, signed=True) == "+0.250" and fmt(float("nan")) == "-"


def test_detection_metrics_drop_raw_duplicates_and_coco_sentinels():
    from pskd.benchmarks.tasks import TASKS

    raw = {"mAP": 0.3, "mAP_50": 0.6, "mAP_l": -1.0, "coco/bbox_mAP": 0.3, "pascal_voc/mAP": 0.6}
    assert TASKS["det"].clean_metrics(raw) == {"mAP": 0.3, "mAP_50": 0.6}
    assert TASKS["cls"].clean_metrics({"top1_err": 1.0}) == {"top1_err": 1.0}
