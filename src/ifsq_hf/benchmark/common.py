"""What every study shares: presets and JSON configs, the common command-line flags (seeds, threads, output folder),
turning a config's ``train`` dict into script arguments, the per-run timing record and the number formatting.

A study module (``bound``, ``bits``, ``ar_vs_diffusion``, ``repa``) defines ``PRESETS`` and a ``run_*_study``
function; its ``main(args, argv)`` calls :func:`resolve_study_args` and hands over.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TOKENIZER_TRAIN",
    "StudyArgs",
    "add_study_args",
    "fmt_summary",
    "load_study_config",
    "mean_columns",
    "resolve_study_args",
    "run_timing",
    "study_state",
    "timing_summary",
    "train_argv",
]


# The tokenizer training recipes every study starts from (arguments of examples/train_ifsq_autoencoder.py; a study
# overrides what it must, e.g. fewer steps). One definition, so "the bound study's recipe" means the same everywhere.
TOKENIZER_TRAIN: dict[str, dict[str, Any]] = {
    # The 2-core CPU box: tiny_f8_d4 at 32 px on the bundled photos, L1 + LPIPS, no GAN.
    "cpu": {
        "resolution": 32, "train_batch_size": 16, "max_train_steps": 600, "num_bundled_samples": 4096,
        "learning_rate": 5e-4, "lr_warmup_steps": 20, "perceptual_weight": 0.5, "perceptual_net": "alex",
        "disc_start": 10**9, "lpips_net": "none", "validation_steps": 0, "checkpointing_steps": 200,
        "checkpoints_total_limit": 1, "report_to": "none", "random_flip": True, "bundled_photo_size": 128,
        # No EMA: at a few hundred steps a 0.999 average is still mostly the initialisation.
        "no-use_ema": True,
    },
    # A GPU cluster: the official f16 4-bit tokenizer recipe on ImageNet-1k (gated on the Hub: accept its terms and
    # log in first).
    "imagenet": {
        "dataset_name": "ILSVRC/imagenet-1k", "resolution": 256, "train_batch_size": 32,
        "max_train_steps": 100_000, "learning_rate": 1e-4, "perceptual_weight": 1.0, "perceptual_net": "vgg",
        "disc_start": 50_000, "disc_weight": 0.5, "lpips_net": "alex", "validation_steps": 10_000,
        "num_validation_images": 256, "checkpointing_steps": 5_000, "checkpoints_total_limit": 2,
        "mixed_precision": "bf16", "dataloader_num_workers": 8, "report_to": "tensorboard", "random_flip": True,
    },
}  # fmt: skip


def load_study_config(
    study: str,
    presets: dict[str, dict[str, Any]],
    name: str | None = None,
    config_file: str | Path | None = None,
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """A preset by name, or a JSON config file with the same keys (``--dump_config`` writes one to start from)."""
    if config_file is not None:
        config = json.loads(Path(config_file).read_text())
    elif name in presets:
        config = copy.deepcopy(presets[name])
    else:
        raise ValueError(
            f"unknown {study} preset {name!r}; choose one of {sorted(presets)} or pass --config FILE.json."
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{study} config is missing {missing}; start from `--preset cpu --dump_config FILE.json`.")
    return config


def train_argv(train: dict[str, Any]) -> list[str]:
    """``{"resolution": 32, "random_flip": True, "no-use_ema": True}`` -> ``--resolution 32 --random_flip
    --no-use_ema``: a config's ``train`` dict as arguments of an example script (``False``/``None`` are left out)."""
    argv = []
    for key, value in train.items():
        if value is None or value is False:
            continue
        argv.append(f"--{key}")
        if value is not True:
            argv.append(
                value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)
            )
    return argv


