"""``task: mt``: machine translation through ``pskd-mt`` (translation/cli.py, fairseq).

Once per suite entry (the corpus is encoded and binarised once, shared by every job)::

    pskd-mt prepare --recipe R --dest PREP/data --overwrite [--raw-dir DIR] [--vocab-size N] [--limit-train N]

Per job::

    pskd-mt train --recipe R --save-dir JOB_DIR --method ls|pskd --seed K [--teacher snapshot|topk]
        [--alpha-T A] [--topk K] [--max-epoch E] PREP/data [-- <other overrides as fairseq-train options>]
    pskd-mt eval --recipe R --checkpoint JOB_DIR/checkpoint_last.pt --out JOB_DIR/metrics.json [--beam N] PREP/data

PS-KD in ``pskd-mt`` always sits on top of label smoothing (the baseline ``ls``). The last checkpoint is scored
(``checkpoint: best`` picks fairseq's best-validation-loss one instead; validation losses of different criteria are
not comparable, so ``last`` is the default). fairseq resumes from ``checkpoint_last.pt`` in the save dir by itself.
"""
from __future__ import annotations

from typing import Any

from .base import Command, JobContext, Task, console_script, format_value

# Overrides that are pskd-mt train options; any other override goes to fairseq-train after "--".
TRAIN_FLAGS = {"teacher": "--teacher", "alpha_T": "--alpha-T", "topk": "--topk", "store_path": "--store-path"}
PREPARE_OPTIONS = {"vocab_size": "--vocab-size", "limit_train": "--limit-train", "src": "--src", "tgt": "--tgt",
                   "workers": "--workers"}


def _fairseq_args(overrides: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (False, None):
            args += [flag, format_value(value)]
    return args


class TranslationTask(Task):
    name = "mt"
    methods = ("ls", "pskd")
    baseline = "ls"
    extra_keys = frozenset({"recipe", "checkpoint", "beam", *PREPARE_OPTIONS})
    metrics_order = ("bleu", "chrf", "nll")  # NLL (nats per reference token): the calibration PS-KD claims

    def validate(self, entry: dict) -> list[str]:
        errors = [] if entry.get("recipe") else ["task 'mt' needs a 'recipe' (a configs/translation name or path)"]
        if entry.get("checkpoint", "last") not in ("last", "best"):
            errors.append(f"checkpoint must be 'last' or 'best', got {entry['checkpoint']!r}")
        unknown = set(entry.get("data") or {}) - {"raw_dir"}
        if unknown:
            errors.append(f"task 'mt' takes data: {{raw_dir: DIR}} only, got {sorted(unknown)}")
        return errors

    def prepare(self, ctx: JobContext) -> list[Command]:
        argv = [console_script("pskd-mt"), "prepare", "--recipe", ctx.options["recipe"], "--dest",
                str(ctx.out_dir / "data"), "--overwrite"]
        if "raw_dir" in ctx.data:
            argv += ["--raw-dir", ctx.data["raw_dir"]]
        for key, flag in PREPARE_OPTIONS.items():
            if key in ctx.options:
                argv += [flag, format_value(ctx.options[key])]
        return [Command(argv, name="prepare")]

    def commands(self, ctx: JobContext) -> list[Command]:
        exe, recipe = console_script("pskd-mt"), ctx.options["recipe"]
        data = str(ctx.prepare_dir / "data")
        # pskd-mt hands everything after "--" to fairseq-train unchanged: its own options come before.
        train = [exe, "train", "--recipe", recipe, "--save-dir", str(ctx.out_dir), "--method", ctx.method,
                 "--seed", str(ctx.seed)]
        if ctx.epochs is not None:
            train += ["--max-epoch", str(ctx.epochs)]
        passthrough = {}
        for key, value in ctx.overrides.items():
            if key in TRAIN_FLAGS:
                train += [TRAIN_FLAGS[key], format_value(value)]
            else:
                passthrough[key] = value
        train.append(data)
        if passthrough:
            train += ["--", *_fairseq_args(passthrough)]
        checkpoint = ctx.out_dir / f"checkpoint_{ctx.options.get('checkpoint', 'last')}.pt"
        evaluate = [exe, "eval", "--recipe", recipe, "--checkpoint", str(checkpoint), "--out",
                    str(ctx.out_dir / "metrics.json")]
        if "beam" in ctx.options:
            evaluate += ["--beam", format_value(ctx.options["beam"])]
        evaluate.append(data)
        return [Command(train, distributed=True, name="train"), Command(evaluate, name="eval")]
