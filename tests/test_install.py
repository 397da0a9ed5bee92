"""The install: import names, what the core pulls in, the real stack, and the wheel's layout."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_core_imports_no_framework(tmp_path):
    out = run_py("import sys, pskd.core; print(sorted(m for m in ('mmdet', 'mmcv', 'mmengine', 'fairseq', "
                 "'torchvision', 'sacrebleu') if m in sys.modules))", tmp_path)
    assert out.strip() == "[]"


def test_real_stack_imports(tmp_path):
    out = run_py("import mmcv.ops, mmdet, fairseq, sacrebleu, pycocotools, mmcv; "
                 "from mmcv.ops import nms; print(mmcv.__version__, mmdet.__version__)", tmp_path)
    assert out.split() == ["2.1.0", "3.3.0"]


def test_no_plain_top_level_names(tmp_path):
    # from a neutral folder, only the prefixed names resolve: nothing called plainly core/detection/translation
    out = run_py("import importlib.util as u; print([n for n in ('core', 'detection', 'translation', 'vision_cls', "
                 "'benchmarks') if u.find_spec(n)])", tmp_path)
    assert out.strip() == "[]"


@pytest.mark.slow
def test_wheel_layout(tmp_path):
    # a normal (non-editable) install gets the same import names as the editable one
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("pskd-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops <= {"pskd", "pskd_fairseq_plugin", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "pskd/core/policies.py" in names and not any(n.startswith("core/") for n in names)
    # every package folder of the tree made it into the wheel, with its data files
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.relative_to(ROOT).parent
        if rel.parts[0] in {"tests", "configs", "scripts", "docker", ".venv", "data", "build", "runs"}:
            continue
        prefix = "pskd_fairseq_plugin" if rel.name == "pskd_fairseq_plugin" else "pskd/" + "/".join(rel.parts)
        assert f"{prefix}/__init__.py" in names, f"{rel} is missing from the wheel: add it to pyproject's packages"
    assert "pskd/benchmarks/paper_numbers.yaml" in names and "pskd/benchmarks/suites/mini.yaml" in names
