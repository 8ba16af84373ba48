import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from ifsq_hf import (
    FiniteScalarQuantizer,
    code_usage,
    codebook_perplexity,
    levels_from_bits,
    per_dim_bin_histogram,
    utilization_stats,
)
from ifsq_hf.quantization import histogram_stats

# ---------------------------------------------------------------- references written from the paper/spec formulas


def official_tanh_bound(z, levels, eps=1e-3):
    """Vanilla FSQ bound as the official GroupFSQ computes it (float32, int32 levels)."""
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = (offset / half_l).atanh()
    return (z + shift).tanh() * half_l - offset


def official_ifsq_bound(z, levels, alpha=1.6):
    lv = torch.tensor(levels, dtype=torch.int32)
    return (2.0 * torch.sigmoid(alpha * z) - 1.0) * ((lv - 1) / 2)


def reference_codes(bounded, levels):
    return bounded.round() / torch.tensor([level // 2 for level in levels], dtype=torch.float32)


def reference_index(digits, levels):
    """Little-endian mixed radix in Python integers (channel 0 least significant)."""
    idx, mult = 0, 1
    for d, level in zip(digits, levels):
        idx += int(d) * mult
        mult *= level
    return idx


# ---------------------------------------------------------------- bounds


def test_ifsq_release_config_closed_form():
    q = FiniteScalarQuantizer([17] * 4)
    z = torch.randn(4, 4, 16, 16) * 2
    out = q(z)
    expected = torch.round(official_ifsq_bound(z.movedim(1, -1), [17] * 4)).movedim(-1, 1) / 8
    assert torch.equal(out.codes, expected)
    # round(8 tanh(0.8 z)) / 8 up to float ties: 2σ(2x)-1 and tanh(x) agree to an ulp
    closed = torch.round(8 * torch.tanh(0.8 * z)) / 8
    assert (closed != out.codes).float().mean() < 1e-3
    assert set(out.codes.unique().mul(8).round().long().tolist()) <= set(range(-8, 9))


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 5, 5, 5], [2, 3, 4], [17, 17, 17, 17], [8, 8, 8, 6, 5]])
def test_tanh_bound_bit_compatible_with_official(levels):
    q = FiniteScalarQuantizer(levels, bound="tanh")
    z = torch.randn(64, 9, len(levels)) * 3
    expected = reference_codes(official_tanh_bound(z, levels), levels)
    assert torch.equal(q(z).codes, expected)


@pytest.mark.parametrize("alpha", [1.0, 1.6, 2.0])
def test_ifsq_bound_matches_formula_for_mixed_odd_levels(alpha):
    levels = [3, 5, 9, 17, 33]
    q = FiniteScalarQuantizer(levels, alpha=alpha)
    z = torch.randn(128, len(levels)) * 2
    assert torch.equal(q(z).codes, reference_codes(official_ifsq_bound(z, levels, alpha), levels))


def test_even_levels_use_the_official_asymmetric_grid():
    q = FiniteScalarQuantizer([4], bound="tanh")
    codes = q(torch.linspace(-20, 20, 1001)[:, None]).codes.unique()
    assert codes.tolist() == [-1.0, -0.5, 0.0, 0.5]


def test_from_bits_uses_two_to_the_bits_plus_one():
    assert levels_from_bits(4, 4) == [17, 17, 17, 17]
    q = FiniteScalarQuantizer.from_bits(4, 4)
    assert q.levels == [17] * 4 and q.codebook_size == 83521
    assert math.isclose(q.bits_per_dim, math.log2(17))


# ---------------------------------------------------------------- indices


