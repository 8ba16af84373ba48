"""The ``bits`` study: how does an iFSQ tokenizer's reconstruction change with the bits per latent dimension, and is
it better to spend a fixed bit budget on more channels with fewer levels or on fewer channels with more levels?

The paper uses ``2**bits + 1`` levels per dimension (4 bits = 17 levels; the extra level keeps the grid symmetric
around 0, which the iFSQ bound needs) and picks 4 bits. Two sweeps share the architecture, the recipe and the seeds
(each seed changes the initialisation and the data order, identically in every setting):

* ``fixed_channels``: the preset's latent channels (4), bits 2..8: the bits per latent position grow with the bits;
* ``fixed_total``: channels × bits constant (24 = 12×2, 8×3, 6×4, 4×6, 3×8): the trade-off at equal budget.

A setting in both sweeps (4 channels × 6 bits = 24) is trained once. Optionally the same settings with the vanilla
FSQ ``tanh`` bound (``--bounds ifsq tanh``). Every run trains with ``examples/train_ifsq_autoencoder.py``
(:mod:`.runner`); the saved model is scored on held-out images (PSNR, SSIM, LPIPS, per-channel bin usage and bin
entropy efficiency). ``report.md`` gives mean ± std over seeds, paired differences with 95% t intervals between
adjacent settings of a sweep and of every setting against the sweep's 4-bit point, and a reading generated from the
numbers. Generation quality (a DiT or LlamaGen trained on each tokenizer) is not part of this study.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..models.autoencoder_ifsq import PRESETS as MODEL_PRESETS
from ..models.autoencoder_ifsq import iFSQAutoencoder
from ..quantization import levels_from_bits, per_dim_bin_histogram, utilization_stats
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
from .runner import load_example, train_with_example
from .statistics import paired_difference, summarize

__all__ = ["BOUNDS", "PRESETS", "add_args", "evaluate_run", "load_preset", "main", "run_bits_study", "settings"]

SCRIPT = "train_ifsq_autoencoder"
REQUIRED = ("model_preset", "train", "fixed_channels", "fixed_total", "num_eval_images")
BOUNDS = {"ifsq": "iFSQ (alpha 1.6)", "tanh": "FSQ (tanh)"}
PAPER_BITS = 4
# metric -> +1 if higher is better, -1 if lower is better
METRICS = {"psnr": 1, "ssim": 1, "lpips": -1, "bin_usage": 1, "bin_entropy_efficiency": 1}
SWEEPS = ("fixed_channels", "fixed_total")
MAX_CODE_BITS = 62  # global token indices are int64 (FiniteScalarQuantizer refuses prod(levels) >= 2**63)

# train: arguments of examples/train_ifsq_autoencoder.py (list values are repeated flags).
PRESETS: dict[str, dict[str, Any]] = {
    # For the tests: seconds per run; 4 settings (4×2, 4×3, 4×4 and 3×4; 4×3 is in both sweeps).
    "tiny": {
        "model_preset": "test_f4_d4",
        "fixed_channels": {"latent_channels": 4, "bits": [2, 3, 4]},
        "fixed_total": {"total_bits": 12, "bits": [3, 4]},
        "bounds": ["ifsq"],
        "train": {
            "resolution": 16, "train_batch_size": 4, "max_train_steps": 6, "num_bundled_samples": 24,
            "learning_rate": 1e-3, "perceptual_weight": 0.0, "disc_start": 10**9, "lpips_net": "none",
            "validation_steps": 0, "checkpointing_steps": 1000, "report_to": "none", "random_flip": True,
            "bundled_photo_size": 64, "no-use_ema": True,
        },
        "eval_split": "test", "num_eval_images": 8, "lpips_net": "none", "num_threads": 1,
    },
    # The 2-core CPU study: 11 settings x 3 seeds = 33 runs of 300 steps, about 20 min on an idle box at 1 thread
    # (about 0.1 s per step; see docs/benchmark.md). The recipe is the bound study's, with half the steps.
    "cpu": {
        "model_preset": "tiny_f8_d4",
        "fixed_channels": {"latent_channels": 4, "bits": [2, 3, 4, 5, 6, 7, 8]},
        "fixed_total": {"total_bits": 24, "bits": [2, 3, 4, 6, 8]},
        "bounds": ["ifsq"],
        # The bound study's recipe with half the steps. Logging computes code histograms (up to 2**26 counts for
        # the large codebooks), so not every 10 steps.
        "train": {**TOKENIZER_TRAIN["cpu"], "max_train_steps": 300, "checkpointing_steps": 100, "logging_steps": 50},
        "eval_split": "test", "num_eval_images": 64, "lpips_net": "alex",
        # One thread: on a busy 2-core box two threads spin against each other (measured 6x more CPU per step).
        "num_threads": 1,
    },
    # A GPU cluster: the official f16 tokenizer recipe on ImageNet-1k (gated on the Hub: accept its terms and log
    # in first) at every setting: 11 settings x 3 seeds x 100k steps. Run with
    # `accelerate launch -m ifsq_hf.cli benchmark bits --config benchmarks/configs/bits_imagenet.json ...`.
    "imagenet": {
        "model_preset": "ifsq_f16_d4_4bit",
        "fixed_channels": {"latent_channels": 4, "bits": [2, 3, 4, 5, 6, 7, 8]},
        "fixed_total": {"total_bits": 24, "bits": [2, 3, 4, 6, 8]},
        "bounds": ["ifsq"],
        # No in-training validation: the study evaluates every run itself at the end (evaluate_run), so the
        # periodic passes would only cost time.
        "train": {
            **{k: v for k, v in TOKENIZER_TRAIN["imagenet"].items() if k != "num_validation_images"},
            "validation_steps": 0,
        },
        "eval_split": "validation", "num_eval_images": 10_000, "lpips_net": "alex",
    },
}  # fmt: skip


def _positive_ints(values: Any, what: str) -> list[int]:
    if (
        not isinstance(values, list)
        or not values
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
    ):
        raise ValueError(f"{what} must be a non-empty list of integers >= 1, got {values!r}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat a value, got {values}.")
    return sorted(values)


def settings(config: dict) -> dict[str, list[tuple[int, int]]]:
    """The ``(channels, bits)`` points of each sweep, in increasing bits; raises ``ValueError`` on an impossible one."""
    fixed = config["fixed_channels"]
    channels = fixed.get("latent_channels", MODEL_PRESETS[config["model_preset"]]["latent_channels"])
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"fixed_channels.latent_channels must be an integer >= 1, got {channels!r}.")
    out = {"fixed_channels": [(channels, b) for b in _positive_ints(fixed.get("bits"), "fixed_channels.bits")]}
    total = config["fixed_total"].get("total_bits")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"fixed_total.total_bits must be an integer >= 1, got {total!r}.")
    bits = _positive_ints(config["fixed_total"].get("bits"), "fixed_total.bits")
    bad = [b for b in bits if total % b]
    if bad:
        divisors = [b for b in range(1, total + 1) if total % b == 0]
        raise ValueError(
            f"fixed_total.bits {bad} do not divide total_bits={total} (channels = total_bits / bits must be an "
            f"integer); choose bits among {divisors}."
        )
    out["fixed_total"] = [(total // b, b) for b in bits]
    for c, b in {p for points in out.values() for p in points}:
        if c * math.log2(2**b + 1) > MAX_CODE_BITS:
            raise ValueError(
                f"{c} channels x {2**b + 1} levels ({b} bits) make a codebook of 2**{c * math.log2(2**b + 1):.1f} "
                f"codes; token indices are int64, so keep channels x log2(levels) <= {MAX_CODE_BITS}."
            )
    return out


def _check_bounds(bounds: Any) -> list[str]:
    if (
        not isinstance(bounds, list)
        or not bounds
        or any(b not in BOUNDS for b in bounds)
        or len(set(bounds)) < len(bounds)
    ):
        raise ValueError(f"bounds must be a non-empty list of distinct names from {list(BOUNDS)}, got {bounds!r}.")
    return list(bounds)


def load_preset(name: str | None = None, config_file: str | Path | None = None) -> dict[str, Any]:
    """A preset by name, or a JSON config file (same keys; ``--dump_config`` writes one to start from)."""
    config = load_study_config("bits", PRESETS, name, config_file, REQUIRED)
    _validate(config)
    return config


def _validate(config: dict) -> None:
    if config["model_preset"] not in MODEL_PRESETS:
        raise ValueError(f"model_preset {config['model_preset']!r} is not one of {sorted(MODEL_PRESETS)}.")
    settings(config)
    _check_bounds(config.get("bounds", ["ifsq"]))


def key(bound: str, channels: int, bits: int) -> str:
    """Name of a setting (and of its runs' folder): ``ifsq-c4b4``."""
    return f"{bound}-c{channels}b{bits}"


def _model_config(config: dict, bound: str, channels: int, bits: int) -> dict:
    return {
        **MODEL_PRESETS[config["model_preset"]],
        "latent_channels": channels,
        "levels": levels_from_bits(bits, channels),
        "quantizer_bound": bound,
    }


@torch.no_grad()
def evaluate_run(run_dir: Path, config: dict, args: argparse.Namespace, device: torch.device | str = "cpu") -> dict:
    """Held-out PSNR, SSIM, LPIPS and per-channel bin statistics of one trained tokenizer.

    Not :func:`ifsq_hf.evaluation.evaluate_tokenizer` (which ``bound`` uses): when this study was written its
    codebook tracker held one int64 count per code, 35 GB for 4 channels × 257 levels (it now counts only the codes
    that occur above 4M codes). The bins are counted per channel here, and the code statistics only over the codes
    that occur.
    """
    from ..metrics import LPIPS, ReconstructionMetrics
    from ..training.image_data import build_image_dataset, make_dataloader_from_args

    model = iFSQAutoencoder.from_pretrained(run_dir).to(device).eval()
    dataset = build_image_dataset(args, config.get("eval_split", "test"), train=False)
    loader = make_dataloader_from_args(dataset, args, shuffle=False)
    max_batches = math.ceil(config["num_eval_images"] / args.train_batch_size)
    lpips = None if config.get("lpips_net", "alex") == "none" else LPIPS(net=config["lpips_net"]).to(device)
    scores = ReconstructionMetrics(lpips=lpips, codebook_size=None)
    indices = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        x = batch["pixel_values"].to(device, torch.float32)
        out = model(x)
        scores.update(x, out.sample.float().clamp(-1, 1))
        indices.append(out.indices.cpu())
    if not indices:
        raise ValueError("the evaluation dataloader yielded no images; check eval_split and the dataset.")
    metrics = {k: float(v) for k, v in scores.compute().items()}
    codes = torch.cat(indices)
    quantizer = model.quantizer
    util = utilization_stats(
        quantizer,
        code_counts=torch.unique(codes.reshape(-1), return_counts=True)[1],
        dim_counts=per_dim_bin_histogram(quantizer, codes),
    )
    metrics["bin_usage"] = sum(util.bin_usage) / len(util.bin_usage)
    metrics["bin_entropy_efficiency"] = sum(util.bin_entropy_efficiency) / len(util.bin_entropy_efficiency)
    metrics["code_perplexity"] = util.code_perplexity
    return {
        "metrics": metrics,
        "bin_usage_per_channel": util.bin_usage,
        "bin_entropy_efficiency_per_channel": util.bin_entropy_efficiency,
        "num_images": sum(len(c) for c in indices),
        "tokens_per_channel": int(codes.numel()),
    }


def _comparison_pairs(points: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """(a, b, kind): each setting minus the one with fewer bits before it, then every other one minus the 4-bit
    point (``a − b`` with ``a`` the setting with more bits)."""
    pairs = [(hi, lo, "adjacent") for lo, hi in itertools.pairwise(points)]
    paper = [p for p in points if p[1] == PAPER_BITS]
    if paper:
        done = {(a, b) for a, b, _ in pairs}
        for p in points:
            a, b = (p, paper[0]) if p[1] > PAPER_BITS else (paper[0], p)
            if p != paper[0] and (a, b) not in done:
                pairs.append((a, b, f"vs {PAPER_BITS} bits"))
    return pairs


def _aggregate(config: dict, bounds: list[str], seeds: list[int], runs: dict[str, dict[int, dict]]) -> dict:
    points = settings(config)
    table = {}
    for bound in bounds:
        for sweep, pts in points.items():
            for c, b in pts:
                k = key(bound, c, b)
                if k in table:
                    table[k]["sweeps"].append(sweep)
                    continue
                by_seed = runs[k]
                names = [m for m in METRICS if m in by_seed[seeds[0]]["metrics"]]
                table[k] = {
                    "bound": bound, "channels": c, "bits": b, "levels": 2**b + 1, "sweeps": [sweep],
                    "bits_per_position": c * b, "exact_bits_per_position": c * math.log2(2**b + 1),
                    "tokens_per_channel": by_seed[seeds[0]]["tokens_per_channel"],
                    "num_images": by_seed[seeds[0]].get("num_images"),
                    "metrics": {m: summarize([by_seed[s]["metrics"][m] for s in seeds]).to_dict() for m in names},
                }  # fmt: skip
    sweeps, comparisons = [], []
    for bound in bounds:
        for sweep, pts in points.items():
            label = (f"{pts[0][0]} channels" if sweep == "fixed_channels"
                     else f"{config['fixed_total']['total_bits']} bits per position")  # fmt: skip
            sweeps.append({"name": sweep, "bound": bound, "label": label, "settings": [key(bound, *p) for p in pts]})
            for a, b, kind in _comparison_pairs(pts):
                ka, kb = key(bound, *a), key(bound, *b)
                for m in table[ka]["metrics"]:
                    d = paired_difference(table[ka]["metrics"][m]["values"], table[kb]["metrics"][m]["values"])
                    comparisons.append({"sweep": sweep, "bound": bound, "kind": kind, "a": ka, "b": kb, "metric": m,
                                        **d.to_dict()})  # fmt: skip
    if len(bounds) > 1:  # each bound against the first at the same setting
        for k, row in table.items():
            if row["bound"] == bounds[0]:
                continue
            ref = key(bounds[0], row["channels"], row["bits"])
            for m in row["metrics"]:
                d = paired_difference(table[ref]["metrics"][m]["values"], row["metrics"][m]["values"])
                comparisons.append({"sweep": "bounds", "bound": bounds[0], "kind": "bound", "a": ref, "b": k,
                                    "metric": m, **d.to_dict()})  # fmt: skip
    return {"settings": table, "sweeps": sweeps, "comparisons": comparisons}


def _name(table: dict, k: str) -> str:
    r = table[k]
    return f"{r['channels']}×{r['bits']} bits"


def _ci(c: dict, digits: int = 2) -> str:
    if c["low"] is None:
        return f"{c['mean']:+.{digits}f} (one seed, no interval)"
    return f"{c['mean']:+.{digits}f} [{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]"


def _detected(c: dict) -> bool:
    """An interval that excludes 0 and is not a zero-width artefact of identical values."""
    return c["low"] is not None and not c["includes_zero"] and bool(c["std"])


def _find(comparisons: list[dict], **match) -> list[dict]:
    return [c for c in comparisons if all(c[k] == v for k, v in match.items())]


def reading(results: dict) -> list[str]:
    """Plain-words statements generated from the numbers: what the study does and does not show."""
    out = []
    table, comps, seeds = results["settings"], results["comparisons"], results["seeds"]
    if len(seeds) < 2:
        out.append("One seed only: no intervals, so no difference below can be called detected (rerun with "
                   "--num_seeds 3 or more).")  # fmt: skip
    for sweep in results["sweeps"]:
        bound, keys = sweep["bound"], sweep["settings"]
        head = f"{BOUNDS[bound]}, {sweep['label']}"
        psnr = [table[k]["metrics"]["psnr"]["mean"] for k in keys]
        best = keys[max(range(len(keys)), key=psnr.__getitem__)]
        out.append(f"{head}: mean PSNR goes " + ", ".join(f"{_name(table, k)} {p:.2f}" for k, p in zip(keys, psnr))
                   + f" dB; highest at {_name(table, best)}.")  # fmt: skip
        adjacent = _find(comps, sweep=sweep["name"], bound=bound, kind="adjacent", metric="psnr")
        if sweep["name"] == "fixed_channels" and len(seeds) > 1:
            gains = [c for c in adjacent if _detected(c) and c["mean"] > 0]
            missing = [c for c in adjacent if not (_detected(c) and c["mean"] > 0)]
            if not missing:
                out.append(f"{head}: every extra bit up to {table[keys[-1]]['bits']} bits gives a PSNR gain whose "
                           "95% interval excludes 0: no saturation within the swept range at this scale.")  # fmt: skip
            elif not gains:
                out.append(f"{head}: no PSNR gain of one more bit is detected anywhere in the sweep (every 95% "
                           "interval includes 0 or lies below it). More levels did not detectably help, so at this "
                           "scale the quantization grid does not look like the main limit on reconstruction; the "
                           "training length and the model size, which this study does not vary, are the other "
                           "candidates.")  # fmt: skip
            else:
                first = missing[0]
                step = f"{table[first['b']]['bits']} → {table[first['a']]['bits']} bits"
                line = (f"{head}: the PSNR gain of one more bit stops being detectable at {step} ({_ci(first)} dB, "
                        "95% CI)" if first is not adjacent[0] else
                        f"{head}: the first extra bit ({step}, {_ci(first)} dB) is not detected")  # fmt: skip
                later = [c for c in gains if table[c["b"]]["bits"] > table[first["b"]]["bits"]]
                if later:
                    line += "; later steps are detected again (" + ", ".join(
                        f"{table[c['b']]['bits']} → {table[c['a']]['bits']}: {_ci(c)}" for c in later) + ")"  # fmt: skip
                out.append(line + ".")
            out += _knee(head, table, adjacent, comps, bound)
        if sweep["name"] == "fixed_total":
            exact = [table[k]["exact_bits_per_position"] for k in keys]
            out.append(f"{head}: the budget is nominal (channels × bits); with 2**bits + 1 levels the exact "
                       f"information per position runs from {exact[0]:.1f} bits ({_name(table, keys[0])}) to "
                       f"{exact[-1]:.1f} ({_name(table, keys[-1])}), so the settings with fewer bits per dimension "
                       "also carry a little more information.")  # fmt: skip
        if len(seeds) > 1:
            out += _against_paper(head, table, comps, sweep)
    for sweep in results["sweeps"]:
        keys = sweep["settings"]
        use = [table[k]["metrics"]["bin_usage"]["mean"] for k in keys]
        eff = [table[k]["metrics"]["bin_entropy_efficiency"]["mean"] for k in keys]
        out.append(f"{BOUNDS[sweep['bound']]}, {sweep['label']}: bin usage {use[0]:.2f} → {use[-1]:.2f} and bin "
                   f"entropy efficiency {eff[0]:.2f} → {eff[-1]:.2f} from {_name(table, keys[0])} to "
                   f"{_name(table, keys[-1])}.")  # fmt: skip
    intervals = [c for c in comps if c["low"] is not None]
    if intervals:
        hits = [c for c in intervals if _detected(c)]
        out.append(f"Multiplicity: this report computes {len(intervals)} intervals (every metric and comparison); at "
                   f"95% about {len(intervals) / 20:.1f} of them exclude 0 by chance alone even with no effect, and "
                   f"{len(hits)} do here. An isolated detection, above all one whose interval barely misses 0, is a "
                   "hint to recheck with more seeds, not a finding.")  # fmt: skip
    levels = max(r["levels"] for r in table.values())
    n = min(r["tokens_per_channel"] for r in table.values())
    out.append(f"Bin statistics are counted on {n} latent values per channel, {n / levels:.1f} per level at "
               f"{levels} levels: rarely used levels are easily missed in such a sample, so at high bits bin usage "
               "and the plug-in entropy are biased low by the sample size as well as by the encoder.")  # fmt: skip
    cfg = results["config"]
    train = cfg["train"]
    source = train.get("dataset_name") or train.get("train_data_dir") or "the bundled photos (10 train, 2 held out)"
    big = PRESETS["imagenet"]
    big_settings = len({p for pts in settings(big).values() for p in pts})
    out.append("Not measured: generation quality vs bits. The paper's case for 4 bits is the generator (diffusion "
               "and autoregressive models trained on the tokens); this study scores reconstruction only, so it cannot "
               "say which bit width generates best, and at CPU scale no generator is trained. The imagenet preset "
               f"alone is {big_settings} settings × 3 seeds = {3 * big_settings} trainings of the {big['model_preset']} "
               f"tokenizer for {big['train']['max_train_steps']:,} steps each; a generator per setting would come "
               "on top.")  # fmt: skip
    out.append(f"Scope: {len(seeds)} seeds per setting, {len(table)} settings, the {cfg['model_preset']} "
               f"architecture, {train.get('max_train_steps')} steps at {train.get('resolution')} px on {source}, "
               f"{_images(table, cfg['num_eval_images'])}. What holds at this scale need not hold for "
               "ImageNet-scale tokenizers trained for 100k+ steps; the intervals cover seed noise only, not the "
               "choice of recipe or data.")  # fmt: skip
    return out


def _against_paper(head: str, table: dict, comps: list[dict], sweep: dict) -> list[str]:
    """Which settings of a sweep differ detectably in PSNR from its 4-bit point, and in which direction."""
    keys = sweep["settings"]
    ref = next((k for k in keys if table[k]["bits"] == PAPER_BITS), None)
    if ref is None:
        return []
    found = []
    for c in _find(comps, sweep=sweep["name"], bound=sweep["bound"], metric="psnr"):
        if ref in (c["a"], c["b"]) and c["kind"] in ("adjacent", f"vs {PAPER_BITS} bits") and _detected(c):
            other = c["a"] if c["b"] == ref else c["b"]
            found.append((other, c["mean"] if c["a"] == other else -c["mean"]))
    if not found:
        what = ("trading channels for levels at equal bits per position" if sweep["name"] == "fixed_total"
                else f"moving away from {PAPER_BITS} bits")  # fmt: skip
        return [f"{head}: no setting differs detectably in PSNR from {_name(table, ref)} (every 95% interval "
                f"includes 0): {what} makes no difference this study can resolve."]  # fmt: skip
    found.sort(key=lambda f: table[f[0]]["bits"])
    parts = [f"{_name(table, k)} is {'better' if d > 0 else 'worse'} ({d:+.2f} dB)" for k, d in found]
    line = f"{head}: against {_name(table, ref)}, " + "; ".join(parts) + " (95% intervals exclude 0)"
    better = {table[k]["bits"] < PAPER_BITS for k, d in found if d > 0}
    if sweep["name"] == "fixed_total" and len(better) == 1:
        line += (": more channels with fewer levels did better here" if better.pop() else
                 ": fewer channels with more levels did better here")  # fmt: skip
    return [line + "."]


def _images(table: dict, asked: int) -> str:
    counted = {r["num_images"] for r in table.values()} - {None}
    if len(counted) == 1 and (n := counted.pop()) < asked:
        return f"{n} held-out images (all the split has; {asked} asked for)"
    return f"{asked} held-out images at most"


def _knee(head: str, table: dict, adjacent: list[dict], comps: list[dict], bound: str) -> list[str]:
    by_b = {table[c["b"]]["bits"]: c for c in adjacent}
    below, above = by_b.get(PAPER_BITS - 1), by_b.get(PAPER_BITS)
    if below is None or above is None or table[below["a"]]["bits"] != PAPER_BITS:
        return []
    line = (f"{head}: {PAPER_BITS - 1} → {PAPER_BITS} bits {_ci(below)} dB, {PAPER_BITS} → "
            f"{table[above['a']]['bits']} bits {_ci(above)} dB")  # fmt: skip
    curve = _find(comps, sweep="fixed_channels", bound=bound, kind="curvature", metric="psnr")
    if curve:
        line += f"; change of the gain {_ci(curve[0])} dB"
    if _detected(below) and below["mean"] > 0 and not _detected(above):
        line += f": consistent with a knee at {PAPER_BITS} bits at this scale (a gain up to it, none detected after)."
    elif _detected(above) and above["mean"] > 0:
        line += f": no knee at {PAPER_BITS} bits at this scale, one more bit still gains detectably."
    elif not _detected(below):
        line += (f": no gain detected on either side of {PAPER_BITS} bits, so this scale cannot place a knee "
                 f"at {PAPER_BITS} bits.")  # fmt: skip
    else:
        line += "."
    return [line]


def _curvature(results: dict) -> None:
    """Paired test of whether the gain shrinks at the paper's point: (psnr[5] − psnr[4]) − (psnr[4] − psnr[3])."""
    table = results["settings"]
    for sweep in results["sweeps"]:
        if sweep["name"] != "fixed_channels":
            continue
        by_bits = {table[k]["bits"]: k for k in sweep["settings"]}
        if not all(b in by_bits for b in (PAPER_BITS - 1, PAPER_BITS, PAPER_BITS + 1)):
            continue
        lo, mid, hi = (table[by_bits[b]]["metrics"]["psnr"]["values"] for b in (3, 4, 5))
        d = paired_difference([h - m for h, m in zip(hi, mid)], [m - low for m, low in zip(mid, lo)])
        results["comparisons"].append({"sweep": "fixed_channels", "bound": sweep["bound"], "kind": "curvature",
                                       "a": by_bits[PAPER_BITS + 1], "b": by_bits[PAPER_BITS - 1], "metric": "psnr",
                                       **d.to_dict()})  # fmt: skip


def _plots(results: dict, output_dir: Path) -> list[str]:
    plt = pyplot()
    table = results["settings"]
    sweeps = results["sweeps"]
    bounds = list(dict.fromkeys(s["bound"] for s in sweeps))
    files = []

    def panel(ax, sweep, metric, color):
        keys = sweep["settings"]
        xs = [table[k]["bits"] for k in keys]
        for x, k in zip(xs, keys):
            vals = table[k]["metrics"][metric]["values"]
            ax.scatter([x] * len(vals), vals, color="0.6", s=10, zorder=2)
        means = [table[k]["metrics"][metric]["mean"] for k in keys]
        stds = [table[k]["metrics"][metric]["std"] or 0.0 for k in keys]
        ax.errorbar(xs, means, yerr=stds, fmt="o-", color=color, capsize=3, label=BOUNDS[sweep["bound"]], zorder=3)
        ax.axvline(PAPER_BITS, color="0.8", ls="--", lw=1, zorder=1)
        ax.set_xticks(xs, [f"{table[k]['channels']}×{table[k]['bits']}" for k in keys], fontsize=7)

    names = [m for m in ("psnr", "ssim", "lpips") if m in next(iter(table.values()))["metrics"]]
    for filename, metric_names in (("metrics_vs_bits.png", names),
                                   ("usage_vs_bits.png", ["bin_usage", "bin_entropy_efficiency"])):  # fmt: skip
        fig, axes = plt.subplots(len(metric_names), 2, figsize=(8, 2.6 * len(metric_names)), squeeze=False)
        for col, name in enumerate(SWEEPS):
            for i, bound in enumerate(bounds):
                sweep = next(s for s in sweeps if s["name"] == name and s["bound"] == bound)
                for row, m in enumerate(metric_names):
                    ax = axes[row][col]
                    panel(ax, sweep, m, f"C{i}")
                    ax.set_title(f"{m} ({'higher' if METRICS[m] > 0 else 'lower'} is better), {sweep['label']}",
                                 fontsize=8)  # fmt: skip
                    ax.set_xlabel("channels × bits per dim", fontsize=7)
            if len(bounds) > 1:
                axes[0][col].legend(fontsize=7)
        fig.suptitle("held-out metrics vs bits: seeds (grey), mean ± std; dashed: the paper's 4 bits", fontsize=9)
        fig.tight_layout()
        fig.savefig(output_dir / filename, dpi=110)
        plt.close(fig)
        files.append(filename)

    adjacent = [c for c in results["comparisons"] if c["kind"] == "adjacent" and c["metric"] == "psnr"]
    if any(c["low"] is not None for c in adjacent):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), squeeze=False)
        for col, name in enumerate(SWEEPS):
            ax = axes[0][col]
            rows = [c for c in adjacent if c["sweep"] == name]
            for i, c in enumerate(rows):
                color = "0.3" if not _detected(c) else "C3"
                err = [[c["mean"] - (c["low"] or c["mean"])], [(c["high"] or c["mean"]) - c["mean"]]]
                ax.errorbar([c["mean"]], [i], xerr=err, fmt="o", color=color, capsize=3)
            ax.axvline(0.0, color="0.7", lw=1)
            ax.set_yticks(range(len(rows)),
                          [f"{c['bound']}: {_name(table, c['a'])} − {_name(table, c['b'])}" for c in rows], fontsize=7)  # fmt: skip
            ax.set_xlabel("PSNR difference (dB)", fontsize=7)
            ax.set_title(name.replace("_", " "), fontsize=8)
        fig.suptitle("PSNR gain of the next setting (same seed): mean and 95% t interval; red: excludes 0", fontsize=9)
        fig.tight_layout()
        fig.savefig(output_dir / "psnr_gains.png", dpi=110)
        plt.close(fig)
        files.append("psnr_gains.png")
    return files


