"""The ``ar-vs-diffusion`` study: on one iFSQ tokenizer, does diffusion (DiT, flow matching on the continuous quantized
latents) or autoregression (LlamaGen, next-token prediction on the same tokenizer's indices) reach better samples for
the same training compute, and how do their curves run?

One tokenizer is trained once (:func:`.generators.prepare_tokenizer`); per seed, a DiT and a LlamaGen are trained
with the library's example scripts on the same data order (the seed sets the initialisation and the crops), in stages
with a constant learning rate after warmup: each budget's run resumes the previous budget's last checkpoint, which is
bit-identical to one continuous run (tested), so one training gives the whole curve. Every stage's saved model is
scored identically for both kinds (:func:`.generators.evaluate_generator`): the Fréchet distance in the tokenizer's
quantized latent space at every budget and FID at the budgets the config asks for. The x axes are training samples
seen and measured training FLOPs (:func:`.generators.training_flops`); ``report.md`` gives mean ± std over seeds,
paired DiT − LlamaGen differences with 95% t intervals at equal steps and at equal FLOPs (LlamaGen's curve
interpolated in log-FLOPs per seed), and a reading generated from the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
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
)
from .report import environment, markdown_table, pyplot, run_section, write_results
from .runner import run_is_complete
from .statistics import paired_difference, summarize

__all__ = ["KINDS", "PRESETS", "add_args", "interpolate_log", "load_preset", "main", "reading", "run_study"]

STUDY = "ar-vs-diffusion"
KINDS: dict[str, str] = {"dit": "DiT (diffusion, flow matching)", "llamagen": "LlamaGen (autoregressive)"}
# Both lower is better.
METRICS: dict[str, str] = {
    "latent_fd": "Fréchet distance in the tokenizer's quantized latent space",
    "fid": "FID (Inception, ADM convention)",
}
REQUIRED = ("tokenizer", "generators", "budgets", "resolution", "num_eval_samples", "num_reference_images")
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")

# The CPU-sized generators of examples/demo.py (DIT_SIZE / LLAMAGEN_SIZE, ~1.7 M parameters), without REPA.
_DIT_CPU = {"num_layers": 4, "hidden_size": 128, "num_attention_heads": 4}
_LLAMAGEN_CPU = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "multiple_of": 32}


def _generator_train(common: dict, dit: dict, llamagen: dict) -> dict:
    return {"dit": {**common, **dit}, "llamagen": {**common, **llamagen}}


# generators.KIND: arguments of examples/train_dit.py / train_llamagen_repa.py (max_train_steps is set per budget).
# tokenizer.train: arguments of examples/train_ifsq_autoencoder.py.
PRESETS: dict[str, dict[str, Any]] = {
    # For the tests: seconds per run.
    "tiny": {
        "tokenizer": {
            "model_preset": "test_f4_d4", "seed": 0,
            "train": {"resolution": 16, "train_batch_size": 4, "max_train_steps": 4, "num_bundled_samples": 24,
                      "learning_rate": 1e-3, "perceptual_weight": 0.0, "disc_start": 10**9, "lpips_net": "none",
                      "validation_steps": 0, "checkpointing_steps": 1000, "report_to": "none",
                      "bundled_photo_size": 64, "no-use_ema": True},
        },
        "generators": _generator_train(
            {"resolution": 16, "train_batch_size": 4, "checkpointing_steps": 2, "preset": "tiny",
             "repa_encoder": "none", "learning_rate": 1e-3, "lr_scheduler": "constant_with_warmup",
             "lr_warmup_steps": 1, "bundled_split": "all", "num_bundled_samples": 24, "bundled_photo_size": 64,
             "validation_steps": 0, "report_to": "none", "no-use_ema": True, "random_flip": True},
            {}, {"factorized_groups": 2, "adam_weight_decay": 0.0},
        ),
        "budgets": [2, 4],
        "fid_budgets": "none",
        "resolution": 16, "bundled_photo_size": 64, "num_reference_images": 48, "reference_seed": 1_000_003,
        "num_eval_samples": 24, "eval_batch_size": 12, "fid": False,
        "dit_sampling": {"num_inference_steps": 4, "guidance_scale": 1.0},
        "llamagen_sampling": {"guidance_scale": 1.0},
        "num_threads": 1,
    },
    # The 2-core CPU study: 32 px crops of the bundled photos (class = which photo), an f8 tokenizer (4x4x4 latents,
    # 16 tokens), ~1.7 M-parameter generators, 400 steps at batch 16 in 4 stages (see docs/benchmark.md for times).
    "cpu": {
        "tokenizer": {
            "model_preset": "tiny_f8_d4", "seed": 0,
            # The bound study's CPU tokenizer recipe (~19.5 dB held-out PSNR there).
            "train": dict(TOKENIZER_TRAIN["cpu"]),
        },
        "generators": _generator_train(
            {"resolution": 32, "train_batch_size": 16, "checkpointing_steps": 50, "checkpoints_total_limit": 1,
             "preset": "tiny", "repa_encoder": "none", "learning_rate": 1e-3,
             "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 20, "bundled_split": "all",
             "num_bundled_samples": 4096, "bundled_photo_size": 128, "validation_steps": 0, "report_to": "none",
             # No EMA: the scripts' EMA has no warm-up, so at 50 steps a 0.99 average is still mostly the init.
             "no-use_ema": True, "random_flip": True},
            {"preset_overrides": _DIT_CPU},
            {"preset_overrides": _LLAMAGEN_CPU, "factorized_groups": 2, "adam_weight_decay": 0.0},
        ),
        "budgets": [50, 100, 200, 400],
        # FID (Inception on CPU: ~0.2-0.4 s per image on one busy thread) only at the last budget, on 96 samples.
        "fid_budgets": "last",
        "resolution": 32, "bundled_photo_size": 128, "num_reference_images": 240, "reference_seed": 1_000_003,
        "num_eval_samples": 240, "num_fid_samples": 96, "eval_batch_size": 48, "fid": True,
        "dit_sampling": {"num_inference_steps": 25, "guidance_scale": 1.0},
        "llamagen_sampling": {"guidance_scale": 1.0},
        # One thread: on a busy 2-core box two threads spin against each other.
        "num_threads": 1,
    },
    # A GPU cluster: the official f16 4-bit tokenizer recipe, DiT-L/1-ish and LlamaGen-L (the sizes of the paper's
    # compute figure) on ImageNet-1k (gated on the Hub: accept its terms and log in first), FID-50k against ADM's
    # reference batch (download VIRTUAL_imagenet256_labeled.npz and set fid_reference to its path). Run with
    # `accelerate launch -m ifsq_hf.cli benchmark ar-vs-diffusion --preset imagenet`. To skip online encoding, run
    # examples/extract_latents.py / extract_tokens.py once and add latents_dataset / tokens_dataset to the train args.
    "imagenet": {
        "tokenizer": {
            "model_preset": "ifsq_f16_d4_4bit", "seed": 0,
            "train": dict(TOKENIZER_TRAIN["imagenet"]),
        },
        "generators": _generator_train(
            {"dataset_name": "ILSVRC/imagenet-1k", "resolution": 256, "train_batch_size": 32,
             "checkpointing_steps": 25_000, "checkpoints_total_limit": 1, "repa_encoder": "none",
             "lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 1_000, "mixed_precision": "bf16",
             "dataloader_num_workers": 8, "validation_steps": 25_000, "report_to": "tensorboard",
             "random_flip": True, "ema_decay": 0.9999},
            {"preset": "L", "learning_rate": 2e-4},
            {"preset": "L", "learning_rate": 1e-4, "factorized_groups": 2},
        ),
        "budgets": [50_000, 100_000, 200_000, 400_000],
        "fid_budgets": "all",
        "resolution": 256, "num_reference_images": 10_000,
        "reference_dataset": {"dataset_name": "ILSVRC/imagenet-1k", "split": "validation"},
        "fid_reference": "VIRTUAL_imagenet256_labeled.npz", "reference_floor": False,
        "num_eval_samples": 50_000, "eval_batch_size": 250, "fid": True,
        "dit_sampling": {"num_inference_steps": 250, "guidance_scale": 1.0},
        "llamagen_sampling": {"guidance_scale": 1.0},
    },
}  # fmt: skip


def check_config(config: dict) -> dict:
    """Refuse configs whose curves would not mean what the report says; returns the config."""
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"{STUDY} config is missing {missing}; start from `--preset cpu --dump_config FILE.json`.")
    budgets = config["budgets"]
    if not budgets or not all(isinstance(b, int) and b > 0 for b in budgets) or sorted(set(budgets)) != budgets:
        raise ValueError(f"budgets must be strictly increasing positive step counts, got {budgets}.")
    if set(config["generators"]) != set(KINDS):
        raise ValueError(f"config['generators'] must hold train args for exactly {sorted(KINDS)}.")
    for kind, train in config["generators"].items():
        if "max_train_steps" in train:
            raise ValueError(f"generators.{kind}.max_train_steps is set per budget; use 'budgets' instead.")
        schedule = train.get("lr_scheduler", "constant")
        if schedule not in CONSTANT_SCHEDULES:
            raise ValueError(
                f"generators.{kind}.lr_scheduler {schedule!r} depends on the run length, so a stage of a longer "
                f"run would differ from a shorter run; use one of {CONSTANT_SCHEDULES}."
            )
        every = train.get("checkpointing_steps")
        if not isinstance(every, int) or any(b % every for b in budgets):
            raise ValueError(
                f"every budget {budgets} must be a multiple of generators.{kind}.checkpointing_steps ({every}): "
                "each stage resumes from the previous stage's last checkpoint."
            )
        if train.get("resolution") != config["resolution"]:
            raise ValueError(f"generators.{kind}.resolution must equal the study's resolution {config['resolution']}.")
        if int(train.get("lr_warmup_steps", 0)) > budgets[0]:
            raise ValueError(f"generators.{kind}.lr_warmup_steps exceeds the first budget {budgets[0]}.")
    if config.get("fid_budgets", "all") not in ("all", "last", "none"):
        raise ValueError(f"fid_budgets must be 'all', 'last' or 'none', got {config.get('fid_budgets')!r}.")
    return config


def load_preset(name: str | None = None, config_file: str | Path | None = None) -> dict[str, Any]:
    """A preset by name, or a JSON config file (same keys; ``--dump_config`` writes one to start from)."""
    return check_config(load_study_config(STUDY, PRESETS, name, config_file, REQUIRED))


def _model_size(kind: str, run_dir: Path) -> dict[str, int]:
    """Parameters and sequence length (tokens per image) of a saved generator."""
    from . import generators as gen

    model = gen.load_generator_model(kind, run_dir)
    cfg = model.config
    tokens = (cfg.sample_size // cfg.patch_size) ** 2 if kind == "dit" else cfg.image_token_size**2
    return {"parameters": sum(p.numel() for p in model.parameters()), "tokens": int(tokens)}


def fid_at(config: dict, budget: int) -> bool:
    """Whether FID is computed at ``budget`` (``fid`` on and ``fid_budgets`` covering it)."""
    which = config.get("fid_budgets", "all")
    return bool(config.get("fid", True)) and (which == "all" or (which == "last" and budget == config["budgets"][-1]))


def interpolate_log(x: float, xs: list[float], ys: list[float]) -> float | None:
    """``y`` at ``x`` by linear interpolation in ``log(x)`` between the points ``(xs, ys)`` (increasing ``xs``);
    ``None`` outside ``[xs[0], xs[-1]]`` (no extrapolation)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("interpolate_log needs equally long, non-empty xs and ys.")
    if x < xs[0] or x > xs[-1]:
        return None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            if x1 == x0:
                return y0
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return ys[-1]