@st.composite
def level_sets(draw):
    n = draw(st.integers(1, 6))
    odd = draw(st.booleans())
    if odd:
        levels = [draw(st.integers(1, 20)) * 2 + 1 for _ in range(n)]
    else:
        levels = draw(st.lists(st.integers(2, 40), min_size=n, max_size=n))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
    dims = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    return levels, ("ifsq" if odd else "tanh"), dims


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=level_sets(),
    shape=st.sampled_from([(3,), (2, 7), (2, 0), (2, 3, 4), (2, 0, 5), (1, 2, 3, 4)]),
    scale=st.floats(0.1, 5.0),
)
def test_round_trip_and_ranges(spec, shape, scale):
    levels, bound, dims = spec
    q = FiniteScalarQuantizer(levels, bound=bound, factorized_dims=dims)
    c = len(levels)
    # (batch, *spatial): two or more spatial dims -> channel-first, otherwise channel-last
    shape = (shape[0], c, *shape[1:]) if len(shape) >= 3 else (*shape, c)
    z = torch.randn(shape) * scale
    out = q(z)
    assert out.indices.dtype == torch.int64
    if q.num_groups > 1:
        assert out.indices.shape[-1] == q.num_groups
        assert all(
            (out.indices[..., g] >= 0).all() and (out.indices[..., g] < s).all() for g, s in enumerate(q.group_sizes)
        )
        glob = q.group_indices_to_global(out.indices)
        assert torch.equal(q.global_to_group_indices(glob), out.indices)
        single = FiniteScalarQuantizer(levels, bound=bound)
        assert torch.equal(single(z).indices, glob)
    else:
        assert ((out.indices >= 0) & (out.indices < q.codebook_size)).all()
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    assert torch.equal(q.codes_to_indices(out.codes), out.indices)


