"""Tolerant reads of the JSON files a run leaves behind (atomic writes are :mod:`pskd.core.io`'s)."""
from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["read_json"]


def read_json(path: str | os.PathLike) -> Any | None:
    """Parsed JSON of ``path``, or None if it is missing or not valid JSON (e.g. written by a killed process)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
