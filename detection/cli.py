"""``pskd-det``: train and test mmdet detectors (stock or PS-KD) on mmengine's Runner.

Usage::

    pskd-det train CONFIG [--work-dir D] [--resume [CKPT]] [--seed N] [--amp] [--out METRICS.json]
                          [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
    pskd-det test CONFIG CHECKPOINT [--work-dir D] [--out METRICS.json] [--cfg-options ...] [--launcher ...]

Several GPUs: ``torchrun --nproc-per-node 8 -m pskd.detection.cli train CONFIG --launcher pytorch``.
``test`` (and ``train --out``) writes ``{"task": "detection", "config": ..., "checkpoint": ..., "metrics":
{"mAP": ..., "mAP_50": ..., ...}}`` atomically (tmp file + rename); ``train --out`` adds ``"history"``: per epoch
the mean training loss, PS-KD's alpha and the validation mAP (from mmengine's ``vis_data/scalars.json``). Bad input
exits with status 2 and a one-line ``pskd-det: error: ...`` before anything is written.
"""
from __future__ import annotations

import os

# torch >= 2.6 loads checkpoints with weights_only=True by default, and mmengine checkpoints hold pickled Python
# objects (HistoryBuffer in the message hub, numpy scalars in metadata), so resume and load_from fail with
# "Unsupported global". Set before torch loads anything; a user who exports the variable keeps their value.
# Only load checkpoints you trust.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402
from typing import Any, Sequence  # noqa: E402

__all__ = ["main", "summarize_metrics", "epoch_history", "write_metrics_json"]


def _parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(prog="pskd-det", description="Train / test mmdet detectors with PS-KD.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="mmengine config file")
        p.add_argument("--work-dir", help="output folder (default: ./work_dirs/<config name>)")
        p.add_argument("--out", help="metrics JSON to write (test default: <work-dir>/metrics.json)")
        p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                       help="override config entries, e.g. train_cfg.max_epochs=2 custom_hooks.0.alpha_T=0.5")
        p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                       help="job launcher (pytorch: started by torchrun)")
        # torch.distributed.launch passes --local-rank / --local_rank; torchrun sets LOCAL_RANK itself.
        p.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)

    train = sub.add_parser("train", help="train a detector")
    common(train)
    train.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                       help="resume from CKPT, or from the latest checkpoint in the work dir when no path is given")
    train.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    train.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    train.add_argument("--amp", action="store_true", help="automatic mixed precision")

    test = sub.add_parser("test", help="evaluate a checkpoint (mAP)")
    common(test)
    test.add_argument("checkpoint", help="checkpoint file")
    return parser


# ---------------------------------------------------------------------------------------------------- metrics
def summarize_metrics(metrics: dict) -> dict:
    """mmdet's metric dict with ``mAP`` / ``mAP_50`` first (from CocoMetric or VOCMetric), raw keys kept.

    CocoMetric returns an empty dict when the model detected nothing above its score threshold (an untrained model);
    the precision of no detection is 0, so that reads as ``mAP = mAP_50 = 0``.
    """
    if not metrics:
        return {"mAP": 0.0, "mAP_50": 0.0, "note": "no detections above the score threshold"}
    out: dict[str, Any] = {}
    for key in ("coco/bbox_mAP", "pascal_voc/mAP"):
        if key in metrics:
            out["mAP"] = metrics[key]
            break
    for key in ("coco/bbox_mAP_50", "pascal_voc/AP50", "pascal_voc/mAP"):
        if key in metrics:
            out["mAP_50"] = metrics[key]
            break
    for key in ("coco/bbox_mAP_75", "coco/bbox_mAP_s", "coco/bbox_mAP_m", "coco/bbox_mAP_l"):
        if key in metrics:
            out["mAP" + key[len("coco/bbox_mAP"):]] = metrics[key]
    for key, value in metrics.items():
        out.setdefault(key, value)
    return {k: _plain(v) for k, v in out.items()}