def _aggregate(config: dict, seeds: list[int], runs: dict, flops: dict, num_processes: int) -> dict:
    """Per kind and budget: mean ± std of each metric; paired DiT − LlamaGen differences at equal steps and at
    equal FLOPs."""
    budgets = config["budgets"]
    curves: dict[str, dict] = {}
    for kind in KINDS:
        train = config["generators"][kind]
        per_step_samples = train["train_batch_size"] * train.get("gradient_accumulation_steps", 1) * num_processes
        points = []
        for b in budgets:
            point = {"budget": b, "samples": b * per_step_samples, "flops": b * flops[kind] * num_processes}
            for m in METRICS:
                values = [runs[kind][s][str(b)].get(m) for s in seeds]
                if all(v is not None for v in values):
                    point[m] = summarize(values).to_dict()
            points.append(point)
        curves[kind] = {"label": KINDS[kind], "flops_per_step": flops[kind] * num_processes, "points": points}

    equal_steps = []
    for i, b in enumerate(budgets):
        for m in METRICS:
            a, c = curves["dit"]["points"][i].get(m), curves["llamagen"]["points"][i].get(m)
            if a and c:
                d = paired_difference(a["values"], c["values"])
                equal_steps.append({"budget": b, "samples": curves["dit"]["points"][i]["samples"], "metric": m,
                                    **d.to_dict()})  # fmt: skip

    # Equal compute: at each DiT budget, LlamaGen's value at the same FLOPs, interpolated per seed in log-FLOPs.
    equal_flops = []
    ar_flops = [p["flops"] for p in curves["llamagen"]["points"]]
    for m in METRICS:
        ar_budgets = [i for i, p in enumerate(curves["llamagen"]["points"]) if m in p]
        if len(ar_budgets) < 2:
            continue
        xs = [ar_flops[i] for i in ar_budgets]
        for i, p in enumerate(curves["dit"]["points"]):
            if m not in p:
                continue
            ar = [interpolate_log(p["flops"], xs, [runs["llamagen"][s][str(budgets[j])][m] for j in ar_budgets])
                  for s in seeds]  # fmt: skip
            if any(v is None for v in ar):
                continue
            d = paired_difference(p[m]["values"], ar)
            equal_flops.append({"budget": budgets[i], "flops": p["flops"], "metric": m, "llamagen_values": ar,
                                **d.to_dict()})  # fmt: skip
    return {"curves": curves, "equal_steps": equal_steps, "equal_flops": equal_flops}