def study_state():
    """The accelerate state the scripts' ``Accelerator`` will reuse; honours ``ACCELERATE_USE_CPU`` like it does."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def run_timing(run_dir: Path, trained: bool, wall_start: float, cpu_start: float) -> dict[str, float]:
    """Training + evaluation time of a run, kept beside it so a report rewritten from finished runs still shows it."""
    path = Path(run_dir) / "bench_timing.json"
    if not trained and path.is_file():
        return json.loads(path.read_text())
    timing = {"wall_s": time.perf_counter() - wall_start, "cpu_s": time.process_time() - cpu_start}
    if trained:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(timing))
    return timing


def timing_summary(runs: dict[str, dict[str, float]], start_wall: float) -> dict[str, Any]:
    return {
        "runs": runs,
        "total_wall_s": sum(t.get("wall_s", 0.0) for t in runs.values()),
        "total_cpu_s": sum(t.get("cpu_s", 0.0) for t in runs.values()),
        "this_invocation_wall_s": time.perf_counter() - start_wall,
    }


def fmt_summary(summary: dict, digits: int = 3) -> str:
    """``mean ± std`` of a :class:`~ifsq_hf.benchmark.statistics.Summary` dict (just the mean with one seed)."""
    if summary["std"] is None:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def mean_columns(rows: list[list[float]]) -> list[float]:
    """Column means of equally long rows (e.g. a sweep averaged over seeds)."""
    return [sum(col) / len(col) for col in zip(*rows)]


def add_study_args(parser: argparse.ArgumentParser, study: str, presets: dict[str, Any]) -> argparse.ArgumentParser:
    """The flags every study takes."""
    parser.add_argument("--preset", default="cpu", choices=sorted(presets), help="Study size (tiny: tests).")
    parser.add_argument("--config", default=None, help="JSON study config (replaces --preset; see --dump_config).")
    parser.add_argument("--dump_config", default=None, help="Write the chosen preset as JSON to this file and stop.")
    parser.add_argument("--output_dir", default=None, help=f"Default: benchmark-{study}-PRESET.")
    parser.add_argument("--num_seeds", type=int, default=3, help="Seeds 0..N-1 (ignored with --seeds).")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="Explicit seeds, e.g. 0 1 2.")
    parser.add_argument("--max_train_steps", type=int, default=None, help="Override the preset's training steps.")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch CPU threads (results depend on it; default: the preset's).",
    )
    parser.add_argument("--examples_dir", default=None, help="The repository's examples/ folder (auto-detected).")
    return parser


@dataclass
class StudyArgs:
    """The resolved common flags: what a ``run_*_study`` function needs besides the config."""

    config: dict[str, Any]
    seeds: list[int]
    output_dir: Path
    preset_name: str
    dump_only: bool


def resolve_study_args(
    study: str,
    args: argparse.Namespace,
    presets: dict[str, Any],
    required: Iterable[str] = (),
    overrides: dict[str, Any] | None = None,
) -> StudyArgs:
    """Load the config, apply ``--max_train_steps`` and the study's top-level ``overrides`` (``None`` values are
    skipped), set the thread count and pick the seeds; ``--dump_config`` writes the resolved config and sets
    ``dump_only``."""
    config = load_study_config(study, presets, args.preset, args.config, required)
    config.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if args.max_train_steps is not None:
        if args.max_train_steps < 1:
            raise ValueError(f"--max_train_steps must be >= 1, got {args.max_train_steps}.")
        config["train"]["max_train_steps"] = args.max_train_steps
    name = "custom" if args.config else args.preset
    output_dir = Path(args.output_dir or f"benchmark-{study}-{name}")
    if args.dump_config:
        Path(args.dump_config).write_text(json.dumps(config, indent=2) + "\n")
        return StudyArgs(config, [], output_dir, name, dump_only=True)
    if args.seeds is None and args.num_seeds < 1:
        raise ValueError(f"--num_seeds must be >= 1, got {args.num_seeds}.")
    seeds = list(args.seeds) if args.seeds is not None else list(range(args.num_seeds))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}.")
    threads = args.num_threads if args.num_threads is not None else config.get("num_threads")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    return StudyArgs(config, seeds, output_dir, name, dump_only=False)
