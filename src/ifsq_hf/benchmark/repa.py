"""The ``repa`` study: where and how strongly should LlamaGen be aligned to a vision encoder (REPA)?

One tokenizer is trained once and shared. On top of it LlamaGen is trained with ``examples/train_llamagen_repa.py``
for every cell of a grid of REPA depths ``d`` (the projector reads the hidden state after block ``d``) and REPA
coefficients ``lambda`` (``loss = CE + lambda * REPA``), plus the no-REPA baseline (``lambda = 0``: one run per seed,
shared by every depth). Each seed sets the initialisation and the data order and is shared by every cell, so
``cell[seed] - baseline[seed]`` is a paired difference.

Every run is scored by :func:`~ifsq_hf.benchmark.generators.evaluate_generator`: FID (ADM Inception) of its samples
against held-out images, and the cheaper Fréchet distance in the tokenizer's latent space. ``report.md`` shows a heat
map of the mean metric per ``(depth, lambda)`` cell, a heat map of the paired difference to the baseline with its 95%
t interval (cells whose interval excludes 0 are marked), the metric against ``lambda`` per depth, and a plain-words
reading generated from the numbers, set against the paper's claim (REPA helps LlamaGen, best near a third of the
depth with ``lambda`` about 2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .common import (
    TOKENIZER_TRAIN,
    add_study_args,
    fmt_summary,
    load_study_config,
    resolve_study_args,
    run_timing,
    study_state,
    timing_summary,
    train_argv,
)
from .report import environment, markdown_table, pyplot, run_section, write_results
from .runner import load_example
from .statistics import paired_difference, summarize

__all__ = ["METRICS", "PRESETS", "add_args", "cell_name", "load_preset", "main", "reading", "run_repa_study"]

KIND = "llamagen"
TOKENS_SCRIPT = "extract_tokens"
# metric -> +1 if higher is better, -1 if lower is better; the first one present is the headline.
METRICS = {"fid": -1, "latent_fd": -1}
METRIC_LABELS = {"fid": "FID (ADM Inception)", "latent_fd": "Fréchet distance in the tokenizer's latent space"}
# The paper's setting, from the official LlamaGen-REPA configs (encoder_depth 8 of 24 layers, proj_coef 2.0).
PAPER_DEPTH_FRACTION, PAPER_COEFFICIENT = 1 / 3, 2.0
REQUIRED = ("tokenizer", "train", "depths", "coefficients", "repa_encoder")
# The offline stand-ins of ifsq_hf.training.repa (ImageNet-supervised CNNs, not DINOv2).
OFFLINE_ENCODERS = ("efficientnet-lite0", "efficientnet-lite0-s16", "lpips-vgg16")
# Flags the study sets per run; a config's ``train`` must leave them out.
STUDY_FLAGS = ("repa_encoder", "repa_coefficient", "repa_depth", "tokenizer", "seed", "output_dir")

# CPU-sized LlamaGen of examples/demo.py: 4 blocks of width 128 (~1.7 M parameters), factorized head (2 x 289).
_CPU_LLAMAGEN = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "multiple_of": 32,
                 "repa_projector_dim": 256}  # fmt: skip

# tokenizer: what generators.prepare_tokenizer trains (arguments of examples/train_ifsq_autoencoder.py).
# train: arguments of examples/train_llamagen_repa.py without the per-run REPA flags, seed, tokenizer and output.
# tokens: arguments of examples/extract_tokens.py for a precomputed token + REPA-feature set shared by every run
#   (``None``: encode the images online in every step, as the ImageNet recipe does).
PRESETS: dict[str, dict[str, Any]] = {
    # For the tests: seconds per run.
    "tiny": {
        "tokenizer": {
            "model_preset": "test_f4_d4",
            "train": {
                "resolution": 16, "train_batch_size": 4, "max_train_steps": 4, "num_bundled_samples": 16,
                "learning_rate": 1e-3, "perceptual_weight": 0.0, "disc_start": 10**9, "lpips_net": "none",
                "validation_steps": 0, "checkpointing_steps": 1000, "report_to": "none", "bundled_photo_size": 64,
                "no-use_ema": True,
            },
            "seed": 0,
        },
        "train": {
            "preset": "tiny", "factorized_groups": 2, "train_batch_size": 4, "max_train_steps": 3,
            "learning_rate": 1e-3, "no-use_ema": True, "validation_steps": 0, "checkpointing_steps": 3,
            "report_to": "none",
        },
        "tokens": {"resolution": 16, "bundled_split": "all", "bundled_photo_size": 64, "num_bundled_samples": 16,
                   "batch_size": 16, "seed": 0},
        "repa_encoder": "efficientnet-lite0-s16",
        "depths": [1, 3],
        "coefficients": [1.0],
        "resolution": 16, "num_reference_images": 24, "bundled_photo_size": 64, "fid": False,
        "num_eval_samples": 24, "eval_batch_size": 24,
        "num_threads": 1,
    },
    # The 2-core CPU study; see docs/benchmark.md for its measured time.
    "cpu": {
        "tokenizer": {
            "model_preset": "tiny_f8_d4",
            "train": {**TOKENIZER_TRAIN["cpu"], "max_train_steps": 400},
            "seed": 0,
        },
        "train": {
            "preset": "tiny", "preset_overrides": _CPU_LLAMAGEN, "factorized_groups": 2, "train_batch_size": 16,
            "max_train_steps": 150, "learning_rate": 1e-3, "adam_weight_decay": 0.0, "validation_steps": 0,
            "checkpointing_steps": 75, "checkpoints_total_limit": 1, "report_to": "none",
            # No EMA: at a few hundred steps an average with decay 0.9999 is still the initialisation.
            "no-use_ema": True,
        },
        "tokens": {"resolution": 64, "bundled_split": "all", "bundled_photo_size": 128, "num_bundled_samples": 2048,
                   "batch_size": 64, "seed": 0},
        # Offline stand-in: an ImageNet-supervised CNN, NOT the paper's DINOv2 (no ViT weights install offline).
        "repa_encoder": "efficientnet-lite0",
        "depths": [1, 2, 3],
        "coefficients": [0.5, 2.0],
        # Held-out reference: random crops of the same 12 photos (generators.reference_images). FID is off: at one
        # thread the Inception network costs ~0.5 s per 64 px sample (21 runs x 240 samples: 45 min); the latent-space
        # Frechet distance is the metric here.
        "resolution": 64, "num_reference_images": 960, "bundled_photo_size": 128, "fid": False,
        "num_eval_samples": 240, "eval_batch_size": 120,
        "num_threads": 1,
    },
    # A GPU cluster: LlamaGen-L (24 blocks) with DINOv2-B on ImageNet-1k, the official recipe (global batch 256,
    # lr 1e-4, betas (0.9, 0.95), wd 0.05, EMA 0.9999, bf16) shortened to 100k steps per run, depths 4, 8, 12 around
    # the official 8. Run with `accelerate launch -m ifsq_hf.cli benchmark repa --config ...`.
    "imagenet": {
        "tokenizer": {
            "model_preset": "ifsq_f16_d4_4bit",
            "train": dict(TOKENIZER_TRAIN["imagenet"]),
            "seed": 0,
        },
        "train": {
            "preset": "L", "factorized_groups": 2, "dataset_name": "ILSVRC/imagenet-1k", "resolution": 256,
            "center_crop": True, "random_flip": True, "train_batch_size": 32, "max_train_steps": 100_000,
            "mixed_precision": "bf16", "dataloader_num_workers": 8, "validation_steps": 25_000,
            "checkpointing_steps": 5_000, "checkpoints_total_limit": 2, "report_to": "tensorboard",
        },
        "tokens": None,
        "repa_encoder": "facebook/dinov2-base",
        "depths": [4, 8, 12],
        "coefficients": [0.5, 2.0, 4.0],
        # FID-10k against 10k ImageNet validation images (evenly spaced), CFG 2.0 as the official sampler.
        "resolution": 256, "num_reference_images": 10_000,
        "reference_dataset": {"dataset_name": "ILSVRC/imagenet-1k", "split": "validation"}, "fid": True,
        "num_eval_samples": 10_000, "eval_batch_size": 100, "llamagen_sampling": {"guidance_scale": 2.0},
    },
}  # fmt: skip


def cell_name(depth: int | None, coefficient: float) -> str:
    """``"d2-lambda0.5"`` for a REPA cell, ``"baseline"`` for ``coefficient == 0``: folder and results key."""
    return "baseline" if coefficient == 0 else f"d{depth}-lambda{coefficient:g}"


def num_hidden_layers(train: dict) -> int:
    """Depth of the LlamaGen the ``train`` arguments build (``--model_config`` file, else preset + overrides)."""
    from ..models.llamagen import LlamaGenConfig

    if train.get("model_config"):
        return int(json.loads(Path(train["model_config"]).read_text())["num_hidden_layers"])
    overrides = train.get("preset_overrides") or {}
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    return LlamaGenConfig.from_preset(train.get("preset", "B"), **overrides).num_hidden_layers


def check_config(config: dict) -> dict:
    """Refuse grids and ``train`` dicts the study cannot run, naming the fix."""
    train = config["train"]
    clash = [k for k in STUDY_FLAGS if k in train]
    if clash:
        raise ValueError(
            f"the repa study sets {clash} per run; remove them from the config's 'train' (the grid is 'depths' x "
            "'coefficients', the encoder 'repa_encoder')."
        )
    depths, coefficients = list(config["depths"]), list(config["coefficients"])
    if not depths or not coefficients:
        raise ValueError("the repa study needs at least one depth and one coefficient (--depths, --coefficients).")
    layers = num_hidden_layers(train)
    bad = [d for d in depths if not isinstance(d, int) or not 1 <= d <= layers]
    if bad:
        raise ValueError(f"REPA depths {bad} are outside 1..{layers}, the blocks of this LlamaGen; pick --depths "
                         f"among 1..{layers}.")  # fmt: skip
    bad = [c for c in coefficients if not isinstance(c, (int, float)) or not c > 0]
    if bad:
        raise ValueError(f"REPA coefficients must be > 0, got {bad}; the lambda = 0 baseline is always trained.")
    for what, values in (("depths", depths), ("coefficients", coefficients)):
        if len(set(values)) != len(values):
            raise ValueError(f"{what} must be distinct, got {values}.")
    tokens = config.get("tokens") or {}
    data_resolution = tokens.get("resolution", train.get("resolution"))
    if data_resolution is not None and config.get("resolution") != data_resolution:
        raise ValueError(
            f"the held-out reference's 'resolution' {config.get('resolution')} differs from the generators' "
            f"{data_resolution} ('tokens' or 'train' resolution); set them equal."
        )
    if str(config["repa_encoder"]).lower() == "none":
        raise ValueError("repa_encoder 'none' leaves nothing to study; name an encoder (e.g. efficientnet-lite0).")
    return config


def load_preset(name: str | None = None, config_file: str | Path | None = None) -> dict[str, Any]:
    """A preset by name, or a JSON config file (same keys; ``--dump_config`` writes one to start from)."""
    return check_config(load_study_config("repa", PRESETS, name, config_file, REQUIRED))


def prepare_tokens(config: dict, tokenizer_dir: Path, output_dir: Path, examples_dir=None) -> Path | None:
    """Token indices + REPA features of the training crops, encoded once for all runs (``config["tokens"]``), or
    ``None`` when the runs encode online. Every process takes part; a finished set is reused."""
    spec = config.get("tokens")
    if not spec:
        return None
    path = output_dir / "tokens"
    if not (path / "ifsq_precomputed.json").is_file():
        argv = [*train_argv(spec), "--tokenizer", str(tokenizer_dir), "--output_dir", str(path)]
        argv += ["--repa_encoder", config["repa_encoder"]]
        load_example(TOKENS_SCRIPT, examples_dir).main(argv)
    study_state().wait_for_everyone()
    return path


def run_train(config: dict, depth: int | None, coefficient: float, tokens: Path | None) -> dict:
    """The ``train`` dict of one cell: the shared arguments plus its REPA flags (and the precomputed set)."""
    train = dict(config["train"])
    if tokens is not None:
        train["tokens_dataset"] = str(tokens)
        for key in ("resolution", "dataset_name", "train_data_dir", "num_bundled_samples", "bundled_split",
                    "bundled_photo_size", "random_flip", "center_crop"):  # fmt: skip
            train.pop(key, None)  # the precomputed set fixes them (flips are stored)
    if coefficient == 0:
        # The baseline: REPA off (no projector, no encoder). The models initialise their REPA projector from its
        # own seeded generator, so the same seed gives the baseline and every cell the same trunk and data order.
        train.update(repa_encoder="none", repa_coefficient=0.0)
        return train
    train.update(repa_encoder=config["repa_encoder"], repa_coefficient=coefficient, repa_depth=depth)
    return train


def _metric_names(runs: dict[str, dict[int, dict]], seeds: list[int]) -> list[str]:
    first = runs["baseline"][seeds[0]]["metrics"]
    return [m for m in METRICS if m in first]


def _aggregate(config: dict, seeds: list[int], runs: dict[str, dict[int, dict]]) -> dict:
    metrics = _metric_names(runs, seeds)

    def values(name: str, m: str) -> list[float]:
        return [runs[name][s]["metrics"][m] for s in seeds]

    baseline = {"metrics": {m: summarize(values("baseline", m)).to_dict() for m in metrics}}
    cells = {}
    for d in config["depths"]:
        for c in config["coefficients"]:
            name = cell_name(d, c)
            cells[name] = {
                "depth": d,
                "coefficient": c,
                "metrics": {m: summarize(values(name, m)).to_dict() for m in metrics},
                "vs_baseline": {
                    m: paired_difference(values(name, m), values("baseline", m)).to_dict() for m in metrics
                },
            }
    best = {}
    for m in metrics:
        sign = METRICS[m]
        name = max(cells, key=lambda n: sign * cells[n]["metrics"][m]["mean"])
        best[m] = {
            "cell": name,
            "vs_others": {
                other: paired_difference(values(name, m), values(other, m)).to_dict()
                for other in cells
                if other != name
            },
        }
    return {"metrics": metrics, "baseline": baseline, "cells": cells, "best": best,
            "marginals": _marginals(config, seeds, runs, metrics)}  # fmt: skip


def _marginals(config: dict, seeds: list[int], runs: dict, metrics: list[str]) -> dict:
    """Paired differences of cell averages, per seed: every cell vs the baseline, each lambda (averaged over the
    depths) and each depth (averaged over lambda) vs the baseline, and the largest minus the smallest lambda. Pooling
    cells narrows the interval, but it answers "does REPA on this grid help on average", not "which cell is best"."""
    depths, coefficients = config["depths"], config["coefficients"]

    def average(names: list[str], m: str) -> list[float]:
        return [sum(runs[n][s]["metrics"][m] for n in names) / len(names) for s in seeds]

    out = {}
    for m in metrics:
        base = average(["baseline"], m)
        groups = {"all cells": [cell_name(d, c) for d in depths for c in coefficients]}
        groups.update({f"lambda {c:g}": [cell_name(d, c) for d in depths] for c in coefficients})
        groups.update({f"depth {d}": [cell_name(d, c) for c in coefficients] for d in depths})
        rows = {g: {**paired_difference(average(names, m), base).to_dict(), "vs": "baseline"}
                for g, names in groups.items()}  # fmt: skip
        if len(coefficients) > 1:
            lo, hi = min(coefficients), max(coefficients)
            rows[f"lambda {hi:g} − lambda {lo:g}"] = {
                **paired_difference(
                    average(groups[f"lambda {hi:g}"], m), average(groups[f"lambda {lo:g}"], m)
                ).to_dict(),
                "vs": f"lambda {lo:g}",
            }
        out[m] = rows
    return out


def _ci(d: dict, digits: int = 2) -> str:
    if d["low"] is None:
        return f"{d['mean']:+.{digits}f} (n=1, no interval)"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def _verdict(d: dict, sign: int) -> str:
    """``better`` / ``worse`` / ``unresolved`` for a ``cell - baseline`` paired difference (``sign``: +1 if higher
    is better)."""
    if d["low"] is None or d["includes_zero"]:
        return "unresolved"
    return "better" if (d["mean"] > 0) == (sign > 0) else "worse"


def paper_cell(results: dict) -> str:
    """The grid cell nearest the paper's setting: depth closest to a third of the blocks, then lambda closest to 2."""
    layers = results["grid"]["num_hidden_layers"]
    cells = results["cells"]
    return min(
        cells,
        key=lambda n: (abs(cells[n]["depth"] - PAPER_DEPTH_FRACTION * layers), abs(cells[n]["coefficient"] - 2.0)),
    )


