"""The pskd-cls trainer: one loop for every method, single process or ``torchrun`` DDP.

Per epoch: ``policy.loss`` on each (optionally CutMix-ed) batch, the optimizer step, ``policy.observe`` with the same
forward pass's logits (PS-KD writes its store), then validation on the held-out split, ``policy.end_epoch`` (the
store rolls over; under DDP its rows are routed to the ranks that read them next), the learning-rate step and
atomic checkpoints (``last.pt`` every epoch, ``best.pt`` when the validation error improves). After the last epoch
the best checkpoint is evaluated on the test split and ``metrics.json`` + ``reliability.png`` are written.
"""
from __future__ import annotations

import bisect
import csv
import io
import math
import os
import random
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pskd.core import AlphaSchedule, DenseStore, TopKStore, build_policy, build_store, cutmix
from pskd.core.distributed import RoutedStore, sampler_shards

from .checkpoint import (FORMAT, atomic_save, atomic_write_text, check_compatible, load_checkpoint, rng_state,
                         set_rng_state)
from .config import RESUME_SAFE_KEYS, Config, _walk, config_to_dict, dump_config
from .data import DataBundle, build_data
from .errors import CheckpointError, ConfigError, TrainingError
from .evaluate import evaluate, results_dict, write_results
from .loader import Batch, EvalLoader, TrainLoader, epoch_seed
from .models import build_model

__all__ = ["Trainer", "train", "lr_factor", "setup_runtime"]


