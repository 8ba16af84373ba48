"""How the FSQ bound spreads activations over the quantization bins (the iFSQ activation study).

iFSQ replaces FSQ's ``tanh(z)`` (= ``2 * sigmoid(2 z) - 1``) with ``2 * sigmoid(1.6 z) - 1``. The argument of the
paper is that for roughly Gaussian encoder activations the smaller slope makes the bounded values close to
uniform on ``[-1, 1]``, so the evenly spaced bins are used evenly. These functions measure both views of that
claim for any slope ``alpha``, and name them apart:

* the **continuous** view, before rounding: :func:`ks_distance_to_uniform` and :func:`density_rmse_to_uniform`,
  the distance of the bounded values to ``U(-1, 1)`` (keys ``ks_distance_to_uniform``, ``density_rmse_to_uniform``);
* the **discrete** view, after rounding: :func:`bin_statistics`, usage and entropy efficiency of the ``L`` bins
  (keys ``bin_usage``, ``bin_entropy_bits``, ``bin_entropy_efficiency``, ``bin_frequencies``), computed with
  :class:`~ifsq_hf.quantization.FiniteScalarQuantizer` and :func:`~ifsq_hf.quantization.histogram_stats` (the
  library's one implementation of codebook statistics);
* :func:`gaussian_bound_metrics` gives both in closed form for ``z ~ N(0, scale**2)`` (no sampling noise),
  :func:`activation_bound_metrics` for measured activations (e.g. ``iFSQAutoencoder.encode_pre_quant``);
* :func:`alpha_sweep`: either of them over a list of slopes.

The two views disagree: for a unit Gaussian the KS distance is smallest near ``alpha = 1.7`` (1.6 is close;
tanh's 2.0 is about 2.5x further), but the bin-entropy efficiency is slightly *higher* for tanh (the iFSQ grid's
edge bins are half-width). What matters in practice is the scale of the real activations, which the encoder learns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from .quantization import FiniteScalarQuantizer, HistogramStats, histogram_stats

__all__ = [
    "BinStatistics",
    "activation_bound_metrics",
    "alpha_sweep",
    "best_alpha",
    "bin_statistics",
    "bound",
    "density_rmse_to_uniform",
    "gaussian_bound_metrics",
    "ks_distance_to_uniform",
]


def bound(z: torch.Tensor, alpha: float = 1.6) -> torch.Tensor:
    """The iFSQ bound ``2 * sigmoid(alpha * z) - 1`` in ``(-1, 1)``; ``alpha = 2`` is ``tanh``."""
    return 2.0 * torch.sigmoid(alpha * z.double()) - 1.0


def _check_values(values: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(values) or not torch.is_floating_point(values):
        raise ValueError("values must be a floating-point tensor of bounded values in [-1, 1].")
    flat = values.detach().reshape(-1).double()
    if flat.numel() == 0:
        raise ValueError("values is empty.")
    if not torch.isfinite(flat).all() or flat.abs().max() > 1:
        raise ValueError("values must be finite and lie in [-1, 1]; apply bound() to raw activations first.")
    return flat


def ks_distance_to_uniform(values: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of ``values`` and ``U(-1, 1)``."""
    y = torch.sort(_check_values(values)).values
    n = y.numel()
    cdf = (y + 1) / 2
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def density_rmse_to_uniform(values: torch.Tensor, bins: int = 100) -> float:
    """RMSE of ``density / uniform_density - 1`` over ``bins`` equal bins on ``[-1, 1]`` (0 for a uniform sample).

    Relative to the uniform density, so the number does not depend on the interval's length.
    """
    y = _check_values(values)
    counts = torch.histc(y, bins=bins, min=-1.0, max=1.0)
    ratio = counts / (y.numel() / bins)
    return float((ratio - 1).square().mean().sqrt())


@dataclass
class BinStatistics(HistogramStats):
    """Discrete statistics of the ``L`` bins of one quantized dimension (:class:`HistogramStats` plus frequencies).

    Attributes:
        frequencies: fraction of values in each bin (length ``L``, lowest bin first).
    """

    frequencies: list[float]


def _bin_stats(p: torch.Tensor, levels: int) -> BinStatistics:
    p = p.clamp_min(0)  # closed-form CDF differences can round to -1e-17 in the far tails
    return BinStatistics(**asdict(histogram_stats(p, levels)), frequencies=(p / p.sum()).tolist())


