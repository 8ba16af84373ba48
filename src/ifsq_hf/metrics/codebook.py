"""Dataset-level codebook usage from streamed token indices."""

from __future__ import annotations

import math

import torch


class CodebookUsageTracker:
    """Accumulate a histogram of token indices and report usage, perplexity and entropy.

    ``update`` takes indices of any shape (e.g. (B, h, w) from ``iFSQAutoencoder.encode``); per-group indices of
    a factorized quantizer should be converted with ``quantizer.group_indices_to_global`` first, or tracked per
    group with one tracker each.
    """

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}.")
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.int64)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, indices: torch.Tensor) -> None:
        indices = torch.as_tensor(indices)
        if indices.is_floating_point() or indices.is_complex():
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

    def compute(self) -> dict[str, float]:
        """``usage`` (fraction of codes seen), ``perplexity`` (exp of the entropy), ``entropy`` (bits),
        ``entropy_efficiency`` (entropy / log2(codebook_size)) and ``num_tokens``."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("CodebookUsageTracker.compute() called before any update().")
        p = self.counts[self.counts > 0].double() / total
        entropy_bits = float(-(p * p.log2()).sum())
        return {
            "usage": int((self.counts > 0).sum()) / self.codebook_size,
            "perplexity": 2.0**entropy_bits,
            "entropy": entropy_bits,
            "entropy_efficiency": entropy_bits / math.log2(self.codebook_size) if self.codebook_size > 1 else 1.0,
            "num_tokens": total,
        }
