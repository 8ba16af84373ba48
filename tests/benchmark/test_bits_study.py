"""`ifsq-hf benchmark bits` as a user runs it, at the tiny preset: both sweeps trained by the example script over two
seeds, report/results/plots written, identical numbers on a rerun with the same seeds, resume, bad input, and the
generated reading on synthetic numbers."""

import copy
import json
from pathlib import Path

import pytest

from ifsq_hf.benchmark.bits import PRESETS, _aggregate, _curvature, load_preset, reading, settings
from ifsq_hf.cli import main
from study_testing import launch_two_processes, results_subset, run_twice, tiny_args

ARGS = tiny_args("bits")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return run_twice(tmp_path_factory, ARGS, "bits")


def numbers(path) -> dict:
    return results_subset(path, ("settings", "comparisons", "runs", "seeds", "config", "sweeps"))


@pytest.mark.slow
def test_writes_report_results_and_plots(two_runs):
    out = two_runs[0]
    for name in ("report.md", "results.json", "metrics_vs_bits.png", "usage_vs_bits.png", "psnr_gains.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    # tiny: 4 channels x 2, 3, 4 bits and 12 bits per position = 4x3 (shared, trained once) and 3x4
    assert set(results["settings"]) == {"ifsq-c4b2", "ifsq-c4b3", "ifsq-c4b4", "ifsq-c3b4"}
    assert results["settings"]["ifsq-c4b3"]["sweeps"] == ["fixed_channels", "fixed_total"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        f"{k}-seed{s}" for k in results["settings"] for s in (0, 1)
    )
    row = results["settings"]["ifsq-c3b4"]
    assert (row["channels"], row["bits"], row["levels"], row["bits_per_position"]) == (3, 4, 17, 12)
    assert json.loads((out / "configs" / "ifsq-c3b4.json").read_text())["levels"] == [17, 17, 17]
    assert row["metrics"]["psnr"]["n"] == 2 and row["metrics"]["psnr"]["std"] is not None
    runs = results["runs"]
    assert runs["ifsq-c4b4"]["0"]["metrics"]["psnr"] != runs["ifsq-c4b4"]["1"]["metrics"]["psnr"]
    # 8 held-out 16 px images at f4: 16 latent positions each
    assert runs["ifsq-c4b2"]["0"]["tokens_per_channel"] == 8 * 16
    assert len(runs["ifsq-c3b4"]["0"]["bin_usage_per_channel"]) == 3
    pairs = {(c["kind"], c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert ("adjacent", "ifsq-c4b3", "ifsq-c4b2", "psnr") in pairs
    assert ("vs 4 bits", "ifsq-c4b4", "ifsq-c4b2", "bin_usage") in pairs
    assert ("adjacent", "ifsq-c3b4", "ifsq-c4b3", "psnr") in pairs
    report = (out / "report.md").read_text()
    assert "ifsq-hf benchmark bits --preset tiny --seeds 0 1" in report
    assert "torch " in report and "seeds: [0, 1]" in report
    assert "## What this does and does not show" in report and "Not measured: generation quality" in report


@pytest.mark.slow
def test_same_seeds_give_identical_numbers(two_runs):
    assert numbers(two_runs[0]) == numbers(two_runs[1])


@pytest.mark.slow
def test_finished_runs_are_reused(two_runs):
    """A rerun into the same folder trains nothing and reads every run back (how an interrupted study resumes)."""
    first = two_runs[0]
    weights = first / "runs" / "ifsq-c4b4-seed0" / "diffusion_pytorch_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert main([*ARGS[:4], "--seeds", "0", "--num_threads", "1", "--output_dir", str(first)]) == 0
    assert weights.stat().st_mtime_ns == mtime
    results = json.loads((first / "results.json").read_text())
    assert results["seeds"] == [0] and results["settings"]["ifsq-c4b4"]["metrics"]["psnr"]["std"] is None
    assert "One seed only" in (first / "report.md").read_text()


def test_settings_of_the_presets():
    assert settings(PRESETS["cpu"]) == {
        "fixed_channels": [(4, b) for b in range(2, 9)],
        "fixed_total": [(12, 2), (8, 3), (6, 4), (4, 6), (3, 8)],
    }
    assert settings(PRESETS["imagenet"]) == settings(PRESETS["cpu"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fixed_total": {"total_bits": 24, "bits": [5]}}, "do not divide total_bits=24"),
        ({"fixed_channels": {"latent_channels": 4, "bits": [0, 2]}}, "integers >= 1"),
        ({"fixed_channels": {"latent_channels": 4, "bits": [2, 2]}}, "must not repeat"),
        ({"fixed_channels": {"latent_channels": 16, "bits": [8]}}, "token indices are int64"),
        ({"bounds": ["sigmoid"]}, "bounds must be"),
        ({"model_preset": "nope"}, "model_preset 'nope'"),
    ],
)
def test_bad_configs(tmp_path, change, message):
    config = {**copy.deepcopy(PRESETS["tiny"]), **change}
    path = tmp_path / "bits.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_preset(config_file=path)


def test_dump_config_and_bad_input(tmp_path, capsys):
    path = tmp_path / "bits.json"
    assert main(["benchmark", "bits", "--preset", "imagenet", "--dump_config", str(path)]) == 0
    assert load_preset(config_file=path) == PRESETS["imagenet"]
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "bits_imagenet.json"
    assert load_preset(config_file=shipped) == PRESETS["imagenet"], "regenerate it with --dump_config"
    path.write_text(json.dumps({"train": {}}))
    assert main(["benchmark", "bits", "--config", str(path), "--output_dir", str(tmp_path / "x")]) == 2
    assert "missing ['model_preset', 'fixed_channels', 'fixed_total', 'num_eval_images']" in capsys.readouterr().err
    assert main([*ARGS, "--num_eval_images", "0", "--output_dir", str(tmp_path / "y")]) == 2
    assert "--num_eval_images must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def _synthetic(psnr: dict[str, list[float]]) -> dict:
    """Results as the study builds them, from made-up per-seed PSNRs (4 channels x 3..5 bits; 12 bits = 4x3, 3x4)."""
    config = {**copy.deepcopy(PRESETS["cpu"]), "fixed_channels": {"latent_channels": 4, "bits": [3, 4, 5]},
              "fixed_total": {"total_bits": 12, "bits": [3, 4]}}  # fmt: skip
    seeds = [0, 1, 2]
    runs = {
        k: {
            s: {
                "metrics": {"psnr": v, "ssim": 0.5, "lpips": 0.2, "bin_usage": 0.9 - 0.01 * s,
                            "bin_entropy_efficiency": 0.8 + 0.01 * s},
                "tokens_per_channel": 768, "num_images": 48,
            }
            for s, v in zip(seeds, values)
        }
        for k, values in psnr.items()
    }  # fmt: skip
    results = {"config": config, "seeds": seeds, **_aggregate(config, ["ifsq"], seeds, runs)}
    _curvature(results)
    return results


def test_reading_follows_the_intervals():
    results = _synthetic({
        "ifsq-c4b3": [20.0, 21.0, 22.0],
        "ifsq-c4b4": [21.0, 22.1, 23.05],  # +1.05 ± 0.05: detected
        "ifsq-c4b5": [21.5, 21.6, 23.6],  # +0.5, -0.5, +0.55: not detected
        "ifsq-c3b4": [20.01, 20.99, 22.0],  # the same as 4x3 within 0.01
    })  # fmt: skip
    text = "\n".join(reading(results))
    assert "4 channels: mean PSNR goes 4×3 bits 21.00, 4×4 bits 22.05, 4×5 bits 22.23 dB" in text
    assert "stops being detectable at 4 → 5 bits" in text
    assert "consistent with a knee at 4 bits at this scale" in text
    assert "no setting differs detectably in PSNR from 3×4 bits" in text
    assert "768 latent values per channel" in text and "33 trainings" in text
    assert "48 held-out images (all the split has; 64 asked for)" in text
    n = sum(c["low"] is not None for c in results["comparisons"])
    assert f"this report computes {n} intervals" in text and f"about {n / 20:.1f} of them exclude 0 by chance" in text
    curve = [c for c in results["comparisons"] if c["kind"] == "curvature"]
    assert len(curve) == 1 and curve[0]["mean"] == pytest.approx((0.5 - 0.5 + 0.55) / 3 - 1.05)


def test_reading_without_saturation_or_gain():
    steady = {"ifsq-c4b3": [20.0, 21.0, 22.0], "ifsq-c4b4": [21.0, 22.1, 23.05], "ifsq-c4b5": [22.0, 23.0, 24.2],
              "ifsq-c3b4": [21.0, 22.0, 23.1]}  # fmt: skip
    text = "\n".join(reading(_synthetic(steady)))
    assert "no saturation within the swept range" in text and "no knee at 4 bits" in text
    assert "against 3×4 bits, 4×3 bits is worse (-1.03 dB)" in text
    assert "against 4×4 bits, 4×3 bits is worse (-1.05 dB); 4×5 bits is better (+1.02 dB)" in text
    assert "did better here" not in text  # the better split (3x4) is the 4-bit point itself
    flat = {k: [20.0, 22.0, 21.0 + 0.1 * i] for i, k in enumerate(steady)}
    text = "\n".join(reading(_synthetic(flat)))
    assert "no PSNR gain of one more bit is detected anywhere" in text
    assert "no setting differs detectably in PSNR from 4×4 bits" in text
    wide = {**steady, "ifsq-c3b4": [19.0, 20.1, 20.95]}  # 4x3 beats 3x4 by about 1 dB in every seed
    assert "more channels with fewer levels did better here" in "\n".join(reading(_synthetic(wide)))


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tmp_path):
    """One `accelerate launch` drives every run on both processes (DDP); the main process alone writes the report."""
    config = {**copy.deepcopy(PRESETS["tiny"]), "fixed_channels": {"latent_channels": 4, "bits": [2, 4]},
              "fixed_total": {"total_bits": 8, "bits": [4]}}  # fmt: skip
    (tmp_path / "bits.json").write_text(json.dumps(config))
    config_file, out = str(tmp_path / "bits.json"), str(tmp_path / "out")
    launch_two_processes(["benchmark", "bits", "--config", config_file, "--seeds", "0", "1", "--output_dir", out])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["settings"]) == {"ifsq-c4b2", "ifsq-c4b4", "ifsq-c2b4"} and results["seeds"] == [0, 1]


def test_second_bound_is_compared_and_plotted(tmp_path):
    """The optional FSQ (tanh) arm: every setting is compared with iFSQ at the same seed, and the plots draw both."""
    from ifsq_hf.benchmark.bits import _plots

    psnr = {"c4b3": [20.0, 21.0, 22.0], "c4b4": [21.0, 22.1, 23.05], "c4b5": [21.5, 21.6, 23.6], "c3b4": [20.0] * 3}
    config = {**copy.deepcopy(PRESETS["cpu"]), "fixed_channels": {"latent_channels": 4, "bits": [3, 4, 5]},
              "fixed_total": {"total_bits": 12, "bits": [3, 4]}}  # fmt: skip
    runs = {
        f"{bound}-{k}": {s: {"metrics": {"psnr": v - shift, "ssim": 0.5, "lpips": 0.2, "bin_usage": 0.9,
                                         "bin_entropy_efficiency": 0.8}, "tokens_per_channel": 768, "num_images": 48}
                         for s, v in enumerate(values)}
        for bound, shift in (("ifsq", 0.0), ("tanh", 0.5))
        for k, values in psnr.items()
    }  # fmt: skip
    results = {"config": config, "seeds": [0, 1, 2], **_aggregate(config, ["ifsq", "tanh"], [0, 1, 2], runs)}
    bound = [c for c in results["comparisons"] if c["kind"] == "bound" and c["metric"] == "psnr"]
    assert {(c["a"], c["b"]) for c in bound} == {(f"ifsq-{k}", f"tanh-{k}") for k in psnr}
    assert all(c["mean"] == pytest.approx(0.5) for c in bound)
    assert len(results["sweeps"]) == 4 and "FSQ (tanh), 4 channels" in "\n".join(reading(results))
    assert _plots(results, tmp_path) == ["metrics_vs_bits.png", "usage_vs_bits.png", "psnr_gains.png"]
