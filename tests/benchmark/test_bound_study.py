"""`ifsq-hf benchmark bound` as a user runs it, at the tiny preset: three arms trained by the example script over two
seeds, report/results/plots written, identical numbers on a rerun with the same seeds, resume, bad input."""

import json
from pathlib import Path

import pytest

from ifsq_hf.benchmark.bound import PRESETS, load_preset, reading
from ifsq_hf.cli import main
from study_testing import launch_two_processes, results_subset, run_twice, tiny_args

ARGS = tiny_args("bound")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return run_twice(tmp_path_factory, ARGS, "bound")


def numbers(path) -> dict:
    return results_subset(path, ("arms", "comparisons", "runs", "seeds", "config"))


@pytest.mark.slow
def test_writes_report_results_and_plots(two_runs):
    out = two_runs[0]
    for name in ("report.md", "results.json", "metrics.png", "differences.png", "alpha_ks.png", "activations.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"fsq", "ifsq", "ifsq_norm"} and results["seeds"] == [0, 1]
    assert results["config"]["train"]["max_train_steps"] == PRESETS["tiny"]["train"]["max_train_steps"]
    for arm in results["arms"].values():
        assert arm["metrics"]["psnr"]["n"] == 2 and arm["metrics"]["psnr"]["std"] is not None
    runs = results["runs"]
    # the norm arm really normalises, the others do not; the seeds really differ
    assert "raw_std_per_channel" in runs["ifsq_norm"]["0"]["activations"]
    assert "raw_std_per_channel" not in runs["ifsq"]["0"]["activations"]
    assert runs["ifsq"]["0"]["metrics"]["psnr"] != runs["ifsq"]["1"]["metrics"]["psnr"]
    assert runs["fsq"]["0"]["activations"]["own_alpha"] == 2.0
    pairs = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert ("ifsq", "fsq", "psnr") in pairs and ("ifsq_norm", "ifsq", "bin_usage") in pairs
    report = (out / "report.md").read_text()
    assert "ifsq-hf benchmark bound --preset tiny --seeds 0 1" in report
    assert "torch " in report and "seeds: [0, 1]" in report
    assert "## What this does and does not show" in report and "Scope: 2 seeds per arm" in report


@pytest.mark.slow
def test_same_seeds_give_identical_numbers(two_runs):
    assert numbers(two_runs[0]) == numbers(two_runs[1])


@pytest.mark.slow
def test_finished_runs_are_reused(two_runs):
    """A rerun into the same folder trains nothing and reads every run back (how an interrupted study resumes)."""
    first = two_runs[0]
    mtime = (first / "runs" / "ifsq-seed0" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main([*ARGS, "--arms", "ifsq", "fsq", "--output_dir", str(first)]) == 0
    assert (first / "runs" / "ifsq-seed0" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == mtime
    results = json.loads((first / "results.json").read_text())
    assert set(results["arms"]) == {"ifsq", "fsq"}


def test_reading_follows_the_interval():
    results = {
        "seeds": [0, 1, 2],
        "config": PRESETS["tiny"],
        "arms": {
            arm: {
                "label": arm,
                "metrics": {"psnr": {"n": 3}},
                "activations": {"std": {"mean": 0.6, "std": 0.1}, "ks_optimal_alpha": {"mean": 2.7, "std": 0.2}},
            }
            for arm in ("fsq", "ifsq")
        },
        "comparisons": [
            {"a": "ifsq", "b": "fsq", "metric": "psnr", "mean": 0.1, "std": 0.3, "n": 3, "low": -0.6, "high": 0.8,
             "includes_zero": True},
            {"a": "ifsq", "b": "fsq", "metric": "lpips", "mean": 0.05, "std": 0.01, "n": 3, "low": 0.03,
             "high": 0.07, "includes_zero": False},
        ],
    }  # fmt: skip
    text = "\n".join(reading(results))
    assert "psnr, ifsq − fsq" in text and "includes 0, so no difference is detected" in text
    assert (
        "lpips, ifsq − fsq" in text and "ifsq is worse than fsq at this scale, which disagrees with the paper" in text
    )
    assert "alpha·std = 0.96" in text and "2.70" in text


def test_dump_config_and_bad_input(tmp_path, capsys):
    path = tmp_path / "bound.json"
    assert main(["benchmark", "bound", "--preset", "imagenet", "--dump_config", str(path)]) == 0
    assert load_preset(config_file=path) == PRESETS["imagenet"]
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "bound_imagenet.json"
    assert load_preset(config_file=shipped) == PRESETS["imagenet"], "regenerate it with --dump_config"
    path.write_text(json.dumps({"train": {}}))
    assert main(["benchmark", "bound", "--config", str(path), "--output_dir", str(tmp_path / "x")]) == 2
    assert "missing ['model_preset', 'num_eval_images']" in capsys.readouterr().err
    assert main([*ARGS, "--max_train_steps", "0", "--output_dir", str(tmp_path / "y")]) == 2
    assert "--max_train_steps must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tmp_path):
    """One `accelerate launch` drives every run on both processes (DDP); the main process alone writes the report."""
    launch_two_processes([*ARGS[:-2], "--arms", "ifsq", "fsq", "--output_dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["arms"]) == {"ifsq", "fsq"} and results["seeds"] == [0, 1]
