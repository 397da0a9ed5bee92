#!/usr/bin/env python3
"""Time per update of the stock label-smoothed criterion, PS-KD snapshot mode and PS-KD top-k mode, side by side.

Same model architecture (the recipe's), same batches of the real training data, same optimizer; the three are
interleaved round by round so machine load affects them alike. PS-KD modes are timed in epoch 2, when the KD term
is on (snapshot: one extra no-grad forward; top-k: read last epoch's rows, write this epoch's). Also prints the
top-k store's size at IWSLT'15 scale::

    python benchmarks/perf_translation.py --data runs/bench_mt/data --updates 20 --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build(data: str, recipe: dict, criterion: list[str], save_dir: str):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import pskd.translation.criterion  # noqa: F401  (registers ps_kd_label_smoothed_cross_entropy)
    from pskd.translation.recipes import to_cli_args

    train = dict(recipe["train"])
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [data, "--task", "translation", *to_cli_args(train), *criterion,
                                                "--save-dir", save_dir, "--cpu"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return cfg, task


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="runs/bench_mt/data", help="pskd-mt prepare output (made if missing)")
    p.add_argument("--recipe", default="mini_ding_de_en")
    p.add_argument("--updates", type=int, default=20, help="updates timed per mode and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--iwslt-pairs", type=int, default=160_000, help="IWSLT'15 training pairs (for the size estimate)")
    p.add_argument("--iwslt-tokens", type=float, default=25.0, help="mean target tokens per IWSLT'15 sentence")
    p.add_argument("--iwslt-vocab", type=int, default=10_000)
    args = p.parse_args(argv)

    from pskd.translation.recipes import load_recipe
    from pskd.translation.topk_store import estimate_store_bytes

    recipe = load_recipe(args.recipe)
    data = Path(args.data)
    if not (data / "pskd_data.json").is_file():
        from pskd.translation.cli import main as pskd_mt

        if pskd_mt(["prepare", "--recipe", args.recipe, "--dest", str(data)]) != 0:
            return 2
    tmp = tempfile.mkdtemp(prefix="perf-mt-")
    pskd = ["--criterion", "ps_kd_label_smoothed_cross_entropy", "--alpha-T", "0.5", "--max-epoch", "2",
            "--pskd-topk", str(args.topk)]
    modes = {"stock LS": ["--criterion", "label_smoothed_cross_entropy"],
             "PS-KD snapshot": pskd + ["--pskd-teacher", "snapshot"],
             "PS-KD top-k": pskd + ["--pskd-teacher", "topk"]}
    runs = {}
    torch.manual_seed(0)
    base = None
    for name, crit_args in modes.items():
        cfg, task = build(str(data), recipe, crit_args, tmp)
        task.load_dataset("train")
        if base is None:
            base = task.build_model(cfg.model)
            dataset = task.dataset("train")
            itr = task.get_batch_iterator(dataset, max_tokens=cfg.dataset.max_tokens, seed=1,
                                          max_positions=(1024, 1024), ignore_invalid_inputs=True)
            batches = list(itr.next_epoch_itr(shuffle=True))[: args.updates]
        task.datasets["train"] = dataset
        model = copy.deepcopy(base)
        criterion = task.build_criterion(cfg.criterion)
        optim = torch.optim.Adam(model.parameters(), lr=1e-4)
        if hasattr(criterion, "begin_epoch"):
            model.train()
            criterion.begin_epoch(1, model)
            with torch.no_grad():  # epoch 1: top-k mode writes the rows epoch 2 reads
                for b in batches:
                    criterion(model, b)
            criterion.begin_epoch(2, model)
        runs[name] = (model, criterion, optim)

    def step(model, criterion, optim, sample):
        optim.zero_grad()
        loss, _, _ = criterion(model, sample)
        loss.backward()
        optim.step()

    times = {name: [] for name in runs}  # wall seconds per update, one entry per round
    cpu = {name: [] for name in runs}  # process CPU seconds per update: what other processes' load cannot inflate
    for name, (model, criterion, optim) in runs.items():  # warm-up
        model.train()
        for b in batches[:3]:
            step(model, criterion, optim, b)
    for _ in range(args.rounds):
        for name, (model, criterion, optim) in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for b in batches:
                step(model, criterion, optim, b)
            times[name].append((time.perf_counter() - start) / len(batches))
            cpu[name].append((time.process_time() - start_cpu) / len(batches))

    tokens = statistics.mean(int(b["ntokens"]) for b in batches)
    ref, ref_cpu = statistics.median(times["stock LS"]), statistics.median(cpu["stock LS"])
    print(f"Time per update, {args.recipe} architecture, {len(batches)} real batches of ~{tokens:.0f} target "
          f"tokens, vocabulary {len(runs['stock LS'][1].task.target_dictionary)}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds (medians; CPU time is what the process itself used, so other processes' "
          "load does not inflate it: with one thread it is the fairest comparison on a shared machine):\n")
    print("| criterion | CPU ms / update | vs stock | wall ms / update | vs stock |\n|---|---|---|---|---|")
    for name in times:
        c, w = statistics.median(cpu[name]), statistics.median(times[name])
        print(f"| {name} | {c * 1000:.1f} | {c / ref_cpu:.3f}x | {w * 1000:.1f} | {w / ref:.3f}x |")

    n_tok = int(args.iwslt_pairs * args.iwslt_tokens)
    print(f"\nTop-k store at IWSLT'15 scale: {args.iwslt_pairs:,} pairs x {args.iwslt_tokens:g} target tokens = "
          f"{n_tok / 1e6:.1f}M rows, vocabulary {args.iwslt_vocab:,}:\n")
    print("| k | per epoch (fp16 + int16 idx, as stored) | per epoch with int32 idx | on disk (2 epochs) |"
          "\n|---|---|---|---|")
    for k in (1, 4, 8, 16):
        stored = estimate_store_bytes(n_tok, k, args.iwslt_vocab)
        wide = n_tok * (k * 6 + 1)
        print(f"| {k} | {stored / 2**20:.0f} MiB | {wide / 2**20:.0f} MiB | {2 * stored / 2**20:.0f} MiB |")
    dense = n_tok * args.iwslt_vocab * 4
    print(f"\nA dense fp32 per-token table would need {dense / 2**30:.0f} GiB per epoch.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
