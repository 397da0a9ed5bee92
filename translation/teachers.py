"""Where ``p_{t-1}`` comes from: a snapshot of last epoch's model, or last epoch's stored top-k predictions.

Both give, for every target token of a training batch, the soft cross-entropy ``KD_t = -sum_c p_prev(c) log p(c)``
and a flag saying whether a previous-epoch prediction exists for that token (none in epoch 1; in top-k mode none for
a token whose row was never written).

Epoch transitions (``how`` in :meth:`begin_epoch`):

* ``"fresh"``: epoch 1 of a new run; there is no previous epoch.
* ``"next"``: the previous epoch finished, in this process or in the checkpoint being resumed (a checkpoint saved at
  an epoch's end): the snapshot is taken from the model as it is now, the top-k sets of the finished epoch are
  merged across ranks and become the read set.
* ``"resume"``: restarting inside ``epoch`` from a checkpoint saved during it: the snapshot's weights come from the
  checkpoint (the model has moved on since the epoch began), the top-k store reopens its partly written set.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pskd.core.teacher import SnapshotTeacher

from .errors import PSKDError
from .fairseq_glue import data_parallel
from .topk_store import TokenTopKStore, store_fingerprint

__all__ = ["SnapshotKD", "TopKKD", "topk_soft_cross_entropy"]

logger = logging.getLogger(__name__)


def topk_soft_cross_entropy(lprobs: torch.Tensor, lprobs_sum: torch.Tensor, values: torch.Tensor,
                            indices: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy against a top-k distribution, per row, without building vocabulary-wide targets.

    The teacher row is ``v_j`` at class ``i_j`` (j = 1..k) and the rest mass ``r = max(0, 1 - sum_j v_j)`` spread
    evenly over the other ``V - k`` classes (the same convention as :class:`pskd.core.TopKStore`), so::

        KD = -sum_j v_j * lp[i_j] - r / (V - k) * (sum_c lp[c] - sum_j lp[i_j])

    Args:
        lprobs: (N, V) student log-probabilities.
        lprobs_sum: (N,) ``lprobs.sum(-1)`` (label smoothing already needs it, so it is passed in, not recomputed).
        values: (N, k) teacher probabilities.
        indices: (N, k) their class indices.
    """
    vocab, k = lprobs.size(-1), values.size(-1)
    picked = lprobs.gather(-1, indices)
    kd = -(values * picked).sum(-1)
    if vocab > k:
        rest = (1.0 - values.sum(-1)).clamp_min(0.0)
        kd = kd - rest / (vocab - k) * (lprobs_sum - picked.sum(-1))
    return kd


class SnapshotKD:
    """Teacher = the model as it was at the start of the epoch (frozen, eval mode, not a submodule of anything).

    One extra no-grad forward pass per batch; the copy lives on the model's device and dtype.
    """

    mode = "snapshot"

    def __init__(self):
        self.teacher = SnapshotTeacher()
        self.ready = False

    def begin_epoch(self, epoch: int, model: torch.nn.Module, how: str, saved: dict | None, criterion) -> None:
        if epoch == 1 or how == "fresh":
            self.ready = False  # epoch 1: no previous epoch (the official code's one-hot start)
        elif how == "next":
            self.teacher.refresh(model, epoch)
            self.ready = True
        else:  # resume inside the epoch: the model has moved on, the snapshot must come from the checkpoint
            if not saved or saved.get("teacher") is None:
                raise PSKDError(f"the checkpoint was saved inside epoch {epoch} but has no PS-KD snapshot teacher "
                                "weights; resume from an end-of-epoch checkpoint or start over with "
                                "--reset-dataloader")
            self.teacher.load_state_dict(saved["teacher"], student=model)
            self.ready = True

    def kd(self, criterion, model, sample: dict, lprobs: torch.Tensor, target: torch.Tensor,
           lprobs_sum: torch.Tensor, cache: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.ready:
            return None
        with torch.no_grad():
            out = self.teacher(**sample["net_input"])
            t_lprobs, _ = criterion.get_lprobs_and_target(self.teacher.model, out, sample)
            t_probs = t_lprobs.exp()
        kd = -(t_probs * lprobs).sum(-1)
        return kd, target.ne(criterion.padding_idx)

    def observe(self, criterion, sample: dict, lprobs: torch.Tensor, target: torch.Tensor, cache: dict) -> None:
        pass  # the snapshot is taken at the next epoch boundary; nothing to record per batch

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict() if self.ready else None}


