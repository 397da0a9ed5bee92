"""Per-token top-k store: the previous epoch's k most probable target tokens at every target position.

One row per target token of the training set: the row of position ``j`` (0-based, counted over non-pad tokens,
EOS included) of sample ``i`` is ``offsets[i] + j``, ``offsets`` being the running sum of the data set's target
sizes. A row holds k fp16 probabilities, k token indices (int16 when the vocabulary fits, else int32) and a
"written" byte.

Files (memory-mapped, one set per fairseq epoch, under ``<path>/rank<r>/``)::

    meta.json                    fingerprint: token count, sizes hash, vocabulary size and hash, k
    epoch0003.values.bin  ...    predictions made while training epoch 3, read while training epoch 4

Epoch ``e`` reads file set ``e - 1`` and writes file set ``e``; set ``e - 2`` is deleted when epoch ``e`` starts.
A checkpoint only records the epoch and the path: on a resume inside epoch ``e`` the partly written set ``e`` is
reopened as it is (the rows written before the checkpoint are kept; those written after it are rewritten by the
replayed updates), so no token data goes into checkpoints. Each data-parallel rank writes its own set; at the
epoch boundary :meth:`TokenTopKStore.merge` broadcasts every rank's rows to every other rank once, so each rank
can read any sample in the next epoch.

Why not :class:`pskd.core.TopKStore` directly: its ``gather`` materialises vocabulary-wide rows (the criterion
works on the k values directly, and a batch of 4,096 tokens x a 10k vocabulary would cost 160 MB per step), and
its distributed form (:class:`pskd.core.RoutedStore`) routes rows by a fixed per-sample sampler, while fairseq's
token-bucketed batches are best served by the one broadcast per epoch that :meth:`TokenTopKStore.merge` does.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import PSKDError

__all__ = ["TokenTopKStore", "store_fingerprint", "estimate_store_bytes"]

_FIELDS = ("values", "indices", "valid")
_CHUNK = 1 << 20  # rows per broadcast in merge(): bounds the temporary memory to ~k * 6 MB


def _index_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def estimate_store_bytes(num_tokens: int, k: int, vocab_size: int) -> int:
    """Bytes of one epoch's file set (values + indices + written flag); the store keeps two on disk."""
    return int(num_tokens) * (int(k) * (2 + _index_dtype(vocab_size).itemsize) + 1)


def store_fingerprint(tgt_sizes: np.ndarray, vocab_symbols: list[str], k: int) -> dict[str, Any]:
    """What a store must agree on with the run that reads it: same target sizes, same vocabulary, same k."""
    sizes = np.asarray(tgt_sizes, dtype=np.int64)
    return {
        "num_sentences": int(len(sizes)),
        "num_tokens": int(sizes.sum()),
        "sizes_sha1": hashlib.sha1(sizes.tobytes()).hexdigest(),
        "vocab_size": int(len(vocab_symbols)),
        "vocab_sha1": hashlib.sha1("\n".join(vocab_symbols).encode("utf-8")).hexdigest(),
        "k": int(k),
    }


