"""Image grids for people to look at: reconstructions and samples (the training scripts also log them to
TensorBoard with :func:`ifsq_hf.training.accelerator.log_image_grid`)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["make_image_grid", "save_image_grid", "to_uint8"]


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """``(N, C, H, W)`` float images in ``value_range`` -> ``(N, H, W, C)`` uint8 (grey images become RGB)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    x = (x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def make_image_grid(
    images: torch.Tensor | list[Image.Image] | np.ndarray,
    nrow: int | None = None,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    row_labels: list[str] | None = None,
) -> Image.Image:
    """Tile images into one PIL image, ``nrow`` per row (default: about square), with optional row labels.

    Accepts a float tensor ``(N, C, H, W)`` in ``value_range``, a uint8 array ``(N, H, W, C)`` or PIL images.
    """
    if isinstance(images, torch.Tensor):
        arr = to_uint8(images, value_range)
    elif isinstance(images, np.ndarray):
        arr = images
    else:
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError("make_image_grid needs at least one image.")
    ncol = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    label_w = 0
    if row_labels:
        label_w = 8 + 7 * max(len(label) for label in row_labels)
    grid = np.full((rows * (h + padding) + padding, label_w + ncol * (w + padding) + padding, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y = padding + r * (h + padding)
        x = label_w + padding + col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    out = Image.fromarray(grid)
    if row_labels:
        draw = ImageDraw.Draw(out)
        for r, label in enumerate(row_labels[:rows]):
            draw.text((4, padding + r * (h + padding) + h // 2 - 5), label, fill=(0, 0, 0))
    return out


def save_image_grid(images, path: str | os.PathLike, **kwargs) -> Image.Image:
    """``make_image_grid`` then save as PNG (parent folders are created)."""
    grid = make_image_grid(images, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return grid