def _ci(c: dict) -> str:
    if c["low"] is None:
        return f"{c['mean']:+.3f} (one seed, no interval)"
    return f"{c['mean']:+.3f}, 95% CI [{c['low']:+.3f}, {c['high']:+.3f}], n={c['n']}"


def _verdict(c: dict) -> str | None:
    """``"dit"``/``"llamagen"``: the better kind when the interval excludes 0; ``None`` when nothing is detected."""
    if c["low"] is None or c["includes_zero"]:
        return None
    return "dit" if c["mean"] < 0 else "llamagen"


def _sizes(curves: dict) -> str:
    if not all("parameters" in c for c in curves.values()):
        return "these model sizes"
    d, a = curves["dit"], curves["llamagen"]
    return (f"a {d['parameters'] / 1e6:.2f} M-parameter DiT and a {a['parameters'] / 1e6:.2f} M-parameter LlamaGen on "
            f"{d['tokens']}-token images")  # fmt: skip


def reading(results: dict) -> list[str]:
    """Plain-words statements generated from the numbers: what the study does and does not show."""
    out = []
    cfg, seeds, curves = results["config"], results["seeds"], results["curves"]
    budgets = cfg["budgets"]
    for m, name in METRICS.items():
        rows = [c for c in results["equal_steps"] if c["metric"] == m]
        if not rows:
            continue
        parts = []
        for c in rows:
            who = _verdict(c)
            verdict = "no difference detected" if who is None else f"{'DiT' if who == 'dit' else 'LlamaGen'} better"
            parts.append(f"{c['budget']} steps: {_ci(c)} ({verdict})")
        out.append(f"{m} ({name}), DiT − LlamaGen at equal steps (negative = DiT better): " + "; ".join(parts) + ".")
    for m in METRICS:
        rows = [c for c in results["equal_flops"] if c["metric"] == m]
        if not rows:
            continue
        parts = []
        for c in rows:
            who = _verdict(c)
            verdict = "no difference detected" if who is None else f"{'DiT' if who == 'dit' else 'LlamaGen'} better"
            parts.append(f"{c['flops']:.2e} FLOPs: {_ci(c)} ({verdict})")
        out.append(f"{m} at equal training FLOPs (LlamaGen interpolated in log-FLOPs between its budgets): "
                   + "; ".join(parts) + ".")  # fmt: skip
    ratio = curves["llamagen"]["flops_per_step"] / curves["dit"]["flops_per_step"]
    out.append(f"A training step costs {curves['dit']['flops_per_step']:.3g} FLOPs for the DiT and "
               f"{curves['llamagen']['flops_per_step']:.3g} for LlamaGen ({ratio:.2f}x), so equal steps (equal samples "
               "seen) and equal compute are different comparisons here.")  # fmt: skip
    for kind, curve in curves.items():
        p0, p1 = curve["points"][0], curve["points"][-1]
        first, last = p0.get("latent_fd"), p1.get("latent_fd")
        if first and last:
            change = 100 * (last["mean"] - first["mean"]) / first["mean"]
            out.append(f"{'DiT' if kind == 'dit' else 'LlamaGen'}: latent FD {fmt_summary(first)} after "
                       f"{p0['budget']} steps -> {fmt_summary(last)} after {p1['budget']} ({change:+.0f}%).")  # fmt: skip
    # The paper's claim, as the stored reference records it (abstract and the repo's compute-vs-FID figure).
    flops_rows = [c for c in results["equal_flops"] if c["metric"] == "latent_fd"]
    steps_rows = [c for c in results["equal_steps"] if c["metric"] == "latent_fd"]
    if flops_rows or steps_rows:
        who = {"dit": "the DiT is ahead", "llamagen": "LlamaGen is ahead", None: "no difference is detected"}
        claim = ("The paper reports that autoregression converges faster early while diffusion reaches the better "
                 "final quality, on a training-compute axis (its DiT-L / LlamaGen-L curves cross near 6e18 FLOPs, "
                 f"FID ~35); this study spans {curves['dit']['points'][0]['flops']:.1e}-"
                 f"{curves['llamagen']['points'][-1]['flops']:.1e} FLOPs, orders of magnitude before that crossing, "
                 "where the paper has LlamaGen ahead.")  # fmt: skip
        if flops_rows:
            first, last = _verdict(flops_rows[0]), _verdict(flops_rows[-1])
            agree = {"llamagen": "agrees with", "dit": "disagrees with", None: "neither confirms nor refutes"}[first]
            claim += (f" At the smallest equal-FLOPs point ({flops_rows[0]['flops']:.2e}) {who[first]}, which "
                      f"{agree} the paper's early phase")  # fmt: skip
            if len(flops_rows) > 1:
                claim += f"; at the largest ({flops_rows[-1]['flops']:.2e}) {who[last]}"
            claim += "."
        else:
            claim += " No equal-FLOPs point lies inside both curves' ranges."
        if steps_rows:
            first, last = _verdict(steps_rows[0]), _verdict(steps_rows[-1])
            claim += (f" At equal samples seen (which favours the kind with the costlier step), {who[first]} at "
                      f"{steps_rows[0]['budget']} steps and {who[last]} at {steps_rows[-1]['budget']}.")  # fmt: skip
        out.append(claim + " All on latent FD; a curve at this scale cannot test the paper's ceiling claim.")
    floor = results.get("reference", {}).get("floor")
    if floor:
        best = {m: min((p[m]["mean"], k) for k, c in curves.items() for p in c["points"] if m in p)
                for m in METRICS if any(m in p for c in curves.values() for p in c["points"])}  # fmt: skip
        line = (f"Calibration: real held-out crops scored exactly like samples give latent FD {floor['latent_fd']:.3f} "
                f"({floor['num_samples']} images)")  # fmt: skip
        if "fid" in floor:
            line += (f" and FID {floor['fid']:.1f} ({floor['num_fid_samples']} images; the tokenizer's reconstructions "
                     f"of them: FID {floor['fid_reconstructed']:.1f})")  # fmt: skip
        line += "; that is what perfect samples would score at these sample counts"
        parts = [f"{m} {v:.3f} ({'DiT' if k == 'dit' else 'LlamaGen'})" for m, (v, k) in best.items()]
        out.append(line + ". The best generator means: " + ", ".join(parts) + ".")
        if "fid" in floor and "fid" in best and best["fid"][0] <= 1.15 * floor["fid_reconstructed"]:
            out.append(f"The generators' FID ({best['fid'][0]:.1f} at best) is within 15% of the FID of the "
                       f"tokenizer's own reconstructions of real images ({floor['fid_reconstructed']:.1f}): FID is "
                       "dominated by the decoder here and says little about the generators; read the latent FD.")  # fmt: skip
    fid_rows = [c for c in results["equal_steps"] if c["metric"] == "fid"]
    lfd_rows = {c["budget"]: c for c in results["equal_steps"] if c["metric"] == "latent_fd"}
    for c in fid_rows:
        other = lfd_rows.get(c["budget"])
        if other and _verdict(c) != _verdict(other):
            out.append(f"At {c['budget']} steps FID and latent FD disagree ({_ci(c)} vs {_ci(other)}): FID on "
                       f"{cfg.get('num_fid_samples') or cfg['num_eval_samples']} samples of {cfg['resolution']} px is "
                       "biased and noisy, and it also sees the decoder; the latent FD is the steadier of the two "
                       "here.")  # fmt: skip
    if len(seeds) < 2:
        out.append("One seed: no intervals, so no conclusion (rerun with --num_seeds 3 or more).")
    train = cfg["generators"]["dit"]
    source = train.get("dataset_name") or "the 12 bundled photos (class = which photo)"
    out.append(f"Scope: {len(seeds)} seeds (each: generator initialisation and data order, shared by both kinds), one "
               f"tokenizer ({cfg['tokenizer']['model_preset']}, its seed fixed, so tokenizer variance is not covered), "
               f"{train['resolution']} px on {source}, budgets {budgets} steps, no REPA and no guidance "
               f"(repa_encoder {train.get('repa_encoder')}); {cfg['num_eval_samples']} samples per evaluation. "
               "The reference images are held-out crops of the training photos, so the metrics measure how well "
               f"the training distribution is modelled, not generalisation; what holds for {_sizes(curves)} need "
               "not hold at ImageNet scale with 100x-1000x larger models.")  # fmt: skip
    return out