def _plain(value: Any) -> Any:
    """JSON-safe scalars (numpy / torch numbers become float; NaN becomes None)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def epoch_history(scalars_path: str | None) -> list[dict]:
    """Per-epoch curves from mmengine's ``vis_data/scalars.json``: mean training loss, PS-KD's alpha, val metrics.

    Training rows carry ``epoch``; validation rows carry ``coco/...`` or ``pascal_voc/...`` keys and ``step`` = the
    epoch they follow (epoch-based loops). Returns ``[]`` when there is no such file (iteration-based loops log no
    epochs; their curves stay in TensorBoard / the log).
    """
    if not scalars_path or not osp.isfile(scalars_path):
        return []
    epochs: dict[int, dict] = {}
    with open(scalars_path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the others still count
            if "epoch" in row and "loss" in row:
                e = epochs.setdefault(int(row["epoch"]) - 1, {"losses": []})  # 0-based, as pskd-cls
                e["losses"].append(float(row["loss"]))
                if "pskd_alpha" in row:
                    e["alpha"] = float(row["pskd_alpha"])
            elif "step" in row:
                val = {k: v for k, v in row.items() if "/" in k and isinstance(v, (int, float))}
                if val:
                    epochs.setdefault(int(row["step"]) - 1, {"losses": []})["val"] = summarize_metrics(val)
    if not any(e["losses"] for e in epochs.values()):
        return []  # an iteration-based loop: its validation "steps" are iterations, not epochs
    history = []
    for epoch in sorted(epochs):
        e = epochs[epoch]
        h: dict[str, Any] = {"epoch": epoch}
        if e["losses"]:
            h["train_loss"] = sum(e["losses"]) / len(e["losses"])
        if "alpha" in e:
            h["alpha"] = e["alpha"]
        for k in ("mAP", "mAP_50"):
            if k in e.get("val", {}):
                h[f"val_{k}"] = e["val"][k]
        history.append(h)
    return history


def write_metrics_json(path: str, config: str, checkpoint: str | None, metrics: dict,
                       history: list[dict] | None = None) -> dict:
    """Write the harness-readable metrics file atomically (a reader never sees a half-written file)."""
    from pskd.core.io import atomic_write_json

    record = {"task": "detection", "config": osp.abspath(config),
              "checkpoint": None if checkpoint is None else osp.abspath(checkpoint),
              "metrics": summarize_metrics(metrics)}
    if history:
        record["history"] = history
    atomic_write_json(path, record)
    return record


# ---------------------------------------------------------------------------------------------------- config
def _load_config(args: argparse.Namespace):
    from mmengine.config import Config

    from .errors import PSKDError

    if not osp.isfile(args.config):
        raise PSKDError(f"config file {args.config} not found")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.launcher != "none":
        import torch
        if args.launcher == "pytorch" and not torch.cuda.is_available():
            # CPU-only processes (CI, a laptop): mmengine's pytorch launcher calls torch.cuda.set_device and mmdet's
            # runtime asks for NCCL, so start the gloo process group here (the Runner keeps an existing one), and
            # drop mmengine's device_ids=[LOCAL_RANK], which DDP rejects for CPU modules.
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group(backend="gloo")
            if cfg.get("model_wrapper_cfg") is None:
                cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                             broadcast_buffers=False,
                                             find_unused_parameters=cfg.get("find_unused_parameters", False))
    return cfg


def _check_resume_checkpoint(cfg, path: str) -> None:
    """A PS-KD resume needs the teacher state: fail before the Runner starts writing into the work dir."""
    import torch

    from .checks import check_checkpoint_file, pskd_hook_cfgs
    from .errors import PSKDError
    from .hook import CKPT_KEY

    check_checkpoint_file(path, "resume checkpoint")
    hooks = pskd_hook_cfgs(cfg)
    if not hooks or all(h.get("allow_missing_teacher", False) for h in hooks):
        return
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which
        raise PSKDError(f"resume checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise PSKDError(
            f"resume checkpoint {path} has no PS-KD teacher state ('{CKPT_KEY}' entry): it was not saved by a run "
            "with PSKDHook; set custom_hooks PSKDHook allow_missing_teacher=True to rebuild the teacher from its "
            "weights")


def _last_val_metrics_hook():
    """A hook keeping the metrics of the last validation (``train --out`` reports them without evaluating again)."""
    from mmengine.hooks import Hook

    class LastValMetrics(Hook):
        priority = "LOWEST"
        metrics: dict | None = None

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = dict(metrics or {})

    return LastValMetrics()


# ---------------------------------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from mmengine.runner import Runner, find_latest_checkpoint

    from .checks import check_config

    cfg = _load_config(args)
    check_config(cfg, "train")
    if args.seed is not None:
        cfg.randomness = dict(seed=args.seed, deterministic=args.deterministic)
    elif args.deterministic:
        cfg.setdefault("randomness", {})["deterministic"] = True
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
        latest = find_latest_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
        if latest:
            _check_resume_checkpoint(cfg, latest)
    elif args.resume is not None:
        _check_resume_checkpoint(cfg, args.resume)
        cfg.resume, cfg.load_from = True, args.resume

    runner = Runner.from_cfg(cfg)
    recorder = _last_val_metrics_hook()
    runner.register_hook(recorder)
    runner.train()
    if args.out:
        metrics = recorder.metrics
        if metrics is None:
            metrics = runner.test()
        from mmengine.dist import is_main_process
        if is_main_process():
            history = epoch_history(osp.join(runner.log_dir, "vis_data", "scalars.json"))
            write_metrics_json(args.out, args.config, find_latest_checkpoint(runner.work_dir), metrics, history)
    return 0


def _test(args: argparse.Namespace) -> int:
    from mmengine.dist import is_main_process
    from mmengine.runner import Runner

    from .checks import check_checkpoint_file, check_config

    cfg = _load_config(args)
    check_checkpoint_file(args.checkpoint)
    check_config(cfg, "test")
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if is_main_process():
        out = args.out or osp.join(runner.work_dir, "metrics.json")
        record = write_metrics_json(out, args.config, args.checkpoint, metrics)
        shown = {k: record["metrics"][k] for k in ("mAP", "mAP_50") if k in record["metrics"]}
        print(f"pskd-det: {json.dumps(shown)} -> {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pskd-det`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    from .errors import PSKDError

    try:
        import pskd.detection  # noqa: F401  registers the plugin even for configs without custom_imports
        return _train(args) if args.command == "train" else _test(args)
    except (PSKDError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"pskd-det: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