def _report(results: dict) -> str:
    table = results["settings"]
    lines = ["# bits study: reconstruction vs bits per latent dimension", ""]
    lines += [
        "Generated by `ifsq-hf benchmark bits`; every number below comes from `results.json` beside this file.",
        "",
    ]
    lines += run_section(results, "each seed: initialisation and data order; shared by all settings")
    lines += ["## What this does and does not show", ""] + [f"- {r}" for r in results["reading"]] + [""]
    metric_names = list(next(iter(table.values()))["metrics"])
    metric_names = [m for m in metric_names if m in METRICS]
    lines += ["## Held-out metrics per setting (mean ± std over seeds)", ""]
    rows = []
    for k, r in table.items():
        rows.append([k, ", ".join(r["sweeps"]), r["channels"], r["bits"], r["levels"], r["bits_per_position"],
                     *(fmt_summary(r["metrics"][m], 4) for m in metric_names)])  # fmt: skip
    lines.append(markdown_table(["setting", "sweeps", "channels", "bits/dim", "levels", "bits/position",
                                 *metric_names], rows))  # fmt: skip
    lines += ["", "bits/position is channels × bits (nominal); with 2**bits + 1 levels the exact information is "
              "channels × log2(levels), slightly more.", ""]  # fmt: skip
    lines += ["## Paired differences (a − b, same seed; mean and 95% t interval)", ""]
    rows = []
    for c in results["comparisons"]:
        ci = "n/a" if c["low"] is None else f"[{c['low']:+.4f}, {c['high']:+.4f}]"
        zero = "" if c["includes_zero"] is None else ("yes" if c["includes_zero"] else "**no**")
        what = f"({c['a']} − {c['b']}) vs one bit lower" if c["kind"] == "curvature" else f"{c['a']} − {c['b']}"
        rows.append([c["sweep"], c["kind"], what, c["metric"], f"{c['mean']:+.4f}", ci, zero])
    lines.append(markdown_table(["sweep", "kind", "comparison", "metric", "mean", "95% CI", "includes 0"], rows))
    lines += ["", "adjacent: a setting minus the one with fewer bits before it in the sweep; vs 4 bits: against the "
              "paper's point; curvature: (PSNR at 5 bits − at 4) − (at 4 − at 3), negative when the gain shrinks "
              "at 4 bits; bound: the first bound minus the other at the same setting.", ""]  # fmt: skip
    lines += ["## Plots", ""] + [f"![{f}]({f})" for f in results["plots"]] + [""]
    lines += ["- `metrics_vs_bits.png`: PSNR, SSIM, LPIPS vs bits per dimension; left the fixed-channel sweep, right "
              "the fixed total; grey dots are seeds, the coloured points and bars mean ± std.",
              "- `usage_vs_bits.png`: bin usage (fraction of a channel's levels used on the held-out images) and bin "
              "entropy efficiency (entropy / log2 levels), same layout.",
              "- `psnr_gains.png`: the PSNR gain from each setting to the next, with its 95% t interval; an interval "
              "that crosses the grey zero line means no gain detected.", ""]  # fmt: skip
    lines += ["## Per-run metrics", ""]
    rows = []
    for k in table:
        for s in results["seeds"]:
            run = results["runs"][k][str(s)]
            rows.append([k, s, *(f"{run['metrics'][m]:.4f}" for m in metric_names)])
    lines.append(markdown_table(["setting", "seed", *metric_names], rows))
    return "\n".join(lines) + "\n"


