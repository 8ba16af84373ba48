"""Finite scalar quantization (FSQ) and iFSQ, and the codebook statistics of their indices.

FSQ bounds each latent channel to a fixed range, rounds it to one of ``L`` evenly spaced values and uses the
straight-through estimator for gradients. iFSQ (arXiv 2601.17124) changes only the bound: ``tanh(z)`` becomes
``2 * sigmoid(alpha * z) - 1`` with ``alpha = 1.6`` (i.e. ``tanh(0.8 z)``), which maps Gaussian-like encoder
activations to a near-uniform distribution so that every bin is used.

Conventions (shared with the official code so tokens match official checkpoints):

* codes are normalised to ``[-1, 1]``: ``code = q / (L // 2)`` with ``q`` an integer in ``[-(L // 2), L - 1 - L // 2]``;
* the integer digit of a channel is ``q + L // 2`` in ``[0, L - 1]``;
* an index is the mixed-radix number of the digits with **channel 0 least significant**
  (``index = sum_c digit_c * prod(levels[:c])``), computed in exact integer arithmetic (int64);
* factorized groups (the official ``factorized_bits``) split the channels into consecutive groups, each with its
  own index; ``global = sum_g index_g * prod(group_sizes[:g])``, which equals the single-group index.

Layouts: inputs with 4 or more dims are channel-first (``(B, C, H, W)``, ``(B, C, T, H, W)``), inputs with 2 or 3
dims are channel-last (``(N, C)``, ``(B, N, C)``). Indices drop the channel dim and gain a trailing group dim only
when there is more than one group: ``(B, C, H, W) -> (B, H, W)`` or ``(B, H, W, G)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FiniteScalarQuantizer",
    "HistogramStats",
    "QuantizerOutput",
    "UtilizationStats",
    "code_usage",
    "codebook_perplexity",
    "histogram_entropy_bits",
    "histogram_stats",
    "levels_from_bits",
    "per_dim_bin_histogram",
    "utilization_stats",
]

BOUNDS = ("ifsq", "tanh")
_FP32_EXACT = 2**24  # every integer up to this is exact in float32, so are sums that stay below it


def levels_from_bits(bits_per_dim: int, num_dims: int) -> list[int]:
    """Levels for ``bits_per_dim`` bits per dimension in the paper's convention: ``2**bits + 1`` (4 bits -> 17).

    The extra level keeps the grid symmetric around 0, which the iFSQ bound requires (odd levels only).
    """
    for name, value in (("bits_per_dim", bits_per_dim), ("num_dims", num_dims)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return [2 ** int(bits_per_dim) + 1] * int(num_dims)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_list(values, name: str, minimum: int, hint: str) -> list[int]:
    """``values`` as a non-empty list of Python ints >= ``minimum``; floats and bools are refused, not truncated."""
    values = values.tolist() if isinstance(values, torch.Tensor) else values
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of integers >= {minimum}, {hint}; got {values!r}.")
    bad = [v for v in values if not _is_int(v) or v < minimum]
    if bad:
        raise ValueError(
            f"every entry of {name} must be an integer >= {minimum}, got {bad[0]!r} in {list(values)}; {hint}."
        )
    return [int(v) for v in values]


@dataclass
class QuantizerOutput:
    """Output of :class:`FiniteScalarQuantizer`.

    Args:
        codes: quantized values in ``[-1, 1]`` (after ``project_out`` when the quantizer projects), same layout and
            dtype as the input.
        indices: int64 code indices, ``None`` when ``return_indices=False``.
    """

    codes: torch.Tensor
    indices: torch.Tensor | None = None

    def to_tuple(self) -> tuple:
        return (self.codes, self.indices)


class _BoundRound(torch.autograd.Function):
    """Bound, round, index and scale fp32 ``z`` in place on one temporary; the gradient is straight-through.

    Backward recomputes the bound's derivative from ``z`` (the only saved tensor), so no intermediate is kept.
    """

    @staticmethod
    def forward(ctx, z, fsq: FiniteScalarQuantizer, cdim: int, return_indices: bool):
        q = fsq._bound(z, cdim).round_()
        indices = fsq._q_to_indices(q, cdim) if return_indices else None
        ctx.fsq, ctx.cdim = fsq, cdim
        ctx.save_for_backward(z)
        return q.div_(fsq._const("half_width", cdim, q)), indices

    @staticmethod
    def backward(ctx, grad, _):
        (z,) = ctx.saved_tensors
        return ctx.fsq._bound_grad(z, grad, ctx.cdim), None, None, None


class FiniteScalarQuantizer(nn.Module):
    """FSQ / iFSQ quantizer: one forward path, validated arguments, no device sync in ``forward``.

    Args:
        levels: number of levels per channel, any integers >= 2 (e.g. ``[17, 17, 17, 17]``).
        bound: ``"ifsq"`` for ``(2 * sigmoid(alpha * z) - 1) * (L - 1) / 2`` (odd levels only), or ``"tanh"`` for
            the vanilla FSQ bound of the official/lucidrains code (eps-widened range, half-step offset for even
            levels), bit-compatible with the official ``GroupFSQ.bound``.
        alpha: slope of the iFSQ sigmoid; 1.6 is the paper's value, 2.0 reproduces ``tanh`` without eps.
        dim: input channels. When it differs from ``len(levels)`` a linear ``project_in``/``project_out`` pair is
            added (the quantized codes are then projected back to ``dim`` channels).
        factorized_dims: channels per index group (the official ``factorized_bits``), e.g. ``[2, 2]`` for two
            indices of ``17**2 = 289`` codes per position. ``None`` means one group.
        eps: range widening of the ``"tanh"`` bound (official value 1e-3).
        track_running_stats: keep persistent ``running_mean``/``running_var`` (shape ``(1, C, 1, 1)``) of the
            pre-quantization activations for monitoring, as the official ``RunningFSQ`` does. They never change
            the output.
        momentum: update rate of the running statistics, in ``[0, 1]``.
        check_finite: raise a ``ValueError`` on NaN/inf input. Off by default because the check reads a value
            back from the device (a sync per forward); without it NaN input gives meaningless indices.
        projection_bias: bias of the optional projections.

    ``torch.compile(quantizer)`` fuses the forward (bound, rounding, indices) into one kernel.
    """

    def __init__(
        self,
        levels: Sequence[int],
        bound: str = "ifsq",
        alpha: float = 1.6,
        dim: int | None = None,
        factorized_dims: Sequence[int] | None = None,
        eps: float = 1e-3,
        track_running_stats: bool = False,
        momentum: float = 0.1,
        check_finite: bool = False,
        projection_bias: bool = True,
    ):
        super().__init__()
        levels = _int_list(levels, "levels", 2, "e.g. [17] * 4 (levels_from_bits(bits, dims) gives 2**bits + 1)")
        n = len(levels)
        factorized_dims = (
            [n] if factorized_dims is None else _int_list(factorized_dims, "factorized_dims", 1, "channels per group")
        )
        for name, value in (("alpha", alpha), ("eps", eps), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        even = [level for level in levels if level % 2 == 0]
        problems = [
            (bound not in BOUNDS, f"bound must be one of {BOUNDS}, got {bound!r}."),
            (
                bound == "ifsq" and even,
                f"the iFSQ bound needs odd levels (a grid symmetric around 0), got even levels {even} in {levels}. "
                "Use 2**bits + 1 levels (e.g. 17 for 4 bits, see levels_from_bits) or bound='tanh'.",
            ),
            (bound == "ifsq" and alpha == 0, "alpha must be > 0 for the iFSQ bound (the paper's value is 1.6)."),
            (max(levels) > _FP32_EXACT, f"levels above 2**24 cannot be represented exactly in float32: {levels}."),
            (
                bound == "tanh" and (max(levels) - 1) * eps >= 1,
                f"the tanh bound widens the range by eps={eps}, which pushes {max(levels)} levels past their last "
                "bin ((L - 1) * eps must stay below 1). Lower eps or use bound='ifsq' (odd levels).",
            ),
            (
                math.prod(levels) >= 2**63,
                f"prod(levels) = {math.prod(levels)} does not fit in int64; use fewer levels or channels "
                "(or factorized_dims, and keep the per-group indices).",
            ),
            (sum(factorized_dims) != n, f"factorized_dims must sum to len(levels) = {n}, got {factorized_dims}."),
            (dim is not None and not (_is_int(dim) and dim >= 1), f"dim must be a positive integer, got {dim!r}."),
            (momentum > 1, f"momentum must lie in [0, 1], got {momentum!r}."),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(message)

        self.levels, self.bound, self.alpha, self.eps = levels, bound, float(alpha), float(eps)
        self.codebook_dim, self.dim, self.factorized_dims = n, n if dim is None else int(dim), factorized_dims
        starts = [sum(factorized_dims[:g]) for g in range(len(factorized_dims))]
        self.group_levels = [levels[s : s + d] for s, d in zip(starts, factorized_dims)]
        self.group_sizes = [math.prod(group) for group in self.group_levels]
        self.codebook_size = math.prod(levels)
        self.check_finite, self.momentum = bool(check_finite), float(momentum)
        self._consts, self._cache = _channel_constants(levels, bound, self.eps), {}
        self._uniform = len(set(levels)) == 1
        self._has_offset = bound == "tanh" and bool(even)
        # 2y*h - h == (2y - 1)*h bit for bit when h is a power of two: one pass fewer
        self._half_l_pow2 = self._uniform and bound == "ifsq" and math.log2((levels[0] - 1) / 2).is_integer()
        self.project_in = self.project_out = None
        if self.dim != n:
            self.project_in = nn.Linear(self.dim, n, bias=projection_bias)
            self.project_out = nn.Linear(n, self.dim, bias=projection_bias)
        self.track_running_stats = track_running_stats
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(1, n, 1, 1))
            self.register_buffer("running_var", torch.ones(1, n, 1, 1))

    @classmethod
    def from_bits(cls, bits_per_dim: int, num_dims: int, **kwargs) -> FiniteScalarQuantizer:
        """Quantizer with ``2**bits_per_dim + 1`` levels on each of ``num_dims`` channels (4 bits -> 17 levels)."""
        return cls(levels_from_bits(bits_per_dim, num_dims), **kwargs)

    @property
    def num_groups(self) -> int:
        return len(self.factorized_dims)

    @property
    def bits_per_dim(self) -> float:
        """Information per channel, ``mean(log2(L))`` (17 levels -> 4.09 bits)."""
        return sum(math.log2(level) for level in self.levels) / self.codebook_dim

    def extra_repr(self) -> str:
        alpha = f", alpha={self.alpha}" if self.bound == "ifsq" else ""
        groups = f", factorized_dims={self.factorized_dims}" if self.num_groups > 1 else ""
        return f"levels={self.levels}, bound={self.bound!r}{alpha}, dim={self.dim}{groups}"

    # ------------------------------------------------------------------ math (fp32, channel dim ``cdim``)
    def _const(self, name: str, cdim: int, ref: torch.Tensor):
        """Per-channel constant: a Python float when all levels are equal, else an fp32 tensor broadcasting over
        ``ref``'s channel dim, cached per device (so that no forward copies from the host)."""
        if self._uniform:
            return self._consts[name][0]
        key = (name, ref.ndim, cdim % ref.ndim, ref.device)
        if key not in self._cache:
            shape = [1] * ref.ndim
            shape[cdim] = -1
            t = torch.tensor(self._consts[name], dtype=torch.float32, device=ref.device).view(shape)
            if torch.compiler.is_compiling():  # the cache is filled in eager mode only
                return t
            self._cache[key] = t
        return self._cache[key]

    def _bound(self, z: torch.Tensor, cdim: int) -> torch.Tensor:
        """``bound(z) * half_l`` before rounding, in the official order of operations, in place on one temporary."""
        half_l = self._const("half_l", cdim, z)
        if self.bound == "ifsq":
            y = torch.sigmoid_(z * self.alpha)
            return y.mul_(2.0 * half_l).sub_(half_l) if self._half_l_pow2 else y.mul_(2.0).sub_(1.0).mul_(half_l)
        if not self._has_offset:
            return torch.tanh(z).mul_(half_l)
        return torch.tanh_(z + self._const("shift", cdim, z)).mul_(half_l).sub_(self._const("offset", cdim, z))

    def _bound_grad(self, z: torch.Tensor, grad: torch.Tensor, cdim: int) -> torch.Tensor:
        """``grad * d(codes)/dz`` of the straight-through quantizer, i.e. ``grad * bound'(z) * half_l / (L // 2)``."""
        scale = self._const("half_l", cdim, z) / self._const("half_width", cdim, z)
        if self.bound == "ifsq":
            s = torch.sigmoid_(z * self.alpha)
            out = grad * s
            out.addcmul_(out, s, value=-1.0)  # grad * s * (1 - s)
            return out.mul_(scale * (2.0 * self.alpha))  # d/dz (2 sigmoid(a z) - 1) = 2 a s (1 - s)
        t = torch.tanh_(z + self._const("shift", cdim, z)) if self._has_offset else torch.tanh(z)
        return torch.addcmul(grad, grad * t, t, value=-1.0).mul_(scale)  # grad * (1 - t^2)

    def _q_to_indices(self, q: torch.Tensor, cdim: int) -> torch.Tensor:
        """Exact int64 indices from the centred integer levels ``q`` (floats holding integers, channels in ``cdim``).

        Horner's scheme over each group's channels, most significant first, plus the constant of the centring.
        Groups of at most 2**24 codes stay in float32, where every partial result is an exact integer
        (elementwise ops only, so TF32 cannot round); larger groups run in int64.
        """
        start, out = 0, []
        for group, size in zip(self.group_levels, self.group_sizes):
            acc = None
            for c in reversed(range(start, start + len(group))):
                qc = q.select(cdim, c) if size <= _FP32_EXACT else q.select(cdim, c).long()
                acc = qc if acc is None else torch.add(qc, acc, alpha=self.levels[c])
            out.append((acc + sum((lv // 2) * math.prod(group[:i]) for i, lv in enumerate(group))).long())
            start += len(group)
        return out[0] if len(out) == 1 else torch.stack(out, dim=-1)

    # ------------------------------------------------------------------ boundary checks
    def _channel_dim(self, x: torch.Tensor, what: str, channels: int) -> int:
        """Channel dim of ``x`` (1 for 4+ dims, -1 for 2-3 dims), checking dtype, rank and channel count."""
        if not torch.is_tensor(x) or not torch.is_floating_point(x):
            got = x.dtype if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what} must be a floating-point tensor, got {got}; convert it with .float().")
        if x.ndim < 2:
            raise ValueError(
                f"{what} needs a batch and a channel dim ((B, C, H, W), (B, N, C) or (N, C)), got {tuple(x.shape)}."
            )
        cdim = 1 if x.ndim >= 4 else -1
        if x.shape[cdim] != channels:
            where = "dim 1 (channel-first)" if cdim == 1 else "the last dim (channel-last)"
            fix = f"Pass dim={x.shape[cdim]} to add a projection, or move" if what == "quantizer input" else "Move"
            raise ValueError(
                f"{what} must have {channels} channels in {where}, got shape {tuple(x.shape)}. {fix} the channels "
                "(4+ dim inputs are channel-first, 2-3 dim inputs channel-last)."
            )
        return cdim

    def _check_indices(self, indices: torch.Tensor, grouped: bool | None = None) -> torch.Tensor:
        """int64 ``indices``, every value in range (per group when ``grouped``; the quantizer's layout by default)."""
        grouped = self.num_groups > 1 if grouped is None else grouped
        if (
            not torch.is_tensor(indices)
            or indices.dtype == torch.bool
            or indices.is_floating_point()
            or indices.is_complex()
        ):
            got = indices.dtype if torch.is_tensor(indices) else type(indices).__name__
            raise ValueError(f"indices must be an integer tensor, got {got}; cast with .long().")
        if grouped and (indices.ndim < 2 or indices.shape[-1] != self.num_groups):
            raise ValueError(
                f"factorized indices need a trailing group dim of size {self.num_groups}, got shape "
                f"{tuple(indices.shape)}. Convert global indices with global_to_group_indices()."
            )
        sizes, levels = (self.group_sizes, self.group_levels) if grouped else ([self.codebook_size], [self.levels])
        flat = indices.long().reshape(-1, len(sizes))
        lo, hi = (
            (flat.amin(0).tolist(), flat.amax(0).tolist()) if flat.numel() else ([0] * len(sizes), [0] * len(sizes))
        )
        for g, size in enumerate(sizes):
            if lo[g] < 0 or hi[g] >= size:
                raise ValueError(
                    f"{f'group {g} ' if grouped else ''}indices must lie in [0, {size - 1}] for levels {levels[g]}, got "
                    f"values in [{lo[g]}, {hi[g]}]. Check that the tokens come from a tokenizer with the same levels."
                )
        return indices.long()

    # ------------------------------------------------------------------ public API
    def forward(
        self, z: torch.Tensor, return_indices: bool = True, return_dict: bool = True
    ) -> QuantizerOutput | tuple:
        """Quantize ``z`` (channel-first with >= 4 dims, channel-last otherwise).

        The bound, rounding and indices run in fp32 with autocast disabled, whatever the caller's precision, so
        that indices are the same under bf16/fp16 autocast and in fp32. Codes come back in the input dtype.
        """
        cdim = self._channel_dim(z, "quantizer input", self.dim)
        if self.check_finite and not torch.isfinite(z).all():
            raise ValueError(
                f"quantizer input has {int((~torch.isfinite(z)).sum())} non-finite values (NaN/inf) of {z.numel()}: "
                "the encoder diverged. Lower the learning rate, clip gradients, or check the data for NaNs."
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            h = _linear(z.float(), self.project_in, cdim)
            if self.track_running_stats and self.training:
                with torch.no_grad():
                    dims = [d for d in range(h.ndim) if d != cdim % h.ndim]
                    for buf, stat in (
                        (self.running_mean, h.mean(dims)),
                        (self.running_var, h.var(dims, correction=0)),
                    ):
                        buf.mul_(1 - self.momentum).add_(self.momentum * stat.view(1, -1, 1, 1))
            codes, indices = _BoundRound.apply(h, self, cdim, return_indices)
            codes = _linear(codes, self.project_out, cdim).to(z.dtype)
        return QuantizerOutput(codes=codes, indices=indices) if return_dict else (codes, indices)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Codes only (no indices): the cheapest path for continuous use."""
        return self.forward(z, return_indices=False).codes

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices of codes on the grid (``len(levels)`` channels, before ``project_out``); off-grid values snap
        to the nearest level. NaN and values outside ``[-1, 1]`` raise (this check reads back from the device)."""
        cdim = self._channel_dim(codes, "codes", self.codebook_dim)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            c = codes.float()
            q = (c * self._const("half_width", cdim, c)).round_()
            inside = (q >= -self._const("half_width", cdim, q)) & (q <= self._const("top", cdim, q))
            if not bool(inside.all()):
                raise ValueError(
                    f"codes must be finite quantized values in [-1, 1], got {int((~inside).sum())} values that are "
                    f"not (e.g. {c[~inside][0].item()}); pass quantized codes such as quantizer(z).codes."
                )
            return self._q_to_indices(q, cdim)

    def indices_to_digits(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-channel integer digits in ``[0, L - 1]``, shape ``(..., C)`` (channel-last), validated like indices."""
        indices, digits = self._check_indices(indices), []
        for g, group in enumerate(self.group_levels):
            idx = indices[..., g] if self.num_groups > 1 else indices
            digits += [torch.div(idx, math.prod(group[:i]), rounding_mode="floor") % lv for i, lv in enumerate(group)]
        return torch.stack(digits, dim=-1)

    def indices_to_codes(
        self, indices: torch.Tensor, project_out: bool = False, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Exact inverse of the indices: ``(B, H, W[, G]) -> (B, C, H, W)``, ``(B, N[, G]) -> (B, N, C)``.

        Inputs with two or more spatial dims give channel-first codes, one spatial dim gives channel-last codes.
        ``project_out=True`` applies the output projection (when the quantizer has one).
        """
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}.")
        digits = self.indices_to_digits(indices)
        with torch.autocast(device_type=digits.device.type, enabled=False):
            half = self._const("half_width", -1, digits)
            codes = _linear((digits.float() - half) / half, self.project_out if project_out else None, -1)
        return (codes.movedim(-1, 1) if digits.ndim >= 4 else codes).to(dtype)  # >= 2 spatial dims: channel-first

    def group_indices_to_global(self, indices: torch.Tensor) -> torch.Tensor:
        """``(..., G)`` per-group indices -> ``(...)`` global indices (equal to the single-group index)."""
        indices = self._check_indices(indices)
        if self.num_groups == 1:
            return indices
        return sum(indices[..., g] * math.prod(self.group_sizes[:g]) for g in range(self.num_groups))

    def global_to_group_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(...)`` global indices -> ``(..., G)`` per-group indices (inverse of ``group_indices_to_global``)."""
        indices = self._check_indices(indices, grouped=False)
        if self.num_groups == 1:
            return indices
        mults = [math.prod(self.group_sizes[:g]) for g in range(self.num_groups)]
        return torch.stack(
            [torch.div(indices, m, rounding_mode="floor") % s for m, s in zip(mults, self.group_sizes)], -1
        )


def _channel_constants(levels: list[int], bound: str, eps: float) -> dict[str, list[float]]:
    """Per-channel constants, computed in float32 exactly as the official ``GroupFSQ`` does (bit-compatibility)."""
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + eps) / 2 if bound == "tanh" else ((lv - 1) / 2).float()
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).float() if bound == "tanh" else torch.zeros(len(levels))
    width = [float(level // 2) for level in levels]
    return {
        "half_l": half_l.tolist(),
        "offset": offset.tolist(),
        "shift": (offset / half_l).atanh().tolist(),
        "half_width": width,
        "top": [level - 1 - w for level, w in zip(levels, width)],
    }


def _linear(h: torch.Tensor, linear: nn.Linear | None, cdim: int) -> torch.Tensor:
    """``linear`` in fp32 over the channel dim ``cdim``; identity for ``None``."""
    if linear is None:
        return h
    bias = None if linear.bias is None else linear.bias.float()
    if cdim % h.ndim == h.ndim - 1:
        return F.linear(h, linear.weight.float(), bias)
    return F.linear(h.movedim(cdim, -1), linear.weight.float(), bias).movedim(-1, cdim)


# ---------------------------------------------------------------------- codebook statistics (the one implementation)
# Everything here is *discrete*: histograms of codes (whole indices) and of bins (one channel's L levels).
# The continuous view, how uniformly the bounded values fill [-1, 1] before rounding, is in ifsq_hf.analysis
# (ks_distance_to_uniform, density_rmse_to_uniform).


@dataclass
class HistogramStats:
    """Summary of one histogram over ``size`` possible values (a codebook, or the ``L`` bins of one channel).

    Attributes:
        usage: fraction of the ``size`` values that occur at least once.
        entropy_bits: entropy of the histogram in bits.
        entropy_efficiency: ``entropy_bits / log2(size)``; 1.0 when every value is equally frequent.
        perplexity: ``2 ** entropy_bits``; equals ``size`` for a uniform histogram.
    """

    usage: float
    entropy_bits: float
    entropy_efficiency: float
    perplexity: float


def histogram_entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a histogram of counts or probabilities (accumulate counts, then call this once)."""
    p = counts.double() / counts.sum().double().clamp_min(1e-300)
    p = p[p > 0]
    return -(p * p.log2()).sum()


def histogram_stats(counts: torch.Tensor, size: int) -> HistogramStats:
    """Usage, entropy, entropy efficiency and perplexity of ``counts`` (or probabilities) over ``size`` values.

    ``counts`` may hold only the values that occur (e.g. ``torch.unique(..., return_counts=True)``).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}.")
    if counts.numel() > size or not bool((counts >= 0).all()) or not bool(counts.sum() > 0):
        raise ValueError(f"counts must be {size} or fewer non-negative values with a positive sum, got {counts}.")
    entropy = float(histogram_entropy_bits(counts))
    return HistogramStats(
        usage=int((counts > 0).sum()) / size,
        entropy_bits=entropy,
        entropy_efficiency=entropy / math.log2(size) if size > 1 else 1.0,
        perplexity=2.0**entropy,
    )


def _code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of the codes (only the non-zero ones when the codebook is too large for a bincount)."""
    flat = indices.reshape(-1).long()
    if codebook_size <= 2**26:
        return torch.bincount(flat, minlength=codebook_size)
    return torch.unique(flat, return_counts=True)[1]


def code_usage(indices: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the ``codebook_size`` codes that occur in ``indices`` (the "active %" of FSQ examples)."""
    return histogram_stats(_code_histogram(indices, codebook_size), codebook_size).usage


def codebook_perplexity(indices: torch.Tensor, codebook_size: int) -> float:
    """``2 ** entropy_bits`` of the code histogram (= ``exp`` of the entropy in nats)."""
    return histogram_stats(_code_histogram(indices, codebook_size), codebook_size).perplexity


def _is_grouped(quantizer: FiniteScalarQuantizer, indices: torch.Tensor) -> bool:
    """Whether ``indices`` are per-group indices (trailing group dim) of a factorized ``quantizer``."""
    return quantizer.num_groups > 1 and indices.ndim >= 2 and indices.shape[-1] == quantizer.num_groups


def per_dim_bin_histogram(quantizer: FiniteScalarQuantizer, indices: torch.Tensor) -> list[torch.Tensor]:
    """Histogram of the ``L_c`` bins of every channel ``c`` (list of int64 tensors of length ``L_c``).

    ``indices`` are global indices, or per-group indices of a factorized quantizer (trailing group dim).
    """
    if quantizer.num_groups > 1 and not _is_grouped(quantizer, indices):
        indices = quantizer.global_to_group_indices(indices)
    digits = quantizer.indices_to_digits(indices).reshape(-1, quantizer.codebook_dim)
    return [torch.bincount(digits[:, c], minlength=level) for c, level in enumerate(quantizer.levels)]


@dataclass
class UtilizationStats:
    """Discrete codebook utilization of a batch (or an accumulated set) of indices.

    ``code_*`` describe the histogram of whole codes (``codebook_size`` values), ``bin_*`` the histogram of each
    channel's ``L`` bins (one entry per channel). For how uniformly the *continuous* bounded values fill
    ``[-1, 1]`` see :func:`ifsq_hf.analysis.ks_distance_to_uniform`.
    """

    code_usage: float
    code_perplexity: float
    code_entropy_bits: float
    bin_usage: list[float]
    bin_entropy_bits: list[float]
    bin_entropy_efficiency: list[float]

    def as_log_dict(self, prefix: str = "quantizer/") -> dict[str, float]:
        """Flat dict for ``accelerator.log``: code stats, channel means of the bin stats, and each channel's."""
        out = {
            f"{prefix}code_usage": self.code_usage,
            f"{prefix}code_perplexity": self.code_perplexity,
            f"{prefix}code_entropy_bits": self.code_entropy_bits,
            f"{prefix}bin_usage": sum(self.bin_usage) / len(self.bin_usage),
            f"{prefix}bin_entropy_efficiency": sum(self.bin_entropy_efficiency) / len(self.bin_entropy_efficiency),
        }
        for c, (e, u) in enumerate(zip(self.bin_entropy_efficiency, self.bin_usage)):
            out[f"{prefix}dim{c}_bin_entropy_efficiency"] = e
            out[f"{prefix}dim{c}_bin_usage"] = u
        return out


def utilization_stats(
    quantizer: FiniteScalarQuantizer,
    indices: torch.Tensor | None = None,
    code_counts: torch.Tensor | None = None,
    dim_counts: Sequence[torch.Tensor] | None = None,
) -> UtilizationStats:
    """Code and per-channel bin statistics of ``indices`` (global, or per-group with a trailing group dim).

    Cheap enough to log every step (a bincount over the batch). For dataset-level numbers pass accumulated
    ``code_counts`` (length ``codebook_size``) and ``dim_counts`` (one histogram per channel) instead.
    """
    if indices is None and (code_counts is None or dim_counts is None):
        raise ValueError("pass indices, or both code_counts and dim_counts.")
    if code_counts is None:
        glob = quantizer.group_indices_to_global(indices) if _is_grouped(quantizer, indices) else indices
        code_counts = _code_histogram(glob, quantizer.codebook_size)
    dim_counts = per_dim_bin_histogram(quantizer, indices) if dim_counts is None else dim_counts
    code = histogram_stats(code_counts, quantizer.codebook_size)
    bins = [histogram_stats(c, level) for c, level in zip(dim_counts, quantizer.levels)]
    return UtilizationStats(
        code_usage=code.usage,
        code_perplexity=code.perplexity,
        code_entropy_bits=code.entropy_bits,
        bin_usage=[b.usage for b in bins],
        bin_entropy_bits=[b.entropy_bits for b in bins],
        bin_entropy_efficiency=[b.entropy_efficiency for b in bins],
    )
