"""``task: det``: object detection through ``pskd-det`` (detection/cli.py, MMDetection).

One command per job; ``train --out`` writes the last validation's metrics (``mAP``, ``mAP_50``, ...)::

    pskd-det train CONFIG --work-dir JOB_DIR --seed K --out JOB_DIR/metrics.json --resume
        [--launcher pytorch] [--cfg-options train_cfg.max_epochs=E KEY=VALUE ...]

The method picks the config: ``baseline`` runs the entry's (or model's) config, ``pskd`` its ``*_pskd.py`` twin
(``configs/detection/X.py`` -> ``X_pskd.py``), unless the method variant names its own ``config``. Data paths:
``data: {root: DIR}`` sets the train/val/test datasets' ``data_root``; any other key is taken as a dotted config key
(for nested datasets, e.g. VOC07+12's ``train_dataloader.dataset.dataset.datasets.0.data_root``).
"""
from __future__ import annotations

from pathlib import Path

from .base import Command, JobContext, Task, console_script, format_value

ROOT_KEYS = ("train_dataloader.dataset.data_root", "val_dataloader.dataset.data_root",
             "test_dataloader.dataset.data_root")


def pskd_config(config: str) -> str:
    """``.../mini_faster-rcnn_deepforest.py`` -> ``.../mini_faster-rcnn_deepforest_pskd.py``."""
    path = Path(config)
    return str(path.with_name(f"{path.stem}_pskd{path.suffix}"))


class DetectionTask(Task):
    name = "det"
    methods = ("baseline", "pskd")
    baseline = "baseline"
    metrics_order = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")

    def clean_metrics(self, metrics: dict) -> dict:
        """Drop mmdet's raw ``coco/*`` / ``pascal_voc/*`` duplicates of ``mAP``... and COCO's -1 "no object of this
        size in the test set" sentinel, which would drag a mean over seeds down."""
        return {k: v for k, v in metrics.items() if "/" not in k and v != -1}

    def validate(self, entry: dict) -> list[str]:
        has_model_configs = all(isinstance(m, dict) and m.get("config") for m in entry.get("models") or [{}])
        return [] if entry.get("config") or has_model_configs else ["task 'det' needs a 'config' (or one per model)"]

    def commands(self, ctx: JobContext) -> list[Command]:
        config = ctx.method_config or (pskd_config(ctx.config) if ctx.method == "pskd" else ctx.config)
        options: dict[str, object] = {}
        if ctx.epochs is not None:
            options["train_cfg.max_epochs"] = ctx.epochs
        for key, path in ctx.data.items():
            for target in (ROOT_KEYS if key == "root" else (key,)):
                # mmdet joins data_root and ann_file by string concatenation in places: keep the trailing slash.
                options[target] = path.rstrip("/") + "/"
        options.update(ctx.overrides)
        argv = [console_script("pskd-det"), "train", config, "--work-dir", str(ctx.out_dir), "--seed", str(ctx.seed),
                "--out", str(ctx.out_dir / "metrics.json")]
        if ctx.nproc > 1:
            argv += ["--launcher", "pytorch"]
        argv.append("--resume")  # no value: continue from the work dir's latest checkpoint, if any
        if options:
            argv += ["--cfg-options", *[f"{k}={format_value(v)}" for k, v in options.items()]]
        return [Command(argv, distributed=True, name="train")]