def _plots(results: dict, output_dir: Path) -> list[str]:
    plt = pyplot()
    curves, seeds = results["curves"], results["seeds"]
    metrics = [m for m in METRICS if any(m in p for c in curves.values() for p in c["points"])]
    files = []
    fig, axes = plt.subplots(len(metrics), 2, figsize=(9, 3.2 * len(metrics)), squeeze=False)
    for row, m in enumerate(metrics):
        for col, (xkey, xlabel) in enumerate((("samples", "training samples seen"), ("flops", "training FLOPs"))):
            ax = axes[row][col]
            for i, curve in enumerate(curves.values()):
                pts = [p for p in curve["points"] if m in p]
                xs = [p[xkey] for p in pts]
                for p in pts:
                    ax.scatter([p[xkey]] * len(p[m]["values"]), p[m]["values"], color=f"C{i}", s=10, alpha=0.4)
                ax.errorbar(xs, [p[m]["mean"] for p in pts], yerr=[p[m]["std"] or 0.0 for p in pts], marker="o",
                            color=f"C{i}", capsize=3, label=curve["label"])  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{m} (lower is better)")
            ax.legend(fontsize=7)
    fig.suptitle(f"quality vs training budget: mean ± std over {len(seeds)} seeds, dots = seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "curves.png", dpi=110)
    plt.close(fig)
    files.append("curves.png")

    groups = [("equal steps", "equal_steps", "budget", "steps"), ("equal FLOPs", "equal_flops", "flops", "FLOPs")]
    rows = [(title, m, [c for c in results[key] if c["metric"] == m and c["low"] is not None], xkey, xl)
            for title, key, xkey, xl in groups for m in metrics]  # fmt: skip
    rows = [r for r in rows if r[2]]
    if rows:
        fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.2), squeeze=False)
        for ax, (title, m, comps, xkey, xl) in zip(axes[0], rows):
            for c in comps:
                ax.errorbar([c[xkey]], [c["mean"]], yerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt="o",
                            color="0.3" if c["includes_zero"] else "C3", capsize=4)  # fmt: skip
                ax.scatter([c[xkey]] * len(c["differences"]), c["differences"], color="0.6", s=8)
            ax.axhline(0.0, color="0.7", lw=1)
            ax.set_xscale("log")
            ax.set_xlabel(xl)
            ax.set_title(f"{m}, DiT − LlamaGen, {title}", fontsize=8)
        fig.suptitle("paired differences (same seed): mean, 95% t interval (red: excludes 0), seeds grey; "
                     "below 0 = DiT better", fontsize=8)  # fmt: skip
        fig.tight_layout()
        fig.savefig(output_dir / "differences.png", dpi=110)
        plt.close(fig)
        files.append("differences.png")

    for kind, source in results.get("sample_grids", {}).items():
        name = f"samples_{kind}.png"
        shutil.copyfile(source, output_dir / name)
        files.append(name)
    return files


