"""pskd-cls data: readers of the standard files, sample ids, the validation split, loaders, augmentation."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pskd.vision_cls.config import DataConfig
from pskd.vision_cls.data import REPO_ROOT, build_data
from pskd.vision_cls.errors import DataError
from pskd.vision_cls.loader import EvalLoader, TrainLoader, crop_flip


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fake_fmnist(root: Path, n_train: int = 600, n_test: int = 200, bad_label: int | None = None,
                     seed: int = 0) -> Path:
    """Fashion-MNIST-format IDX files whose images carry a learnable class pattern (a bright row per class)."""
    rng = np.random.default_rng(seed)
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 230
        if bad_label is not None and prefix == "train":
            y[0] = bad_label
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x, 2051)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y, 2049)
    return root


def test_idx_reader_splits_and_ids(tmp_path):
    make_fake_fmnist(tmp_path, 600, 200)
    d = build_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=0.1))
    assert (len(d.train), len(d.val), len(d.test)) == (540, 60, 200)
    assert d.train.images.shape == (540, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert (d.num_classes, d.in_channels, d.augment, d.crop_padding) == (10, 1, "crop_flip", 2)
    # The validation split is a disjoint part of the training file, chosen by split_seed only.
    raw = _rows(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    tr, va = {r.tobytes() for r in d.train.images.numpy()}, {r.tobytes() for r in d.val.images.numpy()}
    assert not tr & va and tr | va == {r.tobytes() for r in raw}
    d2 = build_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=60, train_subset=300))
    assert (len(d2.train), len(d2.val)) == (240, 60)


def _rows(path):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)


def test_missing_and_malformed_data_messages(tmp_path):
    with pytest.raises(DataError, match=r"fetch_data.py --only fashion-mnist"):
        build_data(DataConfig(name="fashion_mnist", root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match=r"fetch_data.py --only mnist"):
        build_data(DataConfig(name="mnist", root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match=r"cifar-100-python"):
        build_data(DataConfig(name="cifar100", root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match=r"train/<class>"):
        build_data(DataConfig(name="imagenet", root=str(tmp_path / "nowhere")))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "empty")))
    make_fake_fmnist(tmp_path / "bad", bad_label=12)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 12 is outside \[0, 10\)"):
        build_data(DataConfig(name="fashion_mnist", root=str(tmp_path / "bad")))
    (tmp_path / "junk" / "fashion-mnist").mkdir(parents=True)
    (tmp_path / "junk" / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 32))
    with pytest.raises(DataError, match=r"not an IDX file"):
        build_data(DataConfig(name="fashion_mnist", root=str(tmp_path / "junk")))


def test_cifar_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 50), ("test", 20)):
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(rng.integers(0, 100, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    data = build_data(DataConfig(name="cifar100", root=str(tmp_path), val_split=0))
    assert data.train.images.shape == (50, 3, 32, 32) and data.num_classes == 100 and data.val is None
    assert (data.augment, data.crop_padding) == ("crop_flip", 4)


def test_image_folder_streaming_and_in_memory(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    d = build_data(DataConfig(name="imagefolder", root=str(tmp_path), val_split=2, image_size=8))
    assert (len(d.train), len(d.val), len(d.test), d.num_classes, d.augment) == (10, 2, 4, 2, "resized_crop")
    loader = TrainLoader(d, 4, seed=0, rank=0, world_size=1, device=torch.device("cpu"), pairs=True)
    batches = list(loader)
    assert batches[0].images.shape == (4, 3, 8, 8) and batches[0].partner_images.shape == (4, 3, 8, 8)
    assert sorted(torch.cat([b.ids for b in batches]).tolist()) == list(range(10))
    m = build_data(DataConfig(name="imagefolder", root=str(tmp_path), val_split=2, in_memory=True))
    assert m.train.images.shape == (10, 3, 12, 12) and m.augment == "crop_flip"
    ev = list(EvalLoader(d, d.test, 3, torch.device("cpu")))
    assert [len(b.ids) for b in ev] == [3, 1]


def test_train_loader_ids_partners_and_determinism(tmp_path):
    make_fake_fmnist(tmp_path, 300, 50)
    d = build_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=0))
    loader = TrainLoader(d, 32, seed=3, rank=0, world_size=1, device=torch.device("cpu"), pairs=True)
    loader.set_epoch(1)
    first = list(loader)
    ids = torch.cat([b.ids for b in first])
    assert sorted(ids.tolist()) == list(range(300))  # every training sample exactly once per epoch
    for b in first:  # labels belong to the ids, and images to the labels (the bright row of the class)
        assert torch.equal(b.labels, d.train.labels[b.ids])
    loader.set_epoch(1)
    again = list(loader)
    assert all(torch.equal(a.images, b.images) and torch.equal(a.partner_images, b.partner_images)
               for a, b in zip(first, again))
    loader.set_epoch(2)
    assert not torch.equal(list(loader)[0].ids, first[0].ids)
    g = torch.Generator().manual_seed(0)
    pid = loader._partners(ids, g)
    assert torch.equal(d.train.labels[pid], d.train.labels[ids]) and not (pid == ids).any()


def test_crop_flip_is_a_shifted_window():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, 2, False, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):  # each output is some 5x5 window of the padded input
        assert any(torch.equal(out[i], padded[i, :, r:r + 5, c:c + 5]) for r in range(5) for c in range(5))
    flipped = crop_flip(x, 0, True, torch.Generator().manual_seed(1))
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1)) for i in range(2))


@pytest.mark.skipif(not (REPO_ROOT / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists(),
                    reason="real Fashion-MNIST not fetched (make data)")
def test_real_fashion_mnist_counts():
    d = build_data(DataConfig(name="fashion_mnist", val_split=5000))
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10


@pytest.mark.skipif(not (REPO_ROOT / "data" / "mnist" / "mnist.pkl.gz").exists(), reason="real MNIST not fetched")
def test_real_mnist_counts():
    d = build_data(DataConfig(name="mnist", val_split=0))
    assert (len(d.train), len(d.test)) == (60000, 10000) and d.train.images.max() == 255
