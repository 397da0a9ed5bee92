"""Atomic writes keep the old file when a write fails."""
import pytest
import torch

from pskd.core import PskdError, atomic_path, atomic_torch_save, atomic_write_json


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_atomic_torch_save_round_trip(tmp_path):
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt")["w"].tolist() == [0, 1, 2]


def test_errors_are_value_errors_with_exit_codes():
    assert issubclass(PskdError, ValueError) and PskdError.exit_code == 2


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os
    atomic_write_json(tmp_path / "m.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
