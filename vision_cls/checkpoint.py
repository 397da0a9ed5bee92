"""Checkpoints: atomic writes, friendly loading, compatibility checks, RNG state capture.

Every file is written to a temporary name in the same folder, flushed to disk and moved into place with
``os.replace``, so a crash leaves either the old file or the new one, never half of one.

Layout of a run folder::

    last.pt                        model, optimizer, scheduler, scaler, RNG states, history, run meta
    best.pt                        model and meta of the best epoch on the validation split
    policy-e0007.rank0.pt          per-rank target-policy state (PS-KD store) as of last.pt; under DDP one per rank

``last.pt`` names the policy files it goes with; they are written before it and the previous ones deleted only
after it, so ``last.pt`` always points at files that exist.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ["atomic_save", "atomic_write_text", "atomic_write_json", "load_checkpoint", "check_compatible",
           "rng_state", "set_rng_state", "FORMAT"]

FORMAT = "pskd-cls/1"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, the final file should get the usual permissions


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", path)


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Load a pskd-cls checkpoint on the CPU; one-line CheckpointError if it is missing, corrupt or foreign.

    Only load checkpoints you trust: they are pickles (``weights_only=False``; they hold the optimizer state and the
    RNG states, which the safe loader does not accept).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{what} {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                              ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{what} {path} is not a pskd-cls checkpoint")
    return ckpt


def check_compatible(meta: dict, expected: dict, path: str | os.PathLike, keys=("model", "num_classes",
                                                                              "in_channels")) -> None:
    """Raise CheckpointError naming the file and the first differing field among ``keys``."""
    names = {"model": "model", "num_classes": "number of classes", "in_channels": "input channels",
             "train_size": "training-set size", "dataset": "data set", "world_size": "DDP world size"}
    for k in keys:
        if meta.get(k) != expected.get(k):
            raise CheckpointError(f"checkpoint {path} was made with {names.get(k, k)} {meta.get(k)!r}, this run has "
                                  f"{expected.get(k)!r}")


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
