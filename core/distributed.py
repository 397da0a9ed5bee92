"""Small torch.distributed helpers and the rank-sharded prediction store.

What PS-KD writes in epoch t is read only in epoch t+1, so the store needs no communication inside an epoch.
:class:`RoutedStore` keeps on each rank only the rows that rank reads in the current epoch (N x C / world), and
at the epoch boundary sends each row once, straight to the rank that will read it next: DistributedSampler's
next permutation is a pure function of (seed, epoch), so every rank can compute who needs what without asking.
The official code instead all-gathers predictions and indices at every step and keeps a full N x C copy per rank.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from .stores import PredictionStore

__all__ = ["is_distributed", "get_rank", "get_world_size", "barrier", "sampler_shards", "RoutedStore"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def sampler_shards(num_samples: int, world_size: int, epoch: int, *, seed: int = 0, shuffle: bool = True,
                   drop_last: bool = False) -> list[torch.Tensor]:
    """The sample ids each rank's ``DistributedSampler`` yields in ``epoch`` (computed, not communicated)."""
    shards = []
    for rank in range(world_size):
        sampler = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        shards.append(torch.as_tensor(list(sampler), dtype=torch.long))
    return shards


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    # Every backend can move uint8; bool, fp16 and bf16 are not supported by all of them (gloo).
    return t.contiguous().view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)


class RoutedStore(PredictionStore):
    """A prediction store sharded by the sampler: each rank holds the rows it reads this epoch.

    Args:
        make_local: builds the rank-local store for a given row count, e.g.
            ``lambda n: DenseStore(n, C, dtype="fp16")`` or ``lambda n: TopKStore(n, C, k=10)`` (in RAM).
        num_samples: dataset size N.
        num_classes: C.
        shards: ``shards(epoch)`` -> per-rank id tensors for that epoch, identical on every rank (for the usual
            DistributedSampler: ``functools.partial(sampler_shards, N, world, seed=s)`` with ``epoch`` keyword).
        rank, world_size: this process's place; default from torch.distributed.
        group: process group for the exchange.
    """

    def __init__(self, make_local: Callable[[int], PredictionStore], num_samples: int, num_classes: int,
                 shards: Callable[[int], Sequence[torch.Tensor]], rank: int | None = None,
                 world_size: int | None = None, group=None):
        self.make_local, self.shards, self.group = make_local, shards, group
        self.num_samples, self.num_classes = int(num_samples), int(num_classes)
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        self.epoch = 0
        self._set_rows(self.shards(0)[self.rank].unique())
        self.local = make_local(len(self.rows))

    def _set_rows(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.slot = torch.full((self.num_samples,), -1, dtype=torch.long)
        self.slot[rows] = torch.arange(len(rows))

    def _slots(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.detach().cpu().long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise IndexError(f"sample id outside the prediction store's [0, {self.num_samples})")
        slots = self.slot[ids]
        if (slots < 0).any():
            bad = int(ids[slots < 0][0])
            raise KeyError(f"sample {bad} is not in rank {self.rank}'s shard for epoch {self.epoch}: the sampler "
                           "and the store's shard function disagree (same seed, shuffle and drop_last?)")
        return slots

    def gather(self, ids):
        return self.local.gather(self._slots(ids))

    def write(self, ids, probs):
        self.local.write(self._slots(ids), probs)

    @property
    def epochs_seen(self) -> int:
        return self.epoch

    def end_epoch(self) -> None:
        """Route every row to the rank that reads it in the next epoch (one exchange per epoch)."""
        cur, nxt = self.shards(self.epoch), self.shards(self.epoch + 1)
        holder = torch.full((self.num_samples,), -1, dtype=torch.long)
        for r in reversed(range(self.world_size)):  # a sample padded onto two ranks is sent by the lower one
            holder[cur[r].unique()] = r
        wanted = [s.unique() for s in nxt]  # sorted, so sender and receiver list rows in the same order
        new_rows = wanted[self.rank]
        new_local = self.make_local(len(new_rows))
        template = self.local.export_rows(torch.zeros(0, dtype=torch.long))
        for step in range(self.world_size):
            # Ring schedule: at step s send to rank + s and receive from rank - s (step 0: local copy).
            dst, src = (self.rank + step) % self.world_size, (self.rank - step) % self.world_size
            send_ids = wanted[dst][holder[wanted[dst]] == self.rank]
            recv_ids = new_rows[holder[new_rows] == src]
            payload = self.local.export_rows(self.slot[send_ids])
            if step == 0:
                received = payload
            else:
                received = [torch.empty((len(recv_ids), *t.shape[1:]), dtype=t.dtype) for t in template]
                ops = []
                if len(send_ids):
                    ops += [dist.P2POp(dist.isend, _as_bytes(t), dst, self.group) for t in payload]
                if len(recv_ids):
                    bufs = [_as_bytes(t) for t in received]
                    ops += [dist.P2POp(dist.irecv, b, src, self.group) for b in bufs]
                if ops:
                    for req in dist.batch_isend_irecv(ops):
                        req.wait()
                if len(recv_ids):
                    received = [b.view(t.dtype) if t.dtype != torch.bool else b.bool()
                                for b, t in zip(bufs, received)]
            local_slots = torch.searchsorted(new_rows, recv_ids)
            new_local.import_rows(local_slots, received)
        self.local = new_local
        self._set_rows(new_rows)
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"kind": "RoutedStore", "rank": self.rank, "world_size": self.world_size, "epoch": self.epoch,
                "shape": [self.num_samples, self.num_classes], "local": self.local.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "RoutedStore" or state.get("world_size") != self.world_size:
            raise ValueError(f"checkpoint's store was saved by {state.get('world_size')} ranks as "
                             f"{state.get('kind')}; this run has {self.world_size} ranks")
        if list(state["shape"]) != [self.num_samples, self.num_classes]:
            raise ValueError(f"checkpoint's prediction store is {state['shape']}, this run needs "
                             f"{[self.num_samples, self.num_classes]}")
        self.epoch = int(state["epoch"])
        self._set_rows(self.shards(self.epoch)[self.rank].unique())
        self.local = self.make_local(len(self.rows))
        self.local.load_state_dict(state["local"])

    def nbytes(self) -> int:
        return self.local.nbytes()