def _floor_line(floor: dict | None) -> str:
    if not floor:
        return "- floor: not computed (reference_floor off)."
    line = (f"- floor (perfect samples): {floor['num_samples']} other real held-out crops scored like samples give "
            f"latent FD {floor['latent_fd']:.3f}")  # fmt: skip
    if "fid" in floor:
        line += (f", FID {floor['fid']:.2f} on {floor['num_fid_samples']} of them, and FID "
                 f"{floor['fid_reconstructed']:.2f} for their tokenizer reconstructions (the decoder's ceiling)")  # fmt: skip
    return line + "."


def _fmt(point: dict, m: str) -> str:
    return fmt_summary(point[m], 3) if m in point else "–"


def _report(results: dict) -> str:
    cfg, curves = results["config"], results["curves"]
    lines = ["# ar-vs-diffusion study: DiT (diffusion) vs LlamaGen (autoregressive) on one iFSQ tokenizer", ""]
    lines += ["Generated by `ifsq-hf benchmark ar-vs-diffusion`; every number below comes from `results.json` beside "
              "this file.", ""]  # fmt: skip
    lines += run_section(
        results,
        "each seed: generator initialisation and data order, shared by both kinds",
        [f"- tokenizer: `{cfg['tokenizer']['model_preset']}`, seed {cfg['tokenizer'].get('seed', 0)}, one for "
         "the whole study"],
        "sum over the tokenizer, the reference and every stage's training + evaluation, as measured when each was run",
    )  # fmt: skip
    lines += ["## What this does and does not show", ""] + [f"- {r}" for r in results["reading"]] + [""]
    lines += ["## Metrics", "",
              f"- `latent_fd`: {METRICS['latent_fd']}. Held-out images are encoded to the quantized latent; DiT "
              "samples are snapped to the same FSQ grid; LlamaGen tokens are turned into the same codes. "
              f"{results['reference']['latent_dim']}-dimensional features, {cfg['num_eval_samples']} samples vs "
              f"{results['reference']['num_images']} held-out images: cheap and much less noisy than FID, scores "
              "both kinds on exactly what the shared tokenizer can represent, but blind to the decoder.",
              f"- `fid`: {METRICS['fid']} of the decoded samples vs the held-out images at {cfg['resolution']} px, "
              f"on {cfg.get('num_fid_samples') or cfg['num_eval_samples']} samples (budgets: "
              f"{cfg.get('fid_budgets', 'all')}). The papers' metric; at a few hundred thumbnails it is biased "
              "upwards and noisy, so compare it only within this study.",
              _floor_line(results["reference"].get("floor")),
              f"- reference: {results['reference']['description']}; sampling: DiT "
              f"`{json.dumps(cfg.get('dit_sampling', {}))}`, LlamaGen `{json.dumps(cfg.get('llamagen_sampling', {}))}`.",
              "- training FLOPs per step: one forward + backward of the generator at the run's batch size, counted "
              "with `torch.utils.flop_counter` (matmuls, convolutions, attention); not counted: the frozen "
              "tokenizer's encoding and REPA encoder (the same for both kinds), optimizer and EMA updates.",
              ""]  # fmt: skip
    lines += ["## Curves (mean ± std over seeds)", ""]
    rows = []
    for curve in curves.values():
        for p in curve["points"]:
            rows.append([curve["label"], p["budget"], p["samples"], f"{p['flops']:.3g}", _fmt(p, "latent_fd"),
                         _fmt(p, "fid")])  # fmt: skip
    lines.append(markdown_table(["generator", "steps", "samples seen", "training FLOPs", "latent FD", "FID"], rows))
    lines += ["", "## DiT − LlamaGen (same seed; mean and 95% t interval; negative = DiT better)", ""]
    rows = []
    for key, xkey, what in (("equal_steps", "budget", "steps"), ("equal_flops", "flops", "FLOPs")):
        for c in results[key]:
            ci = "n/a" if c["low"] is None else f"[{c['low']:+.3f}, {c['high']:+.3f}]"
            zero = "" if c["includes_zero"] is None else ("yes" if c["includes_zero"] else "**no**")
            x = c[xkey] if xkey == "budget" else f"{c[xkey]:.3g}"
            rows.append([f"equal {what}", x, c["metric"], f"{c['mean']:+.3f}", ci, zero])
    lines.append(markdown_table(["comparison", "at", "metric", "mean", "95% CI", "includes 0"], rows))
    lines += ["", "## Plots", ""] + [f"![{f}]({f})" for f in results["plots"]] + [""]
    lines += ["- `curves.png`: each metric against training samples seen (left) and training FLOPs (right), log x; "
              "points and bars are mean ± std, faint dots single seeds.",
              "- `differences.png`: DiT − LlamaGen per seed (grey) and its mean with a 95% t interval; red when the "
              "interval excludes 0; below the zero line the DiT is better.",
              "- `samples_*.png`: samples of the first seed at the last budget (two per class).", ""]  # fmt: skip
    lines += ["## Per-run metrics", ""]
    rows = []
    for kind in curves:
        for s in results["seeds"]:
            for b in cfg["budgets"]:
                r = results["runs"][kind][str(s)][str(b)]
                fid = f"{r['fid']:.2f}" if "fid" in r else "–"
                rows.append([kind, s, b, f"{r['latent_fd']:.3f}", fid])
    lines.append(markdown_table(["generator", "seed", "steps", "latent FD", "FID"], rows))
    return "\n".join(lines) + "\n"


