"""Core performance benchmarks; prints one markdown table per part, all measured in this run.

(a) PS-KD training step vs CE training step, CIFAR-shape ResNet-18 (CIFAR stem, 100 classes), CPU, batch 128.
(b) Store gather + write per step and memory at ImageNet shape (1,281,167 x 1000), batch 256: fp32 RAM (the
    official layout), fp16 memory-mapped, top-k (k = 10), over one full simulated epoch of writes.
(c) 2 gloo processes under DDP: PS-KD step vs CE step with the rank-sharded store, the epoch-boundary exchange
    time and store memory per rank, side by side with the official pattern (all_gather of predictions and
    indices at every step, row-by-row writes into a full N x C fp32 table on every rank).

Usage: python benchmarks/perf_core.py [--parts a,b,c] [--steps 20] [--imagenet-rows 1281167]
"""
from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import tempfile
import time

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP

from pskd.core import AlphaSchedule, DenseStore, TopKStore, build_policy, build_store
from pskd.core.distributed import RoutedStore, sampler_shards


def cifar_resnet18(num_classes: int = 100) -> torch.nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem: 3x3 conv, no max-pool
    model.maxpool = torch.nn.Identity()
    return model


def timed_steps(model, opt, policy, batches, epoch, steps):
    """Median seconds per full training step (forward, loss, backward, step, observe)."""
    times = []
    for i in range(steps):
        x, y, ids = batches[i % len(batches)]
        t0 = time.perf_counter()
        logits = model(x)
        loss = policy.loss(logits, y, ids, epoch) if policy is not None else F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if policy is not None:
            policy.observe(ids, logits)
        times.append(time.perf_counter() - t0)
    return times


def part_a(steps: int) -> None:
    torch.manual_seed(0)
    n, c, b = 50_000, 100, 128
    model = cifar_resnet18(c)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(b, 3, 32, 32, generator=g), torch.randint(c, (b,), generator=g),
                torch.randperm(n, generator=g)[:b]) for _ in range(4)]
    policy = build_policy("pskd", c, store=DenseStore(n, c), schedule=AlphaSchedule(0.8, num_epochs=300))
    policy.store.write(torch.arange(n), torch.full((n, c), 1.0 / c))
    policy.end_epoch()  # epoch 1: every target mixes in stored predictions
    timed_steps(model, opt, None, batches, 1, 2)  # warm-up (allocator, kernels)
    ce, pskd = [], []
    for _ in range(steps):  # interleave so drifts in machine load hit both alike
        ce += timed_steps(model, opt, None, batches, 1, 1)
        pskd += timed_steps(model, opt, policy, batches, 1, 1)
    m_ce, m_ps = statistics.median(ce), statistics.median(pskd)
    print("\n(a) training step, CIFAR ResNet-18, 100 classes, batch 128, CPU "
          f"({torch.get_num_threads()} threads), median of {steps} interleaved steps each\n")
    print("| step | median s/step | ratio to CE | target |")
    print("|---|---|---|---|")
    print(f"| CE | {m_ce:.3f} | 1.000 | |")
    print(f"| PS-KD (RAM fp32 store) | {m_ps:.3f} | {m_ps / m_ce:.3f} | <= 1.03 |")


def _mem():
    info = psutil.Process().memory_full_info()
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssFile")))
    kb = lambda k: int(fields[k].split()[0]) * 1024  # noqa: E731
    return kb("RssAnon"), kb("RssFile"), info.uss