def lr_factor(cfg: Config, epoch: int) -> float:
    """Learning-rate multiplier for a 0-based epoch: warm-up, then multistep / cosine / constant."""
    o, total = cfg.optim, cfg.train.epochs
    if epoch < o.warmup_epochs:
        return (epoch + 1) / (o.warmup_epochs + 1)
    if o.schedule == "multistep":
        return o.gamma ** bisect.bisect_right(o.milestones, epoch)
    if o.schedule == "cosine":
        t = (epoch - o.warmup_epochs) / max(total - o.warmup_epochs, 1)
        floor = o.min_lr / o.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def setup_runtime(cfg: Config) -> tuple[int, int, torch.device]:
    """Threads, determinism, torch.distributed (under torchrun) and the device; returns (rank, world, device)."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if t.device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(t.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"train.device={t.device} but CUDA is not available on this machine")
        if dev.type == "cuda" and world > 1:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN (a debugging aid against reads of uninitialised
        # memory): a pass over each allocation that costs throughput and does not change any result.
        torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    """Builds data, model, policy, optimizer and loaders from a config; runs epochs; saves and restores state.

    Args:
        cfg: the validated run configuration.
        out_dir: run folder (for an on-disk PS-KD store); None for in-memory use (tests, smoke runs).
        data: pre-built data (tests); default: built from ``cfg.data``.
    """

    def __init__(self, cfg: Config, out_dir: str | None = None, data: DataBundle | None = None):
        self.cfg, self.out_dir = cfg, Path(out_dir) if out_dir else None
        self.rank, self.world, self.device = setup_runtime(cfg)
        t = cfg.train
        if t.batch_size % self.world:
            raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {self.world} DDP ranks")
        self.data = data if data is not None else build_data(cfg.data)
        d = self.data
        _seed_all(t.seed)  # identical initial weights on every rank
        self.model = build_model(cfg.model.name, d.num_classes, d.in_channels).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.policy = self._build_policy()
        self.teacher = self._load_teacher() if self.policy.needs_teacher else None
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov
                                         and o.momentum > 0, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, partial(lr_factor, cfg))
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.amp and self.device.type == "cuda")
        self.train_loader = TrainLoader(d, t.batch_size // self.world, t.seed, self.rank, self.world, self.device,
                                        pairs=self.policy.needs_partner, num_workers=cfg.data.num_workers,
                                        channels_last=t.channels_last)
        self.val_loader = self._eval_loader(d.val) if d.val is not None else None
        self.epoch = 0                      # completed epochs
        self.history: list[dict] = []
        self.best_val: float | None = None
        self.best_epoch: int | None = None

    # ----------------------------------------------------------------------------------------------- building
    def _eval_loader(self, split) -> EvalLoader:
        return EvalLoader(self.data, split, self.cfg.train.eval_batch_size, self.device, self.rank, self.world,
                          self.cfg.data.num_workers, self.cfg.train.channels_last)

    def _build_policy(self):
        m, d, n = self.cfg.method, self.data, len(self.data.train)
        kw: dict = {}
        if m.name == "ls":
            kw = {"eps": m.ls_eps}
        elif m.name == "cs_kd":
            kw = {"temperature": 4.0 if m.temperature is None else m.temperature, "lam": m.lam}
        elif m.name in ("tf_kd_self", "tf_kd_reg"):
            kw = {k: v for k, v in (("alpha", m.kd_alpha), ("temperature", m.temperature),
                                    ("multiplier", m.multiplier)) if v is not None}
            if m.name == "tf_kd_reg":
                kw["correct_prob"] = m.correct_prob
        elif m.name == "pskd":
            kw = {"store": self._build_store(n, d.num_classes),
                  "schedule": AlphaSchedule(m.alpha_T, num_epochs=self.cfg.train.epochs)}
        return build_policy(m.name, d.num_classes, **kw)

    def _build_store(self, n: int, c: int):
        s = self.cfg.method.store
        if self.world == 1:
            path = s.path
            if s.kind == "memmap" and path is None:
                if self.out_dir is None:
                    raise ConfigError("method.store.kind=memmap needs method.store.path (or a run folder)")
                path = str(self.out_dir / "store")
            return build_store(s.kind, n, c, dtype=s.dtype, k=s.k, path=path)
        if (s.kind == "memmap" or s.path is not None) and self.rank == 0:
            # Same values as a memmap store of that dtype; what memmap is for (no full table per rank) holds too.
            print(f"pskd-cls: note: under DDP the PS-KD store is sharded across the {self.world} ranks' RAM "
                  f"({n} x {c} / {self.world} rows each); method.store.kind={s.kind} / store.path are not used",
                  file=sys.stderr)

        def make_local(rows: int):
            return TopKStore(rows, c, k=s.k) if s.kind == "topk" else DenseStore(rows, c, dtype=s.dtype)

        # The shard function must reproduce TrainLoader's DistributedSampler exactly (same seed, shuffle, drop_last).
        shards = partial(sampler_shards, n, self.world, seed=self.cfg.train.seed, shuffle=True, drop_last=False)
        return RoutedStore(make_local, n, c, shards=shards, rank=self.rank, world_size=self.world)

    def _load_teacher(self) -> nn.Module:
        path = self.cfg.method.teacher
        ckpt = load_checkpoint(path, "teacher checkpoint (method.teacher)")
        check_compatible(ckpt["meta"], self.meta(), path)
        teacher = build_model(self.cfg.model.name, self.data.num_classes, self.data.in_channels)
        teacher.load_state_dict(ckpt["model"])
        teacher.to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def meta(self) -> dict:
        return {"model": self.cfg.model.name, "num_classes": self.data.num_classes,
                "in_channels": self.data.in_channels, "dataset": self.cfg.data.name, "train_size": len(self.data.train),
                "world_size": self.world}

    # ------------------------------------------------------------------------------------------------ training
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.train.amp)

    def train_step(self, batch: Batch, epoch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (loss, logits) detached."""
        cm = self.cfg.cutmix
        images, mix = batch.images, None
        if cm.prob > 0 and float(torch.rand(1, generator=g)) < cm.prob:
            images, mix = cutmix(images, cm.beta, g)
        partner_logits = teacher_logits = None
        with self._autocast():
            logits = self.net(images).float()
            if batch.partner_images is not None:
                with torch.no_grad():  # CS-KD: no gradient through the partner's prediction
                    partner_logits = self.net(batch.partner_images).float()
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(images).float()
        loss = self.policy.loss(logits, batch.labels, batch.ids, epoch, mix=mix, partner_logits=partner_logits,
                                teacher_logits=teacher_logits)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.policy.observe(batch.ids, logits.detach(), mix)
        return loss.detach(), logits.detach()

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        ok = torch.isfinite(loss).float().reshape(1)
        if self.world > 1:  # every rank must stop together, or the others would hang in the next all-reduce
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            raise TrainingError(f"the training loss is {loss.item()} at epoch "
                                f"{epoch + 1}, step {step + 1} (optim.lr={self.cfg.optim.lr}); no checkpoint of this "
                                "epoch was written, earlier ones are kept")

    def train_epoch(self, epoch: int, progress=None) -> dict:
        """Train one epoch (0-based ``epoch``); returns loss, error and speed averaged over all ranks."""
        self.net.train()
        # Everything random in the epoch derives from (seed, epoch, rank): resuming here replays it exactly.
        _seed_all(epoch_seed(self.cfg.train.seed, epoch, 0, self.rank))
        g = torch.Generator().manual_seed(epoch_seed(self.cfg.train.seed, epoch, 3, self.rank))
        self.train_loader.set_epoch(epoch)
        check_every = 1 if self.device.type == "cpu" or self.world > 1 else 50
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, start = 0, time.perf_counter()
        for step, batch in enumerate(self.train_loader):
            loss, logits = self.train_step(batch, epoch, g)
            if step % check_every == 0:
                self._check_finite(loss, epoch, step)
            n = len(batch.ids)
            loss_sum += loss.double() * n
            correct += (logits.argmax(1) == batch.labels).sum()
            seen += n
            if progress is not None:
                progress.update(1)
                if step % 20 == 0:
                    progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        self._check_finite(loss_sum, epoch, step if seen else 0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        totals = torch.tensor([loss_sum.item(), correct.item(), float(seen)], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(totals)
        return {"train_loss": totals[0].item() / max(totals[2].item(), 1),
                "train_top1_err": 100.0 * (1 - totals[1].item() / max(totals[2].item(), 1)),
                "epoch_time_s": elapsed, "train_images_per_s": totals[2].item() / max(elapsed, 1e-9)}

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BN statistics (each rank updated its own in its last forward passes)."""
        if self.world > 1:
            for b in self.model.buffers():
                dist.broadcast(b, 0)

    def validate(self) -> dict | None:
        if self.val_loader is None:
            return None
        # The bare module, not the DDP wrapper: ranks may run different numbers of eval batches, and DDP's forward
        # is a collective (buffer broadcast).
        self.sync_buffers()
        metrics, _ = evaluate(self.model, self.val_loader, self.cfg.train.amp)
        return metrics

    def test(self, model: nn.Module | None = None) -> tuple[dict, dict]:
        if model is None:
            self.sync_buffers()
        return evaluate(model or self.model, self._eval_loader(self.data.test), self.cfg.train.amp)

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything but the policy's state (saved per rank beside it): see :mod:`.checkpoint`."""
        return {"format": FORMAT, "meta": self.meta(), "config": config_to_dict(self.cfg), "epoch": self.epoch,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
                "history": self.history, "best_val": self.best_val, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.best_val, self.best_epoch = state["best_val"], state["best_epoch"]


# ------------------------------------------------------------------------------------------------ the run
def _policy_file(out: Path, epoch: int, rank: int) -> Path:
    return out / f"policy-e{epoch:04d}.rank{rank}.pt"


def _check_resume_config(cfg: Config, saved: dict, path: Path) -> None:
    current = config_to_dict(cfg)
    for key, _, _ in _walk(Config):
        if key in RESUME_SAFE_KEYS:
            continue
        a, b = current, saved
        for part in key.split("."):
            a, b = a[part], (b or {}).get(part)
        if a != b:
            raise ConfigError(f"{key} is {a!r} here but {b!r} in {path}: a resumed run keeps its configuration "
                              f"(only {', '.join(sorted(RESUME_SAFE_KEYS))} may change)")


def _resolve_resume(cfg: Config, resume: str | None) -> Path | None:
    out = Path(cfg.train.out_dir)
    if resume is None:
        taken = [n for n in ("last.pt", "best.pt", "metrics.json") if (out / n).exists()]
        if taken:
            raise ConfigError(f"train.out_dir {out} already holds a run ({', '.join(taken)}): continue it with "
                              "--resume auto, or choose another train.out_dir")
        return None
    if resume == "auto":
        return out / "last.pt" if (out / "last.pt").exists() else None
    return Path(resume)


class _Logs:
    """Rank-0 outputs: console lines, CSV (rewritten from the history each epoch), TensorBoard."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.out, self.enabled, self.tb = out, enabled, None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                print("pskd-cls: tensorboard is not installed; TensorBoard logs are off", file=sys.stderr)

    def epoch(self, row: dict, total: int) -> None:
        if not self.enabled:
            return
        shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and v is not None)
        print(f"epoch {row['epoch'] + 1}/{total} {shown}", flush=True)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    self.tb.add_scalar(k, v, row["epoch"] + 1)
            self.tb.flush()

    def csv(self, history: list[dict]) -> None:
        if not self.enabled or not history:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(buf.getvalue(), self.out / "log.csv")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _progress(cfg: Config, total: int, epoch: int, enabled: bool):
    mode = cfg.train.progress
    if not enabled or mode == "off":
        return None
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    # Without a terminal tqdm still works (it never calls stty); printing rarely keeps job logs readable.
    return tqdm(total=total, desc=f"epoch {epoch + 1}", file=sys.stderr, leave=False, dynamic_ncols=tty,
                mininterval=0.5 if (tty or mode == "on") else 60.0, disable=False)


def train(cfg: Config, resume: str | None = None, command: str = "") -> dict | None:
    """Run (or continue) training as configured; returns the final results dict, or None if stopped early.

    Raises:
        ConfigError / DataError / CheckpointError: bad input, before anything in ``train.out_dir`` is overwritten.
        TrainingError: a non-finite loss (earlier checkpoints are kept).
    """
    out = Path(cfg.train.out_dir)
    ckpt_path = _resolve_resume(cfg, resume)
    state = None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        _check_resume_config(cfg, state["config"], ckpt_path)
    trainer = Trainer(cfg, out_dir=str(out))
    rank0 = trainer.rank == 0
    if state is not None:
        keys = ["model", "num_classes", "in_channels", "dataset", "train_size"]
        if cfg.method.name == "pskd":
            keys.append("world_size")  # the store is sharded by the sampler of that many ranks
        check_compatible(state["meta"], trainer.meta(), ckpt_path, keys)
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit this run: {str(e).splitlines()[0]}") from None
        if state.get("policy_epoch") is not None:
            pfile = _policy_file(ckpt_path.parent, state["policy_epoch"], trainer.rank)
            pstate = load_checkpoint(pfile, "policy state")
            try:
                trainer.policy.load_state_dict(pstate["policy"])
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"policy state {pfile} does not fit this run: {e}") from None
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        text = dump_config(cfg)
        print(f"# pskd-cls resolved config (saved to {out / 'config.yaml'})\n{text}", flush=True)
        atomic_write_text(text, out / "config.yaml")
        if state is not None:
            print(f"resuming from {ckpt_path} after epoch {trainer.epoch}", flush=True)
    logs = _Logs(out, rank0, cfg.train.tensorboard)
    try:
        return _run(trainer, cfg, out, logs, command)
    finally:
        logs.close()


def _save(trainer: Trainer, out: Path, improved: bool) -> None:
    """Policy files (every rank), then last.pt / best.pt (rank 0), then drop the previous policy files."""
    e = trainer.epoch
    pstate = trainer.policy.state_dict()
    if pstate:
        atomic_save({"format": FORMAT, "policy": pstate, "epoch": e, "rank": trainer.rank},
                    _policy_file(out, e, trainer.rank))
    if trainer.world > 1:
        dist.barrier()
    if trainer.rank == 0:
        state = trainer.state_dict()
        state["policy_epoch"] = e if pstate else None
        atomic_save(state, out / "last.pt")
        if improved:
            atomic_save({"format": FORMAT, "meta": trainer.meta(), "config": state["config"], "epoch": e,
                         "model": state["model"], "history": trainer.history, "best_val": trainer.best_val},
                        out / "best.pt")
    if trainer.world > 1:
        dist.barrier()
    if pstate:
        for old in out.glob(f"policy-e*.rank{trainer.rank}.pt"):
            if old != _policy_file(out, e, trainer.rank):
                old.unlink(missing_ok=True)


def _run(trainer: Trainer, cfg: Config, out: Path, logs: _Logs, command: str) -> dict | None:
    rank0, total = trainer.rank == 0, cfg.train.epochs
    out.mkdir(parents=True, exist_ok=True)
    stop = min(total, cfg.train.stop_after_epochs or total)
    while trainer.epoch < stop:
        e = trainer.epoch
        progress = _progress(cfg, len(trainer.train_loader), e, rank0)
        try:
            stats = trainer.train_epoch(e, progress)
        finally:
            if progress is not None:
                progress.close()
        val = trainer.validate()
        row = {"epoch": e, "alpha": trainer.policy.alpha(e), "lr": trainer.optimizer.param_groups[0]["lr"], **stats,
               "val_top1_err": val["top1_err"] if val else None, "val_nll": val["nll"] if val else None,
               "val_ece": val["ece"] if val else None}
        trainer.policy.end_epoch()
        trainer.scheduler.step()
        trainer.epoch = e + 1
        trainer.history.append(row)
        improved = val is None or trainer.best_val is None or val["top1_err"] < trainer.best_val
        if improved:
            trainer.best_val, trainer.best_epoch = (val["top1_err"] if val else None), e
        _save(trainer, out, improved)
        logs.epoch(row, total)
        logs.csv(trainer.history)
    if trainer.epoch < total:
        if rank0:
            print(f"stopped after epoch {trainer.epoch} of {total} (train.stop_after_epochs); continue with "
                  f"--resume auto", flush=True)
        return None
    best = load_checkpoint(out / "best.pt", "best checkpoint")
    model = build_model(cfg.model.name, trainer.data.num_classes, trainer.data.in_channels).to(trainer.device)
    model.load_state_dict(best["model"])
    metrics, reliability = trainer.test(model)
    results = results_dict(cfg, metrics, reliability, trainer.history, command)
    if rank0:
        write_results(out, results)
        shown = " ".join(f"{k} {results['metrics'][k]:.4g}" for k in results["metrics"])
        print(f"test (best epoch {best['epoch']}): {shown}\nwrote {out / 'metrics.json'}", flush=True)
    return results
