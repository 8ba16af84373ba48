"""The ``bound`` study: does iFSQ's bound ``2 * sigmoid(1.6 z) - 1`` beat FSQ's ``tanh(z)`` at equal architecture and
bits, and what slope do the *real* pre-quantization activations call for?

Three arms share the architecture, the bits, the training recipe and the seeds (each seed changes the
initialisation and the data order, identically in every arm):

* ``fsq``: vanilla FSQ, ``tanh`` bound (slope 2);
* ``ifsq``: the paper's bound, ``alpha = 1.6``;
* ``ifsq_norm``: the same, with ``pre_quant_norm=True`` (running per-channel normalisation to unit variance before
  the bound, :mod:`ifsq_hf.models.pre_quant_norm`), so the paper's unit-variance premise holds by construction.

Every run trains with ``examples/train_ifsq_autoencoder.py`` (:mod:`.runner`), then the saved EMA model is scored on
held-out images (PSNR, SSIM, LPIPS, bin usage and entropy) and its pre-quantization activations on the same images
are measured: per-channel std, KS distance of the bounded values to ``U(-1, 1)`` over a grid of slopes, the
KS-optimal slope, and histograms before and after the bound. ``report.md`` gives mean ± std over seeds, paired
differences with 95% t intervals and a plain-words reading generated from the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..analysis import activation_bound_metrics, best_alpha, bound
from ..evaluation import evaluate_tokenizer
from ..models.autoencoder_ifsq import PRESETS as MODEL_PRESETS
from ..models.autoencoder_ifsq import iFSQAutoencoder
from .common import (
    TOKENIZER_TRAIN,
    add_study_args,
    fmt_summary,
    load_study_config,
    mean_columns,
    resolve_study_args,
    run_timing,
    study_state,
    timing_summary,
    train_argv,
)
from .report import environment, markdown_table, pyplot, run_section, write_results
from .runner import load_example, train_with_example
from .statistics import paired_difference, summarize

__all__ = ["ARMS", "COMPARISONS", "PRESETS", "add_args", "load_preset", "main", "run_bound_study"]

SCRIPT = "train_ifsq_autoencoder"
KS, BIN_EFFICIENCY = "ks_distance_to_uniform", "bin_entropy_efficiency"  # keys of ifsq_hf.analysis

ARMS: dict[str, dict[str, Any]] = {
    "fsq": {"label": "FSQ (tanh)", "model": {"quantizer_bound": "tanh", "pre_quant_norm": False}, "alpha": 2.0},
    "ifsq": {
        "label": "iFSQ (alpha 1.6)",
        "model": {"quantizer_bound": "ifsq", "quantizer_alpha": 1.6, "pre_quant_norm": False},
        "alpha": 1.6,
    },
    "ifsq_norm": {
        "label": "iFSQ + pre-quant norm",
        "model": {"quantizer_bound": "ifsq", "quantizer_alpha": 1.6, "pre_quant_norm": True},
        "alpha": 1.6,
    },
}
# (a, b): the report shows a - b per seed. The first is the paper's claim.
COMPARISONS = [("ifsq", "fsq"), ("ifsq_norm", "ifsq"), ("ifsq_norm", "fsq")]
# metric -> +1 if higher is better, -1 if lower is better
METRICS = {"psnr": 1, "ssim": 1, "lpips": -1, "bin_usage": 1, "bin_entropy_efficiency": 1}
# Slopes swept on the real activations: fine around 1.6-2 where the paper argues, coarser up to 16 (trained encoders
# can shrink their latents far below unit variance).
ALPHAS = [round(0.4 + 0.1 * i, 2) for i in range(37)] + [4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0]

# train: arguments of examples/train_ifsq_autoencoder.py (list values are repeated flags).
PRESETS: dict[str, dict[str, Any]] = {
    # For the tests: seconds per run.
    "tiny": {
        "model_preset": "test_f4_d4",
        "train": {
            "resolution": 16, "train_batch_size": 4, "max_train_steps": 6, "num_bundled_samples": 24,
            "learning_rate": 1e-3, "perceptual_weight": 0.0, "disc_start": 10**9, "lpips_net": "none",
            "validation_steps": 0, "checkpointing_steps": 1000, "report_to": "none", "random_flip": True,
            "bundled_photo_size": 64, "no-use_ema": True,
        },
        "eval_split": "test", "num_eval_images": 8, "lpips_net": "none", "max_activation_values": 20_000,
        "num_threads": 1,
    },
    # The 2-core CPU study (<= 20 min for 3 seeds x 3 arms on an idle box; see docs/benchmark.md).
    "cpu": {
        "model_preset": "tiny_f8_d4",
        "train": dict(TOKENIZER_TRAIN["cpu"]),
        "eval_split": "test", "num_eval_images": 64, "lpips_net": "alex", "max_activation_values": 200_000,
        # One thread: on a busy 2-core box two threads spin against each other (measured 6x more CPU per step).
        "num_threads": 1,
    },
    # A GPU cluster (common.TOKENIZER_TRAIN["imagenet"]); run with
    # `accelerate launch -m ifsq_hf.cli benchmark bound --preset imagenet ...`.
    "imagenet": {
        "model_preset": "ifsq_f16_d4_4bit",
        "train": dict(TOKENIZER_TRAIN["imagenet"]),
        "eval_split": "validation", "num_eval_images": 10_000, "lpips_net": "alex", "max_activation_values": 2_000_000,
    },
}  # fmt: skip


def load_preset(name: str | None = None, config_file: str | Path | None = None) -> dict[str, Any]:
    """A preset by name, or a JSON config file (same keys; ``--dump_config`` writes one to start from)."""
    config = load_study_config("bound", PRESETS, name, config_file, ("model_preset", "train", "num_eval_images"))
    if config["model_preset"] not in MODEL_PRESETS:
        raise ValueError(f"model_preset {config['model_preset']!r} is not one of {sorted(MODEL_PRESETS)}.")
    return config


def _model_config(config: dict, arm: str) -> dict:
    return {**MODEL_PRESETS[config["model_preset"]], **ARMS[arm]["model"]}


def _histogram(values: torch.Tensor, low: float, high: float, bins: int) -> dict:
    counts = torch.histc(values.double().clamp(low, high), bins=bins, min=low, max=high)
    return {"low": low, "high": high, "counts": [int(c) for c in counts]}


@torch.no_grad()
def evaluate_run(
    run_dir: Path, arm: str, config: dict, args: argparse.Namespace, device: torch.device | str = "cpu"
) -> dict:
    """Held-out reconstruction metrics and the activation/alpha measurements of one trained tokenizer."""
    from ..metrics import LPIPS
    from ..training.image_data import build_image_dataset, make_dataloader_from_args

    model = iFSQAutoencoder.from_pretrained(run_dir).to(device).eval()
    dataset = build_image_dataset(args, config.get("eval_split", "test"), train=False)
    loader = make_dataloader_from_args(dataset, args, shuffle=False)
    max_batches = math.ceil(config["num_eval_images"] / args.train_batch_size)
    lpips = None if config.get("lpips_net", "alex") == "none" else LPIPS(net=config["lpips_net"])
    result = evaluate_tokenizer(
        model, loader, lpips_model=lpips, max_batches=max_batches, device=device, show_progress=False
    )
    metrics = {k: float(v) for k, v in result.metrics.items()}

    acts = [
        model.encode_pre_quant(b["pixel_values"].to(device, torch.float32)).cpu()
        for i, b in enumerate(loader)
        if i < max_batches
    ]
    z = torch.cat(acts)  # (N, C, h, w): what enters the bound
    per_channel = z.transpose(0, 1).reshape(z.shape[1], -1)
    flat = per_channel.reshape(-1)
    limit = int(config.get("max_activation_values", 200_000))
    if flat.numel() > limit:  # deterministic thinning for the O(n log n) KS sweep
        flat = flat[torch.linspace(0, flat.numel() - 1, limit).long()]
    levels = max(model.quantizer.levels)
    rows = [activation_bound_metrics(flat, a, levels=levels) for a in ALPHAS]
    own_alpha = ARMS[arm]["alpha"]
    own = activation_bound_metrics(flat, own_alpha, levels=levels)
    activations = {
        "std_per_channel": per_channel.std(dim=1).tolist(),
        "mean_per_channel": per_channel.mean(dim=1).tolist(),
        "std": float(flat.std()),
        "num_values": int(flat.numel()),
        "own_alpha": own_alpha,
        "ks_at_own_alpha": own[KS],
        "bin_efficiency_at_own_alpha": own[BIN_EFFICIENCY],
        "ks_optimal_alpha": best_alpha(rows, KS),
        "entropy_optimal_alpha": best_alpha(rows, BIN_EFFICIENCY),
        "sweep": [{"alpha": r["alpha"], "ks": r[KS], "bin_efficiency": r[BIN_EFFICIENCY]} for r in rows],
        "hist_before": _histogram(flat, -4.0, 4.0, 80),
        "hist_after": _histogram(bound(flat, own_alpha), -1.0, 1.0, 50),
    }
    norm = model.pre_quant_normalizer
    if norm is not None:  # the scale the encoder itself produced, before the normalisation
        activations["raw_std_per_channel"] = norm.running_var.sqrt().cpu().tolist()
    return {"metrics": metrics, "activations": activations}


def _aggregate(config: dict, seeds: list[int], runs: dict[str, dict[int, dict]]) -> dict:
    arms = {}
    for arm, by_seed in runs.items():
        metric_names = [m for m in METRICS if m in by_seed[seeds[0]]["metrics"]]
        act = [by_seed[s]["activations"] for s in seeds]
        arms[arm] = {
            "label": ARMS[arm]["label"],
            "model_config": _model_config(config, arm),
            "metrics": {m: summarize([by_seed[s]["metrics"][m] for s in seeds]).to_dict() for m in metric_names},
            "activations": {
                k: summarize([a[k] for a in act]).to_dict()
                for k in (
                    "std",
                    "ks_at_own_alpha",
                    "ks_optimal_alpha",
                    "entropy_optimal_alpha",
                    "bin_efficiency_at_own_alpha",
                )
            },
            "ks_sweep_mean": mean_columns([[r["ks"] for r in a["sweep"]] for a in act]),
            "bin_efficiency_sweep_mean": mean_columns([[r["bin_efficiency"] for r in a["sweep"]] for a in act]),
        }
    comparisons = []
    for a, b in COMPARISONS:
        if a not in runs or b not in runs:
            continue
        for m in arms[a]["metrics"]:
            d = paired_difference(arms[a]["metrics"][m]["values"], arms[b]["metrics"][m]["values"])
            comparisons.append({"a": a, "b": b, "metric": m, **d.to_dict()})
    return {"arms": arms, "comparisons": comparisons, "alphas": ALPHAS}


def reading(results: dict) -> list[str]:
    """Plain-words statements generated from the numbers: what the study does and does not show."""
    out = []
    arms = results["arms"]
    seeds = results["seeds"]
    for c in results["comparisons"]:
        la, lb, m = arms[c["a"]]["label"], arms[c["b"]]["label"], c["metric"]
        if c["low"] is None:
            out.append(f"{m}, {la} − {lb}: {c['mean']:+.4f} from one seed; no interval, so no conclusion "
                       "(rerun with --num_seeds 3 or more).")  # fmt: skip
            continue
        ci = f"{c['mean']:+.4f}, 95% CI [{c['low']:+.4f}, {c['high']:+.4f}], n={c['n']}"
        if c["includes_zero"]:
            out.append(f"{m}, {la} − {lb} ({ci}): the interval includes 0, so no difference is detected at this "
                       "scale (this is not evidence that there is none).")  # fmt: skip
            continue
        if c["std"] == 0.0:
            out.append(f"{m}, {la} − {lb}: the same difference {c['mean']:+.4f} in all {c['n']} seeds, so the t "
                       "interval has zero width; a coarse metric (bins counted on few images) can do this, so "
                       "read it as a hint, not a detection.")  # fmt: skip
            continue
        better = (c["mean"] > 0) == (METRICS[m] > 0)
        line = f"{m}, {la} − {lb} ({ci}): {la} is {'better' if better else 'worse'} than {lb} at this scale"
        if (c["a"], c["b"]) == ("ifsq", "fsq"):
            line += ", which agrees with the paper" if better else ", which disagrees with the paper"
        out.append(line + ".")
    for arm, r in arms.items():
        act = r["activations"]
        line = (f"{r['label']}: activations entering the bound have std {fmt_summary(act['std'])} (pooled over channels); "
                f"the KS-optimal slope on them is alpha = {fmt_summary(act['ks_optimal_alpha'], 2)} against the arm's "
                f"{ARMS[arm]['alpha']}")  # fmt: skip
        if act["ks_optimal_alpha"]["mean"] >= ALPHAS[-1]:
            line += f" (the edge of the swept range: the best slope is {ALPHAS[-1]} or more)"
        out.append(line + ".")
    if "ifsq" in arms:
        a = arms["ifsq"]["activations"]
        std, best = a["std"]["mean"], a["ks_optimal_alpha"]["mean"]
        if abs(std - 1.0) > 0.15:
            out.append(f"The paper's alpha = 1.6 assumes roughly unit-variance activations; the trained iFSQ encoder "
                       f"produced std {std:.2f}, so alpha·std = {1.6 * std:.2f} and the slope that makes the bounded "
                       f"values most uniform is {best:.2f}: the encoder sets its own latent scale, and "
                       "the fixed slope alone does not make the bins uniform.")  # fmt: skip
        else:
            out.append(f"The trained iFSQ encoder's activations have std {std:.2f}, close to the unit variance the "
                       f"paper's alpha = 1.6 assumes (KS-optimal alpha {best:.2f}).")  # fmt: skip
    if "ifsq_norm" in arms:
        a = arms["ifsq_norm"]["activations"]
        out.append(f"With pre-quant normalisation the activations entering the bound have std {a['std']['mean']:.2f} "
                   f"on the held-out images (KS-optimal alpha {a['ks_optimal_alpha']['mean']:.2f}): the running "
                   "statistics make the variance 1 on the training batches, and held-out images can differ from "
                   "them.")  # fmt: skip
    cfg = results["config"]
    train = cfg["train"]
    source = train.get("dataset_name") or train.get("train_data_dir") or "the bundled photos (10 train, 2 held out)"
    out.append(f"Scope: {len(seeds)} seeds per arm, the {cfg['model_preset']} architecture, "
               f"{train.get('max_train_steps')} steps at {train.get('resolution')} px on {source}, "
               f"{results['arms'][next(iter(arms))]['metrics']['psnr']['n']} seeds × "
               f"{cfg['num_eval_images']} held-out images at most. What holds at this scale need not hold for "
               "ImageNet-scale tokenizers trained for 100k+ steps; the intervals cover seed noise only, not the "
               "choice of recipe or data.")  # fmt: skip
    return out


def _plots(results: dict, output_dir: Path) -> list[str]:
    plt = pyplot()
    arms = results["arms"]
    names = list(arms)
    files = []

    metric_names = [m for m in METRICS if m in arms[names[0]]["metrics"]]
    fig, axes = plt.subplots(1, len(metric_names), figsize=(3.2 * len(metric_names), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metric_names):
        for i, arm in enumerate(names):
            s = arms[arm]["metrics"][m]
            ax.scatter([i] * len(s["values"]), s["values"], color="0.6", s=12, zorder=2)
            ax.errorbar([i], [s["mean"]], yerr=[s["std"] or 0.0], fmt="o", color=f"C{i}", capsize=4, zorder=3)
        ax.set_xticks(range(len(names)), [arms[a]["label"] for a in names], rotation=20, fontsize=7)
        ax.set_title(f"{m} ({'higher' if METRICS[m] > 0 else 'lower'} is better)", fontsize=8)
    fig.suptitle("held-out metrics: seeds (grey), mean ± std", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "metrics.png", dpi=110)
    plt.close(fig)
    files.append("metrics.png")

    comps = [c for c in results["comparisons"] if c["low"] is not None]
    if comps:
        fig, axes = plt.subplots(1, len(metric_names), figsize=(3.2 * len(metric_names), 3.0), squeeze=False)
        for ax, m in zip(axes[0], metric_names):
            rows = [c for c in comps if c["metric"] == m]
            for i, c in enumerate(rows):
                ax.errorbar([c["mean"]], [i], xerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt="o",
                            color="C1" if c["std"] == 0 else "0.3" if c["includes_zero"] else "C3", capsize=4)  # fmt: skip
            ax.axvline(0.0, color="0.7", lw=1)
            ax.set_yticks(range(len(rows)), [f"{c['a']} − {c['b']}" for c in rows], fontsize=7)
            ax.set_title(m, fontsize=8)
        fig.suptitle(
            "paired differences (same seed), mean and 95% t interval; red: excludes 0; orange: zero spread", fontsize=9
        )
        fig.tight_layout()
        fig.savefig(output_dir / "differences.png", dpi=110)
        plt.close(fig)
        files.append("differences.png")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, arm in enumerate(names):
        ax.plot(results["alphas"], arms[arm]["ks_sweep_mean"], color=f"C{i}", label=arms[arm]["label"])
    for a, style in ((1.6, "--"), (2.0, ":")):
        ax.axvline(a, color="0.5", ls=style, lw=1)
    ax.set_xlabel("alpha of the bound 2·sigmoid(alpha·z) − 1 (1.6 iFSQ, 2.0 tanh)")
    ax.set_ylabel("KS distance to U(−1, 1)")
    ax.set_title("bound slope vs uniformity on the real activations (mean over seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output_dir / "alpha_ks.png", dpi=110)
    plt.close(fig)
    files.append("alpha_ks.png")

    seed = results["seeds"][0]
    fig, axes = plt.subplots(len(names), 2, figsize=(8, 2.2 * len(names)), squeeze=False)
    for i, arm in enumerate(names):
        act = results["runs"][arm][str(seed)]["activations"]
        for j, key in enumerate(("hist_before", "hist_after")):
            h = act[key]
            n = len(h["counts"])
            width = (h["high"] - h["low"]) / n
            centres = [h["low"] + width * (k + 0.5) for k in range(n)]
            total = sum(h["counts"]) * width
            axes[i][j].bar(centres, [c / total for c in h["counts"]], width=width, color=f"C{i}")
            if j == 0:
                xs = [h["low"] + 0.05 * k for k in range(int((h["high"] - h["low"]) / 0.05) + 1)]
                axes[i][j].plot(xs, [math.exp(-x * x / 2) / math.sqrt(2 * math.pi) for x in xs], "k--", lw=1)
                axes[i][j].set_title(f"{arms[arm]['label']}: z before the bound (dashed: N(0,1))", fontsize=8)
            else:
                axes[i][j].axhline(0.5, color="k", ls="--", lw=1)
                axes[i][j].set_title(f"after the bound, alpha {act['own_alpha']} (dashed: uniform)", fontsize=8)
    fig.suptitle(f"pre-quantization activations on held-out images, seed {seed}", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "activations.png", dpi=110)
    plt.close(fig)
    files.append("activations.png")
    return files


def _report(results: dict) -> str:
    arms = results["arms"]
    lines = ["# bound study: " + " vs ".join(r["label"] for r in arms.values()), ""]
    lines += [
        "Generated by `ifsq-hf benchmark bound`; every number below comes from `results.json` beside this file.",
        "",
    ]
    lines += run_section(results, "each seed: initialisation and data order; shared by all arms")
    lines += ["## What this does and does not show", ""] + [f"- {r}" for r in results["reading"]] + [""]
    metric_names = list(arms[next(iter(arms))]["metrics"])
    lines += ["## Held-out metrics (mean ± std over seeds)", ""]
    lines.append(markdown_table(["arm", *metric_names],
                                [[r["label"], *(fmt_summary(r["metrics"][m], 4) for m in metric_names)]
                                 for r in arms.values()]))  # fmt: skip
    lines += ["", "## Paired differences (a − b, same seed; mean and 95% t interval)", ""]
    rows = []
    for c in results["comparisons"]:
        ci = "n/a" if c["low"] is None else f"[{c['low']:+.4f}, {c['high']:+.4f}]"
        zero = "" if c["includes_zero"] is None else ("yes" if c["includes_zero"] else "**no**")
        rows.append([f"{c['a']} − {c['b']}", c["metric"], f"{c['mean']:+.4f}", ci, zero])
    lines.append(markdown_table(["comparison", "metric", "mean", "95% CI", "includes 0"], rows))
    lines += ["", "## Activations entering the bound (held-out images)", ""]
    rows = []
    for arm, r in arms.items():
        a = r["activations"]
        per_seed = [results["runs"][arm][str(s)]["activations"]["std_per_channel"] for s in results["seeds"]]
        chan = ", ".join(f"{v:.2f}" for v in mean_columns(per_seed))
        rows.append([r["label"], fmt_summary(a["std"]), chan, ARMS[arm]["alpha"], fmt_summary(a["ks_at_own_alpha"]),
                     fmt_summary(a["ks_optimal_alpha"], 2), fmt_summary(a["entropy_optimal_alpha"], 2)])  # fmt: skip
    lines.append(markdown_table(["arm", "std (pooled)", "std per channel (seed mean)", "arm's alpha",
                                 "KS at arm's alpha", "KS-optimal alpha", "bin-entropy-optimal alpha"], rows))  # fmt: skip
    if "ifsq_norm" in arms:
        raw = [results["runs"]["ifsq_norm"][str(s)]["activations"]["raw_std_per_channel"] for s in results["seeds"]]
        lines += ["", "iFSQ + norm: std per channel of the encoder's output *before* the normalisation (running "
                  "estimate, seed mean): " + ", ".join(f"{v:.2f}" for v in mean_columns(raw)) + "."]  # fmt: skip
    lines += ["", "KS: Kolmogorov-Smirnov distance of the bounded values to U(−1, 1) (0 = perfectly uniform, the "
              "paper's continuous view). Bin entropy efficiency: entropy of the L quantization bins / log2 L (the "
              "discrete view; iFSQ's edge bins are half-width, so the two views can disagree).", ""]  # fmt: skip
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in results["plots"]] + [""]
    lines += ["- `metrics.png`: each grey dot is one seed; the coloured point and bar are mean ± std.",
              "- `differences.png`: paired difference per comparison; an interval that crosses the grey zero line "
              "means no difference detected.",
              "- `alpha_ks.png`: KS distance of the bounded real activations vs the slope alpha; the dashed line is "
              "iFSQ's 1.6, the dotted one tanh's 2.0. The minimum is the slope these activations call for.",
              "- `activations.png`: histograms of the activations before the bound (with N(0,1) for reference) and "
              "after it (a flat histogram at 0.5 would be uniform).", ""]  # fmt: skip
    lines += ["## Per-run metrics", ""]
    rows = []
    for arm in arms:
        for s in results["seeds"]:
            run = results["runs"][arm][str(s)]
            rows.append([arm, s, *(f"{run['metrics'][m]:.4f}" for m in metric_names),
                         f"{run['activations']['ks_optimal_alpha']:.2f}"])  # fmt: skip
    lines.append(markdown_table(["arm", "seed", *metric_names, "KS-optimal alpha"], rows))
    return "\n".join(lines) + "\n"


def run_bound_study(
    config: dict,
    output_dir: str | Path,
    seeds: list[int],
    *,
    arms: list[str] | None = None,
    preset_name: str = "custom",
    examples_dir: str | Path | None = None,
    argv: list[str] | None = None,
) -> dict:
    """Train every (arm, seed) with the example script (resuming unfinished runs), evaluate, write the report.

    Runs under ``accelerate launch``: all processes train together; the main process evaluates and writes.
    Returns the results dict (also written to ``results.json``) on the main process, ``{}`` on the others.
    """
    arms = list(arms or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}.")
    state = study_state()
    output_dir = Path(output_dir)
    script = load_example(SCRIPT, examples_dir)
    timing: dict[str, dict[str, float]] = {}
    start_wall = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for seed in seeds:
        for arm in arms:
            run_dir = output_dir / "runs" / f"{arm}-seed{seed}"
            config_path = output_dir / "configs" / f"{arm}.json"
            if state.is_main_process:
                config_path.parent.mkdir(parents=True, exist_ok=True)
                config_path.write_text(json.dumps(_model_config(config, arm), indent=2, sort_keys=True))
            state.wait_for_everyone()
            argv_run = [*train_argv(config["train"]), "--model_config", str(config_path), "--seed", str(seed)]
            w, c = time.perf_counter(), time.process_time()
            trained = train_with_example(SCRIPT, argv_run, run_dir, examples_dir)
            state.wait_for_everyone()
            if state.is_main_process:
                cached = run_dir / "bench_eval.json"
                if cached.is_file():
                    runs[arm][seed] = json.loads(cached.read_text())
                else:
                    args = script.parse_args([*argv_run, "--output_dir", str(run_dir)])
                    runs[arm][seed] = evaluate_run(run_dir, arm, config, args, device=state.device)
                    cached.write_text(json.dumps(runs[arm][seed]))
            timing[f"{arm}-seed{seed}"] = run_timing(run_dir, trained, w, c) if state.is_main_process else {}
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    results = {
        "study": "bound",
        "preset": preset_name,
        "config": config,
        "seeds": list(seeds),
        "environment": environment(argv),
        **_aggregate(config, list(seeds), runs),
        "runs": {arm: {str(s): r for s, r in by_seed.items()} for arm, by_seed in runs.items()},
        "timing": timing_summary(timing, start_wall),
    }
    results["reading"] = reading(results)
    results["plots"] = _plots(results, output_dir)
    write_results(output_dir, results, _report(results))
    state.wait_for_everyone()
    return results


def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_study_args(parser, "bound", PRESETS)
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="Default: all three.")
    parser.add_argument("--num_eval_images", type=int, default=None, help="Override the held-out image count.")
    return parser


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """``ifsq-hf benchmark bound``: resolve the config and seeds from ``args`` and run the study."""
    if args.num_eval_images is not None and args.num_eval_images < 1:
        raise ValueError(f"--num_eval_images must be >= 1, got {args.num_eval_images}.")
    study = resolve_study_args(
        "bound",
        args,
        PRESETS,
        ("model_preset", "train", "num_eval_images"),
        overrides={"num_eval_images": args.num_eval_images},
    )
    if study.config["model_preset"] not in MODEL_PRESETS:
        raise ValueError(f"model_preset {study.config['model_preset']!r} is not one of {sorted(MODEL_PRESETS)}.")
    if study.dump_only:
        return {"config": study.config}
    return run_bound_study(
        study.config,
        study.output_dir,
        study.seeds,
        arms=args.arms,
        preset_name=study.preset_name,
        examples_dir=args.examples_dir,
        argv=argv,
    )
