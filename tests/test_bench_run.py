"""Running suites with synthetic jobs: resume-skip, failure isolation, timeouts, executors, the CLI."""
from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pskd.benchmarks.cli import main
from pskd.benchmarks.executors import LocalExecutor, SlurmExecutor, TorchrunExecutor, slurm_parameters, torchrun_argv
from pskd.benchmarks.jobs import expand, job_state
from pskd.benchmarks.progress import Progress
from pskd.benchmarks.suite import load_suite
from pskd.benchmarks.tasks import Command

# Stands in for an adapter: records each call, then behaves according to the method name.
FAKE = r'''
import json, os, sys, time
out, method, seed, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(calls, "a") as f:
    f.write(f"{method}/{seed}\n")
if method == "crash":
    sys.stderr.write("Traceback (most recent call last):\nRuntimeError: boom in the fake trainer\n")
    sys.exit(3)
if method == "hang":
    time.sleep(60)
if method == "silent":
    sys.exit(0)
metrics = {"top1_err": {"ce": 20.0, "ls": 18.0, "pskd": 16.0}[method] + seed, "nll": 0.5 + 0.1 * seed}
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"task": "shell", "method": method, "seed": seed, "metrics": metrics}, f)
'''


@pytest.fixture()
def fake(tmp_path: Path) -> Path:
    script = tmp_path / "fake_adapter.py"
    script.write_text(FAKE)
    return script


def suite_file(tmp_path: Path, fake: Path, methods: list[str], seeds=(0, 1), extra: str = "") -> Path:
    calls = tmp_path / "calls.txt"
    text = textwrap.dedent(f"""
        name: synthetic
        seeds: {list(seeds)}
        tasks:
          toy:
            task: shell
            methods: {methods}
            command: ["{{python}}", "{fake}", "{{out_dir}}", "{{method}}", "{{seed}}", "{calls}"]
    """) + textwrap.indent(textwrap.dedent(extra), "    ")
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().split() if path.exists() else []


def run(suite: Path, out: Path, *extra: str) -> int:
    return main(["run", str(suite), "--out", str(out), "--no-plots", *extra])


def test_run_then_resume_skips_finished_and_reruns_failed(tmp_path, fake, capsys):
    suite = suite_file(tmp_path, fake, ["ce", "crash", "pskd"])
    out = tmp_path / "run"
    assert run(suite, out) == 1  # one method crashes: non-zero exit, but every other job ran
    assert sorted(calls(tmp_path)) == sorted(["ce/0", "ce/1", "crash/0", "crash/1", "pskd/0", "pskd/1"])
    printed = capsys.readouterr().out
    assert "jobs 6/6 done, 2 failed" in printed and "ETA" in printed
    assert ("toy/default/crash/seed0`: failed: step 'run' exited with code 3: RuntimeError: boom in the fake trainer"
            in printed)
    ok = out / "jobs/toy/default/ce/seed0"
    assert json.loads((ok / "status.json").read_text())["state"] == "ok"
    assert (ok / "job.json").exists() and (ok / "stdout.log").exists() and (ok / "stderr.log").exists()
    mtime = (ok / "metrics.json").stat().st_mtime_ns

    run_json = json.loads((out / "run.json").read_text())
    assert run_json["command"] == f"pskd-bench run {suite} --out {out} --no-plots"
    assert run_json["jobs"][0] == "toy/default/ce/seed0" and "finished" in run_json

    (tmp_path / "calls.txt").unlink()
    assert run(suite, out) == 1
    assert sorted(calls(tmp_path)) == ["crash/0", "crash/1"]  # only the failed jobs ran again
    assert "(resumed: 4 jobs had finished in an earlier invocation)" in (out / "report.md").read_text()
    assert (ok / "metrics.json").stat().st_mtime_ns == mtime
    assert "4 finished earlier (skipped), 2 to run" in capsys.readouterr().out

    (tmp_path / "calls.txt").unlink()
    assert run(suite, out, "--filter", "method=ce", "--force") == 0
    assert sorted(calls(tmp_path)) == ["ce/0", "ce/1"]


def test_interrupted_job_without_status_ok_reruns(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["ce"], seeds=[0])
    out = tmp_path / "run"
    assert run(suite, out) == 0
    (job,) = expand(load_suite(str(suite)), out)
    assert job_state(job) == "done"
    status = json.loads((job.dir / "status.json").read_text())
    (job.dir / "status.json").write_text(json.dumps({**status, "state": "running"}))  # killed mid-run
    assert job_state(job) == "pending"
    (job.dir / "status.json").write_text(json.dumps(status))
    (job.dir / "metrics.json").write_text('{"metrics": {"top1_err": 1')  # truncated by a kill
    assert job_state(job) == "pending"


