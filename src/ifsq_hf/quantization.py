"""Finite scalar quantization (FSQ) and iFSQ.

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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FiniteScalarQuantizer",
    "QuantizerOutput",
    "UtilizationStats",
    "code_usage",
    "codebook_perplexity",
    "histogram_entropy_bits",
    "levels_from_bits",
    "per_dim_bin_histogram",
    "utilization_stats",
]

BOUNDS = ("ifsq", "tanh")
_INT64_MAX = 2**63 - 1
_FP32_EXACT = 2**24  # every integer below this is exact in float32, so are sums that stay below it


def levels_from_bits(bits_per_dim: int, num_dims: int) -> list[int]:
    """Levels for ``bits_per_dim`` bits per dimension in the paper's convention: ``2**bits + 1`` (4 bits -> 17).

    The extra level keeps the grid symmetric around 0, which the iFSQ bound requires (odd levels only).
    """
    if not isinstance(bits_per_dim, int) or bits_per_dim < 1:
        raise ValueError(f"bits_per_dim must be an integer >= 1, got {bits_per_dim!r}.")
    if not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be an integer >= 1, got {num_dims!r}.")
    return [2**bits_per_dim + 1] * num_dims


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


def _as_levels(levels: Sequence[int]) -> list[int]:
    if isinstance(levels, torch.Tensor):
        levels = levels.tolist()
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty list of integers >= 2, e.g. [17, 17, 17, 17]; got {levels!r}.")
    out = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int) or level < 2:
            raise ValueError(
                f"every level must be an integer >= 2, got {level!r} in {list(levels)}. "
                "Use levels_from_bits(bits, dims) for the paper's 2**bits + 1 convention."
            )
        out.append(int(level))
    return out


class _STEQuantize(torch.autograd.Function):
    """Bound + round with the straight-through estimator, fused so that backward keeps only the input.

    Autograd of the composite expression would keep every intermediate alive; here backward recomputes the
    bound's derivative from ``z`` in a few in-place passes. Returns ``(codes, q)`` where ``q`` holds the centred
    integer levels (as floats, not differentiable).
    """

    @staticmethod
    def forward(ctx, z, quantizer: FiniteScalarQuantizer, shape_like: tuple[int, ...]):
        q = quantizer._bound(z, shape_like, inplace=True).round_()
        codes = q / quantizer._const("half_width", shape_like, z)
        ctx.quantizer = quantizer
        ctx.shape_like = shape_like
        ctx.save_for_backward(z)
        ctx.mark_non_differentiable(q)
        return codes, q

    @staticmethod
    def backward(ctx, grad_codes, grad_q):
        (z,) = ctx.saved_tensors
        return ctx.quantizer._bound_backward(z, grad_codes, ctx.shape_like), None, None


class FiniteScalarQuantizer(nn.Module):
    """FSQ / iFSQ quantizer.

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
        momentum: update rate of the running statistics.
        check_finite: raise a ``ValueError`` when the input holds NaN/inf (one extra read of the input).
        projection_bias: bias of the optional projections.
        use_compile: run bound, rounding and indices as one ``torch.compile``-d kernel (fwd and bwd), about
            3-5x less memory traffic than eager on large tensors; the first call compiles.
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
        check_finite: bool = True,
        projection_bias: bool = True,
        use_compile: bool = False,
    ):
        super().__init__()
        levels = _as_levels(levels)
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}.")
        if bound == "ifsq":
            even = [level for level in levels if level % 2 == 0]
            if even:
                raise ValueError(
                    f"the iFSQ bound needs odd levels (a grid symmetric around 0), got even levels {even} in {levels}. "
                    "Use 2**bits + 1 levels (e.g. 17 for 4 bits, see levels_from_bits) or bound='tanh'."
                )
            if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
                raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}.")
        too_big = [level for level in levels if level > _FP32_EXACT]
        if too_big:
            raise ValueError(f"levels above 2**24 cannot be represented exactly in float32, got {too_big}.")
        if bound == "tanh":
            wide = [level for level in levels if (level - 1) * eps >= 1]
            if wide:
                raise ValueError(
                    f"the tanh bound widens the range by eps={eps}, which pushes levels {wide} past their last bin "
                    "((L - 1) * eps must stay below 1). Lower eps or use bound='ifsq' (odd levels)."
                )
        codebook_dim = len(levels)
        if factorized_dims is None:
            factorized_dims = [codebook_dim]
        factorized_dims = [int(d) for d in factorized_dims]
        if any(d < 1 for d in factorized_dims) or sum(factorized_dims) != codebook_dim:
            raise ValueError(
                f"factorized_dims must be positive and sum to len(levels) = {codebook_dim}, got {factorized_dims}."
            )

        self.levels = levels
        self.bound = bound
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.codebook_dim = codebook_dim
        self.dim = codebook_dim if dim is None else int(dim)
        self.factorized_dims = factorized_dims
        self.check_finite = check_finite
        self.momentum = float(momentum)

        self.group_levels: list[list[int]] = []
        start = 0
        for d in factorized_dims:
            self.group_levels.append(levels[start : start + d])
            start += d
        self.group_sizes = [math.prod(g) for g in self.group_levels]
        self.codebook_size = math.prod(levels)
        if self.codebook_size > _INT64_MAX:
            raise ValueError(
                f"prod(levels) = {self.codebook_size} does not fit in int64; use fewer levels or channels "
                "(or factorized_dims, and keep the per-group indices)."
            )
        self._uniform = len(set(levels)) == 1
        self._level_consts = [self._channel_consts(level) for level in levels]
        self._has_offset = bound == "tanh" and any(level % 2 == 0 for level in levels)
        half = (levels[0] - 1) / 2
        self._half_l_pow2 = self._uniform and bound == "ifsq" and half >= 1 and math.log2(half).is_integer()
        self._cache: dict = {}
        self.use_compile = use_compile
        self._compiled = None

        if self.dim != codebook_dim:
            self.project_in = nn.Linear(self.dim, codebook_dim, bias=projection_bias)
            self.project_out = nn.Linear(codebook_dim, self.dim, bias=projection_bias)
        else:
            self.project_in = None
            self.project_out = None

        self.track_running_stats = track_running_stats
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(1, codebook_dim, 1, 1))
            self.register_buffer("running_var", torch.ones(1, codebook_dim, 1, 1))

    # ------------------------------------------------------------------ constructors / properties
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

    # ------------------------------------------------------------------ per-channel constants
    def _const(self, name: str, shape_like: tuple[int, ...], ref: torch.Tensor):
        """A per-channel constant: a Python float when all levels are equal, else a broadcastable fp32 tensor."""
        if self._uniform:
            return self._level_consts[0][name]
        key = (name, shape_like, ref.device)
        t = self._cache.get(key)
        if t is None:
            values = [consts[name] for consts in self._level_consts]
            t = torch.tensor(values, dtype=torch.float32, device=ref.device).view(shape_like)
            if not _is_compiling():
                self._cache[key] = t
        return t

    def _channel_consts(self, level: int) -> dict:
        f32 = torch.float32
        # Computed in float32 exactly as the official GroupFSQ does, so the "tanh" bound is bit-compatible.
        lv = torch.tensor(level, dtype=torch.int32)
        if self.bound == "tanh":
            half_l = (lv - 1) * (1 + self.eps) / 2
            offset = torch.tensor(0.5 if level % 2 == 0 else 0.0, dtype=f32)
            shift = (offset / half_l).atanh()
        else:
            half_l = ((lv - 1) / 2).to(f32)
            offset = torch.tensor(0.0, dtype=f32)
            shift = torch.tensor(0.0, dtype=f32)
        return {
            "half_l": half_l.item(),
            "offset": offset.item(),
            "shift": shift.item(),
            "half_width": float(level // 2),
            "levels": float(level),
        }

    # ------------------------------------------------------------------ core math
    def _bound(self, z: torch.Tensor, shape_like: tuple[int, ...], inplace: bool) -> torch.Tensor:
        """The bound before rounding, on fp32 ``z``; ``inplace`` reuses its first temporary (not differentiable)."""
        half_l = self._const("half_l", shape_like, z)
        if self.bound == "ifsq":
            # (2 * sigmoid(alpha * z) - 1) * (L - 1) / 2, in the official order of operations.
            if not inplace:
                return (2.0 * torch.sigmoid(self.alpha * z) - 1.0) * half_l
            y = torch.sigmoid_(z * self.alpha)
            if self._half_l_pow2:  # 2y*h - h == (2y - 1)*h bit for bit when h is a power of two
                return y.mul_(2.0 * half_l).sub_(half_l)
            return y.mul_(2.0).sub_(1.0).mul_(half_l)
        # Vanilla FSQ: tanh(z + shift) * half_l - offset (shift/offset are zero for odd levels).
        y = z + self._const("shift", shape_like, z) if self._has_offset else z
        if not inplace:
            y = torch.tanh(y) * half_l
            return y - self._const("offset", shape_like, z) if self._has_offset else y
        y = torch.tanh_(y) if self._has_offset else torch.tanh(y)
        y = y.mul_(half_l)
        return y.sub_(self._const("offset", shape_like, z)) if self._has_offset else y

    def _bound_backward(self, z: torch.Tensor, grad: torch.Tensor, shape_like: tuple[int, ...]) -> torch.Tensor:
        """``grad * d(codes)/dz`` of the straight-through quantizer, i.e. ``grad * bound'(z) / (L // 2)``."""
        scale = self._const("half_l", shape_like, z) / self._const("half_width", shape_like, z)
        if self.bound == "ifsq":
            s = torch.sigmoid_(z * self.alpha)
            out = grad * s
            out.addcmul_(out, s, value=-1.0)  # grad * s * (1 - s)
            return out.mul_(scale * (2.0 * self.alpha))  # d/dz (2 sigmoid(a z) - 1) = 2 a s (1 - s)
        t = torch.tanh_(z + self._const("shift", shape_like, z)) if self._has_offset else torch.tanh(z)
        out = grad * t
        out = torch.addcmul(grad, out, t, value=-1.0)  # grad * (1 - t^2)
        return out.mul_(scale)

    def _quantize_reference(self, h: torch.Tensor, shape_like: tuple[int, ...], cdim: int, return_indices: bool):
        """Pure-function form (straight-through via ``detach``) used for ``torch.compile``: one fused kernel."""
        b = self._bound(h, shape_like, inplace=False)
        q = torch.round(b).detach()
        codes = (b + (q - b).detach()) / self._const("half_width", shape_like, h)
        return codes, (self._q_to_indices(q, cdim) if return_indices else None)

    @staticmethod
    def _shape_like(ndim: int, channel_dim: int) -> tuple[int, ...]:
        shape = [1] * ndim
        shape[channel_dim] = -1
        return tuple(shape)

    def _layout(self, x: torch.Tensor, what: str) -> int:
        """Channel dim of ``x``: 1 for channel-first (ndim >= 4), -1 for channel-last (ndim 2 or 3)."""
        if x.ndim < 2:
            raise ValueError(
                f"{what} must have a batch and a channel dim: (B, C, H, W), (B, N, C) or (N, C); got shape "
                f"{tuple(x.shape)}."
            )
        return 1 if x.ndim >= 4 else -1

    # ------------------------------------------------------------------ public API
    def forward(
        self, z: torch.Tensor, return_indices: bool = True, return_dict: bool = True
    ) -> QuantizerOutput | tuple:
        """Quantize ``z`` (channel-first with >= 4 dims, channel-last otherwise).

        The bound, rounding and indices run in fp32 with autocast disabled, whatever the caller's precision, so
        that indices are the same under bf16/fp16 autocast and in fp32. Codes come back in the input dtype.
        """
        if not torch.is_tensor(z) or not torch.is_floating_point(z):
            raise ValueError(
                f"quantizer input must be a floating-point tensor, got "
                f"{type(z).__name__ if not torch.is_tensor(z) else z.dtype}; convert it with .float()."
            )
        cdim = self._layout(z, "quantizer input")
        if z.shape[cdim] != self.dim:
            where = "dim 1 (channel-first)" if cdim == 1 else "the last dim (channel-last)"
            raise ValueError(
                f"quantizer expects {self.dim} channels in {where}, got shape {tuple(z.shape)}. Pass "
                f"dim={z.shape[cdim]} to add a projection, or move the channels (4+ dim inputs are channel-first, "
                "2-3 dim inputs channel-last)."
            )
        # A sum is one read of the input and is non-finite iff an element is (or it overflowed: recount).
        if self.check_finite and not _is_compiling() and not torch.isfinite(z.sum(dtype=torch.float32)):
            bad = int((~torch.isfinite(z)).sum())
            if bad:
                raise ValueError(
                    f"quantizer input has {bad} non-finite values (NaN/inf) out of {z.numel()}: the encoder "
                    "diverged. Lower the learning rate, enable gradient clipping, or check the data for NaNs."
                )
        orig_dtype = z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            h = z.float()
            if self.project_in is not None:
                h = self._project(h, self.project_in, cdim)
            if self.track_running_stats and self.training:
                self._update_running_stats(h.detach(), cdim)
            shape_like = self._shape_like(h.ndim, cdim)
            if self.use_compile and not _is_compiling():
                if self._compiled is None:
                    self._compiled = torch.compile(self._quantize_reference, dynamic=True)
                codes, indices = self._compiled(h, shape_like, cdim, return_indices)
            elif torch.is_grad_enabled() and h.requires_grad:
                codes, q = _STEQuantize.apply(h, self, shape_like)
                indices = self._q_to_indices(q, cdim) if return_indices else None
            else:
                q = self._bound(h, shape_like, inplace=True).round_()
                indices = self._q_to_indices(q, cdim) if return_indices else None
                codes = q.div_(self._const("half_width", shape_like, q))
            if self.project_out is not None:
                codes = self._project(codes, self.project_out, cdim)
        codes = codes.to(orig_dtype)
        if not return_dict:
            return (codes, indices)
        return QuantizerOutput(codes=codes, indices=indices)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Codes only (no indices): the cheapest path for continuous use."""
        return self.forward(z, return_indices=False).codes

    @staticmethod
    def _project(h: torch.Tensor, linear: nn.Linear, cdim: int) -> torch.Tensor:
        weight = linear.weight.float()
        bias = None if linear.bias is None else linear.bias.float()
        if cdim == -1:
            return F.linear(h, weight, bias)
        return F.linear(h.movedim(1, -1), weight, bias).movedim(-1, 1)

    @torch.no_grad()
    def _update_running_stats(self, h: torch.Tensor, cdim: int) -> None:
        dims = [d for d in range(h.ndim) if d != (cdim % h.ndim)]
        mean = h.mean(dim=dims).view(1, -1, 1, 1)
        var = h.var(dim=dims, unbiased=False).view(1, -1, 1, 1)
        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
        self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)

    def _q_to_indices(self, q: torch.Tensor, cdim: int) -> torch.Tensor:
        """Exact int64 indices from centred integer levels ``q`` (a float tensor holding integers).

        Horner's scheme over the channels of each group, most significant first:
        ``index = ((q_{n-1} L_{n-2} + q_{n-2}) L_{n-3} + ...) + q_0 + sum_c (L_c // 2) prod(L_{<c})``.
        Groups whose size is at most 2**24 stay in float32, where every partial result is an exactly
        representable integer (elementwise ops only, so TF32 cannot round); larger groups use int64.
        """
        cdim = cdim % q.ndim
        out = []
        start = 0
        for g, group in enumerate(self.group_levels):
            exact_f32 = self.group_sizes[g] <= _FP32_EXACT
            channels = range(start, start + len(group))
            acc = None
            for c in reversed(channels):
                qc = q.select(cdim, c)
                if not exact_f32:
                    qc = qc.to(torch.int64)
                acc = qc if acc is None else torch.add(qc, acc, alpha=self.levels[c])
            offset = sum((level // 2) * math.prod(group[:i]) for i, level in enumerate(group))
            acc = acc + offset
            out.append(acc if acc.dtype == torch.int64 else acc.to(torch.int64))
            start += len(group)
        return out[0] if self.num_groups == 1 else torch.stack(out, dim=-1)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices of codes that lie on the grid (``len(levels)`` channels, before ``project_out``)."""
        if not torch.is_floating_point(codes):
            raise ValueError(f"codes must be a floating-point tensor, got {codes.dtype}.")
        cdim = self._layout(codes, "codes")
        if codes.shape[cdim] != self.codebook_dim:
            raise ValueError(
                f"codes must have len(levels) = {self.codebook_dim} channels, got shape {tuple(codes.shape)}."
            )
        shape_like = self._shape_like(codes.ndim, cdim)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            q = (codes.float() * self._const("half_width", shape_like, codes)).round_()
            lo = -self._const("half_width", shape_like, codes)
            hi = self._const("levels", shape_like, codes) - 1 + lo
            if bool(((q < lo) | (q > hi)).any()):
                raise ValueError("codes lie outside [-1, 1]; pass quantized codes (e.g. quantizer(z).codes).")
            return self._q_to_indices(q, cdim)

    def indices_to_codes(
        self, indices: torch.Tensor, project_out: bool = False, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Exact inverse of the indices: ``(B, H, W[, G]) -> (B, C, H, W)``, ``(B, N[, G]) -> (B, N, C)``.

        Inputs with two or more spatial dims give channel-first codes, one spatial dim gives channel-last codes.
        ``project_out=True`` applies the output projection (when the quantizer has one).
        """
        indices = self._check_indices(indices)
        lead = indices.shape[:-1] if self.num_groups > 1 else indices.shape
        with torch.autocast(device_type=indices.device.type, enabled=False):
            digits = []
            for g, group in enumerate(self.group_levels):
                idx = indices[..., g] if self.num_groups > 1 else indices
                idx = idx.unsqueeze(-1)
                basis = torch.tensor(
                    [math.prod(group[:i]) for i in range(len(group))], dtype=torch.int64, device=indices.device
                )
                levels = torch.tensor(group, dtype=torch.int64, device=indices.device)
                digits.append(torch.div(idx, basis, rounding_mode="floor").remainder_(levels))
            d = torch.cat(digits, dim=-1) if len(digits) > 1 else digits[0]
            half = torch.tensor([level // 2 for level in self.levels], dtype=torch.int64, device=indices.device)
            codes = (d - half).to(torch.float32) / half.to(torch.float32)
            if project_out and self.project_out is not None:
                codes = F.linear(codes, self.project_out.weight.float(), _opt_float(self.project_out.bias))
        if len(lead) >= 3:  # (B, *spatial) with >= 2 spatial dims -> channel-first
            codes = codes.movedim(-1, 1)
        return codes.to(dtype)

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(indices):
            raise ValueError(f"indices must be a tensor, got {type(indices).__name__}.")
        if indices.dtype in (torch.bool,) or torch.is_floating_point(indices) or torch.is_complex(indices):
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}; cast with .long().")
        min_ndim = 2 if self.num_groups > 1 else 1
        if indices.ndim < min_ndim:
            raise ValueError(f"indices need at least {min_ndim} dims, got shape {tuple(indices.shape)}.")
        if self.num_groups > 1 and indices.shape[-1] != self.num_groups:
            raise ValueError(
                f"factorized indices need a trailing group dim of size {self.num_groups}, got shape "
                f"{tuple(indices.shape)}. Convert global indices with global_to_group_indices()."
            )
        indices = indices.long()
        if indices.numel():
            if self.num_groups == 1:
                lo, hi = int(indices.min()), int(indices.max())
                if lo < 0 or hi >= self.codebook_size:
                    raise ValueError(
                        f"indices must lie in [0, {self.codebook_size - 1}] for levels {self.levels}, got values in "
                        f"[{lo}, {hi}]. Check that the tokens come from a tokenizer with the same levels."
                    )
            else:
                flat = indices.reshape(-1, self.num_groups)
                lo, hi = flat.amin(0).tolist(), flat.amax(0).tolist()
                for g, size in enumerate(self.group_sizes):
                    if lo[g] < 0 or hi[g] >= size:
                        raise ValueError(
                            f"group {g} indices must lie in [0, {size - 1}] (group levels {self.group_levels[g]}), "
                            f"got values in [{lo[g]}, {hi[g]}]."
                        )
        return indices

    def group_indices_to_global(self, indices: torch.Tensor) -> torch.Tensor:
        """``(..., G)`` per-group indices -> ``(...)`` global indices (equal to the single-group index)."""
        indices = self._check_indices(indices)
        if self.num_groups == 1:
            return indices
        mults = torch.tensor(
            [math.prod(self.group_sizes[:g]) for g in range(self.num_groups)], dtype=torch.int64, device=indices.device
        )
        return (indices * mults).sum(dim=-1)

    def global_to_group_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(...)`` global indices -> ``(..., G)`` per-group indices (inverse of ``group_indices_to_global``)."""
        if self.num_groups == 1:
            return self._check_indices(indices)
        if torch.is_floating_point(indices) or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}; cast with .long().")
        indices = indices.long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"global indices must lie in [0, {self.codebook_size - 1}], got values in "
                f"[{int(indices.min())}, {int(indices.max())}]."
            )
        mults = torch.tensor(
            [math.prod(self.group_sizes[:g]) for g in range(self.num_groups)], dtype=torch.int64, device=indices.device
        )
        sizes = torch.tensor(self.group_sizes, dtype=torch.int64, device=indices.device)
        return torch.div(indices.unsqueeze(-1), mults, rounding_mode="floor").remainder_(sizes)

    def indices_to_digits(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-channel integer digits in ``[0, L - 1]``, shape ``(..., C)`` (channel-last)."""
        codes = self.indices_to_codes(indices)
        if codes.ndim >= 4:
            codes = codes.movedim(1, -1)
        half = torch.tensor([level // 2 for level in self.levels], dtype=torch.float32, device=codes.device)
        return (codes * half + half).round().long()


def _opt_float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


# ---------------------------------------------------------------------- utilization statistics
@dataclass
class UtilizationStats:
    """Codebook utilization of a batch (or an accumulated set) of indices.

    Attributes:
        usage: fraction of the codebook that occurs at least once.
        perplexity: ``exp(H)`` of the code histogram; equals the codebook size for a uniform histogram.
        entropy_bits: entropy of the code histogram in bits.
        dim_entropy_bits: per-channel entropy of the digit histogram in bits.
        dim_entropy_efficiency: ``dim_entropy_bits / log2(L)`` per channel (1.0 = every bin equally used).
        dim_usage: fraction of the ``L`` bins of each channel that occur.
    """

    usage: float
    perplexity: float
    entropy_bits: float
    dim_entropy_bits: list[float]
    dim_entropy_efficiency: list[float]
    dim_usage: list[float]

    def as_log_dict(self, prefix: str = "quantizer/") -> dict[str, float]:
        """Flat dict for ``accelerator.log``."""
        out = {
            f"{prefix}usage": self.usage,
            f"{prefix}perplexity": self.perplexity,
            f"{prefix}entropy_bits": self.entropy_bits,
        }
        for c, (e, u) in enumerate(zip(self.dim_entropy_efficiency, self.dim_usage)):
            out[f"{prefix}dim{c}_entropy_efficiency"] = e
            out[f"{prefix}dim{c}_usage"] = u
        return out


def histogram_entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a histogram of counts (accumulate counts over batches, then call this once)."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return -(p * p.log2()).sum()


def _code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of the codes that occur (only non-zero entries when the codebook is too large for a bincount)."""
    flat = indices.reshape(-1).long()
    if codebook_size <= 2**26:
        return torch.bincount(flat, minlength=codebook_size)
    return torch.unique(flat, return_counts=True)[1]


def code_usage(indices: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the ``codebook_size`` codes that occur in ``indices`` (the "active %" of FSQ examples)."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}.")
    return int((_code_histogram(indices, codebook_size) > 0).sum()) / codebook_size


def codebook_perplexity(indices: torch.Tensor, codebook_size: int) -> float:
    """``exp`` of the entropy (nats) of the code histogram."""
    return float(torch.exp2(histogram_entropy_bits(_code_histogram(indices, codebook_size))))


def per_dim_bin_histogram(quantizer: FiniteScalarQuantizer, indices: torch.Tensor) -> list[torch.Tensor]:
    """Histogram of the ``L_c`` bins of every channel ``c`` (list of int64 tensors of length ``L_c``)."""
    digits = quantizer.indices_to_digits(indices).reshape(-1, quantizer.codebook_dim)
    return [torch.bincount(digits[:, c], minlength=level) for c, level in enumerate(quantizer.levels)]


def utilization_stats(
    quantizer: FiniteScalarQuantizer,
    indices: torch.Tensor,
    code_counts: torch.Tensor | None = None,
    dim_counts: Sequence[torch.Tensor] | None = None,
) -> UtilizationStats:
    """Usage, perplexity and per-channel bin entropy of ``indices``.

    Cheap enough to log every step (a bincount over the batch). For dataset-level numbers pass accumulated
    ``code_counts`` (length ``codebook_size``) and ``dim_counts`` instead of recomputing from all indices.
    """
    if quantizer.num_groups > 1 and indices.shape[-1] == quantizer.num_groups:
        global_idx = quantizer.group_indices_to_global(indices)
    else:
        global_idx = indices
    counts = code_counts if code_counts is not None else _code_histogram(global_idx, quantizer.codebook_size)
    dim_counts = dim_counts if dim_counts is not None else per_dim_bin_histogram(quantizer, indices)
    entropy = histogram_entropy_bits(counts)
    dim_entropy = [float(histogram_entropy_bits(c)) for c in dim_counts]
    return UtilizationStats(
        usage=int((counts > 0).sum()) / quantizer.codebook_size,
        perplexity=float(torch.exp2(entropy)),
        entropy_bits=float(entropy),
        dim_entropy_bits=dim_entropy,
        dim_entropy_efficiency=[e / math.log2(level) for e, level in zip(dim_entropy, quantizer.levels)],
        dim_usage=[int((c > 0).sum()) / level for c, level in zip(dim_counts, quantizer.levels)],
    )
