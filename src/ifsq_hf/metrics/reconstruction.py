"""All tokenizer reconstruction metrics in one streaming accumulator (the metrics of the official
``ifsq/train_ddp.py`` / ``eval_ddp.py`` evaluation)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .codebook import CodebookUsageTracker
from .fid import FrechetInceptionDistance
from .lpips import LPIPS
from .psnr import psnr
from .ssim import ssim


class ReconstructionMetrics:
    """Accumulate PSNR, SSIM, LPIPS, rFID and codebook usage over batches of (original, reconstruction) pairs.

    Args:
        lpips: an :class:`LPIPS` module, ``True`` for ``LPIPS("alex")`` (the official metric), or ``None``/``False``.
        fid: a :class:`FrechetInceptionDistance`, ``True`` for the InceptionV3 one, or ``None``/``False``. rFID
            compares the originals' and the reconstructions' features; it needs thousands of images to mean much.
        codebook_size: track token usage when given (pass ``indices`` to :meth:`update`).
        levels: the quantizer's levels, to also report the per-channel bin statistics (see
            :class:`CodebookUsageTracker`).

    Per-image values are averaged over all images (not batch means of unequal batches).
    """

    def __init__(
        self,
        lpips: LPIPS | nn.Module | bool | None = True,
        fid: FrechetInceptionDistance | bool | None = False,
        codebook_size: int | None = None,
        levels: list[int] | None = None,
    ):
        self.lpips = LPIPS("alex") if lpips is True else (lpips or None)
        self.fid = FrechetInceptionDistance() if fid is True else (fid or None)
        self.usage = CodebookUsageTracker(codebook_size, levels) if codebook_size else None
        self.reset()

    def reset(self) -> None:
        self._sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
        self._count = 0
        if self.fid is not None:
            self.fid.reset_real_features = True
            self.fid.reset()
        if self.usage is not None:
            self.usage.reset()

    @torch.no_grad()
    def update(
        self, originals: torch.Tensor, reconstructions: torch.Tensor, indices: torch.Tensor | None = None
    ) -> None:
        """Add a batch: (B, 3, H, W) images in [-1, 1]; ``indices`` are the batch's token indices."""
        reconstructions = reconstructions.float()
        originals = originals.float()
        self._sums["psnr"] += float(psnr(reconstructions, originals).sum())
        if min(originals.shape[-2:]) >= 11:
            self._sums["ssim"] += float(ssim(reconstructions, originals).sum())
        else:
            self._sums["ssim"] = float("nan")
        if self.lpips is not None:
            self._sums["lpips"] += float(self.lpips(reconstructions.clamp(-1, 1), originals).sum())
        if self.fid is not None:
            self.fid.update(originals, real=True)
            self.fid.update(reconstructions, real=False)
        if self.usage is not None:
            if indices is None:
                raise ValueError("codebook_size was given, so update() needs the batch's token indices.")
            self.usage.update(indices)
        self._count += originals.shape[0]

    def compute(self) -> dict[str, float]:
        """Mean ``psnr``, ``ssim``, ``lpips``; ``rfid``; the :class:`CodebookUsageTracker` statistics when tracked."""
        if self._count == 0:
            raise ValueError("ReconstructionMetrics.compute() called before any update().")
        out = {"psnr": self._sums["psnr"] / self._count, "ssim": self._sums["ssim"] / self._count}
        if self.lpips is not None:
            out["lpips"] = self._sums["lpips"] / self._count
        if self.fid is not None:
            out["rfid"] = self.fid.compute()
        if self.usage is not None:
            out.update(self.usage.compute())
        out["num_images"] = self._count
        return out