def test_changed_spec_reruns(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["ce"], seeds=[0])
    out = tmp_path / "run"
    assert run(suite, out) == 0
    suite.write_text(suite.read_text() + "    overrides: {lr: 0.5}\n")
    (job,) = expand(load_suite(str(suite)), out)
    assert job_state(job) == "pending"


def test_failures_are_isolated_and_explained(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["silent", "hang", "ce"], seeds=[0], extra="timeout: 1s\n")
    out = tmp_path / "run"
    t0 = time.monotonic()
    assert run(suite, out, "--jobs", "3") == 1
    assert time.monotonic() - t0 < 20  # the hanging job was killed at its timeout
    status = {m: json.loads((out / f"jobs/toy/default/{m}/seed0/status.json").read_text()) for m in
              ("silent", "hang", "ce")}
    assert status["ce"]["state"] == "ok"
    assert status["hang"]["state"] == "timeout" and "timed out after 1 s" in status["hang"]["reason"]
    assert status["silent"]["reason"] == "finished but left no valid metrics.json"
    report = (out / "report.md").read_text()
    assert "## Failed jobs (2)" in report and "toy/default/hang/seed0" in report


def test_crash_tail_reaches_the_report(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["crash", "ce"], seeds=[0])
    out = tmp_path / "run"
    run(suite, out)
    report = (out / "report.md").read_text()
    assert "RuntimeError: boom in the fake trainer" in report
    failures = (out / "failures.csv").read_text()
    assert "toy/default/crash/seed0" in failures and "toy/default/ce" not in failures


