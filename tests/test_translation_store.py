"""Tests of the per-token top-k store: epochs, resume inside an epoch, fingerprints, merging across ranks.

Kept apart from the fairseq tests so the two-process merge test spawns workers that import no fairseq.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from pskd.translation.errors import PSKDError
from pskd.translation.topk_store import TokenTopKStore, estimate_store_bytes


def _store(path, sizes=(3, 5, 2), vocab=50, k=4, rank=0):
    symbols = [f"s{i}" for i in range(vocab)]
    return TokenTopKStore(path, np.array(sizes), symbols, k, rank=rank)


def test_store_epochs_resume_and_fingerprint(tmp_path):
    store = _store(tmp_path)
    store.begin_epoch(1)
    rows = np.arange(store.num_tokens)
    vals = torch.rand(len(rows), 4)
    idx = torch.randint(0, 50, (len(rows), 4))
    store.put(rows, vals, idx)
    store.begin_epoch(2)
    v, i, ok = store.gather(rows)
    assert torch.equal(v, vals.half().float()) and torch.equal(i, idx) and ok.all()
    store.put(rows[:4], vals[:4] * 0.5, idx[:4])
    state = store.state_dict()
    # a new process resuming inside epoch 2 keeps the rows written before the checkpoint
    again = _store(tmp_path)
    again.check_state(state)
    again.begin_epoch(2, resume=True)
    assert torch.equal(torch.from_numpy(np.asarray(again.write["values"][:4], dtype=np.float32)),
                       (vals[:4] * 0.5).half().float())
    assert not np.asarray(again.write["valid"][4:]).any()
    again.begin_epoch(3)
    assert not (again.dir / "epoch0001.values.bin").exists()  # only the read and the write set are kept
    # another data set or vocabulary: refused, nothing touched
    meta = (again.dir / "meta.json").read_text()
    for kwargs in ({"sizes": (3, 5, 3)}, {"vocab": 60}, {"k": 8}):
        with pytest.raises(PSKDError, match="another data set"):
            _store(tmp_path, **kwargs)
    assert (again.dir / "meta.json").read_text() == meta
    with pytest.raises(PSKDError, match="target tokens"):
        target = torch.tensor([[5, 6, 2, 1, 1]])  # 3 tokens for sample 1, whose size is 5
        again.rows(torch.tensor([1]), target, pad=1)
    assert estimate_store_bytes(100, 8, 10_000) == 100 * (8 * 4 + 1)
    assert json.loads(meta)["num_tokens"] == 10


def _merge_worker(rank, world, path, port, sizes):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    store = _store(path, sizes=sizes, rank=rank)
    store.begin_epoch(1)
    n = store.num_tokens
    mine = np.arange(rank, n, world)  # each rank saw half the tokens; row 0 is also seen by rank 1 (duplicate)
    if rank == 1:
        mine = np.concatenate([[0], mine])
    vals = torch.full((len(mine), 4), 0.1 * (rank + 1))
    idx = torch.full((len(mine), 4), rank, dtype=torch.long)
    store.put(mine, vals, idx)
    store.merge(rank, world)
    store.begin_epoch(2)
    np.save(os.path.join(path, f"out{rank}.npy"),
            np.concatenate([np.asarray(store.read["values"], np.float32),
                            np.asarray(store.read["indices"], np.float32)], 1))
    dist.destroy_process_group()


def test_store_merge_across_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sizes = (3, 5, 2, 4)
    torch.multiprocessing.spawn(_merge_worker, args=(2, str(tmp_path), port, sizes), nprocs=2)
    a, b = np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy")
    assert np.array_equal(a, b)
    owner = np.arange(sum(sizes)) % 2
    owner[0] = 1  # the duplicate row ends as the higher rank's on every rank
    assert np.array_equal(a[:, 4], owner.astype(np.float32))
