"""Suite loading, strict validation and job expansion of the benchmark harness (no job runs here)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pskd.benchmarks.jobs import expand, expand_vars, filter_jobs
from pskd.benchmarks.suite import SuiteError, list_suites, load_suite, parse_duration


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


SUITE = """
    name: t
    seeds: 3
    tasks:
      fm:
        task: cls
        models: [mlp, cnn]
        methods: [ce, ls, pskd, pskd+cutmix]
        epochs: 2
      fake:
        task: shell
        seeds: [7]
        methods: [a, {name: b-variant, method: b, overrides: {x: 1}}]
        command: ["{python}", "-c", "pass", "{out_dir}", "{overrides}"]
        prepare_command: ["{python}", "-c", "pass"]
"""


def test_expansion_counts_paths_and_order(tmp_path):
    suite = load_suite(str(write(tmp_path, SUITE)))
    jobs = expand(suite, tmp_path / "run")
    train = [j for j in jobs if j.kind == "train"]
    # cls: 2 models x 4 methods x 3 seeds; shell: 1 model x 2 methods x 1 seed, plus one preparation.
    assert len(train) == 2 * 4 * 3 + 2
    assert [j.id for j in jobs if j.kind == "prepare"] == ["prepare/fake"]
    assert train[0].id == "fm/mlp/ce/seed0"
    assert train[0].dir == (tmp_path / "run" / "jobs" / "fm" / "mlp" / "ce" / "seed0").resolve()
    fake = [j for j in train if j.entry == "fake"]
    assert [j.seed for j in fake] == [7, 7] and all(j.after == ["prepare/fake"] for j in fake)
    variant = fake[1]
    assert variant.method == "b-variant" and variant.method_base == "b"
    assert '{"x": 1}' in variant.commands[0].argv  # method overrides reach the command
    assert len({j.id for j in jobs}) == len(jobs)


def test_filters(tmp_path):
    jobs = expand(load_suite(str(write(tmp_path, SUITE))), tmp_path / "run")
    assert len(filter_jobs(jobs, ["method=pskd*"])) == 2 * 2 * 3
    assert len(filter_jobs(jobs, ["method=ce,ls", "model=cnn", "seed=0"])) == 2
    assert [j.id for j in filter_jobs(jobs, ["fm/mlp/pskd/*"])] == [f"fm/mlp/pskd/seed{s}" for s in range(3)]
    # A kept job keeps the preparation it depends on.
    assert [j.id for j in filter_jobs(jobs, ["method=a"])] == ["prepare/fake", "fake/default/a/seed7"]
    assert filter_jobs(jobs, []) == jobs
    with pytest.raises(ValueError, match="--filter key 'colour'"):
        filter_jobs(jobs, ["colour=red"])


@pytest.mark.parametrize("snippet, expected", [
    ("tasks: {fm: {task: cls, methods: [ce], colour: red}}", "tasks.fm.colour: unknown key 'colour'"),
    ("tasks: {fm: {task: clss, methods: [ce]}}", "tasks.fm.task: unknown task 'clss'"),
    ("tasks: {fm: {task: cls, methods: [ce, magic]}}", "tasks.fm.methods[1]: unknown method 'magic' for task 'cls'"),
    ("tasks: {fm: {task: cls, methods: [ce]}}\nexecutr: local", "executr: unknown key 'executr'"),
    ("tasks: {fm: {task: cls, methods: [ce], timeout: soon}}", "tasks.fm.timeout: not a duration"),
    ("tasks: {fm: {task: cls, methods: [ce, ce]}}", "duplicate method 'ce'"),
    ("tasks: {fm: {task: cls, methods: [ce], seeds: [1, 1]}}", "duplicate seeds"),
    ("tasks: {fm: {task: cls, methods: []}}", "tasks.fm.methods: must be a non-empty list"),
    ("tasks: {fm: {task: cls, methods: [{name: x, method: ce, extra: 1}]}}", "tasks.fm.methods[0].extra: unknown key"),
    ("tasks: {fm: {task: shell, methods: [a]}}", "task 'shell' needs a 'command'"),
    ("tasks: {fm: {task: cls, methods: [ce]}}\nslurm: {partiton: gpu}", "slurm.partiton: unknown key"),
    ("tasks: {}", "tasks: must be a non-empty mapping"),
])
def test_strict_validation_names_key_and_file(tmp_path, snippet, expected):
    path = write(tmp_path, snippet + "\n", "bad.yaml")
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_all_errors_in_one_message(tmp_path):
    path = write(tmp_path, "tasks: {fm: {task: cls, methods: [ce, bad], colour: red}}\nfoo: 1\n")
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    msg = str(err.value)
    assert "colour" in msg and "'bad'" in msg and "foo" in msg


def test_unknown_suite_name_lists_shipped_ones():
    with pytest.raises(SuiteError, match="no suite 'nope'.*mini"):
        load_suite("nope")


def test_durations():
    assert parse_duration(90) == 90 and parse_duration("25m") == 1500 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5s") == 2.5 and parse_duration("7d") == 7 * 86400
    for bad in ("soon", "10 minutes", -1, 0, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_env_vars_and_missing_data_become_per_job_problems(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_TEST_ROOT", str(tmp_path))
    monkeypatch.delenv("BENCH_TEST_UNSET", raising=False)
    assert expand_vars("${BENCH_TEST_ROOT}/x") == (f"{tmp_path}/x", [])
    assert expand_vars("${BENCH_TEST_UNSET:-d}/x") == ("d/x", [])
    assert expand_vars("${BENCH_TEST_UNSET}") == ("${BENCH_TEST_UNSET}", ["BENCH_TEST_UNSET"])
    path = write(tmp_path, """
        tasks:
          a: {task: cls, methods: [ce], data: {root: "${BENCH_TEST_ROOT}/cifar"}}
          b: {task: cls, methods: [ce], data: {root: {path: "${BENCH_TEST_UNSET}", hint: "set it to CIFAR-100"}}}
    """)
    a, b = expand(load_suite(str(path)), tmp_path / "run")
    assert a.problems == [] and a.require_paths == {f"{tmp_path}/cifar": f"data set 'root' not found at "
                                                    f"{tmp_path}/cifar"}
    assert b.problems == ["data.root: environment variable BENCH_TEST_UNSET is not set (set it to CIFAR-100)"]


def test_spec_hash_ignores_timeout_but_not_settings(tmp_path):
    base = "tasks: {fm: {task: cls, methods: [ce], epochs: 2, timeout: 10m}}\n"
    (j1,) = expand(load_suite(str(write(tmp_path, base, "a.yaml"))), tmp_path / "run")
    (j2,) = expand(load_suite(str(write(tmp_path, base.replace("10m", "1h"), "b.yaml"))), tmp_path / "run")
    (j3,) = expand(load_suite(str(write(tmp_path, base.replace("epochs: 2", "epochs: 3"), "c.yaml"))),
                   tmp_path / "run")
    assert j1.spec_hash() == j2.spec_hash() != j3.spec_hash()


@pytest.mark.parametrize("name", list_suites())
def test_shipped_suites_load_and_expand(name, tmp_path):
    suite = load_suite(name)
    jobs = expand(suite, tmp_path / "run")
    assert [j for j in jobs if j.kind == "train"]
    for job in jobs:
        assert job.commands and all(c.argv for c in job.commands)


def test_mini_suite_is_the_documented_grid(tmp_path):
    suite = load_suite("mini")
    jobs = [j for j in expand(suite, tmp_path) if j.kind == "train"]
    by_task = {}
    for j in jobs:
        by_task.setdefault(j.task, set()).add(j.method_base)
    assert by_task["cls"] == {"ce", "ls", "cs_kd", "tf_kd_reg", "pskd", "pskd+cutmix"}
    assert {j.seed for j in jobs} == {0, 1, 2}
    assert suite.budget_minutes == 25