def test_missing_data_fails_that_job_only(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("BENCH_NO_SUCH_VAR", raising=False)
    suite = suite_file(tmp_path, fake, ["ce"], seeds=[0])
    text = suite.read_text() + textwrap.dedent(f"""
      other:
        task: shell
        methods: [ce]
        seeds: [0]
        data: {{root: {{path: "${{BENCH_NO_SUCH_VAR}}", hint: "the path to CIFAR-100"}}}}
        command: ["{{python}}", "{fake}", "{{out_dir}}", "{{method}}", "{{seed}}", "{tmp_path / 'calls.txt'}"]
      absent:
        task: shell
        methods: [ce]
        seeds: [0]
        data: {{root: "{tmp_path / 'nowhere'}"}}
        command: ["{{python}}", "{fake}", "{{out_dir}}", "{{method}}", "{{seed}}", "{tmp_path / 'calls.txt'}"]
    """).replace("\n", "\n  ")
    suite.write_text(text)
    out = tmp_path / "run"
    assert run(suite, out) == 1
    assert calls(tmp_path) == ["ce/0"]
    s1 = json.loads((out / "jobs/other/default/ce/seed0/status.json").read_text())
    assert "BENCH_NO_SUCH_VAR is not set (the path to CIFAR-100)" in s1["reason"]
    s2 = json.loads((out / "jobs/absent/default/ce/seed0/status.json").read_text())
    assert f"data set 'root' not found at {tmp_path / 'nowhere'}" in s2["reason"]


def test_failed_preparation_blocks_its_jobs_only(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["ce", "ls"], seeds=[0],
                       extra='prepare_command: ["{python}", "-c", "import sys; sys.exit(5)"]\n')
    out = tmp_path / "run"
    assert run(suite, out) == 1
    assert calls(tmp_path) == []
    status = json.loads((out / "jobs/toy/default/ls/seed0/status.json").read_text())
    assert status["reason"].startswith("not run: prepare/toy failed: step 'prepare' exited with code 5")


def test_parallel_jobs_run_at_once_with_thread_budget(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert LocalExecutor(2).slot_env(0)["OMP_NUM_THREADS"] == str(max(1, (__import__("os").cpu_count() or 1) // 2))
    assert LocalExecutor(1).slot_env(0) == {}
    sleeper = tmp_path / "sleep.yaml"
    code = "import json,sys,time; time.sleep(1); json.dump({'metrics': {'x': 1}}, open(sys.argv[1] + '/m.json', 'w'))"
    sleeper.write_text(textwrap.dedent(f"""
        seeds: 4
        tasks:
          s:
            task: shell
            methods: [ce]
            command: ["{{python}}", "-c", "{code.replace('m.json', 'metrics.json')}", "{{out_dir}}"]
    """))
    t0 = time.monotonic()
    assert run(sleeper, tmp_path / "run", "--jobs", "4") == 0
    assert time.monotonic() - t0 < 3.5  # 4 one-second jobs at once, not one after the other


def test_dry_run_lists_commands_and_runs_nothing(tmp_path, fake, capsys):
    suite = suite_file(tmp_path, fake, ["ce", "pskd"], seeds=[0])
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "toy/default/pskd/seed0  [pending]" in out and str(fake) in out and "2 jobs: 0 done" in out
    assert calls(tmp_path) == [] and not (tmp_path / "run").exists()


def test_bad_suite_exits_2_with_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: {x: {task: cls, methods: [nope]}}\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and str(bad) in err


def test_progress_eta_uses_per_entry_means():
    class J:
        def __init__(self, i, entry):
            self.id, self.entry = i, entry
    jobs = [J("a1", "a"), J("a2", "a"), J("b1", "b"), J("b2", "b")]
    import io
    p = Progress(jobs, workers=2, stream=io.StringIO())
    assert p.eta() is None
    p.update(jobs[0], {"state": "ok", "duration_s": 10})
    p.update(jobs[2], {"state": "ok", "duration_s": 100})
    assert p.eta() == pytest.approx((10 + 100) / 2)
    line = p.update(jobs[1], {"state": "failed", "reason": "x", "duration_s": 1})
    assert "jobs 3/4 done, 1 failed" in line


def test_torchrun_wrapping_and_gpu_slots(tmp_path):
    cmd = Command(["pskd-cls", "train", "x=1"], distributed=True)
    argv = torchrun_argv(cmd, 4)
    assert argv[1:5] == ["--standalone", "--nproc_per_node=4", "--no-python", "pskd-cls"]
    assert torchrun_argv(cmd, 1) == cmd.argv
    assert torchrun_argv(Command(["pskd-det", "test"], distributed=False), 4) == ["pskd-det", "test"]
    ex = TorchrunExecutor(jobs=8, nproc=2, gpus=["0", "1", "2", "3", "4"])
    assert ex.workers == 2  # 5 GPUs hold two 2-GPU jobs
    assert ex.slot_env(0) == {"CUDA_VISIBLE_DEVICES": "0,1"} and ex.slot_env(1) == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_slurm_parameter_mapping(tmp_path, fake):
    suite = suite_file(tmp_path, fake, ["ce"], seeds=[0], extra="timeout: 2h\nnproc: 4\n")
    (job,) = expand(load_suite(str(suite)), tmp_path / "run")
    params = slurm_parameters(job, {"partition": "gpu", "account": "lab", "mem_gb": 64,
                                    "additional": {"exclusive": True}, "array_parallelism": 3})
    assert params == {
        "name": "pskd-toy_default_ce_seed0", "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 4,
        "cpus_per_task": 32, "timeout_min": 125, "mem_gb": 64, "slurm_partition": "gpu", "slurm_account": "lab",
        "slurm_array_parallelism": 3, "slurm_additional_parameters": {"exclusive": True},
    }
    job.timeout = None
    assert slurm_parameters(job, {"timeout_min": 60})["timeout_min"] == 60


def test_slurm_executor_through_submitit_local(tmp_path, fake):
    pytest.importorskip("submitit")
    suite = suite_file(tmp_path, fake, ["ce", "crash"], seeds=[0])
    jobs = expand(load_suite(str(suite)), tmp_path / "run")
    import io
    ex = SlurmExecutor(tmp_path / "run" / "slurm", {}, jobs=2, cluster="local", poll_s=0.2)
    results = ex.run(jobs, Progress(jobs, stream=io.StringIO()))
    assert results["toy/default/ce/seed0"]["state"] == "ok"
    assert results["toy/default/crash/seed0"]["state"] == "failed"
    assert sorted(calls(tmp_path)) == ["ce/0", "crash/0"]


def test_sigterm_stops_job_processes_and_resume_reruns(tmp_path, fake):
    import signal
    import subprocess

    suite = suite_file(tmp_path, fake, ["ce", "hang"], seeds=[0])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pskd.benchmarks.cli", "run", str(suite), "--out", str(out), "--no-plots"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hang_status = out / "jobs/toy/default/hang/seed0/status.json"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "hang/0" not in calls(tmp_path):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    status = json.loads(hang_status.read_text())
    assert status["state"] == "failed" and "interrupted" in status["reason"]
    assert (out / "report.md").exists()  # the report of what finished is still written
    # The hanging fake adapter was killed with the harness, not left behind.
    assert subprocess.run(["pgrep", "-f", f"{fake} .*hang"], capture_output=True).returncode != 0
    (tmp_path / "calls.txt").unlink()
    suite = suite_file(tmp_path, fake, ["ce", "hang"], seeds=[0], extra="timeout: 1s\n")  # same jobs, shorter
    assert run(suite, out) == 1
    assert calls(tmp_path) == ["hang/0"]  # ce finished before the interrupt and is kept


def test_one_run_per_directory(tmp_path, fake, capsys):
    import fcntl

    suite = suite_file(tmp_path, fake, ["ce"], seeds=[0])
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run(suite, out) == 2
    assert "another pskd-bench run is using" in capsys.readouterr().err
    assert calls(tmp_path) == []
    assert run(suite, out) == 0
