"""The paper's published numbers (``paper_numbers.yaml``), looked up by table, model, method and metric."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PAPER_FILE", "load_paper", "paper_value", "paper_table"]

PAPER_FILE = Path(__file__).resolve().parent / "paper_numbers.yaml"


@lru_cache(maxsize=4)
def load_paper(path: str | None = None) -> dict[str, Any]:
    """The parsed numbers file (cached)."""
    with open(path or PAPER_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def paper_table(table: str) -> dict[str, Any] | None:
    """One table's mapping (title, source, metrics, rows, note), or None if the file has no such table."""
    return load_paper()["tables"].get(table)


def paper_value(table: str | None, model: str, method: str, metric: str) -> float | None:
    """The published value for a (model, method, metric) in ``table``, or None where the paper has none.

    The model ``*`` in a table matches any model (tables of one model per data set, e.g. translation).
    """
    if not table:
        return None
    t = paper_table(table)
    if t is None or metric not in t.get("metrics", []):
        return None
    rows = t.get("rows") or {}
    row = rows.get(model, rows.get("*"))
    if row is None:
        return None
    aliases = load_paper().get("method_aliases", {})
    values = row.get(method, row.get(aliases.get(method, ""), None))
    if values is None:
        return None
    return float(values[t["metrics"].index(metric)])
