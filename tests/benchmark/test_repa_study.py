"""`ifsq-hf benchmark repa` as a user runs it, at the tiny preset: one tokenizer, LlamaGen trained by the example script
for the no-REPA baseline and each (depth, lambda) cell over two seeds, report/results/heat maps written, identical
numbers on a rerun with the same seeds, resume, bad input; the reading and the baseline's coefficient on their own."""

import copy
import json
from pathlib import Path

import pytest
import torch

from ifsq_hf.benchmark.repa import PRESETS, cell_name, load_preset, paper_cell, reading
from ifsq_hf.cli import main
from study_testing import launch_two_processes, results_subset, run_twice, tiny_args

ARGS = tiny_args("repa")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return run_twice(tmp_path_factory, ARGS, "repa")


def numbers(path) -> dict:
    return results_subset(path, ("baseline", "cells", "best", "runs", "seeds", "config", "grid"))


@pytest.mark.slow
def test_writes_report_results_and_heat_maps(two_runs):
    out = two_runs[0]
    for name in ("report.md", "results.json", "heatmap.png", "lambda.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    tiny = PRESETS["tiny"]
    assert results["seeds"] == [0, 1] and results["metrics"] == ["latent_fd"]
    assert set(results["cells"]) == {cell_name(d, c) for d in tiny["depths"] for c in tiny["coefficients"]}
    assert set(results["runs"]) == {"baseline", *results["cells"]}
    for cell in results["cells"].values():
        d = cell["vs_baseline"]["latent_fd"]
        assert d["n"] == 2 and d["low"] <= d["mean"] <= d["high"]
    # the seeds really differ; the baseline really trains without REPA
    runs = results["runs"]["baseline"]
    assert runs["0"]["metrics"]["latent_fd"] != runs["1"]["metrics"]["latent_fd"]
    record = json.loads((out / "runs" / "baseline-seed0" / "training_config.json").read_text())
    assert record["repa_coefficient"] == 0.0 and record["repa_encoder"] == "none"
    record = json.loads((out / "runs" / "d3-lambda1-seed1" / "training_config.json").read_text())
    assert record["repa_depth"] == 3 and record["repa_coefficient"] == 1.0 and record["seed"] == 1
    assert results["grid"]["num_hidden_layers"] == 3
    flops = results["training_flops_per_step"]
    assert 0 < flops["without_projector"] < flops["with_projector"]
    report = (out / "report.md").read_text()
    assert "ifsq-hf benchmark repa --preset tiny --seeds 0 1" in report and "seeds: [0, 1]" in report
    assert "## What this does and does not show" in report and "not the paper's DINOv2-B" in report
    assert "The paper's claim" in report and "Nearest cell to that setting here (depth 1 of 3, lambda 1)" in report


@pytest.mark.slow
def test_same_seeds_give_identical_numbers(two_runs):
    assert numbers(two_runs[0]) == numbers(two_runs[1])


@pytest.mark.slow
def test_finished_runs_are_reused(two_runs):
    """A rerun into the same folder trains nothing and reads every run back (how an interrupted study resumes)."""
    first = two_runs[0]
    weights = first / "runs" / "d1-lambda1-seed0" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert main([*ARGS, "--depths", "1", "--output_dir", str(first)]) == 0
    assert weights.stat().st_mtime_ns == mtime
    results = json.loads((first / "results.json").read_text())
    assert set(results["cells"]) == {"d1-lambda1"}
    assert results["timing"]["runs"]["d1-lambda1-seed0"] == json.loads(
        (first / "runs" / "d1-lambda1-seed0" / "bench_timing.json").read_text()
    )


def test_baseline_and_cells_share_the_trunk_and_its_training():
    """The no-REPA baseline (no projector) and a REPA cell with the same seed start from the same trunk and, with a
    vanishing coefficient, train it identically (AdamW, clipping): ``cell - baseline`` isolates the REPA loss."""
    from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration
    from ifsq_hf.training.generators import add_repa_loss

    def train(coefficient: float | None) -> dict:
        torch.manual_seed(0)
        extra = {} if coefficient is None else {"repa_feature_dim": 8, "repa_depth": 1}
        config = LlamaGenConfig.from_preset("tiny", class_dropout_prob=0.0, **extra)
        model = LlamaGenForImageGeneration(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            tokens = torch.randint(0, config.vocab_size, (4, config.image_token_size**2), generator=gen)
            labels = torch.randint(0, config.num_classes, (4,), generator=gen)
            target = torch.randn(4, config.image_token_size**2, 8, generator=gen)
            use_repa = coefficient is not None
            out = model(class_labels=labels, image_tokens=tokens, labels=tokens, output_repa_features=use_repa)
            loss = add_repa_loss(out.loss, {}, out.repa_features, target, coefficient) if use_repa else out.loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return {k: v.detach().clone() for k, v in model.named_parameters() if "repa_projector" not in k}

    plain, vanishing, aligned = train(None), train(1e-30), train(1.0)
    assert all(torch.equal(plain[k], vanishing[k]) for k in plain)
    assert not all(torch.equal(plain[k], aligned[k]) for k in plain)  # a real coefficient does change the trunk


def _cell(depth, coefficient, mean, low, high, std=1.0):
    return {
        "depth": depth,
        "coefficient": coefficient,
        "metrics": {"latent_fd": {"mean": 10.0 + mean, "std": 0.5, "n": 3}},
        "vs_baseline": {"latent_fd": {"mean": mean, "std": std, "n": 3, "low": low, "high": high,
                                      "includes_zero": low <= 0 <= high}},
    }  # fmt: skip


def _results(cells: dict, encoder: str = "efficientnet-lite0") -> dict:
    config = copy.deepcopy(PRESETS["cpu"])
    config["repa_encoder"] = encoder
    best = min(cells, key=lambda n: cells[n]["metrics"]["latent_fd"]["mean"])
    others = {o: {"mean": -1.0, "std": 1.0, "n": 3, "low": -2.0, "high": 0.5, "includes_zero": True}
              for o in cells if o != best}  # fmt: skip
    return {
        "seeds": [0, 1, 2],
        "config": config,
        "metrics": ["latent_fd"],
        "grid": {"depths": [1, 3], "coefficients": [0.5, 2.0], "num_hidden_layers": 4, "num_parameters": 1000},
        "baseline": {"metrics": {"latent_fd": {"mean": 10.0, "std": 0.5, "n": 3}}},
        "cells": cells,
        "best": {"latent_fd": {"cell": best, "vs_others": others}},
        "marginals": {"latent_fd": {
            "all cells": {"mean": 0.5, "std": 1.0, "n": 3, "low": -1.0, "high": 2.0, "includes_zero": True,
                          "vs": "baseline"},
            "lambda 2 − lambda 0.5": {"mean": 1.0, "std": 0.2, "n": 3, "low": 0.5, "high": 1.5, "includes_zero": False,
                                      "vs": "lambda 0.5"},
        }},
    }  # fmt: skip


def test_reading_follows_the_intervals():
    cells = {
        "d1-lambda0.5": _cell(1, 0.5, -0.5, -1.5, 0.5),
        "d1-lambda2": _cell(1, 2.0, -3.0, -4.0, -2.0),  # the paper's cell: better, interval excludes 0
        "d3-lambda0.5": _cell(3, 0.5, 2.0, 1.0, 3.0),  # worse
        "d3-lambda2": _cell(3, 2.0, 0.1, -0.9, 1.1),
    }
    results = _results(cells)
    assert paper_cell(results) == "d1-lambda2"
    text = "\n".join(reading(results))
    assert "1 are better than the baseline with a 95% interval that excludes 0 (d1-lambda2)" in text
    assert "1 are worse (d3-lambda0.5)" in text and "2 are not distinguishable" in text
    assert "(depth 1 of 4, lambda 2)" in text and "which agrees with the paper at this scale" in text
    assert "the best mean is at depth 1, lambda 2" in text and "optimum within the grid is not resolved" not in text
    assert "ranking of the cells is not resolved" in text
    assert "efficientnet-lite0, an ImageNet-supervised CNN, not the paper's DINOv2-B" in text
    assert "2 of 4 REPA cells are worse than the baseline and 2 better" in text
    assert "all cells (averaged) − baseline = +0.50 [-1.00, +2.00] (interval includes 0)" in text
    assert "lambda 2 − lambda 0.5 = +1.00 [+0.50, +1.50] (the larger lambda is worse, the interval excludes 0)" in text

    cells["d1-lambda2"] = _cell(1, 2.0, 3.0, 2.0, 4.0)
    cells["d1-lambda0.5"] = _cell(1, 0.5, -4.0, -5.0, -3.0)
    text = "\n".join(reading(_results(cells, encoder="facebook/dinov2-base")))
    assert "which disagrees with the paper at this scale" in text and "not the paper's DINOv2" not in text

    cells["d1-lambda2"] = _cell(1, 2.0, 0.3, -1.0, 1.6)
    text = "\n".join(reading(_results(cells)))
    assert "neither confirms nor refutes the paper's claim" in text


def test_paper_cell_is_a_third_of_the_depth_at_lambda_two():
    results = {"grid": {"num_hidden_layers": 24}, "cells": {cell_name(d, c): {"depth": d, "coefficient": c}
                                                             for d in (4, 8, 12) for c in (0.5, 2.0, 4.0)}}  # fmt: skip
    assert paper_cell(results) == "d8-lambda2"
    assert cell_name(None, 0.0) == "baseline" and cell_name(2, 0.5) == "d2-lambda0.5"


def test_dump_config_and_bad_input(tmp_path, capsys):
    path = tmp_path / "repa.json"
    assert main(["benchmark", "repa", "--preset", "imagenet", "--dump_config", str(path)]) == 0
    assert load_preset(config_file=path) == PRESETS["imagenet"]
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "repa_imagenet.json"
    assert load_preset(config_file=shipped) == PRESETS["imagenet"], "regenerate it with --dump_config"

    def refused(*extra, config=None) -> str:
        argv = [*ARGS, "--output_dir", str(tmp_path / "x"), *extra]
        if config is not None:
            path.write_text(json.dumps(config))
            argv = [*argv, "--config", str(path)]
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "REPA depths [4] are outside 1..3" in refused("--depths", "1", "4")
    assert "REPA coefficients must be > 0, got [0.0]" in refused("--coefficients", "0")
    assert "depths must be distinct" in refused("--depths", "1", "1")
    assert "repa_encoder 'none' leaves nothing to study" in refused("--repa_encoder", "none")
    assert "--max_train_steps must be >= 1" in refused("--max_train_steps", "0")
    config = copy.deepcopy(PRESETS["tiny"])
    config["train"]["repa_depth"] = 2
    assert "sets ['repa_depth'] per run" in refused(config=config)
    config = copy.deepcopy(PRESETS["tiny"])
    config["resolution"] = 32
    assert "'resolution' 32 differs from the generators' 16" in refused(config=config)
    assert "missing ['depths']" in refused(config={k: v for k, v in PRESETS["tiny"].items() if k != "depths"})
    assert not (tmp_path / "x").exists()  # nothing was trained


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tmp_path):
    """One `accelerate launch` drives every run on both processes (DDP); the main process alone writes the report."""
    launch_two_processes(
        ["benchmark", "repa", "--preset", "tiny", "--seeds", "0", "--depths", "1", "--output_dir", str(tmp_path)]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["runs"]) == {"baseline", "d1-lambda1"} and results["seeds"] == [0]
    assert "One seed: no intervals" in results["reading"][0]
