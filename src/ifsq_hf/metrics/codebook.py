"""Dataset-level codebook usage from streamed token indices (the statistics are those of ``ifsq_hf.quantization``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ..quantization import histogram_stats

# Above this many codes the tracker keeps only the codes that occur (sorted, with counts) instead of one int64
# counter per code: 4 channels x 257 levels (8 bits/dim) would need 35 GB dense, and N tokens occupy at most N codes.
DENSE_LIMIT = 2**22


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
        self.dense = self.codebook_size <= DENSE_LIMIT
        self.reset()

    def reset(self) -> None:
        if self.dense:
            self.counts = torch.zeros(self.codebook_size, dtype=torch.int64)
        else:  # sparse: the sorted codes seen so far and their counts
            self.codes = torch.zeros(0, dtype=torch.int64)
            self.counts = torch.zeros(0, dtype=torch.int64)

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
        if self.dense:
            self.counts += torch.bincount(flat, minlength=self.codebook_size)
            return
        codes, counts = torch.unique(flat, return_counts=True)
        merged, inverse = torch.unique(torch.cat([self.codes, codes]), return_inverse=True)
        total = torch.zeros(merged.numel(), dtype=torch.int64)
        total.scatter_add_(0, inverse, torch.cat([self.counts, counts]))
        self.codes, self.counts = merged, total

    def bin_counts(self) -> list[torch.Tensor]:
        """Histogram of each channel's ``L`` bins (needs ``levels``): the marginals of the code histogram."""
        if self.levels is None:
            raise ValueError("bin statistics need the quantizer's levels: CodebookUsageTracker(size, levels=...).")
        if self.dense:
            joint = self.counts.view(self.levels[::-1])  # channel 0 is the least significant digit: the last axis
            axes = range(joint.ndim)
            return [joint.sum([a for a in axes if a != joint.ndim - 1 - c]) for c in range(len(self.levels))]
        out, stride = [], 1
        for level in self.levels:  # mixed-radix digits of the codes that occur, weighted by their counts
            digit = torch.div(self.codes, stride, rounding_mode="floor") % level
            out.append(torch.zeros(level, dtype=torch.int64).scatter_add_(0, digit, self.counts))
            stride *= level
        return out

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