def part_b(rows: int, steps_timed: int) -> None:
    c, b = 1000, 256
    print(f"\n(b) store at ImageNet shape ({rows:,} x {c}), batch {b}: one full simulated epoch of writes "
          f"({rows // b:,} steps), then {steps_timed} timed gather+write steps at random ids\n")
    print("| store | buffer size | anon RSS after epoch | file-backed RSS (page cache) | gather+write ms/step | "
          "anon RSS / fp32 RAM |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(b, c, generator=g) * 3, -1)
    fp32_anon = None
    with tempfile.TemporaryDirectory(dir=os.environ.get("PSKD_BENCH_TMP")) as tmp:
        for name, make in [("fp32 RAM (official layout)", lambda: DenseStore(rows, c, "fp32")),
                           ("fp16 memmap", lambda: build_store("memmap", rows, c, dtype="fp16", path=tmp + "/mm")),
                           ("top-10 RAM (fp16 + int16)", lambda: TopKStore(rows, c, k=10))]:
            gc.collect()
            anon0, file0, _ = _mem()
            store = make()
            perm = torch.randperm(rows, generator=g)
            for s in range(0, rows - b + 1, b):  # every row written once, as in one epoch
                store.write(perm[s:s + b], probs)
            store.end_epoch()
            times = []
            for _ in range(steps_timed):
                ids = torch.randint(rows, (b,), generator=g)
                t0 = time.perf_counter()
                store.gather(ids)
                store.write(ids, probs)
                times.append(time.perf_counter() - t0)
            anon, file_, _ = _mem()
            anon -= anon0
            file_ -= file0
            fp32_anon = anon if fp32_anon is None else fp32_anon
            print(f"| {name} | {store.nbytes() / 2**30:.2f} GiB | {anon / 2**30:.2f} GiB | {file_ / 2**30:.2f} GiB | "
                  f"{1e3 * statistics.median(times):.2f} | {anon / fp32_anon:.3f} |")
            del store
            gc.collect()


# ---------------------------------------------------------------- (c) DDP, 2 gloo processes
def _ddp_worker(rank, world, init_file, steps, n, c, b, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DDP(cifar_resnet18(c))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    shards = functools.partial(sampler_shards, n, world, seed=0)
    store = RoutedStore(lambda k: DenseStore(k, c, "fp16"), n, c, shards=shards)
    policy = build_policy("pskd", c, store=store, schedule=AlphaSchedule(0.8, num_epochs=300))
    mine = shards(epoch=0)[rank]
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(b, 3, 32, 32, generator=g)
    y = torch.randint(c, (b,), generator=g)
    full = torch.zeros(n, c)  # the official layout: a full fp32 table on every rank

    def official_observe(ids, logits):
        probs = F.softmax(logits.detach(), -1)
        all_probs = [torch.empty_like(probs) for _ in range(world)]
        all_ids = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(all_probs, probs)
        dist.all_gather(all_ids, ids)
        for p, i in zip(all_probs, all_ids):
            for row, idx in zip(p, i):  # row by row, as the official code does
                full[idx] = row

    res = {"ce": [], "pskd": [], "official": [], "official_comm": []}
    for s in range(steps + 2):
        ids = mine[(s * b) % (len(mine) - b):][:b]
        for mode in ("ce", "pskd", "official"):
            dist.barrier()
            t0 = time.perf_counter()
            logits = model(x)
            if mode == "pskd":
                loss = policy.loss(logits, y, ids, 1)
            elif mode == "official":
                q = 0.2 * F.one_hot(y, c).float() + 0.8 * full[ids]
                loss = -(q * F.log_softmax(logits, -1)).sum(-1).mean()
            else:
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if mode == "pskd":
                policy.observe(ids, logits)
            elif mode == "official":
                t1 = time.perf_counter()
                official_observe(ids, logits)
                res["official_comm"].append(time.perf_counter() - t1)
            if s >= 2:
                res[mode].append(time.perf_counter() - t0)
    dist.barrier()
    t0 = time.perf_counter()
    store.end_epoch()
    dist.barrier()
    res["exchange"] = time.perf_counter() - t0
    res["store_bytes"] = store.nbytes()
    res["official_bytes"] = full.numel() * 4
    if rank == 0:
        queue.put(res)
    dist.destroy_process_group()


def _exchange_worker(rank, world, init_file, n, c, kind, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    shards = functools.partial(sampler_shards, n, world, seed=0)
    make = (lambda k: DenseStore(k, c, "fp16")) if kind == "fp16" else (lambda k: TopKStore(k, c, k=10))
    store = RoutedStore(make, n, c, shards=shards)
    mine = shards(epoch=0)[rank]
    probs = torch.softmax(torch.randn(4096, c), -1)
    for s in range(0, len(mine), 4096):
        ids = mine[s:s + 4096]
        store.write(ids, probs[:len(ids)])
    dist.barrier()
    t0 = time.perf_counter()
    store.end_epoch()
    dist.barrier()
    if rank == 0:
        queue.put((time.perf_counter() - t0, store.nbytes()))
    dist.destroy_process_group()


def _spawn(fn, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=fn, args=(r, 2, tmp + "/init", *args, queue)) for r in range(2)]
        for p in procs:
            p.start()
        out = queue.get(timeout=1800)
        for p in procs:
            p.join()
    return out


def part_c(steps: int, imagenet_rows: int) -> None:
    rows = []
    for c, b in [(100, 64), (1000, 128)]:
        res = _spawn(_ddp_worker, steps, 50_000 if c == 100 else imagenet_rows, c, b)
        m = {k: statistics.median(res[k]) for k in ("ce", "pskd", "official", "official_comm")}
        rows.append((c, b, m, res))
    print(f"\n(c) DDP, 2 gloo processes (1 thread each), CIFAR ResNet-18, median of {steps} steps per mode\n")
    print("| classes | batch/rank | CE s/step | PS-KD (routed fp16) s/step | ratio | official pattern s/step | "
          "official per-step sync ms | store bytes/rank: routed vs official |")
    print("|---|---|---|---|---|---|---|---|")
    for c, b, m, res in rows:
        print(f"| {c} | {b} | {m['ce']:.3f} | {m['pskd']:.3f} | {m['pskd'] / m['ce']:.3f} | {m['official']:.3f} | "
              f"{1e3 * m['official_comm']:.1f} | {res['store_bytes'] / 2**20:.0f} MiB vs "
              f"{res['official_bytes'] / 2**20:.0f} MiB |")
    print("\nEpoch-boundary exchange (the routed store's only communication), 2 gloo processes:\n")
    print("| shape | store | exchange s/epoch | store MiB/rank |")
    print("|---|---|---|---|")
    for n, c, kind in [(50_000, 100, "fp16"), (imagenet_rows, 1000, "topk")]:
        sec, nbytes = _spawn(_exchange_worker, n, c, kind)
        print(f"| {n:,} x {c} | {kind} | {sec:.2f} | {nbytes / 2**20:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--imagenet-rows", type=int, default=1_281_167)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    print(f"# pskd core performance ({time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs)")
    if "a" in parts:
        part_a(args.steps)
    if "b" in parts:
        part_b(args.imagenet_rows, 200)
    if "c" in parts:
        part_c(args.steps, args.imagenet_rows)


if __name__ == "__main__":
    main()