def bin_statistics(pre_quant: torch.Tensor, levels: int = 17, alpha: float = 1.6) -> BinStatistics:
    """Quantize raw activations with an ``L``-level iFSQ quantizer of slope ``alpha`` and count the bins.

    All channels are pooled (every value is treated as one sample of one dimension).
    """
    z = pre_quant.detach().reshape(-1, 1).float()
    quantizer = FiniteScalarQuantizer([levels], bound="ifsq", alpha=alpha)
    indices = quantizer(z).indices
    return _bin_stats(torch.bincount(indices.reshape(-1), minlength=levels).double(), levels)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def _bounded_cdf(y: torch.Tensor, alpha: float, scale: float) -> torch.Tensor:
    """CDF of ``2 sigmoid(alpha z) - 1`` at ``y`` for ``z ~ N(0, scale**2)``: ``Phi(logit((y + 1) / 2) / (alpha scale))``."""
    u = (y + 1) / 2
    return _normal_cdf(torch.logit(u) / (alpha * scale))


def gaussian_bound_metrics(
    alpha: float, scale: float = 1.0, levels: int = 17, bins: int = 100, grid: int = 200_001
) -> dict:
    """Continuous (KS distance, density RMSE) and discrete (bin) uniformity of the bound for ``z ~ N(0, scale**2)``,
    in closed form.

    The KS supremum is taken over ``grid`` points of ``(-1, 1)``; the rest is exact.
    """
    if alpha <= 0 or scale <= 0:
        raise ValueError(f"alpha and scale must be > 0, got alpha={alpha}, scale={scale}.")
    y = torch.linspace(-1, 1, grid, dtype=torch.float64)[1:-1]
    ks = float((_bounded_cdf(y, alpha, scale) - (y + 1) / 2).abs().max())
    edges = torch.linspace(-1, 1, bins + 1, dtype=torch.float64)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), _bounded_cdf(edges[1:-1], alpha, scale), torch.ones(1)])
    ratio = cdf.diff() * bins
    rmse = float((ratio - 1).square().mean().sqrt())
    # Bin k (centred integer q = k - half) holds bounded values y with round(y * half) = q.
    half = (levels - 1) / 2
    inner = (torch.arange(levels - 1, dtype=torch.float64) - half + 0.5) / half
    qcdf = torch.cat([torch.zeros(1, dtype=torch.float64), _bounded_cdf(inner, alpha, scale), torch.ones(1)])
    stats = _bin_stats(qcdf.diff(), levels)
    return {"alpha": alpha, "ks_distance_to_uniform": ks, "density_rmse_to_uniform": rmse, **_flat_bins(stats)}


def activation_bound_metrics(pre_quant: torch.Tensor, alpha: float, levels: int = 17, bins: int = 100) -> dict:
    """Continuous (KS distance, density RMSE) and discrete (bin) uniformity of the bound on measured activations
    (all channels pooled)."""
    y = bound(pre_quant.detach().reshape(-1), alpha)
    stats = bin_statistics(pre_quant, levels, alpha)
    return {
        "alpha": alpha,
        "ks_distance_to_uniform": ks_distance_to_uniform(y),
        "density_rmse_to_uniform": density_rmse_to_uniform(y, bins),
        **_flat_bins(stats),
    }


def _flat_bins(stats: BinStatistics) -> dict:
    return {
        "bin_usage": stats.usage,
        "bin_entropy_bits": stats.entropy_bits,
        "bin_entropy_efficiency": stats.entropy_efficiency,
        "bin_frequencies": stats.frequencies,
    }


def alpha_sweep(
    alphas: Iterable[float],
    pre_quant: torch.Tensor | None = None,
    scale: float = 1.0,
    levels: int = 17,
    bins: int = 100,
) -> list[dict]:
    """Metrics for every ``alpha``: on ``pre_quant`` activations when given, else for ``N(0, scale**2)``."""
    rows = []
    for alpha in alphas:
        alpha = float(alpha)
        if pre_quant is None:
            rows.append(gaussian_bound_metrics(alpha, scale, levels, bins))
        else:
            rows.append(activation_bound_metrics(pre_quant, alpha, levels, bins))
    return rows


def best_alpha(rows: Sequence[dict], key: str = "ks_distance_to_uniform") -> float:
    """The ``alpha`` of the row with the smallest ``key`` (largest for the ``bin_*`` keys, where more is better)."""
    maximise = key.startswith("bin_")
    pick = max if maximise else min
    return pick(rows, key=lambda r: r[key])["alpha"]
