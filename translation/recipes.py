"""Translation recipes: YAML files in ``configs/translation/`` naming the corpus, the sentencepiece model and the
fairseq-train / fairseq-generate options.

A recipe has four sections::

    data:          format (plain | iwslt), raw_dir, src, tgt, pair, splits {train, valid, test}, how_to_get
    sentencepiece: vocab_size, model_type, character_coverage
    train:         fairseq-train options without the leading dashes; `true` = a flag, null/false = left out
    pskd:          PS-KD defaults (alpha-T, pskd-teacher, pskd-topk)
    generate:      fairseq-generate options (beam, lenpen, batch-size, ...)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import PSKDError

__all__ = ["RECIPE_DIR", "load_recipe", "list_recipes", "to_cli_args"]

# Source checkout / editable install: configs/ sits next to translation/. Other installs pass a recipe path.
RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "translation"
_SECTIONS = ("data", "sentencepiece", "train", "pskd", "generate")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")) if RECIPE_DIR.is_dir() else []


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """Load a recipe by file path or by name (``mini_ding_de_en`` -> ``configs/translation/mini_ding_de_en.yaml``).

    Raises:
        PSKDError: unknown recipe or malformed file.
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(list_recipes()) or f"none found in {RECIPE_DIR}"
        raise PSKDError(f"recipe {name_or_path!r} not found (a YAML path or one of: {known})")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise PSKDError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    unknown = set(recipe) - set(_SECTIONS) - {"name", "description"}
    if unknown:
        raise PSKDError(f"recipe {path}: unknown section(s) {sorted(unknown)}; expected {list(_SECTIONS)}")
    for section in _SECTIONS:
        recipe.setdefault(section, {})
    recipe.setdefault("name", path.stem)
    recipe["path"] = str(path)
    return recipe


def to_cli_args(options: dict[str, Any]) -> list[str]:
    """``{"arch": "transformer", "share-all-embeddings": True, "fp16": False}`` ->
    ``["--arch", "transformer", "--share-all-embeddings"]``."""
    args: list[str] = []
    for key, value in (options or {}).items():
        if value is None or value is False:
            continue
        args.append(f"--{key}")
        if value is not True:
            args.append(str(value))
    return args
