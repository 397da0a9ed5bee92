"""Stores of past predictions, indexed by sample id: what PS-KD reads in epoch t+1 was written in epoch t.

Three layouts behind one interface:

* :class:`DenseStore` - an N x C table in RAM (fp32, fp16 or bf16) or memory-mapped on disk;
* :class:`TopKStore` - the k largest probabilities per row (fp16 values + class indices), RAM or memory-mapped;

A row that was never written reads back as "not valid"; callers use the hard label there, which is the
official code's one-hot initialisation without materialising an N x C one-hot table.

RAM stores keep one buffer: a sample is read before it is written within an epoch, exactly as the official code
does. Memory-mapped stores keep one file set per finished epoch (read epoch k, write epoch k + 1), so a
checkpoint only records which epoch to read: resuming after a crash mid-epoch still finds the rows exactly as
they were at the checkpoint, and nothing N x C is copied into checkpoints.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["PredictionStore", "DenseStore", "TopKStore", "build_store"]

_NP_DTYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": None}
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class _Arrays:
    """Named arrays in RAM (one buffer) or as memory-mapped files double-buffered by finished-epoch count."""

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], np.dtype]], path: str | os.PathLike | None):
        self.specs = specs
        self.path = Path(path) if path is not None else None
        self.epoch = 0  # number of finished epochs whose writes are readable
        self.partial = False  # rows were written since the epoch began (a checkpoint now is a mid-epoch one)
        self._read = self._write = None
        if self.path is None:
            self._read = {k: np.zeros(shape, dtype) for k, (shape, dtype) in specs.items()}
            self._write = self._read

    # Memory-mapped files are opened on first use, not in __init__: a store built only to load a checkpoint
    # must not touch the files that checkpoint refers to, while a fresh run must not read a stale run's rows.
    @property
    def read(self) -> dict:
        if self._read is None:
            self._start_fresh()
        return self._read

    @property
    def write(self) -> dict:
        if self._write is None:
            self._start_fresh()
        return self._write

    def _start_fresh(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for old in self.path.glob("epoch*.bin"):
            old.unlink()
        self._open(0, create=True)

    def _file(self, epoch: int, name: str) -> Path:
        return self.path / f"epoch{epoch:04d}.{name}.bin"

    def _map(self, epoch: int, name: str, mode: str) -> np.memmap:
        shape, dtype = self.specs[name]
        return np.memmap(self._file(epoch, name), dtype=dtype, mode=mode, shape=shape)

    def _open(self, epoch: int, create: bool = False, keep_partial: bool = False) -> None:
        """Read the file set of ``epoch`` finished epochs and write the next one.

        The write set starts as a copy of the read set (rows not revisited keep their last prediction), unless
        ``keep_partial``: resuming a mid-epoch checkpoint reopens the write set as the crashed run left it, so the
        rows written before the checkpoint are kept; the replayed updates rewrite those written after it.
        """
        for name in self.specs:
            if create and not self._file(epoch, name).exists():
                self._map(epoch, name, "w+").flush()  # sparse file of zeros: costs no disk until written
            elif not self._file(epoch, name).exists():
                raise FileNotFoundError(f"prediction store file {self._file(epoch, name)} is missing; "
                                        "it must stay beside the checkpoint that refers to it")
            if keep_partial and not self._file(epoch + 1, name).exists():
                raise FileNotFoundError(f"prediction store file {self._file(epoch + 1, name)} is missing: the "
                                        "checkpoint was saved mid-epoch and needs the rows written before it")
        self.epoch = epoch
        self._read = {k: self._map(epoch, k, "r") for k in self.specs}
        if not keep_partial:
            for name in self.specs:  # the next epoch starts from this one's rows (rows not revisited keep them)
                shutil.copyfile(self._file(epoch, name), self._file(epoch + 1, name))
        self._write = {k: self._map(epoch + 1, k, "r+") for k in self.specs}

    def end_epoch(self) -> None:
        self.partial = False
        if self.path is None:
            self.epoch += 1
            return
        for arr in self.write.values():
            arr.flush()
        old = self.epoch
        self._read = self._write = None  # release the maps before their files change
        self._open(old + 1)
        for name in self.specs:  # keep epoch old + 1 (read now) and old + 2 (written now); drop the one before
            self._file(old, name).unlink(missing_ok=True)

    def state_dict(self) -> dict:
        if self.path is None:
            return {"epoch": self.epoch, **{k: torch.from_numpy(v.copy()) for k, v in self.read.items()}}
        for arr in self.write.values():
            arr.flush()
        return {"epoch": self.epoch, "path": str(self.path), "partial": self.partial}

    def load_state_dict(self, state: dict) -> None:
        if self.path is None:
            for k, (shape, _) in self.specs.items():
                if k not in state:
                    raise KeyError(f"prediction store state has no '{k}' array")
                src = state[k].numpy()
                if tuple(src.shape) != tuple(shape):
                    raise ValueError(f"prediction store '{k}' has shape {tuple(src.shape)} in the checkpoint but "
                                     f"{tuple(shape)} here (another dataset size or class count?)")
                self.read[k][...] = src
            self.epoch = int(state["epoch"])
        else:
            self._open(int(state["epoch"]), keep_partial=bool(state.get("partial", False)))
        self.partial = bool(state.get("partial", False))


class PredictionStore:
    """Interface: ``gather(ids) -> (probs, valid)``, ``write(ids, probs)``, ``end_epoch()``, state dicts."""

    num_samples: int
    num_classes: int

    def _check_ids(self, ids: torch.Tensor) -> np.ndarray:
        idx = ids.detach().cpu().long().numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise IndexError(f"sample id {bad} is outside the prediction store's [0, {self.num_samples})")
        return idx

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def write(self, ids: torch.Tensor, probs: torch.Tensor) -> None:
        raise NotImplementedError

    def end_epoch(self) -> None:
        self._arrays.end_epoch()

    @property
    def epochs_seen(self) -> int:
        return self._arrays.epoch

    def state_dict(self) -> dict:
        return {"kind": type(self).__name__, "shape": [self.num_samples, self.num_classes],
                **self._arrays.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != type(self).__name__:
            raise ValueError(f"checkpoint holds a {state.get('kind')} prediction store, not a {type(self).__name__}")
        if list(state.get("shape", [])) != [self.num_samples, self.num_classes]:
            raise ValueError(f"checkpoint's prediction store is {state.get('shape')}, this run needs "
                             f"{[self.num_samples, self.num_classes]} (another dataset size or class count?)")
        self._arrays.load_state_dict(state)

    def export_rows(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Copies of the raw fields (values and valid flags) of ``rows`` as written this epoch, in a fixed order.

        With :meth:`import_rows` this moves rows between stores of the same kind (the distributed store routes them
        between ranks) without decoding them: a top-k row stays top-k, an fp16 row stays fp16.
        """
        arrays = self._arrays.write
        idx = rows.numpy()
        return [torch.from_numpy(arrays[name][idx].copy()) for name in sorted(arrays)]

    def import_rows(self, rows: torch.Tensor, fields: list[torch.Tensor]) -> None:
        """Write fields made by another store's :meth:`export_rows` into ``rows`` of this epoch's buffer."""
        arrays = self._arrays.write
        self._arrays.partial = True
        for name, value in zip(sorted(arrays), fields, strict=True):
            arrays[name][rows.numpy()] = value.numpy()

    def nbytes(self) -> int:
        """Bytes of one buffer of the store's arrays (what a full in-RAM copy costs)."""
        return sum(int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in self._arrays.specs.values())


