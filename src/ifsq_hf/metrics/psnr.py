"""Peak signal-to-noise ratio for images in [-1, 1]."""

from __future__ import annotations

import torch

from ._utils import check_image_pair


def psnr(pred: torch.Tensor, target: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB, ``(B,)``, of (B, C, H, W) images in [-1, 1].

    Computed on ``(x + 1) / 2`` with peak 1, i.e. ``10 log10(1 / mse)`` with the mean over C, H and W, the
    official iFSQ convention. ``clamp`` clips ``pred`` to [-1, 1] first (what saving it as an image does); the
    official evaluation does not clamp. Identical images give ``inf``. Average the per-image values over a
    dataset (not the MSE) to match the paper's tables.
    """
    check_image_pair(pred, target, "psnr")
    pred = pred.detach().double()
    target = target.detach().double()
    if clamp:
        pred = pred.clamp(-1, 1)
    mse = ((pred - target) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).float()
