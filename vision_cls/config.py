"""The configuration schema of ``pskd-cls``: dataclasses that are the one source of defaults, types, checks and help.

A run's configuration is built in three layers: the defaults below, then YAML files (``--config``; a file may name
``base:`` files it extends, paths relative to itself), then dotted ``key=value`` overrides from the command line
(``method.alpha_T=0.8 optim.lr=0.05``; values are parsed as YAML). Unknown keys and ill-typed values are rejected
with a one-line :class:`~pskd.vision_cls.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["Config", "DataConfig", "ModelConfig", "MethodConfig", "StoreConfig", "CutMixConfig", "OptimConfig",
           "TrainConfig", "load_config", "apply_overrides", "config_from_dict", "config_to_dict", "config_help",
           "dump_config", "validate_config", "RESUME_SAFE_KEYS"]

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet", "imagefolder", "random")
AUGMENTS = ("auto", "none", "crop", "crop_flip", "resized_crop", "imagenet")


def _f(default: Any, help: str, *, choices: tuple | None = None, resume_safe: bool = False, factory=None):
    """A dataclass field carrying its help text, allowed values, and whether a resumed run may change it."""
    meta = {"help": help, "choices": choices, "resume_safe": resume_safe}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    name: str = _f("fashion_mnist", "data set", choices=DATASETS)
    root: str = _f("data", "folder holding the data set (or its standard sub-folder: fashion-mnist/, mnist/, "
                           "cifar-10-batches-py/, cifar-100-python/, imagenet/); relative paths are tried from the "
                           "working directory, then from the repository", resume_safe=True)
    val_split: float = _f(0.1, "held-out validation part of the training set, for model selection: a fraction "
                               "(< 1) or a sample count (>= 1); 0 = none (then the last epoch is 'best')")
    split_seed: int = _f(0, "seed of the train/validation split and of train_subset (kept apart from "
                            "train.seed so that every seed of a benchmark sees the same split)")
    train_subset: int | None = _f(None, "use only this many (seeded random) samples of the training set, "
                                        "before the validation split; null = all")
    test_subset: int | None = _f(None, "evaluate on only the first N test samples; null = all")
    num_classes: int | None = _f(None, "number of classes; null = the data set's own (labels are checked "
                                       "against it)")
    augment: str = _f("auto", "training augmentation: auto = the data set's standard one (CIFAR: crop_flip pad "
                              "4; Fashion-MNIST: crop_flip pad 2; MNIST: crop pad 2; ImageNet: imagenet; folders: "
                              "resized_crop)", choices=AUGMENTS)
    crop_padding: int | None = _f(None, "padding of the random crop; null = the data set's standard")
    image_size: int | None = _f(None, "folder and random data sets: training/eval image size; null = 224 "
                                      "(folders) or 32 (random)")
    channels: int = _f(3, "random data set only: image channels")
    random_size: int = _f(64, "random data set only: samples per split")
    in_memory: bool = _f(False, "folder data sets: decode every image once into RAM (all must share one size) "
                                "and augment whole batches as tensors", resume_safe=True)
    num_workers: int = _f(0, "loader worker processes for folder data sets (in-RAM sets need none)",
                          resume_safe=True)


@dataclass
class ModelConfig:
    name: str = _f("small_cnn", "network (see `pskd-cls train --help` for the list)")


@dataclass
class StoreConfig:
    kind: str = _f("ram", "PS-KD prediction store: ram (N x C table in RAM), memmap (on disk, nothing N x C in "
                          "checkpoints), topk (k largest probabilities per sample)", choices=("ram", "memmap", "topk"))
    dtype: str = _f("fp32", "dense store precision", choices=("fp32", "fp16", "bf16"))
    k: int = _f(10, "top-k store: classes kept per sample")
    path: str | None = _f(None, "memmap / on-disk topk store folder; null = <out_dir>/store (memmap) or RAM (topk)")


@dataclass
class MethodConfig:
    name: str = _f("ce", "training target: ce, ls, cs_kd, tf_kd_self, tf_kd_reg, pskd")
    alpha_T: float = _f(0.8, "pskd: final weight of the model's own past predictions, in [0, 1]")
    ls_eps: float = _f(0.1, "ls: label-smoothing epsilon")
    temperature: float | None = _f(None, "cs_kd / tf_kd: temperature; null = published default (cs_kd 4, "
                                         "tf_kd_self 6, tf_kd_reg 20)")
    lam: float = _f(1.0, "cs_kd: weight of the class-wise KL term")
    kd_alpha: float | None = _f(None, "tf_kd: weight of the KD term; null = published default (self 0.95, reg 0.1)")
    multiplier: float | None = _f(None, "tf_kd: KD multiplier; null = published default (self 50, reg 100)")
    correct_prob: float = _f(0.99, "tf_kd_reg: the virtual teacher's probability of the true class")
    teacher: str | None = _f(None, "tf_kd_self: pskd-cls checkpoint of a trained copy of the same model and data")
    store: StoreConfig = _f(None, "", factory=StoreConfig)


@dataclass
class CutMixConfig:
    prob: float = _f(0.0, "probability that a batch is CutMix-ed (0 = off)")
    beta: float = _f(1.0, "CutMix box area ~ Beta(beta, beta)")


@dataclass
class OptimConfig:
    lr: float = _f(0.1, "initial learning rate (SGD)")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum")
    weight_decay: float = _f(5e-4, "L2 weight decay")
    schedule: str = _f("multistep", "learning-rate schedule, stepped once per epoch",
                       choices=("multistep", "cosine", "constant"))
    milestones: list[int] = _f(None, "multistep: epochs at which the lr is multiplied by gamma",
                               factory=lambda: [150, 225])
    gamma: float = _f(0.1, "multistep: lr factor at each milestone")
    min_lr: float = _f(0.0, "cosine: final learning rate")
    warmup_epochs: int = _f(0, "linear warm-up epochs (from lr / (warmup_epochs + 1))")


@dataclass
class TrainConfig:
    epochs: int = _f(300, "number of epochs")
    batch_size: int = _f(128, "global training batch size (split evenly over DDP ranks)")
    eval_batch_size: int = _f(256, "batch size for validation and test", resume_safe=True)
    device: str = _f("auto", "auto (cuda if available), cpu, cuda or cuda:N (DDP: the local rank's GPU)",
                     resume_safe=True)
    amp: bool = _f(False, "mixed precision (fp16 + loss scaling on GPU, bf16 on CPU)")
    channels_last: bool = _f(False, "channels_last memory format (faster convolutions on recent GPUs)")
    seed: int = _f(0, "seed of model initialisation, data order, augmentation and CutMix")
    deterministic: bool = _f(True, "deterministic algorithms (cuDNN benchmark off); CPU runs are then "
                                   "bit-reproducible")
    threads: int | None = _f(None, "CPU threads per process (torch.set_num_threads); null = torch's default",
                             resume_safe=True)
    out_dir: str = _f("runs/cls", "output folder: config.yaml, checkpoints, logs, metrics.json", resume_safe=True)
    stop_after_epochs: int | None = _f(None, "stop this invocation after this many epochs in total (for "
                                             "time-sliced jobs; continue with --resume auto)", resume_safe=True)
    progress: str = _f("auto", "tqdm progress bar: auto (on a terminal; sparse lines otherwise), on, off",
                       choices=("auto", "on", "off"), resume_safe=True)
    tensorboard: bool = _f(True, "write TensorBoard logs to <out_dir>/tb", resume_safe=True)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    cutmix: CutMixConfig = field(default_factory=CutMixConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _walk(cls: type, prefix: str = ""):
    """Yield (dotted key, dataclass field, resolved type) for every leaf field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


