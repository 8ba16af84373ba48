"""Statistics over seeds: mean ± sample standard deviation, and paired differences with a t-based confidence interval.

Each seed changes both the initialisation and the data order, and the arms of a study share their seeds, so
``arm_a[seed] - arm_b[seed]`` is a paired sample: the interval of its mean is what says whether two methods differ
at the study's scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..utils.import_utils import require

__all__ = ["PairedDifference", "Summary", "paired_difference", "summarize", "t_quantile"]


def t_quantile(probability: float, dof: int) -> float:
    """Quantile of Student's t distribution with ``dof`` degrees of freedom (scipy, from the ``metrics`` extra)."""
    if dof < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {dof}.")
    stats = require("scipy.stats", "metrics")
    return float(stats.t.ppf(probability, dof))


@dataclass
class Summary:
    """Mean and sample standard deviation (``ddof=1``; ``None`` with one value) of ``n`` values."""

    mean: float
    std: float | None
    n: int
    values: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, digits: int = 3) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def _check(values: Sequence[float], what: str) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{what}: no values to summarize.")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: values must be finite, got {values}.")
    return values


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± sample standard deviation of per-seed values."""
    values = _check(values, "summarize")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Summary(mean=mean, std=std, n=n, values=values)


@dataclass
class PairedDifference:
    """Mean of ``a[i] - b[i]`` over seeds with its ``confidence`` interval (``None`` with fewer than 2 seeds)."""

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    confidence: float
    differences: list[float]

    @property
    def includes_zero(self) -> bool | None:
        if self.low is None:
            return None
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict:
        return {**asdict(self), "includes_zero": self.includes_zero}

    def format(self, digits: int = 3) -> str:
        if self.low is None:
            return f"{self.mean:+.{digits}f} (n=1, no interval)"
        pct = round(100 * self.confidence)
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] ({pct}% CI)"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """``mean(a - b) ± t_{(1+c)/2, n-1} * sd(a - b) / sqrt(n)`` over paired (same-seed) values."""
    a, b = _check(a, "paired_difference a"), _check(b, "paired_difference b")
    if len(a) != len(b):
        raise ValueError(f"paired values need one value per seed in both arms, got {len(a)} and {len(b)}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    d = summarize([x - y for x, y in zip(a, b)])
    if d.std is None:
        return PairedDifference(d.mean, None, 1, None, None, confidence, d.values)
    half = t_quantile((1.0 + confidence) / 2.0, d.n - 1) * d.std / math.sqrt(d.n)
    return PairedDifference(d.mean, d.std, d.n, d.mean - half, d.mean + half, confidence, d.values)