def reading(results: dict) -> list[str]:
    """Plain-words statements generated from the numbers: what the study does and does not show."""
    out = []
    cells, grid, cfg = results["cells"], results["grid"], results["config"]
    layers = grid["num_hidden_layers"]
    n = len(results["seeds"])
    if n < 2:
        out.append("One seed: no intervals, so nothing below is a detection (rerun with --num_seeds 3 or more).")
    for m in results["metrics"]:
        sign = METRICS[m]
        verdicts = {name: _verdict(c["vs_baseline"][m], sign) for name, c in cells.items()}
        better = [x for x, v in verdicts.items() if v == "better"]
        worse = [x for x, v in verdicts.items() if v == "worse"]
        base = fmt_summary(results["baseline"]["metrics"][m], 2)
        line = (f"{m} ({'lower' if sign < 0 else 'higher'} is better; no-REPA baseline {base}): of {len(cells)} REPA "
                f"cells, {len(better)} are better than the baseline with a 95% interval that excludes 0"
                f"{' (' + ', '.join(better) + ')' if better else ''}, {len(worse)} are worse"
                f"{' (' + ', '.join(worse) + ')' if worse else ''}, and {len(cells) - len(better) - len(worse)} "
                "are not distinguishable from it at this scale.")  # fmt: skip
        if better or worse:
            line += (f" With {len(cells)} intervals at 95%, about {len(cells) / 20:.1f} exclude 0 by chance alone "
                     "even with no effect, so a lone detected cell is a hint to re-test with more seeds, not a "
                     "finding.")  # fmt: skip
        out.append(line)
        best = results["best"][m]
        b = cells[best["cell"]]
        resolved = [o for o, d in best["vs_others"].items() if d["low"] is not None and not d["includes_zero"]]
        line = (f"{m}: the best mean is at depth {b['depth']}, lambda {b['coefficient']:g} "
                f"({fmt_summary(b['metrics'][m], 2)}; vs baseline {_ci(b['vs_baseline'][m])}). ")  # fmt: skip
        if len(resolved) == len(best["vs_others"]) and resolved:
            line += "Its paired difference to every other cell excludes 0, so the grid's optimum is resolved."
        elif resolved:
            line += (f"It is distinguishable only from {', '.join(resolved)}; against the other cells the intervals "
                     "include 0, so the optimum within the grid is not resolved.")  # fmt: skip
        else:
            line += ("Its paired differences to all other cells include 0: the ranking of the cells is not resolved "
                     "by these seeds.")  # fmt: skip
        out.append(line)
    for m in results["metrics"]:
        sign = METRICS[m]
        means = [c["vs_baseline"][m]["mean"] for c in cells.values()]
        worse_by_mean = sum(1 for x in means if sign * x < 0)
        out.append(f"{m}, by mean alone: {worse_by_mean} of {len(means)} REPA cells are worse than the baseline and "
                   f"{len(means) - worse_by_mean} better (the cells share the baseline, so these are not independent "
                   "votes).")  # fmt: skip
        for group, d in results["marginals"][m].items():
            if d["vs"] != "baseline" and not group.startswith("lambda"):
                continue
            what = group if d["vs"] != "baseline" else f"{group} (averaged) − baseline"
            verdict = _verdict(d, sign)
            if verdict == "unresolved":
                tail = "interval includes 0"
            elif d["vs"] == "baseline":
                tail = f"REPA {verdict} than none, the interval excludes 0"
            else:
                tail = f"the larger lambda is {verdict}, the interval excludes 0"
            if group == "all cells" or d["vs"] != "baseline" or verdict != "unresolved":
                out.append(f"{m}, pooled: {what} = {_ci(d)} ({tail}).")
    m = results["metrics"][0]
    sign = METRICS[m]
    near = paper_cell(results)
    c = cells[near]
    d = c["vs_baseline"][m]
    verdict = _verdict(d, sign)
    claim = ("The paper's claim (abstract and the official LlamaGen-REPA configs: encoder_depth 8 of 24 blocks, "
             "proj_coef 2.0; the paper's ablation table itself was not retrievable here): REPA improves LlamaGen, "
             "best near one third of the depth with lambda about 2.0 (against 0.5 for diffusion).")  # fmt: skip
    out.append(claim)
    where = f"depth {c['depth']} of {layers}, lambda {c['coefficient']:g}"
    if verdict == "better":
        out.append(f"Nearest cell to that setting here ({where}): {m} − baseline {_ci(d)}, better than no REPA with "
                   "an interval excluding 0, which agrees with the paper at this scale.")  # fmt: skip
    elif verdict == "worse":
        out.append(f"Nearest cell to that setting here ({where}): {m} − baseline {_ci(d)}, worse than no REPA with "
                   "an interval excluding 0, which disagrees with the paper at this scale.")  # fmt: skip
    else:
        out.append(f"Nearest cell to that setting here ({where}): {m} − baseline {_ci(d)}; the interval includes 0, "
                   "so this study neither confirms nor refutes the paper's claim (no difference detected is not "
                   "evidence of none).")  # fmt: skip
    best_depth = cells[results["best"][m]["cell"]]["depth"]
    third = min(grid["depths"], key=lambda x: abs(x - PAPER_DEPTH_FRACTION * layers))
    for coefficient in grid["coefficients"]:
        row = {dd: cells[cell_name(dd, coefficient)]["metrics"][m]["mean"] for dd in grid["depths"]}
        top = max(row, key=lambda dd: sign * row[dd])
        out.append(f"At lambda {coefficient:g}, the depth with the best mean {m} is {top} "
                   f"({', '.join(f'd{dd}: {v:.2f}' for dd, v in row.items())}); the paper's one third of the depth "
                   f"is depth {third} here.")  # fmt: skip
    if len(grid["coefficients"]) > 1:
        lo, hi = min(grid["coefficients"]), max(grid["coefficients"])
        rising = [dd for dd in grid["depths"] if sign * cells[cell_name(dd, hi)]["metrics"][m]["mean"]
                  > sign * cells[cell_name(dd, lo)]["metrics"][m]["mean"]]  # fmt: skip
        out.append(f"By mean {m}, lambda {hi:g} beats lambda {lo:g} at {len(rising)} of {len(grid['depths'])} depths"
                   f"{' (' + ', '.join(f'd{x}' for x in rising) + ')' if rising else ''}; the metric-vs-lambda plot "
                   "shows whether the error bars separate.")  # fmt: skip
    best_is = "at" if best_depth == third else "not at"
    others = results["best"][m]["vs_others"]
    if others and all(d["low"] is not None and not d["includes_zero"] for d in others.values()):
        out.append(f"By {m}, the best cell overall is {best_is} the paper's one-third depth, and it is resolved "
                   "from every other cell.")  # fmt: skip
    else:
        out.append(f"By mean {m}, the best cell overall is {best_is} the paper's one-third depth; its intervals "
                   "against the other cells do not all exclude 0, so that placement is a point estimate, not a "
                   "finding.")  # fmt: skip
    encoder = str(cfg["repa_encoder"])
    if encoder in OFFLINE_ENCODERS:
        out.append(f"The REPA target here is {encoder}, an ImageNet-supervised CNN, not the paper's DINOv2-B (a "
                   "self-supervised ViT; no ViT weights install offline). This tests REPA's mechanism on LlamaGen, not "
                   "the paper's setting; a supervised CNN's features can help or hurt differently.")  # fmt: skip
    elif "dinov2" not in encoder.lower():
        out.append(f"The REPA target here is {encoder}, not the paper's DINOv2-B.")
    train = cfg["train"]
    source = train.get("dataset_name") or train.get("train_data_dir") or "crops of the 12 bundled photos"
    reference = results.get("reference", {}).get("description", "held-out images")
    if not (train.get("dataset_name") or train.get("train_data_dir") or cfg.get("reference_dataset")):
        reference += " (other random crops of the same photos: how well the training distribution is modelled)"
    out.append(f"Scope: {n} seeds per cell, a {layers}-block LlamaGen ({results['grid']['num_parameters']:,} "
               f"parameters without the projector) trained {train.get('max_train_steps')} steps on {source}, "
               f"scored against {reference}; every cell shares one tokenizer. The intervals cover seed noise "
               "only, not the recipe, the data or the encoder.")  # fmt: skip
    if "fid" in results["metrics"]:
        out.append("FID on a few hundred small samples is biased upward and only comparable within this study.")
    else:
        out.append("FID was off (`fid: false`: the Inception network costs about 0.5 s per sample on one CPU "
                   "thread). latent_fd compares samples with held-out images in the shared tokenizer's latent space: "
                   "it sees what the generator models, not what the decoder adds, and is not the paper's "
                   "metric.")  # fmt: skip
    return out