RESUME_SAFE_KEYS = frozenset(k for k, f, _ in _walk(Config) if f.metadata.get("resume_safe"))


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str) -> Any:
    """Check ``value`` against the field type ``tp``; accept ints for floats and numeric strings for numbers."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    bad = ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '5e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad


def _build(cls: type, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known in this section: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp, value, key = hints[f.name], data[f.name], f"{prefix}{f.name}"
        if isinstance(value, bool) and "on" in (f.metadata.get("choices") or ()):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        kwargs[f.name] = _build(tp, value, key + ".") if dataclasses.is_dataclass(tp) else _coerce(value, tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys keep their defaults); validates it."""
    cfg = _build(Config, data or {}, "")
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top")
    bases = data.pop("base", None) or []
    merged: dict = {}
    for b in [bases] if isinstance(bases, str) else bases:
        merged = _deep_merge(merged, _read_yaml(path.parent / b, seen + (path,)))
    return _deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (values parsed as YAML); returns a new dict."""
    out = _deep_merge({}, data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a config section")
        node[parts[-1]] = value
    return out


def load_config(paths: list[str] | None = None, overrides: list[str] | None = None, base: dict | None = None
                ) -> Config:
    """Defaults <- ``base`` dict (e.g. a checkpoint's config) <- YAML files in order <- dotted overrides."""
    data: dict = dict(base or {})
    for p in paths or []:
        data = _deep_merge(data, _read_yaml(Path(p)))
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def validate_config(cfg: Config) -> None:
    """Range and consistency checks that types alone cannot express; raises ConfigError naming the key."""
    from pskd.core import METHODS, check_alpha

    from .models import MODELS

    for key, f, _ in _walk(Config):
        choices = f.metadata.get("choices")
        section, name = key.rsplit(".", 1)
        value = getattr(_get(cfg, section), name)
        if choices and value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    m = cfg.method
    if m.name not in METHODS:
        raise ConfigError(f"unknown method.name {m.name!r}; choose one of {', '.join(METHODS)}")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"unknown model.name {cfg.model.name!r}; choose one of {', '.join(MODELS)}")
    try:
        check_alpha(m.alpha_T, "method.alpha_T")
        if m.kd_alpha is not None:
            check_alpha(m.kd_alpha, "method.kd_alpha")
        check_alpha(cfg.cutmix.prob, "cutmix.prob")
        check_alpha(m.ls_eps, "method.ls_eps")
        check_alpha(m.correct_prob, "method.correct_prob")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    positive = {"cutmix.beta": cfg.cutmix.beta, "optim.lr": cfg.optim.lr, "train.epochs": cfg.train.epochs,
                "train.eval_batch_size": cfg.train.eval_batch_size, "method.store.k": m.store.k,
                "data.random_size": cfg.data.random_size, "data.channels": cfg.data.channels}
    for opt in ("temperature", "multiplier"):
        if getattr(m, opt) is not None:
            positive[f"method.{opt}"] = getattr(m, opt)
    for opt in ("train_subset", "test_subset", "num_classes", "image_size"):
        if getattr(cfg.data, opt) is not None:
            positive[f"data.{opt}"] = getattr(cfg.data, opt)
    for opt in ("threads", "stop_after_epochs"):
        if getattr(cfg.train, opt) is not None:
            positive[f"train.{opt}"] = getattr(cfg.train, opt)
    for key, value in positive.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{key} must be positive, got {value!r}")
    nonneg = {"optim.momentum": cfg.optim.momentum, "optim.weight_decay": cfg.optim.weight_decay,
              "optim.min_lr": cfg.optim.min_lr, "optim.warmup_epochs": cfg.optim.warmup_epochs,
              "optim.gamma": cfg.optim.gamma, "data.val_split": cfg.data.val_split,
              "data.num_workers": cfg.data.num_workers, "method.lam": m.lam,
              "data.crop_padding": 0 if cfg.data.crop_padding is None else cfg.data.crop_padding}
    for key, value in nonneg.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key} must be >= 0, got {value!r}")
    if cfg.data.val_split >= 1 and not float(cfg.data.val_split).is_integer():
        raise ConfigError(f"data.val_split must be a fraction < 1 or a whole sample count, got {cfg.data.val_split}")
    if cfg.train.batch_size < 2:
        raise ConfigError(f"train.batch_size must be >= 2 (batch norm needs two samples), got {cfg.train.batch_size}")
    ms = cfg.optim.milestones
    if any(b <= a for a, b in zip(ms, ms[1:])) or any(x <= 0 for x in ms):
        raise ConfigError(f"optim.milestones must be positive and increasing, got {ms}")
    if m.name == "tf_kd_self" and not m.teacher:
        raise ConfigError("method.teacher is required for tf_kd_self (a pskd-cls checkpoint of the same model)")
    if m.store.k < 1:
        raise ConfigError(f"method.store.k must be >= 1, got {m.store.k}")


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def config_help() -> str:
    """Every config key with its type, default and meaning (the body of ``pskd-cls train --help``)."""
    from .models import MODELS

    lines, section = [], None
    defaults = Config()
    for key, f, tp in _walk(Config):
        sec = key.rsplit(".", 1)[0]
        if sec != section:
            lines.append(f"{sec}:")
            section = sec
        default = getattr(_get(defaults, sec), key.rsplit(".", 1)[1])
        extra = f" [{'|'.join(f.metadata['choices'])}]" if f.metadata.get("choices") else ""
        lines.append(f"  {key} ({_type_name(tp)}, default {json.dumps(default)}"
                     f"){extra}: {f.metadata.get('help', '')}")
    lines.append(f"models: {', '.join(MODELS)}")
    return "\n".join(lines)
