"""`ifsq-hf benchmark ar-vs-diffusion` as a user runs it, at the tiny preset: one tokenizer, DiT and LlamaGen trained
in stages over two seeds, report/results/plots written, identical numbers on a rerun, reuse, bad input, reading."""

import json
from pathlib import Path

import pytest

from ifsq_hf.benchmark.ar_vs_diffusion import PRESETS, interpolate_log, load_preset, reading
from ifsq_hf.cli import main
from study_testing import results_subset, run_twice, tiny_args

ARGS = tiny_args("ar-vs-diffusion")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return run_twice(tmp_path_factory, ARGS, "arvd")


def numbers(path) -> dict:
    return results_subset(path, ("curves", "equal_steps", "equal_flops", "runs", "seeds", "config", "reading"))


@pytest.mark.slow
def test_writes_report_results_and_plots(two_runs):
    out = two_runs[0]
    for name in ("report.md", "results.json", "curves.png", "differences.png", "samples_dit.png",
                 "samples_llamagen.png"):  # fmt: skip
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    budgets = PRESETS["tiny"]["budgets"]
    assert results["seeds"] == [0, 1] and set(results["curves"]) == {"dit", "llamagen"}
    for kind, curve in results["curves"].items():
        assert [p["budget"] for p in curve["points"]] == budgets
        assert curve["flops_per_step"] > 0
        assert [p["flops"] for p in curve["points"]] == [b * curve["flops_per_step"] for b in budgets]
        assert [p["samples"] for p in curve["points"]] == [b * 4 for b in budgets]  # batch 4, one process
        assert all(p["latent_fd"]["n"] == 2 for p in curve["points"])
        runs = results["runs"][kind]
        assert runs["0"]["4"]["latent_fd"] != runs["1"]["4"]["latent_fd"], "the seeds really differ"
        # every stage is its own saved model, and the second resumed the first
        for b in budgets:
            assert (out / "runs" / f"{kind}-seed0" / f"step{b:07d}" / "bench_eval.json").is_file()
    assert {(c["budget"], c["metric"]) for c in results["equal_steps"]} == {(2, "latent_fd"), (4, "latent_fd")}
    report = (out / "report.md").read_text()
    assert "ifsq-hf benchmark ar-vs-diffusion --preset tiny --seeds 0 1" in report
    assert "## What this does and does not show" in report and "Scope: 2 seeds" in report
    assert "torch " in report and "DiT − LlamaGen" in report


@pytest.mark.slow
def test_same_seeds_give_identical_numbers(two_runs):
    assert numbers(two_runs[0]) == numbers(two_runs[1])


@pytest.mark.slow
def test_finished_runs_are_reused(two_runs):
    """A rerun into the same folder trains nothing and reads every stage back (how an interrupted study resumes)."""
    first = two_runs[0]
    weights = first / "runs" / "llamagen-seed1" / "step0000004" / "model.safetensors"
    tokenizer = first / "tokenizer" / "diffusion_pytorch_model.safetensors"
    mtimes = [weights.stat().st_mtime_ns, tokenizer.stat().st_mtime_ns]
    assert main([*ARGS, "--output_dir", str(first)]) == 0
    assert [weights.stat().st_mtime_ns, tokenizer.stat().st_mtime_ns] == mtimes
    assert numbers(first) == numbers(two_runs[1])


def test_interpolate_log():
    assert interpolate_log(10.0, [1.0, 100.0], [0.0, 2.0]) == pytest.approx(1.0)
    assert interpolate_log(100.0, [1.0, 100.0, 1000.0], [0.0, 2.0, 5.0]) == pytest.approx(2.0)
    assert interpolate_log(0.5, [1.0, 100.0], [0.0, 2.0]) is None
    assert interpolate_log(101.0, [1.0, 100.0], [0.0, 2.0]) is None


def _diff(budget, mean, low, high, metric="latent_fd", flops=None):
    row = {"budget": budget, "metric": metric, "mean": mean, "std": 1.0, "n": 3, "low": low, "high": high,
           "includes_zero": low <= 0 <= high, "differences": [mean] * 3}  # fmt: skip
    if flops is not None:
        row["flops"] = flops
    return row


def _summary(mean):
    return {"mean": mean, "std": 0.5, "n": 3, "values": [mean] * 3}


