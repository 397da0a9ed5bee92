"""Batches for training and evaluation: sample ids, same-class partners (CS-KD), augmentation, normalisation.

All randomness of an epoch (order, augmentation, partners, CutMix) comes from generators seeded by
``(seed, epoch, rank)``, so an epoch is a pure function of the model state and that triple: a run resumed at an
epoch boundary replays exactly what an uninterrupted one does. The order is ``DistributedSampler``'s (also with one
process), which is what :func:`pskd.core.distributed.sampler_shards` recomputes to route the PS-KD store.

In-RAM splits are indexed batch-wise and augmented as whole tensors on the training device (a few vectorised ops
per batch instead of a Python call per image); folder splits go through a torch DataLoader with per-image
torchvision transforms in worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .data import DataBundle, FolderSplit, TensorSplit

__all__ = ["Batch", "TrainLoader", "EvalLoader", "epoch_seed", "crop_flip"]


def epoch_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one (run seed, epoch, purpose, rank)."""
    return int(np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class Batch:
    images: torch.Tensor                   # float, normalised, on the device
    labels: torch.Tensor                   # int64, on the device
    ids: torch.Tensor                      # int64 sample ids (positions in the training split), on the CPU
    partner_images: torch.Tensor | None = None


def crop_flip(x: torch.Tensor, padding: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding (and random horizontal flip) of a whole batch (B, C, H, W) at once."""
    b, _, h, w = x.shape
    dev = x.device
    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    if padding:
        x = F.pad(x, (padding,) * 4)
        rows = rows + torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
        cols = cols + torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
    if flip:
        cols = torch.where((torch.rand(b, generator=g) < 0.5)[:, None], cols.flip(1), cols)
    rows, cols = rows.to(dev), cols.to(dev)
    # Advanced indexing on (batch, row, col) around the channel slice gives (B, H, W, C).
    out = x[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class _Normalize:
    def __init__(self, data: DataBundle, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.device, self.channels_last = device, channels_last

    def __call__(self, x: torch.Tensor, already_float: bool = False) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = x if already_float else x.float().div_(255.0)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _FolderDataset(Dataset):
    """(image tensor, label, index) for a folder split with a per-image transform."""

    def __init__(self, split: FolderSplit, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.split.samples[i]
        with Image.open(path) as im:
            img = self.transform(im.convert("RGB"))
        return img, label, i


class _Lighting:
    """AlexNet-style PCA lighting noise on a [0, 1] tensor (ImageNet eigen-decomposition)."""

    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])

    def __init__(self, std: float):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = (self.eigvec * alpha * self.eigval).sum(1)
        return img + rgb.view(3, 1, 1)


def folder_transform(data: DataBundle, train: bool):
    """torchvision transforms (to a [0, 1] float tensor; normalisation happens on the device)."""
    from torchvision import transforms as T

    size = data.image_size
    if not train or data.augment == "none":
        return T.Compose([T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor()])
    ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    if data.augment == "imagenet":
        ops += [T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(), _Lighting(0.1)]
    else:
        ops.append(T.ToTensor())
    return T.Compose(ops)


class TrainLoader:
    """One epoch of training batches for this rank.

    Args:
        data: the data sets.
        batch_size: per-rank batch size.
        seed: the run's seed.
        rank, world_size: DDP place (0, 1 without DDP).
        device: where batches go.
        pairs: also draw a same-class partner for every sample (CS-KD).
        num_workers: loader workers for folder splits.
        channels_last: convert images to channels_last.
    """

    def __init__(self, data: DataBundle, batch_size: int, seed: int, rank: int, world_size: int,
                 device: torch.device, pairs: bool = False, num_workers: int = 0, channels_last: bool = False):
        self.data, self.split = data, data.train
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.device, self.pairs, self.num_workers = device, pairs, num_workers
        self.normalize = _Normalize(data, device, channels_last)
        self.sampler = DistributedSampler(range(len(self.split)), num_replicas=world_size, rank=rank,
                                          shuffle=True, seed=seed, drop_last=False)
        self.epoch = 0
        labels = self.split.labels
        self._order = torch.argsort(labels, stable=True)           # sample ids grouped by class
        counts = torch.bincount(labels, minlength=data.num_classes)
        self._start = torch.cumsum(counts, 0) - counts              # first position of each class in _order
        self._count = counts
        self._pos = torch.empty_like(self._order)
        self._pos[self._order] = torch.arange(len(self._order))    # position of each id in _order
        if isinstance(self.split, FolderSplit):
            self._dataset = _FolderDataset(self.split, folder_transform(data, train=True))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def batches(self) -> list[torch.Tensor]:
        """This rank's sample ids for the epoch, cut into batches (a last batch of one is dropped: BN needs 2)."""
        ids = torch.as_tensor(list(self.sampler), dtype=torch.long)
        out = list(torch.split(ids, self.batch_size))
        if out and len(out[-1]) < 2:
            out.pop()
        return out

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size + (1 if n % self.batch_size >= 2 else 0)

    def _partners(self, ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """For each id, another random sample of the same class (itself if it is alone in its class)."""
        c = self.split.labels[ids]
        count, start = self._count[c], self._start[c]
        r = (torch.rand(len(ids), generator=g) * (count - 1).clamp_min(0)).long()
        r = r + (r >= self._pos[ids] - start).long() * (count > 1).long()   # skip the sample itself
        return self._order[start + r.clamp_max(count - 1)]

    def __iter__(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 1, self.rank))
        batches = self.batches()
        partners = [self._partners(b, g) for b in batches] if self.pairs else [None] * len(batches)
        if isinstance(self.split, TensorSplit):
            yield from self._iter_tensor(batches, partners, g)
        else:
            yield from self._iter_folder(batches, partners)

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        aug = self.data.augment
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        if aug in ("crop", "crop_flip"):
            x = crop_flip(x, self.data.crop_padding, aug == "crop_flip", g)
        return self.normalize(x, already_float=True)

    def _iter_tensor(self, batches, partners, g) -> Iterator[Batch]:
        images, labels = self.split.images, self.split.labels
        for ids, pids in zip(batches, partners):
            x = self._augment(images[ids], g)
            px = self._augment(images[pids], g) if pids is not None else None
            yield Batch(x, labels[ids].to(self.device, non_blocking=True), ids, px)

    def _iter_folder(self, batches, partners) -> Iterator[Batch]:
        index_lists = [torch.cat([b, p]).tolist() if p is not None else b.tolist() for b, p in zip(batches, partners)]
        # The loader's generator seeds its workers (base seed + worker id): per-image transforms are reproducible.
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 2, self.rank))
        loader = DataLoader(self._dataset, batch_sampler=index_lists, num_workers=self.num_workers,
                            generator=g, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for x, y, ids in loader:
            n = len(ids) // 2 if self.pairs else len(ids)
            x = self.normalize(x, already_float=True)
            yield Batch(x[:n], y[:n].to(self.device, non_blocking=True), ids[:n], x[n:] if self.pairs else None)


class EvalLoader:
    """Deterministic batches over one split (this rank's contiguous shard under DDP), without augmentation."""

    def __init__(self, data: DataBundle, split: TensorSplit | FolderSplit, batch_size: int, device: torch.device,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, channels_last: bool = False):
        self.data, self.split, self.batch_size, self.device = data, split, batch_size, device
        self.normalize = _Normalize(data, device, channels_last)
        per = -(-len(split) // world_size)
        self.ids = torch.arange(rank * per, min((rank + 1) * per, len(split)))
        self.shard_size, self.num_workers = per, num_workers

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        batches = list(torch.split(self.ids, self.batch_size))
        if isinstance(self.split, TensorSplit):
            for ids in batches:
                yield Batch(self.normalize(self.split.images[ids]), self.split.labels[ids].to(self.device), ids)
            return
        dataset = _FolderDataset(self.split, folder_transform(self.data, train=False))
        loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=self.num_workers)
        for x, y, ids in loader:
            yield Batch(self.normalize(x, already_float=True), y.to(self.device), ids)
