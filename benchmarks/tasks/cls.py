"""``task: cls``: image classification through ``pskd-cls`` (vision_cls/cli.py).

One command per job::

    pskd-cls train [--config CFG] --resume auto method.name=M [cutmix.prob=P] [model.name=X] train.seed=K
        [train.epochs=E] [data.root=PATH] <overrides: section.key=value> train.out_dir=JOB_DIR

``pskd-cls`` writes ``JOB_DIR/metrics.json`` (test split, best-on-validation model, with ``reliability`` and
``history``). ``--resume auto`` continues an interrupted job from its ``last.pt`` (the harness wipes a job folder
whose spec changed, so a checkpoint is only ever resumed by the same job).
"""
from __future__ import annotations

from typing import Any

from .base import Command, JobContext, Task, console_script, format_value

BASE_METHODS = ("ce", "ls", "cs_kd", "tf_kd_self", "tf_kd_reg", "pskd")
# CutMix probability for "<method>+cutmix" unless the suite sets cutmix.prob; 0.5 is the CutMix paper's CIFAR value.
CUTMIX_PROB = 0.5


class ClassificationTask(Task):
    name = "cls"
    methods = BASE_METHODS + tuple(f"{m}+cutmix" for m in BASE_METHODS)
    baseline = "ce"
    metrics_order = ("top1_err", "top5_err", "nll", "ece", "aurc", "eaurc")

    def commands(self, ctx: JobContext) -> list[Command]:
        method, _, extra = ctx.method.partition("+")
        settings: dict[str, Any] = {"method.name": method}
        if extra == "cutmix":
            settings["cutmix.prob"] = CUTMIX_PROB
        if ctx.model and ctx.model != "default":
            settings["model.name"] = ctx.model
        settings["train.seed"] = ctx.seed
        if ctx.epochs is not None:
            settings["train.epochs"] = ctx.epochs
        for key, path in ctx.data.items():
            settings[f"data.{key}"] = path  # data: {root: ...} -> data.root
        settings.update(ctx.overrides)
        settings["train.out_dir"] = str(ctx.out_dir)
        argv = [console_script("pskd-cls"), "train"]
        for config in (ctx.config, ctx.method_config):  # pskd-cls merges its --config files, later ones win
            if config:
                argv += ["--config", config]
        argv += ["--resume", "auto", *[f"{k}={format_value(v)}" for k, v in settings.items()]]
        return [Command(argv, distributed=True, name="train")]