def test_reading_follows_the_intervals():
    curves = {
        kind: {"label": kind, "flops_per_step": f,
               "points": [{"budget": 50, "flops": 50 * f, "latent_fd": _summary(10.0)},
                          {"budget": 100, "flops": 100 * f, "latent_fd": _summary(5.0)}]}
        for kind, f in (("dit", 1e9), ("llamagen", 2e9))
    }  # fmt: skip
    results = {
        "config": PRESETS["cpu"], "seeds": [0, 1, 2], "curves": curves,
        "equal_steps": [_diff(50, 2.0, 1.0, 3.0), _diff(100, -0.5, -2.0, 1.0),
                        _diff(100, -9.0, -12.0, -6.0, metric="fid")],
        "equal_flops": [_diff(100, 1.5, 0.5, 2.5, flops=1e11)],
    }  # fmt: skip
    text = "\n".join(reading(results))
    assert "50 steps: +2.000, 95% CI [+1.000, +3.000], n=3 (LlamaGen better)" in text
    assert "100 steps: -0.500, 95% CI [-2.000, +1.000], n=3 (no difference detected)" in text
    assert "1.00e+11 FLOPs: +1.500" in text and "(2.00x)" in text
    assert "latent FD 10.000 ± 0.500 after 50 steps -> 5.000 ± 0.500 after 100 (-50%)" in text
    assert "(1.00e+11) LlamaGen is ahead, which agrees with the paper's early phase" in text
    assert "LlamaGen is ahead at 50 steps and no difference is detected at 100" in text
    assert "At 100 steps FID and latent FD disagree" in text
    assert "Calibration" not in text  # no floor in these results
    results["reference"] = {"floor": {"num_samples": 240, "latent_fd": 0.3, "num_fid_samples": 96, "fid": 80.0,
                                      "fid_reconstructed": 300.0}}  # fmt: skip
    curves["dit"]["points"][-1]["fid"] = _summary(320.0)
    text = "\n".join(reading(results))
    assert "give latent FD 0.300 (240 images) and FID 80.0" in text and "latent_fd 5.000 (DiT), fid 320.000" in text
    assert "FID is dominated by the decoder here" in text
    results["equal_flops"] = [_diff(100, -1.5, -2.5, -0.5, flops=1e11)]
    text = "\n".join(reading(results))
    assert "(1.00e+11) the DiT is ahead, which disagrees with the paper's early phase" in text
    results["seeds"] = [0]
    assert "One seed: no intervals" in "\n".join(reading(results))


def test_dump_config_and_bad_input(tmp_path, capsys):
    path = tmp_path / "arvd.json"
    assert main(["benchmark", "ar-vs-diffusion", "--preset", "imagenet", "--dump_config", str(path)]) == 0
    assert load_preset(config_file=path) == PRESETS["imagenet"]
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "ar-vs-diffusion_imagenet.json"
    assert load_preset(config_file=shipped) == PRESETS["imagenet"], "regenerate it with --dump_config"
    # --max_train_steps N gives budgets N/8 .. N, with checkpoints on every stage end
    assert main([*ARGS, "--max_train_steps", "16", "--dump_config", str(path)]) == 0
    config = json.loads(path.read_text())
    assert config["budgets"] == [2, 4, 8, 16] and config["generators"]["dit"]["checkpointing_steps"] == 2
    out = ["--output_dir", str(tmp_path / "x")]
    assert main([*ARGS, "--max_train_steps", "12", *out]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main([*ARGS, "--budgets", "4", "2", *out]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert main([*ARGS, "--num_eval_samples", "1", *out]) == 2
    assert "--num_eval_samples must be >= 2" in capsys.readouterr().err
    bad = json.loads(json.dumps(PRESETS["tiny"]))
    bad["generators"]["llamagen"]["lr_scheduler"] = "cosine"
    path.write_text(json.dumps(bad))
    assert main(["benchmark", "ar-vs-diffusion", "--config", str(path), *out]) == 2
    assert "depends on the run length" in capsys.readouterr().err
    path.write_text(json.dumps({"budgets": [2]}))
    assert main(["benchmark", "ar-vs-diffusion", "--config", str(path), *out]) == 2
    assert "is missing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