class DenseStore(PredictionStore):
    """Full N x C table of probabilities.

    Args:
        num_samples: N, the dataset size (sample ids are 0..N-1).
        num_classes: C.
        dtype: 'fp32' (the official layout), 'fp16' or 'bf16'.
        path: folder for memory-mapped files; None keeps the table in RAM.
    """

    def __init__(self, num_samples: int, num_classes: int, dtype: str = "fp32", path: str | None = None):
        if dtype not in _NP_DTYPES:
            raise ValueError(f"store dtype must be one of {sorted(_NP_DTYPES)}, got {dtype!r}")
        self.num_samples, self.num_classes, self.dtype = int(num_samples), int(num_classes), dtype
        # numpy has no bfloat16: keep bf16 as its raw uint16 bits and reinterpret through torch.
        np_dtype = np.uint16 if dtype == "bf16" else _NP_DTYPES[dtype]
        self._arrays = _Arrays({"probs": ((self.num_samples, self.num_classes), np_dtype),
                                "valid": ((self.num_samples,), np.bool_)}, path)

    def _to_torch(self, rows: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(rows))
        return t.view(torch.bfloat16).float() if self.dtype == "bf16" else t.float()

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._check_ids(ids)
        rows = self._arrays.read["probs"][idx]
        return self._to_torch(rows), torch.from_numpy(np.asarray(self._arrays.read["valid"][idx]).copy())

    def write(self, ids: torch.Tensor, probs: torch.Tensor) -> None:
        idx = self._check_ids(ids)
        rows = probs.detach().to("cpu", _TORCH_DTYPES[self.dtype])
        rows = rows.view(torch.uint16) if self.dtype == "bf16" else rows
        self._arrays.partial = True
        self._arrays.write["probs"][idx] = rows.numpy()
        self._arrays.write["valid"][idx] = True