def run_bits_study(
    config: dict,
    output_dir: str | Path,
    seeds: list[int],
    *,
    bounds: list[str] | None = None,
    preset_name: str = "custom",
    examples_dir: str | Path | None = None,
    argv: list[str] | None = None,
) -> dict:
    """Train every (setting, seed) with the example script (resuming unfinished runs), evaluate, write the report.

    Runs under ``accelerate launch``: all processes train together; the main process evaluates and writes.
    Returns the results dict (also written to ``results.json``) on the main process, ``{}`` on the others.
    """
    _validate(config)
    bounds = _check_bounds(list(bounds or config.get("bounds", ["ifsq"])))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}.")
    points = list(dict.fromkeys(p for pts in settings(config).values() for p in pts))
    state = study_state()
    output_dir = Path(output_dir)
    script = load_example(SCRIPT, examples_dir)
    timing: dict[str, dict[str, float]] = {}
    start_wall = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {key(b, c, n): {} for b in bounds for c, n in points}
    for seed in seeds:  # seeds outermost: a study stopped early has every setting at the first seeds
        for bound in bounds:
            for channels, bits in points:
                k = key(bound, channels, bits)
                run_dir = output_dir / "runs" / f"{k}-seed{seed}"
                config_path = output_dir / "configs" / f"{k}.json"
                if state.is_main_process:
                    config_path.parent.mkdir(parents=True, exist_ok=True)
                    model_config = _model_config(config, bound, channels, bits)
                    config_path.write_text(json.dumps(model_config, indent=2, sort_keys=True))
                state.wait_for_everyone()
                argv_run = [*train_argv(config["train"]), "--model_config", str(config_path), "--seed", str(seed)]
                w, c = time.perf_counter(), time.process_time()
                trained = train_with_example(SCRIPT, argv_run, run_dir, examples_dir)
                state.wait_for_everyone()
                if state.is_main_process:
                    cached = run_dir / "bench_eval.json"
                    if cached.is_file():
                        runs[k][seed] = json.loads(cached.read_text())
                    else:
                        args = script.parse_args([*argv_run, "--output_dir", str(run_dir)])
                        runs[k][seed] = evaluate_run(run_dir, config, args, device=state.device)
                        cached.write_text(json.dumps(runs[k][seed]))
                timing[f"{k}-seed{seed}"] = run_timing(run_dir, trained, w, c) if state.is_main_process else {}
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    results = {
        "study": "bits",
        "preset": preset_name,
        "config": config,
        "bounds": bounds,
        "seeds": list(seeds),
        "environment": environment(argv),
        **_aggregate(config, bounds, list(seeds), runs),
        "runs": {k: {str(s): r for s, r in by_seed.items()} for k, by_seed in runs.items()},
        "timing": timing_summary(timing, start_wall),
    }
    _curvature(results)
    results["reading"] = reading(results)
    results["plots"] = _plots(results, output_dir)
    write_results(output_dir, results, _report(results))
    state.wait_for_everyone()
    return results


def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_study_args(parser, "bits", PRESETS)
    parser.add_argument(
        "--bounds",
        nargs="+",
        default=None,
        choices=list(BOUNDS),
        help="Default: the config's (ifsq; add tanh for FSQ).",
    )
    parser.add_argument("--num_eval_images", type=int, default=None, help="Override the held-out image count.")
    return parser


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """``ifsq-hf benchmark bits``: resolve the config and seeds from ``args`` and run the study."""
    if args.num_eval_images is not None and args.num_eval_images < 1:
        raise ValueError(f"--num_eval_images must be >= 1, got {args.num_eval_images}.")
    study = resolve_study_args("bits", args, PRESETS, REQUIRED, overrides={"num_eval_images": args.num_eval_images})
    _validate(study.config)
    if study.dump_only:
        return {"config": study.config}
    return run_bits_study(
        study.config,
        study.output_dir,
        study.seeds,
        bounds=args.bounds,
        preset_name=study.preset_name,
        examples_dir=args.examples_dir,
        argv=argv,
    )
