#!/usr/bin/env python3
"""Training throughput of pskd-cls against timm, same model, data and machine, side by side in one run.

    python benchmarks/perf_cls_throughput.py [--train-images 2048] [--epochs 3] [--workers 2]
                                             [--timm-train /path/to/pytorch-image-models/train.py]

Data: Fashion-MNIST (``data/fashion-mnist``, ``make data``) written once as an ImageFolder of 28x28 PNGs
(``train/<class>/*.png``, ``val/<class>/*.png``) in a temporary folder; both trainers read those files.
Model: ResNet-18 (torchvision's in pskd-cls, timm's ``resnet18`` in timm: the same architecture; the parameter
counts are printed and must match), 10 classes, 28x28 inputs, batch 128, SGD lr 0.1 momentum 0.9 wd 5e-4, cosine.
Per-image augmentation on the streaming path: RandomResizedCrop + horizontal flip in both (timm's colour jitter is
set to 0 so both decode and transform the same way), ``--workers`` loader processes each.

timm side: timm's ``train.py`` lives in its git repository, not in the timm wheel or sdist on PyPI (checked
0.6.13, 0.9.16, 1.0.9, 1.0.31). With ``--timm-train PATH`` (a checkout's ``train.py``) the real script is timed;
without it, the script's training loop is run from timm's own parts (``create_dataset``, ``create_loader`` with
its prefetcher, ``create_model``, ``create_optimizer_v2``, ``create_scheduler_v2``, CrossEntropy, and a validation
pass per epoch), which is the hot path of train.py without its logging and checkpointing.

Reported: training images/s (the training loop's wall time per epoch, data loading included) averaged over the
epochs after the first (warm-up), the whole command's wall time, and the ratio to timm.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_image_folder(src: Path, out: Path, n_train: int, n_val: int) -> None:
    """Fashion-MNIST IDX files -> out/{train,val}/<class>/<i>.png (first n_train train and n_val test images)."""
    from PIL import Image

    def read(prefix: str):
        with gzip.open(src / f"{prefix}-images-idx3-ubyte.gz") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(src / f"{prefix}-labels-idx1-ubyte.gz") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)
        return x, y

    for split, prefix, n in (("train", "train", n_train), ("val", "t10k", n_val)):
        x, y = read(prefix)
        for c in range(10):
            (out / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(x[i], mode="L").save(out / split / f"class{y[i]}" / f"{i:05d}.png")


def timm_loop(root: str, epochs: int, workers: int, batch: int) -> dict:
    """train.py's training loop built from timm's own components (see the module docstring)."""
    import torch
    import torch.nn as nn
    from timm import create_model
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = create_model("resnet18", num_classes=10)
    data_config = resolve_data_config({"input_size": (3, 28, 28)}, model=model)
    train_set = create_dataset("", root=root, split="train", is_training=True)
    val_set = create_dataset("", root=root, split="val")
    common = dict(input_size=data_config["input_size"], mean=data_config["mean"], std=data_config["std"],
                  num_workers=workers, device=device, use_prefetcher=True)
    train_loader = create_loader(train_set, batch_size=batch, is_training=True, color_jitter=0.0,
                                 interpolation="random", **common)
    val_loader = create_loader(val_set, batch_size=2 * batch, is_training=False, crop_pct=data_config["crop_pct"],
                               interpolation=data_config["interpolation"], **common)
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=0)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    for epoch in range(epochs):
        model.train()
        n, start = 0, time.perf_counter()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n += len(y)
        rates.append(n / (time.perf_counter() - start))
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                model(x)
        scheduler.step(epoch + 1)
    return {"rates": rates, "params": sum(p.numel() for p in model.parameters())}


def run(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"perf_cls_throughput: {' '.join(cmd[:4])} ... failed:\n{r.stderr[-3000:]}")
    return r, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO / "data" / "fashion-mnist"), help="Fashion-MNIST IDX folder")
    ap.add_argument("--train-images", type=int, default=2048)
    ap.add_argument("--val-images", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="loader worker processes (both trainers)")
    ap.add_argument("--timm-train", default=None, help="path to timm's train.py (a pytorch-image-models checkout)")
    ap.add_argument("--keep", default=None, help="keep the image folder and run outputs here")
    ap.add_argument("--timm-loop-json", default=None, help=argparse.SUPPRESS)  # internal: run the timm loop
    args = ap.parse_args()
    if args.timm_loop_json:
        res = timm_loop(args.data, args.epochs, args.workers, args.batch_size)
        Path(args.timm_loop_json).write_text(json.dumps(res))
        return
    if not (Path(args.data) / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"perf_cls_throughput: Fashion-MNIST not found in {args.data}; run `make data` or "
                 "`python scripts/fetch_data.py --only fashion-mnist`")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pskd-perf-"))
    images = work / "images"
    if not (images / "val").exists():
        write_image_folder(Path(args.data), images, args.train_images, args.val_images)
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    rows = []

    # --- timm
    if args.timm_train:
        out = work / "timm_out"
        cmd = [sys.executable, args.timm_train, "--data-dir", str(images), "--train-split", "train", "--val-split",
               "val", "--model", "resnet18", "--num-classes", "10", "--input-size", "3", "28", "28", "-b",
               str(args.batch_size), "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4",
               "--sched", "cosine", "--warmup-epochs", "0", "--epochs", str(args.epochs), "--smoothing", "0",
               "--color-jitter", "0", "-j", str(args.workers), "--device", "cpu", "--log-interval", "1000000",
               "--output", str(out)]
        r, wall = run(cmd, env)
        # train.py logs "... Time: 0.123s, 1040.65/s  (0.130s,  984.61/s) ..." at the last batch of every epoch.
        avg = [float(m) for m in re.findall(r"\(\s*[\d.]+s,\s*([\d.]+)/s\)", r.stdout + r.stderr)]
        rates = avg[-(args.epochs - 1):] if len(avg) >= args.epochs else avg
        rows.append(("timm train.py", "per-image PIL, workers", float(np.mean(rates)) if rates else float("nan"),
                     wall, None))
    else:
        out_json = work / "timm_loop.json"
        cmd = [sys.executable, __file__, "--data", str(images), "--epochs", str(args.epochs), "--workers",
               str(args.workers), "--batch-size", str(args.batch_size), "--timm-loop-json", str(out_json)]
        _, wall = run(cmd, env)
        res = json.loads(out_json.read_text())
        rows.append(("timm (train.py loop from timm parts)", "per-image PIL, workers", float(np.mean(res["rates"][1:])),
                     wall, res["params"]))

    # --- pskd-cls
    base = [sys.executable, "-m", "pskd.vision_cls.cli", "train", "data.name=imagefolder", f"data.root={images}",
            "data.val_split=0", "data.image_size=28", "model.name=resnet18", f"train.batch_size={args.batch_size}",
            f"train.epochs={args.epochs}", "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=5e-4",
            "optim.schedule=cosine", "train.device=cpu", "train.progress=off", "train.tensorboard=false",
            f"data.num_workers={args.workers}"]
    variants = [
        ("pskd-cls, ce", "per-image PIL, workers", ["method.name=ce", "data.augment=resized_crop"]),
        ("pskd-cls, ce", "decoded once, batched aug", ["method.name=ce", "data.in_memory=true"]),
        ("pskd-cls, pskd", "decoded once, batched aug", ["method.name=pskd", "data.in_memory=true"]),
    ]
    for i, (name, pipeline, extra) in enumerate(variants):
        out = work / f"pskd_{i}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        _, wall = run(base + extra + [f"train.out_dir={out}"], env)
        hist = json.loads((out / "metrics.json").read_text())["history"]
        rate = float(np.mean([h["train_images_per_s"] for h in hist[1:]]))
        import torch

        params = sum(v.numel() for k, v in torch.load(out / "best.pt", weights_only=False)["model"].items()
                     if "running" not in k and "num_batches" not in k)
        rows.append((name, pipeline, rate, wall, params))

    timm_rate = rows[0][2]
    print(f"\nResNet-18, Fashion-MNIST PNGs 28x28, {args.train_images} training images, batch {args.batch_size}, "
          f"{args.epochs} epochs (images/s over epochs 2..{args.epochs}), {os.cpu_count()} CPU cores, "
          f"{args.workers} loader workers\n")
    print("| trainer | input pipeline | params | train images/s | vs timm | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for name, pipeline, rate, wall, params in rows:
        print(f"| {name} | {pipeline} | {params if params else '-'} | {rate:.0f} | {rate / timm_rate:.2f}x | "
              f"{wall:.0f} |")
    print(f"\ncommand: python benchmarks/perf_cls_throughput.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