@pytest.mark.parametrize("level", [3, 5, 9, 17, 33, 65, 129, 257])
def test_indices_exact_for_large_levels(level):
    """The official fp32 path is wrong from 65 levels up; ours matches Python integer arithmetic."""
    levels = [level] * 4
    q = FiniteScalarQuantizer(levels)
    z = torch.randn(4096, 4) * 2
    out = q(z)
    digits = (out.codes * (level // 2) + level // 2).round().long()
    expected = torch.tensor([reference_index(row, levels) for row in digits.tolist()])
    assert torch.equal(out.indices, expected)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)


def test_indices_exact_near_int64_limit():
    levels = [2**20 + 1] * 3  # 2**60-ish codes: int64 path
    q = FiniteScalarQuantizer(levels)
    z = torch.randn(512, 3) * 3
    out = q(z)
    digits = (out.codes.double() * (levels[0] // 2) + levels[0] // 2).round().long()
    expected = torch.tensor([reference_index(row, levels) for row in digits.tolist()])
    assert torch.equal(out.indices, expected)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    extremes = torch.tensor([0, q.codebook_size - 1])
    assert torch.equal(q.codes_to_indices(q.indices_to_codes(extremes)), extremes)


def test_channel_zero_is_least_significant():
    q = FiniteScalarQuantizer([3, 5])
    # digit of channel 0 = 2 (code +1), channel 1 = 0 (code -1) -> index 2
    assert q.codes_to_indices(torch.tensor([[1.0, -1.0]])).item() == 2
    assert q.codes_to_indices(torch.tensor([[-1.0, -0.5]])).item() == 3  # channel 1 digit 1 -> 1 * 3


def test_factorized_groups_match_official_layout():
    q = FiniteScalarQuantizer([17] * 4, factorized_dims=[2, 2])
    assert q.group_sizes == [289, 289]
    z = torch.randn(2, 4, 16, 16)
    out = q(z)
    assert out.indices.shape == (2, 16, 16, 2)
    assert torch.equal(q.group_indices_to_global(out.indices), FiniteScalarQuantizer([17] * 4)(z).indices)


def test_shapes_and_layouts():
    q = FiniteScalarQuantizer([5, 5, 5])
    z = torch.randn(2, 3, 4, 6)
    out = q(z)
    assert out.codes.shape == z.shape and out.indices.shape == (2, 4, 6)
    assert q.indices_to_codes(out.indices).shape == (2, 3, 4, 6)
    zl = z.flatten(2).transpose(1, 2)  # (B, N, C)
    outl = q(zl)
    assert outl.indices.shape == (2, 24) and torch.equal(outl.indices, out.indices.flatten(1))
    assert torch.equal(q.indices_to_codes(outl.indices), outl.codes)
    video = torch.randn(1, 3, 2, 4, 4)
    assert q(video).indices.shape == (1, 2, 4, 4)
    assert q(torch.randn(7, 3)).indices.shape == (7,)
    codes, idx = q(z, return_dict=False)
    assert torch.equal(codes, out.codes) and torch.equal(idx, out.indices)
    assert q(z, return_indices=False).indices is None


def test_projection_when_dim_differs():
    q = FiniteScalarQuantizer([5, 5, 5, 5], dim=16)
    z = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = q(z)
    assert out.codes.shape == z.shape and out.indices.shape == (2, 4, 4)
    out.codes.square().sum().backward()
    assert q.project_in.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0
    assert q.indices_to_codes(out.indices, project_out=True).shape == (2, 16, 4, 4)
    assert torch.allclose(q.indices_to_codes(out.indices, project_out=True), out.codes.detach(), atol=1e-6)


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_indices_identical_under_autocast(dtype):
    q = FiniteScalarQuantizer([17] * 4)
    z = torch.randn(8, 4, 16, 16) * 2
    ref = q(z)
    with torch.autocast("cpu", dtype=dtype):
        out = q(z)
    assert torch.equal(out.indices, ref.indices)
    assert out.codes.dtype == torch.float32 and torch.equal(out.codes, ref.codes)


def test_low_precision_input_keeps_dtype_and_quantizes_in_fp32():
    q = FiniteScalarQuantizer([17] * 4, dim=8)
    z = torch.randn(2, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q.to(torch.bfloat16)(z)
    assert out.codes.dtype == torch.bfloat16
    ref = FiniteScalarQuantizer([17] * 4, dim=8)
    ref.load_state_dict({k: v.float() for k, v in q.state_dict().items()})
    assert torch.equal(ref(z.float()).indices, out.indices)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("bound,levels", [("ifsq", [17, 9, 5]), ("tanh", [8, 5, 3]), ("tanh", [17, 17, 17])])
def test_straight_through_gradient_matches_autograd_of_formula(bound, levels):
    q = FiniteScalarQuantizer(levels, bound=bound)
    z = (torch.randn(32, 5, len(levels)) * 2).requires_grad_()
    w = torch.randn(32, 5, len(levels))
    (q(z).codes * w).sum().backward()
    z2 = z.detach().clone().requires_grad_()
    b = official_ifsq_bound(z2, levels) if bound == "ifsq" else official_tanh_bound(z2, levels)
    ste = b + (b.round() - b).detach()
    (ste / torch.tensor([lv // 2 for lv in levels]) * w).sum().backward()
    assert torch.allclose(z.grad, z2.grad, rtol=1e-5, atol=1e-6)


def test_ifsq_gradient_is_0p8_sech_squared_for_17_levels():
    q = FiniteScalarQuantizer([17])
    z = torch.linspace(-4, 4, 101)[:, None].requires_grad_()
    q(z).codes.sum().backward()
    assert torch.allclose(z.grad, 0.8 / torch.cosh(0.8 * z.detach()) ** 2, atol=1e-6)


# ---------------------------------------------------------------- running statistics


def test_running_stats_monitor_only():
    q = FiniteScalarQuantizer([17] * 4, track_running_stats=True)
    assert set(q.state_dict()) == {"running_mean", "running_var"}
    z = torch.randn(4, 4, 8, 8) * 3 + 1
    q.train()
    out_train = q(z)
    assert torch.allclose(q.running_mean.flatten(), 0.1 * z.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(q.running_var.flatten(), 0.9 + 0.1 * z.var((0, 2, 3), unbiased=False), atol=1e-5)
    q.eval()
    mean = q.running_mean.clone()
    out_eval = q(z)
    assert torch.equal(q.running_mean, mean)
    assert torch.equal(out_train.codes, out_eval.codes)


# ---------------------------------------------------------------- utilization


def test_utilization_uniform_and_collapsed():
    q = FiniteScalarQuantizer([3, 5])
    all_codes = torch.arange(15)
    stats = utilization_stats(q, all_codes)
    assert stats.code_usage == 1.0 and math.isclose(stats.code_perplexity, 15, rel_tol=1e-9)
    assert all(math.isclose(e, 1.0) for e in stats.bin_entropy_efficiency)
    collapsed = utilization_stats(q, torch.full((100,), 7))
    assert math.isclose(collapsed.code_usage, 1 / 15) and math.isclose(collapsed.code_perplexity, 1.0)
    assert collapsed.bin_usage == [1 / 3, 1 / 5] and collapsed.bin_entropy_bits == [0.0, 0.0]
    assert code_usage(torch.tensor([0, 0, 1]), 4) == 0.5
    assert math.isclose(codebook_perplexity(torch.tensor([0, 1, 2, 3]), 4), 4.0)
    logs = stats.as_log_dict()
    assert logs["quantizer/code_usage"] == 1.0 and logs["quantizer/bin_entropy_efficiency"] == pytest.approx(1.0)
    assert set(logs) >= {"quantizer/dim0_bin_usage", "quantizer/dim1_bin_entropy_efficiency"}


def test_histogram_stats_is_the_one_definition():
    stats = histogram_stats(torch.tensor([3, 1, 0, 0]), 4)
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    entropy = float(-(p * p.log2()).sum())
    assert stats.usage == 0.5 and stats.entropy_bits == pytest.approx(entropy)
    assert stats.entropy_efficiency == pytest.approx(entropy / 2) and stats.perplexity == pytest.approx(2**entropy)
    # probabilities give the same numbers as counts; a histogram of only the non-zero counts too
    assert histogram_stats(torch.tensor([0.75, 0.25, 0.0, 0.0]), 4) == stats
    assert histogram_stats(torch.tensor([3, 1]), 4) == stats
    assert histogram_stats(torch.tensor([5]), 1).entropy_efficiency == 1.0
    with pytest.raises(ValueError, match="positive sum"):
        histogram_stats(torch.zeros(4), 4)


def test_ifsq_uses_every_bin_on_gaussian_latents():
    z = torch.randn(20000, 4)
    stats = utilization_stats(FiniteScalarQuantizer([17] * 4), FiniteScalarQuantizer([17] * 4)(z).indices)
    assert all(u == 1.0 for u in stats.bin_usage)
    assert min(stats.bin_entropy_efficiency) > 0.97


def test_utilization_of_factorized_indices():
    q = FiniteScalarQuantizer([5, 5, 5, 5], factorized_dims=[2, 2])
    idx = q(torch.randn(1000, 4) * 2).indices
    stats = utilization_stats(q, idx)
    assert 0 < stats.code_usage <= 1 and len(stats.bin_usage) == 4
    assert stats == utilization_stats(q, q.group_indices_to_global(idx))  # global and per-group indices agree
    hist = per_dim_bin_histogram(q, idx)
    assert [int(h.sum()) for h in hist] == [1000] * 4
    assert stats == utilization_stats(
        q, code_counts=torch.bincount(q.group_indices_to_global(idx), minlength=625), dim_counts=hist
    )


@pytest.mark.slow
def test_torch_compile_gives_the_same_codes_indices_and_gradients():
    """``torch.compile(quantizer)`` (the benchmark's ``--compile`` rows) fuses the one path; about 10 s to compile."""
    q = FiniteScalarQuantizer([17, 9, 17], factorized_dims=[2, 1])
    compiled = torch.compile(q)
    z = (torch.randn(2, 3, 8, 8) * 2).requires_grad_()
    w = torch.randn(2, 3, 8, 8)
    eager, fused = q(z), compiled(z)
    assert torch.equal(eager.codes, fused.codes) and torch.equal(eager.indices, fused.indices)
    (g_eager,) = torch.autograd.grad((eager.codes * w).sum(), z)
    (g_fused,) = torch.autograd.grad((fused.codes * w).sum(), z)
    assert torch.allclose(g_eager, g_fused, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- no device sync on the forward path


class _NoSync(TorchDispatchMode):
    """Fail on every op that reads a value back to the host (what ``.item()``, ``bool(t)``, ``int(t)`` do on a GPU)."""

    SYNCING = frozenset(
        {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "unique", "_unique2", "masked_select"}
    )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.SYNCING:
            raise AssertionError(f"{func} synchronises the device on the forward path")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "levels,bound,kwargs",
    [
        ([17] * 4, "ifsq", {}),
        ([8, 5, 5, 5], "tanh", {"factorized_dims": [2, 2]}),
        ([2**20 + 1] * 3, "ifsq", {}),  # int64 indices
        ([5, 5, 5, 5], "ifsq", {"dim": 8, "track_running_stats": True}),
    ],
)
def test_default_forward_and_backward_do_not_synchronise(levels, bound, kwargs, monkeypatch):
    q = FiniteScalarQuantizer(levels, bound=bound, **kwargs)
    channels = kwargs.get("dim", len(levels))
    z = torch.randn(2, channels, 4, 4, requires_grad=True)
    q(z)  # warm the per-device constant cache outside the mode (a one-time host -> device copy)
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name: pytest.fail(f"Tensor.{_n} on the forward path"))
    with _NoSync():
        out = q(z)
        out.codes.square().sum().backward()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            q(z.detach())
    monkeypatch.undo()
    assert out.indices.dtype == torch.int64 and z.grad is not None
    checked = FiniteScalarQuantizer(levels, bound=bound, check_finite=True, **kwargs)
    with pytest.raises(AssertionError, match="synchronises"), _NoSync():
        checked(z)  # the opt-in finite check does read back


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"levels": [16, 16]}, "odd levels"),
        ({"levels": [1, 5]}, ">= 2"),
        ({"levels": []}, "non-empty"),
        ({"levels": [5.0, 5]}, r"integer >= 2, got 5.0"),
        ({"levels": [5, True]}, "integer >= 2, got True"),
        ({"levels": torch.tensor([5.5, 5.0])}, "integer >= 2, got 5.5"),
        ({"levels": "17,17"}, "non-empty list"),
        ({"levels": [5, 5, 5], "factorized_dims": [1.5, 1.5]}, "factorized_dims must be an integer >= 1, got 1.5"),
        ({"levels": [5, 5], "factorized_dims": [2, 0]}, "factorized_dims must be an integer >= 1, got 0"),
        ({"levels": [5, 5], "dim": 2.5}, "dim must be a positive integer"),
        ({"levels": [5, 5], "alpha": float("nan")}, "alpha must be a finite number"),
        ({"levels": [5, 5], "momentum": 1.5}, "momentum"),
        ({"levels": [2**25 + 1]}, "2\\*\\*24"),
        ({"levels": [5, 5], "bound": "sigmoid"}, "bound must be one of"),
        ({"levels": [5, 5], "alpha": 0.0}, "alpha"),
        ({"levels": [5, 5, 5], "factorized_dims": [2, 2]}, "sum to len"),
        ({"levels": [2**20 + 1] * 4}, "int64"),
        ({"levels": [1001], "bound": "tanh"}, "eps"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FiniteScalarQuantizer(**kwargs)


def test_invalid_inputs():
    q = FiniteScalarQuantizer([5, 5, 5])
    with pytest.raises(ValueError, match=r"must have 3 channels in dim 1 .* dim=4 to add a projection"):
        q(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="must have 3 channels in the last dim"):
        q(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="floating-point"):
        q(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="floating-point"):
        q([[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="batch and a channel"):
        q(torch.randn(3))
    with pytest.raises(ValueError, match=r"\[0, 124\]"):
        q.indices_to_codes(torch.tensor([[0, 125]]))
    with pytest.raises(ValueError, match=r"\[0, 124\]"):
        q.indices_to_codes(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="integer tensor"):
        q.indices_to_codes(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="integer tensor"):
        q.indices_to_codes(torch.tensor([True]))
    with pytest.raises(ValueError, match="floating-point torch dtype"):
        q.indices_to_codes(torch.tensor([[0, 1]]), dtype=torch.long)
    with pytest.raises(ValueError, match="quantized values in"):
        q.codes_to_indices(torch.tensor([[2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="codes must have 3 channels"):
        q.codes_to_indices(torch.zeros(2, 4))
    qf = FiniteScalarQuantizer([5, 5, 5, 5], factorized_dims=[2, 2])
    with pytest.raises(ValueError, match="trailing group dim"):
        qf.indices_to_codes(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="group 1"):
        qf.indices_to_codes(torch.tensor([[0, 25]]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 624\]"):
        qf.global_to_group_indices(torch.tensor([625]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_codes_raise_instead_of_int64_min(bad):
    q = FiniteScalarQuantizer([17] * 4)
    codes = q(torch.randn(2, 4, 3, 3)).codes
    codes[1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match=r"finite quantized values in \[-1, 1\], got 1 values"):
        q.codes_to_indices(codes)


def test_non_finite_input_is_opt_in_check():
    z = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(ValueError, match="1 non-finite values"):
        FiniteScalarQuantizer([5, 5, 5], check_finite=True)(z)
    FiniteScalarQuantizer([5, 5, 5])(z)  # default: no check, no device sync


def test_numpy_integer_levels_are_accepted():
    np = pytest.importorskip("numpy")
    q = FiniteScalarQuantizer([np.int64(17), 17, np.int32(9)], factorized_dims=(np.int64(2), 1))
    assert q.levels == [17, 17, 9] and q.factorized_dims == [2, 1] and all(type(v) is int for v in q.levels)
