"""Input checks shared by the metrics (clear errors instead of broadcasting surprises)."""

from __future__ import annotations

import importlib.util
import os

import torch


def check_image_pair(pred: torch.Tensor, target: torch.Tensor, name: str, min_size: int = 1) -> None:
    """Both tensors must be (B, C, H, W) with the same shape and at least ``min_size`` pixels per side."""
    for label, x in (("pred", pred), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: {label} must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(
                f"{name}: {label} must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}; "
                "add a batch dimension with x[None]."
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{name}: {label} must be a float tensor in [-1, 1], got {x.dtype}; convert uint8 images with "
                "x.float() / 127.5 - 1."
            )
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}.")
    if min(pred.shape[-2:]) < min_size:
        raise ValueError(
            f"{name}: images must be at least {min_size}x{min_size} pixels, got {tuple(pred.shape[-2:])}."
        )


def package_file(package: str, *parts: str) -> str | None:
    """Path of a data file inside an installed package, found without importing the package (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), *parts)
    return path if os.path.exists(path) else None
