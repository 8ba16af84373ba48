"""JSON files written by the training scripts, the evaluation and the Hub helpers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

__all__ = ["save_json"]


def save_json(obj, path: str | os.PathLike) -> None:
    """Write JSON atomically (temp file + rename), creating the folder; tensors, paths and numpy scalars are
    converted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