class TopKKD:
    """Teacher = the previous epoch's top-k predictions of the training forward pass, per target token.

    No extra forward pass: each training batch writes the top-k of the log-probabilities it has just computed
    (train mode, as the official code does) and reads what the same tokens got one epoch earlier.

    Args:
        path: store folder.
        k: predictions kept per token.
    """

    mode = "topk"

    def __init__(self, path: str, k: int):
        self.path, self.k = path, int(k)
        self.store: TokenTopKStore | None = None

    @property
    def ready(self) -> bool:
        return self.store is not None and self.store.read is not None

    def _build(self, criterion) -> TokenTopKStore:
        dataset = criterion.task.datasets.get(criterion.train_subset)
        sizes = getattr(dataset, "tgt_sizes", None)
        if sizes is None:
            raise PSKDError("--pskd-teacher topk needs a training set with target sizes (fairseq's translation "
                            f"task); the '{criterion.train_subset}' set of this task has none")
        symbols = list(criterion.task.target_dictionary.symbols)
        rank, _, _ = data_parallel()
        store = TokenTopKStore(self.path, sizes, symbols, self.k, rank=rank)
        logger.info("PS-KD top-k store: %d target tokens x k=%d at %s (%.1f MB per epoch)", store.num_tokens,
                    self.k, store.dir, store.nbytes_on_disk() / 2 / 2**20)
        return store

    def begin_epoch(self, epoch: int, model, how: str, saved: dict | None, criterion) -> None:
        if self.store is None:
            self.store = self._build(criterion)
            if saved and saved.get("store"):
                self.store.check_state(saved["store"])
        elif self.store.fingerprint != self._build_fingerprint(criterion):
            raise PSKDError("the training set changed between epochs (sharded data?); --pskd-teacher topk needs "
                            "one fixed training set")
        if how == "resume":
            self.store.begin_epoch(epoch, resume=True)
            return
        if how == "next" and epoch > 1:
            if self.store.epoch != epoch - 1:  # resuming from the end of epoch - 1: reopen what it wrote
                self.store.begin_epoch(epoch - 1, resume=True)
            self.store.merge(*data_parallel())
        self.store.begin_epoch(epoch, resume=False)

    def _build_fingerprint(self, criterion) -> dict:
        dataset = criterion.task.datasets.get(criterion.train_subset)
        return store_fingerprint(dataset.tgt_sizes, list(criterion.task.target_dictionary.symbols), self.k)

    def _token_rows(self, criterion, sample: dict, cache: dict) -> tuple[np.ndarray, torch.Tensor]:
        """Store rows of the flattened (prefix-stripped) targets, and the mask of tokens that have one."""
        if "rows" in cache:  # computed once per forward, shared by kd() and observe()
            return cache["rows"]
        target = sample["target"]
        rows, mask = self.store.rows(sample["id"], target, criterion.padding_idx)
        full = np.full(mask.shape, -1, dtype=np.int64)
        full[mask.cpu().numpy()] = rows
        full = full[:, criterion.ignore_prefix_size:].reshape(-1)
        selected = torch.from_numpy(full >= 0).to(target.device)
        cache["rows"] = (full, selected)
        return full, selected

    def kd(self, criterion, model, sample: dict, lprobs: torch.Tensor, target: torch.Tensor,
           lprobs_sum: torch.Tensor, cache: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.ready:
            return None
        rows, selected = self._token_rows(criterion, sample, cache)
        values, indices, valid = self.store.gather(rows[rows >= 0])
        n, dev = lprobs.size(0), lprobs.device
        # Scatter the selected tokens' k entries into batch-shaped (N, k) tensors: gathering k log-probs per row of
        # the full lprobs is far cheaper than copying the selected rows out of it.
        full_values = torch.zeros(n, self.k, dtype=lprobs.dtype, device=dev)
        full_indices = torch.zeros(n, self.k, dtype=torch.long, device=dev)
        has = torch.zeros(n, dtype=torch.bool, device=dev)
        full_values[selected] = values.to(dev, lprobs.dtype)
        full_indices[selected] = indices.to(dev)
        has[selected] = valid.to(dev)
        return topk_soft_cross_entropy(lprobs, lprobs_sum, full_values, full_indices), has

    def observe(self, criterion, sample: dict, lprobs: torch.Tensor, target: torch.Tensor, cache: dict) -> None:
        rows, selected = self._token_rows(criterion, sample, cache)
        with torch.no_grad():
            top_lp, top_idx = lprobs.detach().topk(self.k, dim=-1, sorted=False)  # all rows: no copy; order unneeded
        self.store.put(rows[rows >= 0], top_lp[selected].exp(), top_idx[selected])

    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store.state_dict() if self.store is not None else None}