class TokenTopKStore:
    """Memory-mapped per-token top-k predictions, double-buffered by fairseq epoch.

    Args:
        path: store folder (shared by the ranks; each writes ``rank<r>/`` below it).
        tgt_sizes: target length (tokens, EOS included) of every training sample, indexed by sample id.
        vocab_symbols: the target dictionary's symbols (for the fingerprint).
        k: predictions kept per token.
        rank: this process's data-parallel rank.

    Raises:
        PSKDError: if ``path`` already holds a store made for other data, another vocabulary or another k (nothing
            in it is touched).
    """

    def __init__(self, path: str | os.PathLike, tgt_sizes: np.ndarray, vocab_symbols: list[str], k: int,
                 rank: int = 0):
        if not 1 <= k <= len(vocab_symbols):
            raise PSKDError(f"--pskd-topk must be in [1, vocabulary size {len(vocab_symbols)}], got {k}")
        sizes = np.asarray(tgt_sizes, dtype=np.int64)
        self.root = Path(path)
        self.dir = self.root / f"rank{rank}"
        self.k, self.vocab_size = int(k), len(vocab_symbols)
        self.sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_tokens = int(self.offsets[-1])
        self.index_dtype = _index_dtype(self.vocab_size)
        self.fingerprint = store_fingerprint(sizes, vocab_symbols, k)
        self.epoch = 0  # fairseq epoch being written; 0 = not opened yet
        self.read: dict[str, np.memmap] | None = None
        self.write: dict[str, np.memmap] | None = None
        meta = self.dir / "meta.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            diff = [key for key in self.fingerprint if old.get(key) != self.fingerprint[key]]
            if diff:
                key = diff[0]
                raise PSKDError(f"top-k store {self.root} was made for another data set or vocabulary ({key}: "
                                f"{old.get(key)} there, {self.fingerprint[key]} here); pass another "
                                "--pskd-store-path or delete that folder")

    # ------------------------------------------------------------------------------------------------ files
    def _file(self, epoch: int, name: str) -> Path:
        return self.dir / f"epoch{epoch:04d}.{name}.bin"

    def _map(self, epoch: int, mode: str) -> dict[str, np.memmap]:
        shapes = {"values": ((self.num_tokens, self.k), np.float16),
                  "indices": ((self.num_tokens, self.k), self.index_dtype),
                  "valid": ((self.num_tokens,), np.bool_)}
        return {name: np.memmap(self._file(epoch, name), dtype=dt, mode=mode, shape=shape)
                for name, (shape, dt) in shapes.items()}

    def _has(self, epoch: int) -> bool:
        return all(self._file(epoch, name).exists() for name in _FIELDS)

    def begin_epoch(self, epoch: int, resume: bool = False) -> None:
        """Read epoch ``epoch - 1``'s predictions and write epoch ``epoch``'s.

        Args:
            epoch: fairseq's 1-based epoch.
            resume: True when restarting inside ``epoch`` from a checkpoint: its partly written set is reopened as
                is. Otherwise a fresh, all-unwritten set is created (sparse files: no disk used until written).
        """
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got {epoch}")
        if epoch > 1 and not self._has(epoch - 1):
            raise PSKDError(f"top-k store {self.dir} lacks epoch {epoch - 1}'s predictions; resume from the newest "
                            "checkpoint (the store keeps only the last two epochs) or pass --reset-dataloader")
        if resume and not self._has(epoch):
            raise PSKDError(f"top-k store {self.dir} lacks epoch {epoch}'s partial predictions needed to resume "
                            "this checkpoint; it must stay where the checkpoint's run left it")
        self.flush()
        self.read = self.write = None
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "meta.json.tmp"
        tmp.write_text(json.dumps(self.fingerprint, indent=1))
        os.replace(tmp, self.dir / "meta.json")
        self.read = self._map(epoch - 1, "r") if epoch > 1 else None
        self.write = self._map(epoch, "r+" if resume else "w+")
        self.epoch = epoch
        for old in self.dir.glob("epoch*.bin"):  # keep the set being read and the one being written
            if int(old.name[5:9]) < epoch - 1:
                old.unlink()

    def flush(self) -> None:
        if self.write is not None:
            for arr in self.write.values():
                arr.flush()

    # ------------------------------------------------------------------------------------------------ rows
    def rows(self, ids: torch.Tensor, target: torch.Tensor, pad: int) -> tuple[np.ndarray, torch.Tensor]:
        """Flat row of every non-pad target token of a batch.

        Args:
            ids: (B,) sample ids.
            target: (B, T) target tokens, left- or right-padded with ``pad``.
            pad: padding index.

        Returns:
            ``(rows, mask)``: int64 rows of the ``mask.sum()`` tokens in row-major order, and the (B, T) non-pad
            mask they were taken from.

        Raises:
            PSKDError: if a sample's token count differs from the data set's target size (a store or batch from
                other data).
        """
        mask = target.ne(pad)
        ids_np = ids.detach().cpu().numpy().astype(np.int64)
        if ids_np.size and (ids_np.min() < 0 or ids_np.max() >= len(self.sizes)):
            raise PSKDError(f"sample id {int(ids_np.max())} is outside the top-k store's {len(self.sizes)} samples "
                            "(a store made for another training set?)")
        counts = mask.sum(1).cpu().numpy()
        if not np.array_equal(counts, self.sizes[ids_np]):
            bad = int(np.flatnonzero(counts != self.sizes[ids_np])[0])
            raise PSKDError(f"sample {ids_np[bad]} has {counts[bad]} target tokens in the batch but "
                            f"{self.sizes[ids_np[bad]]} in the top-k store's data set (another data set?)")
        pos = (mask.long().cumsum(1) - 1).cpu().numpy()
        flat = self.offsets[ids_np][:, None] + pos
        return flat[mask.cpu().numpy()], mask

    def gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Previous epoch's ``(values fp32 (n, k), indices int64 (n, k), written bool (n,))``; None in epoch 1."""
        if self.read is None:
            return None
        values = torch.from_numpy(self.read["values"][rows].astype(np.float32))
        indices = torch.from_numpy(self.read["indices"][rows].astype(np.int64))
        valid = torch.from_numpy(np.asarray(self.read["valid"][rows]))
        return values, indices, valid

    def put(self, rows: np.ndarray, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Write this epoch's top-k ``values`` (probabilities) and ``indices`` for ``rows``."""
        if self.write is None:
            raise RuntimeError("top-k store written before begin_epoch()")
        self.write["values"][rows] = values.detach().to("cpu", torch.float16).numpy()
        self.write["indices"][rows] = indices.detach().cpu().numpy().astype(self.index_dtype)
        self.write["valid"][rows] = True

    # ------------------------------------------------------------------------------------------------ ranks
    def merge(self, rank: int, world_size: int, group=None) -> None:
        """Give every rank the rows all ranks wrote in the current epoch (call once, at the epoch's end).

        Every rank broadcasts its written rows in turn. A row written by several ranks (fairseq's padding of uneven
        shards) ends as the highest such rank's on all ranks. Idempotent: merging merged sets changes nothing.
        """
        if world_size <= 1:
            return
        import torch.distributed as dist

        if self.write is None:
            raise RuntimeError("merge() before begin_epoch()")
        own = np.asarray(self.write["valid"]).copy()
        for src in range(world_size):
            rows = torch.from_numpy(np.flatnonzero(own)) if src == rank else torch.zeros(0, dtype=torch.int64)
            count = torch.tensor([len(rows)], dtype=torch.int64)
            dist.broadcast(count, src, group=group)
            for start in range(0, int(count), _CHUNK):
                n = min(_CHUNK, int(count) - start)
                if src == rank:
                    r = rows[start:start + n].contiguous()
                    v = torch.from_numpy(np.ascontiguousarray(self.write["values"][r.numpy()])).view(torch.uint8)
                    i = torch.from_numpy(np.ascontiguousarray(self.write["indices"][r.numpy()])).view(torch.uint8)
                else:
                    r = torch.empty(n, dtype=torch.int64)
                    v = torch.empty((n, self.k * 2), dtype=torch.uint8)
                    i = torch.empty((n, self.k * self.index_dtype.itemsize), dtype=torch.uint8)
                for t in (r, v, i):
                    dist.broadcast(t, src, group=group)
                if src == rank:
                    continue
                r_np = r.numpy()
                keep = np.ones(n, dtype=bool) if src > rank else ~own[r_np]  # higher rank wins on duplicates
                r_np = r_np[keep]
                self.write["values"][r_np] = v.numpy().view(np.float16).reshape(n, self.k)[keep]
                self.write["indices"][r_np] = i.numpy().view(self.index_dtype).reshape(n, self.k)[keep]
                self.write["valid"][r_np] = True
        self.flush()

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {"path": str(self.root), "epoch": self.epoch, "fingerprint": dict(self.fingerprint)}

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise PSKDError if a checkpoint's store state does not describe this store."""
        if state.get("fingerprint") != self.fingerprint:
            raise PSKDError("the checkpoint's top-k store was made for another data set, vocabulary or k "
                            f"({state.get('path')}); resume with the same data and --pskd-topk")

    def nbytes_on_disk(self) -> int:
        """Bytes of the two file sets the store keeps (read + write) once fully written."""
        return 2 * estimate_store_bytes(self.num_tokens, self.k, self.vocab_size)