def run_study(
    config: dict,
    output_dir: str | Path,
    seeds: list[int],
    *,
    preset_name: str = "custom",
    examples_dir: str | Path | None = None,
    argv: list[str] | None = None,
) -> dict:
    """Train the tokenizer, then per seed both generators stage by stage (resuming), evaluate every stage, write
    the report. Runs under ``accelerate launch``: all processes train, the main process evaluates and writes.
    Returns the results dict on the main process, ``{}`` on the others."""
    from . import generators as gen

    check_config(config)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}.")
    reference_seed = int(config.get("reference_seed", 1_000_003))
    if {reference_seed, reference_seed + 1} & set(seeds):
        raise ValueError(f"reference_seed {reference_seed} (and + 1, the real-image floor) must not be a training "
                         "seed; pick another.")  # fmt: skip
    state = study_state()
    output_dir = Path(output_dir)
    start_wall = time.perf_counter()
    timing: dict[str, dict[str, float]] = {}

    w, c = time.perf_counter(), time.process_time()
    tokenizer_trained = not run_is_complete(output_dir / "tokenizer")
    tokenizer = gen.prepare_tokenizer(config, output_dir, examples_dir)
    timing["tokenizer"] = run_timing(tokenizer, tokenizer_trained, w, c) if state.is_main_process else {}
    reference = None
    if state.is_main_process:
        w, c = time.perf_counter(), time.process_time()
        folder = output_dir / "reference"
        before = set(folder.glob("*-*.*"))
        reference = gen.build_reference(config, tokenizer, output_dir)
        # kept beside the statistics, so a report rewritten from cached runs still counts their cost
        timing["reference"] = run_timing(folder, set(folder.glob("*-*.*")) != before, w, c)
    state.wait_for_everyone()

    runs: dict[str, dict[int, dict[str, dict]]] = {kind: {s: {} for s in seeds} for kind in KINDS}
    flops: dict[str, float] = {}
    sizes: dict[str, dict[str, int]] = {}
    for seed in seeds:
        for kind in KINDS:
            previous = None
            for budget in config["budgets"]:
                run_dir = output_dir / "runs" / f"{kind}-seed{seed}" / f"step{budget:07d}"
                train = {**config["generators"][kind], "max_train_steps": budget}
                w, c = time.perf_counter(), time.process_time()
                trained = gen.train_generator(kind, train, tokenizer, run_dir, seed, examples_dir,
                                              resume_from=previous)  # fmt: skip
                if state.is_main_process:
                    stage_config = {**config, "fid": fid_at(config, budget)}
                    runs[kind][seed][str(budget)] = gen.evaluate_generator(
                        kind, run_dir, reference, stage_config, seed
                    )
                    if kind not in flops:
                        flops[kind] = gen.training_flops(kind, run_dir, train)
                        sizes[kind] = _model_size(kind, run_dir)
                    timing[f"{kind}-seed{seed}-step{budget}"] = run_timing(run_dir, trained, w, c)
                state.wait_for_everyone()
                previous = run_dir
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    results = {
        "study": STUDY,
        "preset": preset_name,
        "config": config,
        "seeds": list(seeds),
        "environment": environment(argv),
        "reference": reference.to_dict(),
        "num_processes": state.num_processes,
        **_aggregate(config, list(seeds), runs, flops, state.num_processes),
        "runs": {k: {str(s): r for s, r in by_seed.items()} for k, by_seed in runs.items()},
        "timing": timing_summary(timing, start_wall),
    }
    last = config["budgets"][-1]
    for kind, size in sizes.items():
        results["curves"][kind].update(size)
    results["sample_grids"] = {
        kind: str(output_dir / "runs" / f"{kind}-seed{seeds[0]}" / f"step{last:07d}" / "bench_samples.png")
        for kind in KINDS
    }
    results["reading"] = reading(results)
    results["plots"] = _plots(results, output_dir)
    write_results(output_dir, results, _report(results))
    state.wait_for_everyone()
    return results


