"""Pre-flight checks of a detection config, run by ``pskd-det`` before the Runner writes anything.

Every failure is a :class:`PSKDError` with a one-line message naming the file or config field; conditions that
mmdet handles on its own (images without boxes) are reported as warnings with the fallback taken.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import warnings
from typing import Any, Iterator

from mmengine.config import Config

from pskd.core.schedules import check_alpha
from .errors import PSKDError

__all__ = ["check_config", "check_checkpoint_file", "dataset_cfgs", "ann_path", "pskd_hook_cfgs"]

# Parsing a COCO json to count boxes is cheap for the mini sets and VOC-sized files; skip it for COCO-sized ones.
_MAX_JSON_BYTES = 64 * 2**20


def _type_name(t: Any) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _resolve(type_: Any) -> type | None:
    """The class a config ``type`` names, looked up in mmdet's MODELS (after the config's custom_imports)."""
    if isinstance(type_, type):
        return type_
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS.get(type_)


def pskd_hook_cfgs(cfg: Config) -> list[dict]:
    """The PSKDHook entries of a config's custom_hooks."""
    return [h for h in (cfg.get("custom_hooks") or []) if _type_name(h.get("type")).split(".")[-1] == "PSKDHook"]


def _check_pskd(cfg: Config, where: str) -> None:
    from .context import PSKDHeadMixin
    hooks = pskd_hook_cfgs(cfg)
    for hook in hooks:
        try:
            check_alpha(hook.get("alpha_T", 0.8), name="custom_hooks.PSKDHook.alpha_T")
        except ValueError as err:
            raise PSKDError(f"{where}: {err}") from None
    model = cfg.get("model") or {}
    heads = {f"model.{key}": model[key] for key in ("roi_head", "bbox_head")
             if isinstance(model.get(key), dict) and "type" in model[key]}
    pskd_heads = []
    for field, head in heads.items():
        cls = _resolve(head["type"])
        if cls is not None and issubclass(cls, PSKDHeadMixin):
            pskd_heads.append(field)
    if hooks and not pskd_heads:
        found = ", ".join(f"{k}.type={_type_name(v['type'])}" for k, v in heads.items()) or "no roi_head/bbox_head"
        raise PSKDError(
            f"{where}: custom_hooks has PSKDHook but the model head has no PS-KD support ({found}); use "
            "model.roi_head.type='PSKDStandardRoIHead' (two-stage) or model.bbox_head.type='PSKDRetinaHead'")
    if pskd_heads and not hooks:
        warnings.warn(f"{where}: {pskd_heads[0]} is a PS-KD head but custom_hooks has no PSKDHook: "
                      "it trains with the stock loss (alpha = 0)", stacklevel=2)


def dataset_cfgs(dataset: Any) -> Iterator[dict]:
    """The leaf dataset configs inside dataset wrappers (RepeatDataset, ConcatDataset, ClassBalancedDataset)."""
    if not isinstance(dataset, dict):
        return
    if "datasets" in dataset:
        for sub in dataset["datasets"]:
            yield from dataset_cfgs(sub)
    elif "dataset" in dataset:
        yield from dataset_cfgs(dataset["dataset"])
    else:
        yield dataset


def ann_path(dataset: dict) -> str | None:
    """The annotation file a dataset config reads, joined with its data_root the way mmengine's BaseDataset does."""
    ann = dataset.get("ann_file")
    if not ann:
        return None
    root = dataset.get("data_root") or ""
    return ann if osp.isabs(ann) or not root else osp.join(root, ann)


def _check_coco_boxes(path: str, field: str, dataset: dict) -> None:
    if not path.endswith(".json") or osp.getsize(path) > _MAX_JSON_BYTES:
        return
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
        images, anns = coco["images"], coco.get("annotations", [])
    except (ValueError, KeyError, TypeError) as err:
        raise PSKDError(f"{field}: {path} is not a COCO detection json ({type(err).__name__}: {err})") from None
    with_box = {a.get("image_id") for a in anns if not a.get("iscrowd", 0)}
    if not anns or not with_box:
        raise PSKDError(f"{field}: {path} has {len(images)} images but no boxes; nothing to train on")
    empty = sum(1 for im in images if im.get("id") not in with_box)
    if empty:
        filtered = (dataset.get("filter_cfg") or {}).get("filter_empty_gt", False)
        fallback = "skipped (filter_cfg.filter_empty_gt=True)" if filtered else "trained as all-background images"
        warnings.warn(f"{field}: {empty} of {len(images)} images in {path} have no boxes: {fallback}", stacklevel=2)


def _check_data(cfg: Config, loader_key: str, train: bool) -> None:
    loader = cfg.get(loader_key)
    if not loader:
        return
    for i, dataset in enumerate(dataset_cfgs(loader.get("dataset"))):
        field = f"{loader_key}.dataset" + (f"[{i}]" if i else "") + ".ann_file"
        path = ann_path(dataset)
        if path is None:
            continue
        if not osp.isfile(path):
            mini = any(name in path for name in ("deepforest", "fmnist-det"))
            hint = ("run `python scripts/fetch_data.py`" if mini else
                    "point the dataset's data_root at your copy, relative paths are taken from the working directory")
            hint = f" ({hint})"
            raise PSKDError(f"{field}: annotation file {path} not found{hint}")
        if train:
            _check_coco_boxes(path, field, dataset)
    evaluator_key = {"val_dataloader": "val_evaluator", "test_dataloader": "test_evaluator"}.get(loader_key)
    evaluators = cfg.get(evaluator_key) if evaluator_key else None
    for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        if isinstance(ev, dict) and ev.get("ann_file") and not osp.isfile(ev["ann_file"]) \
                and not ev.get("format_only", False):
            raise PSKDError(f"{evaluator_key}.ann_file: annotation file {ev['ann_file']} not found")


def check_config(cfg: Config, mode: str) -> None:
    """Validate a config for ``mode`` 'train' or 'test'; raise :class:`PSKDError` naming the file or field."""
    where = cfg.filename or "config"
    _check_pskd(cfg, where)
    if mode == "train":
        _check_data(cfg, "train_dataloader", train=True)
        if cfg.get("val_cfg") is not None:
            _check_data(cfg, "val_dataloader", train=False)
    else:
        _check_data(cfg, "test_dataloader", train=False)


def check_checkpoint_file(path: str, what: str = "checkpoint") -> str:
    """A checkpoint path that exists, or :class:`PSKDError`."""
    if not osp.isfile(path):
        raise PSKDError(f"{what} {path} not found")
    if os.path.getsize(path) == 0:
        raise PSKDError(f"{what} {path} is empty")
    return path
