"""Data sets for ``pskd-cls``: every split knows each sample's index, which PS-KD uses to find its past prediction.

Small data sets (Fashion-MNIST, MNIST, CIFAR, random, and image folders with ``data.in_memory``) are held as one
uint8 tensor and batched by indexing; large ones (ImageNet) stay image folders decoded by loader workers. The
validation split is carved out of the training set (never the test set) with its own seed, ``data.split_seed``.
Sample ids are positions inside the training split, 0..N-1.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError

__all__ = ["TensorSplit", "FolderSplit", "DataBundle", "build_data", "STATS"]

# Per-channel mean / std of the training images, used to normalise inputs.
STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class TensorSplit:
    """A split held in RAM: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FolderSplit:
    """A split of image files decoded on the fly: ``samples`` are (path, label) pairs."""

    samples: list[tuple[str, int]]
    source: str = ""
    labels: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.labels = torch.tensor([s[1] for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class DataBundle:
    """Everything the trainer needs to know about the data."""

    name: str
    train: TensorSplit | FolderSplit
    val: TensorSplit | FolderSplit | None
    test: TensorSplit | FolderSplit
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str          # resolved: none | crop | crop_flip | resized_crop | imagenet
    crop_padding: int


def _find(cfg: DataConfig, sub: str, marker: str, how_to_get: str, label: str) -> Path:
    """The first of root/sub, root (then the same under the repository) that holds ``marker``."""
    root = Path(cfg.root).expanduser()
    candidates = [root / sub, root]
    if not root.is_absolute():
        candidates += [REPO_ROOT / root / sub, REPO_ROOT / root]
    for c in candidates:
        if (c / marker).exists():
            return c
    raise DataError(f"{label} not found: no {marker} in {root / sub}; {how_to_get}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic {magic}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} bytes of data, its header says {dims}")
    return data.reshape(dims)


def _fashion_mnist(cfg: DataConfig) -> tuple[TensorSplit, TensorSplit]:
    folder = _find(cfg, "fashion-mnist", "train-images-idx3-ubyte.gz",
                   "get it with `make data` or `python scripts/fetch_data.py --only fashion-mnist`", "Fashion-MNIST")
    out = []
    for prefix in ("train", "t10k"):
        x = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051)
        y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049)
        if len(x) != len(y):
            raise DataError(f"{folder}/{prefix}-*: {len(x)} images but {len(y)} labels")
        out.append(TensorSplit(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)),
                               str(folder / f"{prefix}-labels-idx1-ubyte.gz")))
    return out[0], out[1]


def _mnist(cfg: DataConfig) -> tuple[TensorSplit, TensorSplit]:
    folder = _find(cfg, "mnist", "mnist.pkl.gz",
                   "get it with `make data` or `python scripts/fetch_data.py --only mnist`", "MNIST")
    path = folder / "mnist.pkl.gz"
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = pickle.load(f, encoding="latin1")
    except Exception as e:  # a truncated or foreign file: any unpickling error means the same to the user
        raise DataError(f"cannot read {path}: {e}") from None

    def tensors(*parts):
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        # Pixels are stored as k / 256 in float32: this recovers the original bytes exactly.
        img = np.clip(np.round(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        return TensorSplit(torch.from_numpy(img), torch.from_numpy(y), str(path))

    # The file's own 10k "valid" part is standard MNIST training data: pool it with train (60k, as usual) and
    # let data.val_split carve the validation split the same way as for every other data set.
    return tensors(train, valid), tensors(test)


def _cifar(cfg: DataConfig, classes: int) -> tuple[TensorSplit, TensorSplit]:
    sub = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    marker = "data_batch_1" if classes == 10 else "train"
    how = (f"download cifar-{classes}-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and extract "
           f"it into {cfg.root}/ (giving {cfg.root}/{sub}/), or point data.root at that folder")
    folder = _find(cfg, sub, marker, how, f"CIFAR-{classes}")
    files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if classes == 10 else (["train"], ["test"])
    key = b"labels" if classes == 10 else b"fine_labels"
    out = []
    for names in files:
        xs, ys = [], []
        for n in names:
            try:
                with open(folder / n, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[key], dtype=np.int64))
            except Exception as e:
                raise DataError(f"cannot read CIFAR file {folder / n}: {e}") from None
        out.append(TensorSplit(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)),
                               str(folder / names[0])))
    return out[0], out[1]