class TopKStore(PredictionStore):
    """The k most probable classes per row: fp16 values and int16/int32 class indices.

    On read the remaining probability mass ``1 - sum(top-k)`` is spread evenly over the other C - k classes, so
    every row is still a distribution and its total-variation distance to the full row is at most that mass.
    """

    def __init__(self, num_samples: int, num_classes: int, k: int = 10, path: str | None = None):
        if not 1 <= k <= num_classes:
            raise ValueError(f"top-k store needs 1 <= k <= num_classes ({num_classes}), got k={k}")
        self.num_samples, self.num_classes, self.k = int(num_samples), int(num_classes), int(k)
        index_dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
        self._arrays = _Arrays({"values": ((self.num_samples, self.k), np.float16),
                                "indices": ((self.num_samples, self.k), index_dtype),
                                "valid": ((self.num_samples,), np.bool_)}, path)

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._check_ids(ids)
        values = torch.from_numpy(np.asarray(self._arrays.read["values"][idx], dtype=np.float32))
        indices = torch.from_numpy(np.asarray(self._arrays.read["indices"][idx], dtype=np.int64))
        rest = (1.0 - values.sum(-1, keepdim=True)).clamp_min(0.0)
        others = max(self.num_classes - self.k, 1)
        dense = (rest / others).expand(len(idx), self.num_classes).clone() if self.num_classes > self.k \
            else torch.zeros(len(idx), self.num_classes)
        dense.scatter_(1, indices, values)
        if self.num_classes == self.k:
            dense = dense / dense.sum(-1, keepdim=True).clamp_min(1e-12)
        return dense, torch.from_numpy(np.asarray(self._arrays.read["valid"][idx]).copy())

    def write(self, ids: torch.Tensor, probs: torch.Tensor) -> None:
        idx = self._check_ids(ids)
        values, indices = probs.detach().float().topk(self.k, dim=-1)
        self.write_topk(idx, values, indices)

    def write_topk(self, idx: np.ndarray, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Write already-selected top-k rows (used by distributed exchange and by token-level stores)."""
        self._arrays.partial = True
        self._arrays.write["values"][idx] = values.to("cpu", torch.float16).numpy()
        self._arrays.write["indices"][idx] = indices.cpu().numpy().astype(self._arrays.specs["indices"][1])
        self._arrays.write["valid"][idx] = True


def build_store(kind: str, num_samples: int, num_classes: int, *, dtype: str = "fp32", k: int = 10,
                path: str | None = None) -> PredictionStore:
    """Factory: ``kind`` is 'ram' (dense in RAM), 'memmap' (dense on disk) or 'topk' (top-k, RAM or ``path``)."""
    if kind == "ram":
        return DenseStore(num_samples, num_classes, dtype=dtype)
    if kind == "memmap":
        if path is None:
            raise ValueError("a memory-mapped store needs a path (store.path)")
        return DenseStore(num_samples, num_classes, dtype=dtype, path=path)
    if kind == "topk":
        return TopKStore(num_samples, num_classes, k=k, path=path)
    raise ValueError(f"unknown store kind {kind!r}; choose ram, memmap or topk")
