"""REPA (representation alignment, arXiv 2410.06940): align an intermediate hidden state of a generator with
the patch features of a frozen vision encoder.

The generator owns a small MLP projector (training only); this module holds the loss, shared by the DiT and
LlamaGen training scripts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["match_token_grid", "repa_projection_loss"]


def _square_side(num_tokens: int, what: str) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{what} has {num_tokens} tokens, which is not a square grid; pass its (height, width) explicitly."
        )
    return side


def match_token_grid(
    features: torch.Tensor,
    num_tokens: int | tuple[int, int],
    source_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample ``(B, M, D)`` patch features to another token grid by bilinear interpolation (area when shrinking).

    ``num_tokens`` is the target count (a square grid) or an explicit ``(height, width)``.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (batch, tokens, dim), got shape {tuple(features.shape)}.")
    b, m, d = features.shape
    if isinstance(num_tokens, int):
        side = _square_side(num_tokens, "the target grid")
        target = (side, side)
    else:
        target = tuple(num_tokens)
    src = source_grid or (_square_side(m, "the encoder feature grid"),) * 2
    if src[0] * src[1] != m:
        raise ValueError(f"source_grid {src} does not hold {m} tokens.")
    if tuple(src) == target:
        return features
    grid = features.transpose(1, 2).reshape(b, d, *src).float()
    shrink = target[0] <= src[0] and target[1] <= src[1]
    if shrink:
        grid = F.interpolate(grid, size=target, mode="area")
    else:
        grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(features.dtype)


def repa_projection_loss(
    projected: torch.Tensor,
    target: torch.Tensor,
    projected_grid: tuple[int, int] | None = None,
    target_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Negative cosine similarity between projected hidden states and encoder patch features.

    ``projected``: ``(B, N, D)`` output of the generator's projector; ``target``: ``(B, M, D)`` encoder patch
    tokens (no class/register tokens). When ``M != N`` the target grid is resampled to the generator's grid.
    Both are L2-normalised in fp32 (in bf16/fp16 the normalisation is what turns the loss to NaN, REPA#46).
    Returns ``-mean_{b, n} cos(projected, target)``, in ``[-1, 1]`` (``-1`` = perfectly aligned).
    """
    if projected.ndim != 3 or target.ndim != 3:
        raise ValueError(
            f"projected and target must be (batch, tokens, dim); got {tuple(projected.shape)} and "
            f"{tuple(target.shape)}."
        )
    if projected.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: projected {projected.shape[0]} vs target {target.shape[0]}.")
    if projected.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"projector output dim {projected.shape[-1]} != encoder feature dim {target.shape[-1]}; set the "
            "model's repa projector dim to the encoder's hidden size."
        )
    n = projected.shape[1]
    if target.shape[1] != n or (projected_grid and target_grid and projected_grid != target_grid):
        target = match_token_grid(target, projected_grid or n, source_grid=target_grid)
    with torch.autocast(device_type=projected.device.type, enabled=False):
        p = F.normalize(projected.float(), dim=-1)
        t = F.normalize(target.detach().float(), dim=-1)
        return -(p * t).sum(dim=-1).mean()