def _scan_folder(folder: Path, what: str) -> tuple[list[tuple[str, int]], list[str]]:
    if not folder.is_dir():
        raise DataError(f"{what}: folder {folder} does not exist")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    samples = []
    for i, c in enumerate(classes):
        for p in sorted((folder / c).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((str(p), i))
    if not samples:
        raise DataError(f"{what}: folder {folder} is empty (expected <class>/<image> files inside)")
    return samples, classes


def _folders(cfg: DataConfig, label: str) -> tuple[FolderSplit, FolderSplit]:
    sub = "imagenet" if cfg.name == "imagenet" else ""
    how = (f"put the images in {cfg.root}/{sub + '/' if sub else ''}train/<class>/*.JPEG and .../val/<class>/*.JPEG "
           "(validation images sorted into class folders), or point data.root at that folder")
    folder = _find(cfg, sub, "train", how, label)
    train, classes = _scan_folder(folder / "train", label)
    test_dir = next((folder / d for d in ("val", "test", "validation") if (folder / d).is_dir()), None)
    if test_dir is None:
        raise DataError(f"{label}: {folder} has no val/ (or test/) folder to evaluate on; {how}")
    test, test_classes = _scan_folder(test_dir, label)
    if test_classes != classes:
        raise DataError(f"{label}: {test_dir} has other class folders than {folder / 'train'}")
    return FolderSplit(train, str(folder / "train")), FolderSplit(test, str(test_dir))


def _decode(split: FolderSplit) -> TensorSplit:
    """Decode every image of a folder split into one uint8 tensor (they must share one size)."""
    from PIL import Image

    arrays = []
    for path, _ in split.samples:
        with Image.open(path) as im:
            arrays.append(np.asarray(im.convert("RGB")))
        if arrays[-1].shape != arrays[0].shape:
            raise DataError(f"data.in_memory needs images of one size: {path} is {arrays[-1].shape[:2]}, "
                            f"{split.samples[0][0]} is {arrays[0].shape[:2]}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return TensorSplit(images, split.labels.clone(), split.source)


def _random(cfg: DataConfig, num_classes: int) -> tuple[TensorSplit, TensorSplit]:
    g = torch.Generator().manual_seed(cfg.split_seed)
    size = cfg.image_size or 32
    out = []
    for _ in range(2):
        x = torch.randint(0, 256, (cfg.random_size, cfg.channels, size, size), generator=g, dtype=torch.uint8)
        out.append(TensorSplit(x, torch.randint(0, num_classes, (cfg.random_size,), generator=g), "random"))
    return out[0], out[1]


def _subset(split, idx: torch.Tensor):
    if isinstance(split, TensorSplit):
        return TensorSplit(split.images[idx].contiguous(), split.labels[idx].clone(), split.source)
    return FolderSplit([split.samples[i] for i in idx.tolist()], split.source)


def build_data(cfg: DataConfig) -> DataBundle:
    """Load the configured data set and split it into train / validation / test.

    Raises:
        DataError: missing or malformed files (with how to get them), labels outside [0, C), bad split sizes.
    """
    name = cfg.name
    if name == "fashion_mnist":
        train, test = _fashion_mnist(cfg)
        classes = 10
    elif name == "mnist":
        train, test = _mnist(cfg)
        classes = 10
    elif name in ("cifar10", "cifar100"):
        classes = 10 if name == "cifar10" else 100
        train, test = _cifar(cfg, classes)
    elif name in ("imagenet", "imagefolder"):
        train, test = _folders(cfg, "ImageNet" if name == "imagenet" else "image folder")
        classes = int(train.labels.max()) + 1
        if cfg.in_memory:
            train, test = _decode(train), _decode(test)
    elif name == "random":
        classes = cfg.num_classes or 10
        train, test = _random(cfg, classes)
    else:  # validated by the config already; kept for direct callers
        raise DataError(f"unknown data.name {name!r}")
    num_classes = cfg.num_classes or classes
    for split in (train, test):
        if len(split) and (int(split.labels.min()) < 0 or int(split.labels.max()) >= num_classes):
            bad = int(split.labels.min()) if int(split.labels.min()) < 0 else int(split.labels.max())
            raise DataError(f"{split.source}: label {bad} is outside [0, {num_classes}) (data.num_classes="
                            f"{num_classes})")

    n = len(train)
    g = torch.Generator().manual_seed(cfg.split_seed)
    perm = torch.randperm(n, generator=g)
    if cfg.train_subset is not None:
        if cfg.train_subset > n:
            raise DataError(f"data.train_subset={cfg.train_subset} but {train.source} has only {n} samples")
        perm = perm[:cfg.train_subset]
    n_val = int(cfg.val_split) if cfg.val_split >= 1 else int(round(cfg.val_split * len(perm)))
    if n_val >= len(perm) - 1:
        raise DataError(f"data.val_split={cfg.val_split} leaves {len(perm) - n_val} of {len(perm)} training samples")
    val = _subset(train, perm[:n_val].sort().values) if n_val else None
    train = _subset(train, perm[n_val:].sort().values)
    if cfg.test_subset is not None:
        test = _subset(test, torch.arange(min(cfg.test_subset, len(test))))

    if isinstance(train, TensorSplit):
        in_channels, size = train.images.shape[1], train.images.shape[-1]
    else:
        in_channels, size = 3, cfg.image_size or 224
    mean, std = STATS.get(name, STATS["imagenet"] if in_channels == 3 else ((0.5,), (0.5,)))
    if name == "random":
        mean, std = (0.5,) * in_channels, (0.29,) * in_channels  # uniform bytes: mean 0.5, std 1/sqrt(12)
    if len(mean) != in_channels:
        mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
    augment, padding = _resolve_augment(cfg, name, isinstance(train, TensorSplit), size)
    return DataBundle(name, train, val, test, num_classes, in_channels, size, tuple(mean), tuple(std), augment,
                      padding)


def _resolve_augment(cfg: DataConfig, name: str, in_memory: bool, size: int) -> tuple[str, int]:
    aug = cfg.augment
    if aug == "auto":
        aug = {"mnist": "crop", "imagenet": "imagenet"}.get(name, "crop_flip" if in_memory else "resized_crop")
    if in_memory and aug in ("resized_crop", "imagenet"):
        raise DataError(f"data.augment={aug} needs decoding per image: set data.in_memory=false (or use crop_flip)")
    if not in_memory and aug in ("crop", "crop_flip"):
        raise DataError(f"data.augment={aug} works on in-RAM data: set data.in_memory=true or use resized_crop")
    default_pad = {"cifar10": 4, "cifar100": 4}.get(name, 2 if size <= 28 else max(size // 8, 1))
    return aug, cfg.crop_padding if cfg.crop_padding is not None else default_pad