def _label(m: str) -> str:
    return f"{m} ({'lower' if METRICS[m] < 0 else 'higher'} is better)"


def _plots(results: dict, output_dir: Path) -> list[str]:
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    plt = pyplot()
    grid, cells, metrics = results["grid"], results["cells"], results["metrics"]
    depths, coefficients = grid["depths"], grid["coefficients"]
    files = []

    size = (4.2 + 1.3 * len(coefficients), 1.0 + 1.1 * len(depths) * len(metrics))
    fig, axes = plt.subplots(len(metrics), 2, figsize=size, squeeze=False)
    for row, m in enumerate(metrics):
        base = results["baseline"]["metrics"][m]
        mean = np.array([[cells[cell_name(d, c)]["metrics"][m]["mean"] for c in coefficients] for d in depths])
        diff = [[cells[cell_name(d, c)]["vs_baseline"][m] for c in coefficients] for d in depths]
        ax = axes[row][0]
        image = ax.imshow(mean, cmap="viridis_r" if METRICS[m] < 0 else "viridis", aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        span = float(mean.max() - mean.min()) or 1.0
        for i, d in enumerate(depths):
            for j, c in enumerate(coefficients):
                s = cells[cell_name(d, c)]["metrics"][m]
                dark = (
                    (mean[i, j] - mean.min()) / span > 0.5
                    if METRICS[m] < 0
                    else (mean[i, j] - mean.min()) / span < 0.5
                )
                ax.text(j, i, fmt_summary(s, 1).replace(" ± ", "\n± "), ha="center", va="center", fontsize=7,
                        color="w" if dark else "k")  # fmt: skip
        ax.set_title(f"{m}: mean ± std over seeds\n(no REPA: {fmt_summary(base, 1)})", fontsize=8)
        values = np.array([[x["mean"] for x in r] for r in diff])
        limit = float(np.abs(values).max()) or 1.0
        ax = axes[row][1]
        # blue where REPA is better, whichever direction the metric runs
        cmap = "RdBu_r" if METRICS[m] < 0 else "RdBu"
        image = ax.imshow(values, cmap=cmap, aspect="auto", norm=TwoSlopeNorm(0.0, -limit, limit))
        fig.colorbar(image, ax=ax, shrink=0.8)
        for i in range(len(depths)):
            for j in range(len(coefficients)):
                x = diff[i][j]
                text = f"{x['mean']:+.2f}"
                if x["low"] is not None:
                    text += f"\n[{x['low']:+.2f}, {x['high']:+.2f}]"
                excludes = x["includes_zero"] is False
                ax.text(j, i, text + (" *" if excludes else ""), ha="center", va="center", fontsize=7,
                        color="w" if abs(x["mean"]) > 0.6 * limit else "k",
                        fontweight="bold" if excludes else "normal")  # fmt: skip
                if excludes:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="k"))
        ax.set_title(f"{m}: REPA − no REPA (same seed), 95% t CI\n* boxed: interval excludes 0", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks(range(len(coefficients)), [f"{c:g}" for c in coefficients])
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_xlabel("REPA coefficient lambda", fontsize=8)
            ax.set_ylabel(f"REPA depth (of {grid['num_hidden_layers']} blocks)", fontsize=8)
    fig.tight_layout()
    fig.savefig(output_dir / "heatmap.png", dpi=110)
    plt.close(fig)
    files.append("heatmap.png")

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.4), squeeze=False)
    xs = [0.0, *coefficients]
    offsets = np.linspace(-0.04, 0.04, len(depths)) * (max(xs) or 1.0)
    for ax, m in zip(axes[0], metrics):
        base = results["baseline"]["metrics"][m]
        for k, d in enumerate(depths):
            ss = [base, *(cells[cell_name(d, c)]["metrics"][m] for c in coefficients)]
            ax.errorbar([x + offsets[k] for x in xs], [s["mean"] for s in ss], yerr=[s["std"] or 0.0 for s in ss],
                        fmt="o-", capsize=3, color=f"C{k}", label=f"depth {d}")  # fmt: skip
        ax.axhline(base["mean"], color="0.6", ls="--", lw=1)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("REPA coefficient lambda (0 = no REPA, shared by all depths)", fontsize=8)
        ax.set_title(f"{_label(m)}: mean ± std over seeds", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output_dir / "lambda.png", dpi=110)
    plt.close(fig)
    files.append("lambda.png")
    return files


