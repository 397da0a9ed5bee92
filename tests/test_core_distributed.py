"""The rank-sharded store under 2 gloo processes equals the single-process store for the same updates."""
import functools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pskd.core import DenseStore, TopKStore
from pskd.core.distributed import RoutedStore, sampler_shards

N, C, EPOCHS, BATCH = 23, 6, 4, 5  # odd N: DistributedSampler pads one rank's shard with a repeated sample


def prediction(ids: torch.Tensor, epoch: int) -> torch.Tensor:
    """A deterministic 'model output' per (sample, epoch), so every process can rebuild the reference."""
    rows = [torch.softmax(torch.randn(C, generator=torch.Generator().manual_seed(int(i) * 100 + epoch)), -1)
            for i in ids]
    return torch.stack(rows)


def worker(rank: int, world: int, init_file: str, kind: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shards = functools.partial(sampler_shards, N, world, seed=3)
        make = (lambda n: DenseStore(n, C, dtype="fp16")) if kind == "dense" else (lambda n: TopKStore(n, C, k=3))
        routed = RoutedStore(make, N, C, shards=shards)
        reference = make(N)
        assert routed.nbytes() < reference.nbytes() * 0.6  # about N/world rows, not N
        for epoch in range(EPOCHS):
            mine = shards(epoch=epoch)[rank]
            for start in range(0, len(mine), BATCH):
                ids = mine[start:start + BATCH]
                got, got_valid = routed.gather(ids)
                want, want_valid = reference.gather(ids)
                assert torch.equal(got_valid, want_valid), (rank, epoch, ids)
                assert torch.equal(got[got_valid], want[want_valid]), (rank, epoch, ids)
                routed.write(ids, prediction(ids, epoch))
            for r_ids in shards(epoch=epoch):  # the single process sees every rank's writes
                reference.write(r_ids, prediction(r_ids, epoch))
            routed.end_epoch()
            reference.end_epoch()
        # after the first epoch every row read is a real prediction, not the one-hot fallback
        assert routed.gather(shards(epoch=EPOCHS)[rank])[1].all()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["dense", "topk"])
def test_routed_store_equals_single_process_store(tmp_path, kind):
    init_file = str(tmp_path / "init")
    mp.start_processes(worker, args=(2, init_file, kind), nprocs=2, start_method="fork", join=True)


def test_shards_match_distributed_sampler_partition():
    shards = sampler_shards(10, 3, epoch=2, seed=1)
    assert sorted(torch.cat(shards).unique().tolist()) == list(range(10))
    assert len({len(s) for s in shards}) == 1  # padded to equal length, as DistributedSampler does


def test_routed_store_rejects_ids_outside_its_shard():
    shards = functools.partial(sampler_shards, 8, 2, seed=0)
    store = RoutedStore(lambda n: DenseStore(n, 3), 8, 3, shards=shards, rank=0, world_size=2)
    other = shards(epoch=0)[1]
    outside = [i for i in other.tolist() if i not in shards(epoch=0)[0].tolist()]
    with pytest.raises(KeyError, match="not in rank 0's shard"):
        store.gather(torch.tensor(outside[:1]))


