"""The activation study: distances to the uniform distribution, bin statistics, alpha sweeps and the example."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ifsq_hf.analysis import (
    activation_bound_metrics,
    alpha_sweep,
    best_alpha,
    bin_statistics,
    bound,
    density_rmse_to_uniform,
    gaussian_bound_metrics,
    ks_distance_to_uniform,
)

ROOT = Path(__file__).resolve().parents[1]


def test_bound_is_ifsq_and_tanh():
    z = torch.linspace(-4, 4, 101)
    assert torch.allclose(bound(z, 2.0), torch.tanh(z.double()), atol=1e-12)
    assert torch.allclose(bound(z, 1.6), torch.tanh(0.8 * z.double()), atol=1e-12)


def test_gaussian_closed_form_matches_reference_numbers():
    # Reference values computed independently for z ~ N(0, 1), outside this library.
    expected_ks = {1.4: 0.0427, 1.5: 0.0285, 1.6: 0.0173, 1.7: 0.0096, 1.8: 0.0210, 2.0: 0.0442}
    for alpha, ks in expected_ks.items():
        assert gaussian_bound_metrics(alpha)["ks_distance_to_uniform"] == pytest.approx(ks, abs=1e-4), alpha
    assert gaussian_bound_metrics(1.6)["density_rmse_to_uniform"] == pytest.approx(0.144, abs=1e-3)
    assert gaussian_bound_metrics(2.0)["density_rmse_to_uniform"] == pytest.approx(0.215, abs=1e-3)
    assert gaussian_bound_metrics(1.6)["bin_entropy_efficiency"] == pytest.approx(0.983, abs=1e-3)
    assert gaussian_bound_metrics(2.0)["bin_entropy_efficiency"] == pytest.approx(0.992, abs=1e-3)


def test_sweep_optimum_scales_inversely_with_activation_std():
    unit = alpha_sweep([a / 100 for a in range(150, 201, 2)])
    assert best_alpha(unit) == pytest.approx(1.70, abs=0.02)
    assert best_alpha(unit, "density_rmse_to_uniform") == pytest.approx(1.72, abs=0.02)
    assert best_alpha(unit, "bin_entropy_efficiency") == pytest.approx(
        2.0, abs=0.02
    )  # entropy favours tanh at unit std
    wide = alpha_sweep([a / 100 for a in range(70, 101, 2)], scale=2.0)
    assert best_alpha(wide) == pytest.approx(0.85, abs=0.02)


def test_empirical_metrics_agree_with_closed_form():
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    for alpha in (1.6, 2.0):
        exact, measured = gaussian_bound_metrics(alpha), activation_bound_metrics(z, alpha)
        assert measured["ks_distance_to_uniform"] == pytest.approx(exact["ks_distance_to_uniform"], abs=4e-3)
        assert measured["density_rmse_to_uniform"] == pytest.approx(exact["density_rmse_to_uniform"], abs=0.03)
        assert measured["bin_entropy_efficiency"] == pytest.approx(exact["bin_entropy_efficiency"], abs=2e-3)
        freq = torch.tensor(measured["bin_frequencies"], dtype=torch.float64)
        assert torch.allclose(freq, torch.tensor(exact["bin_frequencies"], dtype=torch.float64), atol=3e-3)


def test_both_views_are_reported_and_named_apart():
    """Issue 10: the continuous uniformity (KS) favours iFSQ, the discrete bin entropy slightly favours tanh."""
    ifsq, tanh = gaussian_bound_metrics(1.6), gaussian_bound_metrics(2.0)
    continuous = {"ks_distance_to_uniform", "density_rmse_to_uniform"}
    discrete = {"bin_usage", "bin_entropy_bits", "bin_entropy_efficiency", "bin_frequencies"}
    assert set(ifsq) == {"alpha"} | continuous | discrete
    assert ifsq["ks_distance_to_uniform"] < tanh["ks_distance_to_uniform"]
    assert ifsq["bin_entropy_efficiency"] < tanh["bin_entropy_efficiency"]
    # the discrete statistics are the quantizer's own (one implementation)
    from ifsq_hf.quantization import histogram_stats

    p = torch.tensor(ifsq["bin_frequencies"], dtype=torch.float64)
    assert histogram_stats(p, 17).entropy_efficiency == pytest.approx(ifsq["bin_entropy_efficiency"], abs=1e-12)


def test_uniform_and_degenerate_inputs():
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert ks_distance_to_uniform(u) < 0.01
    assert density_rmse_to_uniform(u, bins=20) < 0.05
    assert ks_distance_to_uniform(torch.zeros(10)) == pytest.approx(0.5)
    stats = bin_statistics(torch.zeros(1000), levels=17)
    assert stats.usage == pytest.approx(1 / 17) and stats.entropy_bits == 0.0 and stats.entropy_efficiency == 0.0
    assert stats.frequencies[8] == 1.0  # the centre bin
    spread = bin_statistics(torch.linspace(-50, 50, 10_001), levels=5, alpha=1.6)
    assert spread.usage == 1.0 and sum(spread.frequencies) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ks_distance_to_uniform(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="alpha and scale"):
        gaussian_bound_metrics(0.0)


def test_example_script_writes_plot_json_and_table(tmp_path):
    spec = importlib.util.spec_from_file_location("analyze_quantizer", ROOT / "examples" / "analyze_quantizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--output_dir", str(tmp_path), "--alpha_min", "1.0", "--alpha_max", "2.5", "--alpha_step", "0.1"]
    results = module.main([*args, "--tokenizer", "test_f4_d4", "--resolution", "32", "--scales", "1.0"])
    assert (tmp_path / "alpha_sweep.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tokenizer_trained"] is False and len(saved["summary"]) == 3
    unit = saved["summary"][0]
    assert unit["input"] == "N(0, 1²)" and unit["best_alpha_ks"] == pytest.approx(1.7)
    assert unit["ks_ifsq"] < unit["ks_tanh"]
    table = (tmp_path / "results.md").read_text()
    assert "| N(0, 1²) | 1.70 |" in table and "untrained" in table
    assert results["real_activations"]["count"] == 12 * 4 * 8 * 8