def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_study_args(parser, STUDY, PRESETS)
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="Training steps at which both generators are evaluated (replaces the preset's).")  # fmt: skip
    parser.add_argument("--num_eval_samples", type=int, default=None, help="Samples per evaluation.")
    parser.add_argument("--no_fid", action="store_true", help="Latent FD only (Inception on CPU is slow).")
    return parser


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """``ifsq-hf benchmark ar-vs-diffusion``: resolve the config and seeds from ``args`` and run the study."""
    max_steps, args.max_train_steps = args.max_train_steps, None  # this study's length is its budgets
    if max_steps is not None:
        if max_steps < 8 or max_steps % 8:
            raise ValueError(f"--max_train_steps must be a positive multiple of 8 (budgets N/8, N/4, N/2, N), "
                             f"got {max_steps}; or pass --budgets.")  # fmt: skip
        if args.budgets is not None:
            raise ValueError("pass either --max_train_steps or --budgets, not both.")
    if args.num_eval_samples is not None and args.num_eval_samples < 2:
        raise ValueError(f"--num_eval_samples must be >= 2, got {args.num_eval_samples}.")
    overrides = {"num_eval_samples": args.num_eval_samples, "fid": False if args.no_fid else None}
    study = resolve_study_args(STUDY, args, PRESETS, REQUIRED, overrides=overrides)
    config = copy.deepcopy(study.config)
    budgets = args.budgets
    if max_steps is not None:
        budgets = [max_steps // 8, max_steps // 4, max_steps // 2, max_steps]
    if budgets is not None:
        config["budgets"] = list(budgets)
        every = math.gcd(*budgets)
        for train in config["generators"].values():  # every stage must end on a checkpoint
            if any(b % train["checkpointing_steps"] for b in budgets):
                train["checkpointing_steps"] = every
            train["lr_warmup_steps"] = min(int(train.get("lr_warmup_steps", 0)), budgets[0])
    if config.get("num_fid_samples") and config["num_fid_samples"] > config["num_eval_samples"]:
        config["num_fid_samples"] = config["num_eval_samples"]
    check_config(config)
    if study.dump_only:
        Path(args.dump_config).write_text(json.dumps(config, indent=2) + "\n")
        return {"config": config}
    return run_study(config, study.output_dir, study.seeds, preset_name=study.preset_name,
                     examples_dir=args.examples_dir, argv=argv)  # fmt: skip
