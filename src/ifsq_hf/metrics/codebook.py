"""Dataset-level codebook usage from streamed token indices (the statistics are those of ``ifsq_hf.quantization``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ..quantization import histogram_stats


class CodebookUsageTracker:
    """Accumulate a histogram of token indices and report code usage, perplexity and entropy.

    ``update`` takes global indices of any shape (e.g. (B, h, w) from ``iFSQAutoencoder.encode``); per-group indices
    of a factorized quantizer should be converted with ``quantizer.group_indices_to_global`` first, or tracked per
    group with one tracker each.

    Args:
        codebook_size: number of codes (``model.codebook_size``).
        levels: the quantizer's levels (``model.quantizer.levels``). When given, :meth:`compute` also reports the
            discrete per-channel bin statistics ``bin_usage`` and ``bin_entropy_efficiency`` (means over channels),
            read exactly from the marginals of the code histogram.
    """

    def __init__(self, codebook_size: int, levels: Sequence[int] | None = None):
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, numbers.Integral) or codebook_size < 1:
            raise ValueError(f"codebook_size must be an integer >= 1, got {codebook_size!r}.")
        if levels is not None and math.prod(levels) != codebook_size:
            raise ValueError(f"prod(levels) = {math.prod(levels)} must equal codebook_size = {codebook_size}.")
        self.codebook_size = int(codebook_size)
        self.levels = None if levels is None else [int(level) for level in levels]
        self.counts = torch.zeros(self.codebook_size, dtype=torch.int64)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, indices: torch.Tensor) -> None:
        indices = torch.as_tensor(indices)
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}.")
        flat = indices.reshape(-1).to("cpu", torch.int64)
        if flat.numel() == 0:
            return
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got values in [{low}, {high}]; pass the right "
                "codebook_size (model.codebook_size) or global indices of a factorized quantizer."
            )
        self.counts += torch.bincount(flat, minlength=self.codebook_size)

    def bin_counts(self) -> list[torch.Tensor]:
        """Histogram of each channel's ``L`` bins (needs ``levels``): the marginals of the code histogram."""
        if self.levels is None:
            raise ValueError("bin statistics need the quantizer's levels: CodebookUsageTracker(size, levels=...).")
        joint = self.counts.view(self.levels[::-1])  # channel 0 is the least significant digit, i.e. the last axis
        axes = range(joint.ndim)
        return [joint.sum([a for a in axes if a != joint.ndim - 1 - c]) for c in range(len(self.levels))]

    def compute(self) -> dict[str, float]:
        """``usage`` (fraction of codes seen), ``perplexity`` (2**entropy), ``entropy`` (bits), ``entropy_efficiency``
        (entropy / log2(codebook_size)), ``num_tokens``; with ``levels`` also ``bin_usage`` and
        ``bin_entropy_efficiency`` (per-channel bin histograms, averaged over channels)."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("CodebookUsageTracker.compute() called before any update().")
        code = histogram_stats(self.counts, self.codebook_size)
        out = {
            "usage": code.usage,
            "perplexity": code.perplexity,
            "entropy": code.entropy_bits,
            "entropy_efficiency": code.entropy_efficiency,
            "num_tokens": total,
        }
        if self.levels is not None:
            bins = [histogram_stats(c, level) for c, level in zip(self.bin_counts(), self.levels)]
            out["bin_usage"] = sum(b.usage for b in bins) / len(bins)
            out["bin_entropy_efficiency"] = sum(b.entropy_efficiency for b in bins) / len(bins)
        return out