def _copy_samples(results: dict, output_dir: Path) -> dict[str, str]:
    """The evaluation's sample grids of the baseline, the paper's cell and the best cell (first seed), beside the
    report, so the numbers can be looked at."""
    seed = results["seeds"][0]
    names = dict.fromkeys(["baseline", results["paper_cell"], results["best"][results["metrics"][0]]["cell"]])
    copied = {}
    for name in names:
        source = output_dir / "runs" / f"{name}-seed{seed}" / "bench_samples.png"
        if source.is_file():
            (output_dir / f"samples_{name}.png").write_bytes(source.read_bytes())
            copied[name] = f"samples_{name}.png"
    return copied


def _report(results: dict) -> str:
    grid, cells = results["grid"], results["cells"]
    metrics, flops = results["metrics"], results["training_flops_per_step"]
    lines = ["# repa study: LlamaGen REPA depth × lambda", ""]
    lines += ["Generated by `ifsq-hf benchmark repa`; every number below comes from `results.json` beside this file.",
              ""]  # fmt: skip
    lines += run_section(
        results,
        "each seed: initialisation and data order; shared by every cell and the baseline",
        [f"- grid: depths {grid['depths']} of {grid['num_hidden_layers']} blocks × lambda "
         f"{[float(c) for c in grid['coefficients']]}, plus the no-REPA baseline (lambda 0, one run per seed)",
         f"- REPA encoder: `{results['config']['repa_encoder']}`; LlamaGen: {grid['num_parameters']:,} parameters "
         "without the projector",
         f"- training FLOPs per optimizer step: {flops['without_projector']:.4g} for the baseline (no REPA), "
         f"{flops['with_projector']:.4g} for a REPA cell, whose projector adds the difference (the frozen "
         "encoder's forward is not counted; it is zero with precomputed features)",
         f"- held-out reference: {results['reference']['description']}"],
        "sum over generator runs of training + evaluation, as measured when each run was trained; the shared "
        "tokenizer and token extraction are not included",
    )  # fmt: skip
    lines += ["## What this does and does not show", ""] + [f"- {r}" for r in results["reading"]] + [""]
    for m in metrics:
        lines += [f"## {METRIC_LABELS.get(m, m)} (`{m}`, {'lower' if METRICS[m] < 0 else 'higher'} is better)", ""]
        lines += [f"Mean ± std over seeds; no-REPA baseline: {fmt_summary(results['baseline']['metrics'][m], 3)}.",
                  ""]  # fmt: skip
        header = ["depth \\ lambda", *(f"{c:g}" for c in grid["coefficients"])]
        rows = [[d, *(fmt_summary(cells[cell_name(d, c)]["metrics"][m], 3) for c in grid["coefficients"])]
                for d in grid["depths"]]  # fmt: skip
        lines += [markdown_table(header, rows), ""]
        lines += ["Paired difference to the baseline (REPA − no REPA, same seed), mean and 95% t interval; **bold**: "
                  "the interval excludes 0.", ""]  # fmt: skip
        rows = []
        for d in grid["depths"]:
            row = [d]
            for c in grid["coefficients"]:
                x = cells[cell_name(d, c)]["vs_baseline"][m]
                row.append(f"**{_ci(x, 3)}**" if x["includes_zero"] is False else _ci(x, 3))
            rows.append(row)
        lines += [markdown_table(header, rows), ""]
        lines += ["Pooled: per seed, the average over a group of cells minus the baseline (or one lambda minus the "
                  "other), mean and 95% t interval.", ""]  # fmt: skip
        rows = [[g, d["vs"], _ci(d, 3), "yes" if d["includes_zero"] else "**no**" if d["low"] is not None else "n/a"]
                for g, d in results["marginals"][m].items()]  # fmt: skip
        lines += [markdown_table(["group", "minus", "mean [95% CI]", "includes 0"], rows), ""]
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in results["plots"]] + [""]
    lines += ["- `heatmap.png`: left, the mean metric per (depth, lambda) cell with its std over seeds; right, the "
              "paired difference to the no-REPA baseline with its 95% t interval (blue: REPA better; boxed with *: "
              "the interval excludes 0).",
              "- `lambda.png`: the metric against lambda for each depth (mean ± std; lambda 0 is the shared baseline, "
              "the dashed line its mean). Error bars are seed spreads, not intervals of differences: the paired "
              "table is the sharper test.", ""]  # fmt: skip
    if results.get("samples"):
        lines += ["## Samples (seed " + str(results["seeds"][0]) + ", the first evaluation batch, two per class)", ""]
        for name, file in results["samples"].items():
            lines += [f"{name}:", "", f"![{name}]({file})", ""]
    lines += ["## Per-run metrics", ""]
    rows = []
    for name in ["baseline", *cells]:
        for s in results["seeds"]:
            run = results["runs"][name][str(s)]
            rows.append([name, s, *(f"{run['metrics'][m]:.3f}" for m in metrics)])
    lines.append(markdown_table(["cell", "seed", *metrics], rows))
    return "\n".join(lines) + "\n"


