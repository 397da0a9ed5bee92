"""Prediction stores: round trips, precision bounds, memmap persistence across processes, resume."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pskd.core import DenseStore, TopKStore, build_store


def rand_probs(n, c, seed=0):
    return torch.softmax(3 * torch.randn(n, c, generator=torch.Generator().manual_seed(seed)), -1)


def test_unwritten_rows_are_invalid():
    store = DenseStore(5, 3)
    probs, valid = store.gather(torch.tensor([0, 4]))
    assert valid.tolist() == [False, False]
    assert probs.shape == (2, 3)


@pytest.mark.parametrize("dtype,tol", [("fp32", 0.0), ("fp16", 2 ** -11), ("bf16", 2 ** -8)])
def test_dense_round_trip_within_dtype_precision(dtype, tol):
    store = DenseStore(10, 7, dtype=dtype)
    p = rand_probs(4, 7)
    ids = torch.tensor([9, 2, 5, 0])
    store.write(ids, p)
    got, valid = store.gather(ids)
    assert valid.all()
    # relative rounding error of a float format with m mantissa bits is at most 2^-(m+1) of the value
    assert torch.all((got - p).abs() <= tol * p.abs() + 1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 40), st.integers(0, 10_000))
def test_topk_rows_are_distributions_close_to_the_full_row(c, k, seed):
    k = min(k, c)
    store = TopKStore(3, c, k=k)
    p = rand_probs(3, c, seed)
    store.write(torch.arange(3), p)
    got, valid = store.gather(torch.arange(3))
    assert valid.all()
    assert torch.allclose(got.sum(-1), torch.ones(3), atol=3e-3)
    # total variation to the full row is bounded by the mass outside the top k (plus fp16 rounding)
    outside = 1 - p.topk(k, -1).values.sum(-1)
    tv = 0.5 * (got - p).abs().sum(-1)
    assert torch.all(tv <= outside + 3e-3)


def test_topk_uses_int16_indices_when_they_fit():
    assert TopKStore(2, 1000, k=5)._arrays.specs["indices"][1] == np.int16
    assert TopKStore(2, 40000, k=5)._arrays.specs["indices"][1] == np.int32


def test_ram_state_dict_round_trip_and_shape_check():
    a = DenseStore(6, 4, dtype="fp16")
    a.write(torch.tensor([1, 3]), rand_probs(2, 4))
    a.end_epoch()
    b = DenseStore(6, 4, dtype="fp16")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.gather(torch.arange(6))[0], b.gather(torch.arange(6))[0])
    assert b.epochs_seen == 1
    with pytest.raises(ValueError, match="another dataset size"):
        DenseStore(7, 4, dtype="fp16").load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="TopKStore"):
        TopKStore(6, 4, k=2).load_state_dict(a.state_dict())


def test_memmap_reads_previous_epoch_and_resumes_from_checkpointed_epoch(tmp_path):
    store = build_store("memmap", 8, 3, dtype="fp16", path=str(tmp_path / "s"))
    p0, p1 = rand_probs(8, 3, 0), rand_probs(8, 3, 1)
    store.write(torch.arange(8), p0)
    assert not store.gather(torch.arange(8))[1].any()  # epoch 0's writes are not readable during epoch 0
    store.end_epoch()
    ckpt = store.state_dict()
    assert "probs" not in ckpt  # the table stays on disk, only the epoch is checkpointed
    store.write(torch.arange(4), p1[:4])  # half of epoch 1, then "crash"
    resumed = build_store("memmap", 8, 3, dtype="fp16", path=str(tmp_path / "s"))
    resumed.load_state_dict(ckpt)
    got, valid = resumed.gather(torch.arange(8))
    assert valid.all()
    assert torch.allclose(got, p0, atol=1e-3)  # exactly the rows of the checkpoint, not the crashed epoch's


def test_memmap_mid_epoch_checkpoint_keeps_rows_written_before_it(tmp_path):
    store = build_store("memmap", 8, 3, dtype="fp16", path=str(tmp_path / "s"))
    p0, p1, junk = rand_probs(8, 3, 0), rand_probs(8, 3, 1), rand_probs(8, 3, 2)
    store.write(torch.arange(8), p0)
    store.end_epoch()
    assert store.state_dict()["partial"] is False
    store.write(torch.arange(4), p1[:4])  # half of epoch 1, then a mid-epoch checkpoint
    ckpt = store.state_dict()
    assert ckpt["partial"] is True
    store.write(torch.arange(4, 6), junk[4:6])  # written after the checkpoint, then "crash"
    resumed = build_store("memmap", 8, 3, dtype="fp16", path=str(tmp_path / "s"))
    resumed.load_state_dict(ckpt)
    assert torch.allclose(resumed.gather(torch.arange(8))[0], p0, atol=1e-3)  # still reads epoch 0
    resumed.write(torch.arange(4, 8), p1[4:])  # the replayed second half of epoch 1
    resumed.end_epoch()
    got, valid = resumed.gather(torch.arange(8))
    assert valid.all()
    assert torch.allclose(got, p1, atol=1e-3)  # rows 0-3 from before the checkpoint survived the resume


def test_memmap_mid_epoch_checkpoint_without_its_partial_file_is_a_clear_error(tmp_path):
    store = build_store("memmap", 4, 3, path=str(tmp_path / "s"))
    store.write(torch.arange(4), rand_probs(4, 3))
    store.end_epoch()
    store.write(torch.arange(2), rand_probs(2, 3))
    ckpt = store.state_dict()
    for f in (tmp_path / "s").glob("epoch0002.*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="mid-epoch"):
        build_store("memmap", 4, 3, path=str(tmp_path / "s")).load_state_dict(ckpt)


def test_export_import_rows_moves_raw_fields_between_stores():
    for make in (lambda: DenseStore(6, 5, dtype="fp16"), lambda: TopKStore(6, 5, k=2)):
        src, dst = make(), make()
        src.write(torch.arange(6), rand_probs(6, 5, 3))
        dst.import_rows(torch.tensor([0, 1]), src.export_rows(torch.tensor([4, 2])))
        src.end_epoch()
        dst.end_epoch()
        want, _ = src.gather(torch.tensor([4, 2]))
        got, valid = dst.gather(torch.tensor([0, 1]))
        assert torch.equal(got, want) and valid.all()
        assert not dst.gather(torch.tensor([2]))[1].any()


def test_memmap_visible_to_another_process(tmp_path):
    store = DenseStore(4, 3, dtype="fp32", path=str(tmp_path / "s"))
    p = rand_probs(4, 3)
    store.write(torch.arange(4), p)
    store.end_epoch()
    state = store.state_dict()
    code = (
        "import sys, torch; from pskd.core import DenseStore\n"
        f"s = DenseStore(4, 3, dtype='fp32', path={str(tmp_path / 's')!r})\n"
        f"s.load_state_dict({{'kind': 'DenseStore', 'shape': [4, 3], 'epoch': {state['epoch']}, 'path': 'x'}})\n"
        "print(','.join(f'{v:.6f}' for v in s.gather(torch.arange(4))[0].flatten().tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = torch.tensor([float(v) for v in out.strip().split(",")]).view(4, 3)
    assert torch.allclose(got, p, atol=1e-6)


def test_memmap_missing_file_is_a_clear_error(tmp_path):
    store = DenseStore(4, 3, path=str(tmp_path / "s"))
    state = store.state_dict()
    state["epoch"] = 7
    with pytest.raises(FileNotFoundError, match="epoch0007"):
        store.load_state_dict(state)


def test_bad_ids_and_kinds():
    store = DenseStore(4, 3)
    with pytest.raises(IndexError, match=r"sample id 4 is outside"):
        store.gather(torch.tensor([4]))
    with pytest.raises(ValueError, match="unknown store kind"):
        build_store("disk", 4, 3)
    with pytest.raises(ValueError, match="needs a path"):
        build_store("memmap", 4, 3)