def run_repa_study(
    config: dict,
    output_dir: str | Path,
    seeds: list[int],
    *,
    preset_name: str = "custom",
    examples_dir: str | Path | None = None,
    argv: list[str] | None = None,
) -> dict:
    """Train the tokenizer once, then LlamaGen for the baseline and every (depth, lambda) cell and seed (resuming
    unfinished runs); evaluate, write the report.

    Runs under ``accelerate launch``: all processes train together; the main process evaluates and writes.
    Returns the results dict (also written to ``results.json``) on the main process, ``{}`` on the others.
    """
    from .generators import build_reference, evaluate_generator, prepare_tokenizer, train_generator, training_flops

    check_config(config)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}.")
    state = study_state()
    output_dir = Path(output_dir)
    tokenizer_dir = prepare_tokenizer(config, output_dir, examples_dir=examples_dir)
    tokens = prepare_tokens(config, tokenizer_dir, output_dir, examples_dir)
    reference = build_reference(config, tokenizer_dir, output_dir) if state.is_main_process else None
    plan = [(None, 0.0)] + [(d, c) for d in config["depths"] for c in config["coefficients"]]
    timing: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[int, dict]] = {cell_name(d, c): {} for d, c in plan}
    start_wall = time.perf_counter()
    for seed in seeds:
        for depth, coefficient in plan:
            name = cell_name(depth, coefficient)
            run_dir = output_dir / "runs" / f"{name}-seed{seed}"
            train = run_train(config, depth, coefficient, tokens)
            w, c = time.perf_counter(), time.process_time()
            trained = train_generator(KIND, train, tokenizer_dir, run_dir, seed, examples_dir=examples_dir)
            state.wait_for_everyone()
            if state.is_main_process:  # evaluate_generator caches its result in the run folder
                runs[name][seed] = {"metrics": evaluate_generator(KIND, run_dir, reference, config, seed)}
            timing[f"{name}-seed{seed}"] = run_timing(run_dir, trained, w, c) if state.is_main_process else {}
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    from ..models.llamagen import LlamaGenForImageGeneration

    baseline_dir = output_dir / "runs" / f"baseline-seed{seeds[0]}"
    model = LlamaGenForImageGeneration.from_pretrained(baseline_dir)  # REPA off: no projector
    first = cell_name(config["depths"][0], config["coefficients"][0])
    flops = {  # per optimizer step and process: the baseline, and a REPA cell (the projector's share)
        "without_projector": training_flops(KIND, baseline_dir, config["train"]),
        "with_projector": training_flops(KIND, output_dir / "runs" / f"{first}-seed{seeds[0]}", config["train"]),
    }
    results = {
        "study": "repa",
        "preset": preset_name,
        "config": config,
        "seeds": list(seeds),
        "environment": environment(argv),
        "grid": {
            "depths": list(config["depths"]),
            "coefficients": list(config["coefficients"]),
            "num_hidden_layers": model.config.num_hidden_layers,
            # the generator without its training-only REPA projector (the saved model a user samples with)
            "num_parameters": sum(p.numel() for n, p in model.named_parameters() if "repa_projector" not in n),
        },
        "training_flops_per_step": flops,
        "reference": reference.to_dict(),
        **_aggregate(config, list(seeds), runs),
        "runs": {name: {str(s): r for s, r in by_seed.items()} for name, by_seed in runs.items()},
        "timing": timing_summary(timing, start_wall),
    }
    results["paper_cell"] = paper_cell(results)
    results["reading"] = reading(results)
    results["plots"] = _plots(results, output_dir)
    results["samples"] = _copy_samples(results, output_dir)
    write_results(output_dir, results, _report(results))
    state.wait_for_everyone()
    return results


def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_study_args(parser, "repa", PRESETS)
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="REPA depths (override the preset's).")
    parser.add_argument(
        "--coefficients", type=float, nargs="+", default=None, help="REPA coefficients lambda > 0 (baseline: 0)."
    )
    parser.add_argument("--repa_encoder", default=None, help="Override the preset's REPA encoder.")
    return parser


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """``ifsq-hf benchmark repa``: resolve the config and seeds from ``args`` and run the study."""
    study = resolve_study_args(
        "repa",
        args,
        PRESETS,
        REQUIRED,
        overrides={"depths": args.depths, "coefficients": args.coefficients, "repa_encoder": args.repa_encoder},
    )
    check_config(study.config)
    if study.dump_only:
        return {"config": study.config}
    return run_repa_study(
        study.config,
        study.output_dir,
        study.seeds,
        preset_name=study.preset_name,
        examples_dir=args.examples_dir,
        argv=argv,
    )
