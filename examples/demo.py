#!/usr/bin/env python
"""The end-to-end demo (README's first command): iFSQ vs FSQ tokenizers over seeds, then a DiT and a LlamaGen on top.

    python examples/demo.py --output_dir outputs

Everything runs offline on the real photos bundled with the install (scikit-image, scikit-learn, matplotlib): 10
photos train, 2 are held out. Stages, each a real run of the library's training scripts:

1. The ``bound`` study (:mod:`ifsq_hf.benchmark.bound`) at its CPU preset: tokenizers with the same architecture and
   bits (17 levels x 4 channels, f8) and the iFSQ bound ``2*sigmoid(1.6x)-1`` or vanilla FSQ ``tanh``, each trained
   with L1 + LPIPS over 3 seeds (a seed fixes initialisation and data order, shared by the arms). The demo prints
   held-out mean ± std over seeds beside a bicubic down/up-sampling baseline with the same downsampling factor, the
   paired iFSQ - FSQ difference with its 95% t interval, and the study's reading of what that does and does not
   show; the study's own report and plots land in ``OUTPUT/bound/``.
2. Train a class-conditional DiT (flow matching + REPA) on the seed-0 iFSQ tokenizer's continuous latents; the class
   is which photo a crop comes from. Save a sample grid and the ``iFSQDiTPipeline`` folder.
3. Train LlamaGen-REPA on the same tokenizer's discrete indices, with the official factorized head (two 289-code
   sub-tokens per position instead of one 83,521-code token); save a sample grid and the model folder.

Every stage runs at ``--num_threads`` torch threads (default 1): with the same machine and thread count a rerun
prints the same numbers. The REPA encoder here is EfficientNet-Lite0 (real ImageNet weights that install offline),
not DINOv2: online users pass ``--repa_encoder facebook/dinov2-base`` to the training scripts. Outputs:
``outputs/results.{json,md}``, ``outputs/*.png``, ``outputs/bound/`` (study report, plots, every run), TensorBoard
logs in each generator run's ``logs/`` (``tensorboard --logdir outputs``), and ``save_pretrained`` folders:
``tokenizer_ifsq/``, ``tokenizer_fsq/`` (the seed-0 tokenizers), ``dit/``, ``llamagen/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent
# Photos are resized (shorter side) before cropping; the generators see whole-ish scenes at --resolution.
PHOTO_SIZE_GENERATORS = 128
# CPU-sized generators (~1.7 M parameters each): about two minutes of training each on 2 cores.
DIT_SIZE = {"num_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "repa_depth": 2, "repa_hidden_dim": 256}
LLAMAGEN_SIZE = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "multiple_of": 32,
                 "repa_projector_dim": 256}  # fmt: skip
STAGES = ("tokenizer", "dit", "llamagen")
# The bound study's arms the demo trains by default: the paper's comparison (ifsq_norm adds ~3 min on 2 cores).
DEFAULT_ARMS = ("fsq", "ifsq")
# metric key -> (column title, format); the bound study summarises every one of them over seeds.
COLUMNS = {
    "psnr": ("PSNR (dB) ↑", "{:.2f}"),
    "ssim": ("SSIM ↑", "{:.4f}"),
    "lpips": ("LPIPS ↓", "{:.4f}"),
    "bin_usage": ("bins used ↑", "{:.1%}"),
    "bin_entropy_efficiency": ("bin entropy ↑", "{:.1%}"),
    "code_perplexity": ("code perplexity ↑", "{:.0f}"),
    "bits_per_pixel": ("bits/pixel", "{:.4f}"),
    "compression_ratio": ("compression", "{:.0f}×"),
}
STRUCTURAL = {"bits_per_pixel", "compression_ratio"}  # fixed by the architecture: the same in every seed


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs")
    parser.add_argument("--stages", default=",".join(STAGES), help="Comma-separated subset to run.")
    parser.add_argument(
        "--num_threads", type=int, default=1, help="torch threads of every stage (numbers depend on it)."
    )
    g = parser.add_argument_group("tokenizers (the bound study)")
    g.add_argument(
        "--tokenizer_preset", default="cpu", choices=["tiny", "cpu"], help="bound study preset (tiny: tests)."
    )
    g.add_argument("--num_seeds", type=int, default=3, help="Seeds 0..N-1 per tokenizer (>= 2 for an interval).")
    g.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help="bound study arms; fsq and ifsq required.")
    g.add_argument("--tokenizer_steps", type=int, default=None, help="Override the preset's max_train_steps.")
    g = parser.add_argument_group("generators")
    g.add_argument("--resolution", type=int, default=64, help="Crop size of the generators and the grid.")
    g.add_argument("--dit_steps", type=int, default=600)
    g.add_argument("--llamagen_steps", type=int, default=600)
    g.add_argument("--batch_size", type=int, default=16)
    g.add_argument("--repa_encoder", default="efficientnet-lite0", help="'none' skips REPA.")
    g.add_argument("--seed", type=int, default=0, help="Seed of the generator runs.")
    args = parser.parse_args(argv)
    from ifsq_hf.benchmark.bound import ARMS

    if args.num_threads < 1:
        parser.error(f"--num_threads must be >= 1, got {args.num_threads}.")
    if args.num_seeds < 1:
        parser.error(f"--num_seeds must be >= 1, got {args.num_seeds}.")
    if args.tokenizer_steps is not None and args.tokenizer_steps < 1:
        parser.error(f"--tokenizer_steps must be >= 1, got {args.tokenizer_steps}.")
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown or not {"fsq", "ifsq"} <= set(args.arms):
        parser.error(f"--arms must include fsq and ifsq, from {list(ARMS)}; got {args.arms}.")
    args.arms = [a for a in ARMS if a in args.arms]  # the study's order, duplicates dropped
    return args


def run_script(name: str, args: list[str], num_threads: int) -> float:
    """Run ``examples/<name>`` in a fresh process (progress bars stream through); return its wall time."""
    cmd = [sys.executable, str(EXAMPLES / name), *map(str, args)]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "OMP_NUM_THREADS": str(num_threads),
           "MKL_NUM_THREADS": str(num_threads)}  # fmt: skip
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def common_args(args, output: Path, steps: int, resolution: int) -> list:
    return [
        "--output_dir", output, "--resolution", resolution, "--train_batch_size", args.batch_size,
        "--max_train_steps", steps, "--checkpointing_steps", max(steps // 2, 1), "--checkpoints_total_limit", 1,
        "--validation_steps", steps, "--logging_steps", 10, "--seed", args.seed, "--random_flip",
    ]  # fmt: skip


def tokenizer_config(args) -> dict:
    """The bound study's preset with the demo's overrides."""
    from ifsq_hf.benchmark.bound import load_preset

    config = load_preset(args.tokenizer_preset)
    if args.tokenizer_steps is not None:
        config["train"]["max_train_steps"] = args.tokenizer_steps
        config["train"]["checkpointing_steps"] = min(config["train"]["checkpointing_steps"], args.tokenizer_steps)
    return config


def check_study_folder(study_dir: Path, config: dict) -> None:
    """The study reuses finished runs, so a folder trained with another config (or thread count: the numbers depend
    on it) would silently give stale numbers."""
    path = study_dir / "demo_config.json"
    config = {**config, "num_threads": torch.get_num_threads()}
    if path.is_file() and json.loads(path.read_text()) != config:
        raise SystemExit(
            f"{study_dir} holds tokenizers trained with another configuration (see {path}); use a new --output_dir "
            "or delete that folder."
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _held_out_images(config: dict, script, seed: int) -> torch.Tensor:
    """Exactly the held-out images the study scored (its dataset and loader, the same number of batches)."""
    from ifsq_hf.benchmark.common import train_argv
    from ifsq_hf.training.image_data import build_image_dataset, make_dataloader_from_args

    args = script.parse_args([*train_argv(config["train"]), "--output_dir", "unused", "--seed", str(seed)])
    loader = make_dataloader_from_args(
        build_image_dataset(args, config["eval_split"], train=False), args, shuffle=False
    )
    max_batches = math.ceil(config["num_eval_images"] / args.train_batch_size)
    return torch.cat([b["pixel_values"] for i, b in enumerate(loader) if i < max_batches])


def _summarize_runs(study: dict, arm: str) -> dict[str, dict]:
    """Mean ± std over seeds of every column (the study aggregates its own metrics; the demo adds a few)."""
    from ifsq_hf.benchmark.statistics import summarize

    runs = [study["runs"][arm][str(s)]["metrics"] for s in study["seeds"]]
    return {k: summarize([r[k] for r in runs]).to_dict() for k in COLUMNS if all(k in r for r in runs)}


def stage_tokenizers(args, out: Path) -> dict:
    from ifsq_hf.benchmark.bound import ARMS, run_bound_study
    from ifsq_hf.benchmark.runner import load_example
    from ifsq_hf.data import BundledPhotoDataset, collate_images
    from ifsq_hf.evaluation import evaluate_tokenizer
    from ifsq_hf.metrics import LPIPS, ReconstructionMetrics, bicubic_baseline, bicubic_resample
    from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
    from ifsq_hf.utils.images import make_image_grid

    config = tokenizer_config(args)
    study_dir = out / "bound"
    check_study_folder(study_dir, config)
    seeds = list(range(args.num_seeds))
    start = time.perf_counter()
    study = run_bound_study(
        config,
        study_dir,
        seeds,
        arms=args.arms,
        preset_name=args.tokenizer_preset,
        examples_dir=EXAMPLES,
        argv=["examples/demo.py", *(sys.argv[1:] if args.argv is None else args.argv)],
    )
    study_seconds = time.perf_counter() - start

    # The seed-0 tokenizers as plain save_pretrained folders: what the generators (and README's snippet) load.
    for arm in args.arms:
        run_dir, folder = study_dir / "runs" / f"{arm}-seed{seeds[0]}", out / f"tokenizer_{arm}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(
            run_dir, folder, ignore=shutil.ignore_patterns("checkpoint-*", "logs", "validation", "bench_*")
        )

    rows = {ARMS[arm]["label"]: _summarize_runs(study, arm) for arm in args.arms}
    lpips = None if config.get("lpips_net", "alex") == "none" else LPIPS(net=config["lpips_net"])
    seed0 = iFSQAutoencoder.from_pretrained(out / "tokenizer_ifsq")
    factor, levels = seed0.downsample_factor, seed0.quantizer.levels
    architecture = f"{len(levels)} channels × {levels[0]} levels, f{factor}, {config['model_preset']}"
    images = _held_out_images(config, load_example("train_ifsq_autoencoder", EXAMPLES), seeds[0])
    if lpips is not None:
        baseline = bicubic_baseline(images, factor=factor, lpips=lpips)
    else:  # a preset without LPIPS (tiny): the same metrics as the tokenizers, none more
        scores = ReconstructionMetrics(lpips=False)
        scores.update(images, bicubic_resample(images, factor))
        baseline = scores.compute()
    # The downsampled image stored as 8-bit RGB: 24 bits per low-res pixel.
    baseline.update(bits_per_pixel=24 / factor**2, compression_ratio=float(factor**2))

    # Seed-0 reconstructions at the generators' resolution and photo size: the grid, and a check that tokenizers
    # trained on small crops still reconstruct the crops the generators encode.
    test = BundledPhotoDataset(
        resolution=args.resolution, split="test", crops="grid", photo_size=PHOTO_SIZE_GENERATORS
    )
    loader = torch.utils.data.DataLoader(test, batch_size=32, collate_fn=collate_images)
    # The same crops cut into tiles of the training size: same content, so a gap to the whole crops is the size.
    tile = config["train"]["resolution"]
    tiles = None
    if args.resolution % tile == 0 and args.resolution > tile:
        crops = torch.cat([b["pixel_values"] for b in loader])
        tiles = crops.unfold(2, tile, tile).unfold(3, tile, tile).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, tile, tile)
    grids, at_generator_resolution = [], {}
    for arm in args.arms:
        model = iFSQAutoencoder.from_pretrained(out / f"tokenizer_{arm}")
        result = evaluate_tokenizer(model, loader, num_grid_images=8, show_progress=False)
        at_generator_resolution[arm] = {k: result.metrics[k] for k in ("psnr", "ssim", "bin_usage", "num_images")}
        if tiles is not None:
            tiled = evaluate_tokenizer(model, [{"pixel_values": t} for t in tiles.split(32)], show_progress=False)
            at_generator_resolution[arm][f"psnr_as_{tile}px_tiles"] = tiled.metrics["psnr"]
        if not grids:
            grids.append(result.originals)
        grids.append(result.reconstructions)
    grids.append(bicubic_resample(grids[0], factor))
    labels = ["input", *args.arms, "bicubic"]
    make_image_grid(torch.cat(grids), nrow=grids[0].shape[0], row_labels=labels).save(out / "reconstructions.png")
    return {
        "tokenizers": rows,
        "tokenizer_architecture": architecture,
        "bicubic": {"label": f"bicubic ×{factor} down/up (8-bit RGB)", "metrics": baseline},
        "comparisons": study["comparisons"],
        "reading": study["reading"],
        "seeds": seeds,
        "arms": args.arms,
        "tokenizer_preset": args.tokenizer_preset,
        "tokenizer_train_steps": config["train"]["max_train_steps"],
        "tokenizer_resolution": config["train"]["resolution"],
        "num_test_images": int(images.shape[0]),
        "seed0_at_generator_resolution": at_generator_resolution,
        "study_report": "bound/report.md",
        "study_plots": [f"bound/{p}" for p in study["plots"]],
        "tokenizer_seconds": study_seconds,
    }


def stage_dit(args, out: Path) -> dict:
    seconds = run_script(
        "train_dit.py",
        [*common_args(args, out / "dit", args.dit_steps, args.resolution), "--vae_model_name_or_path",
         out / "tokenizer_ifsq", "--preset", "tiny", "--preset_overrides", json.dumps(DIT_SIZE), "--repa_encoder", args.repa_encoder, "--learning_rate", 1e-3, "--ema_decay", 0.99,
         "--num_validation_classes", 12, "--bundled_split", "all", "--bundled_photo_size", PHOTO_SIZE_GENERATORS, "--num_validation_images_per_class", 6,
         "--validation_inference_steps", 25, "--validation_guidance_scale", 2.0],
        args.num_threads,
    )  # fmt: skip
    grid = max((out / "dit" / "validation").glob("samples-*.png"))
    grid_copy = out / "dit_samples.png"
    grid_copy.write_bytes(grid.read_bytes())
    return {"dit_train_seconds": seconds, "dit_samples": str(grid_copy)}


def stage_llamagen(args, out: Path) -> dict:
    seconds = run_script(
        "train_llamagen_repa.py",
        [*common_args(args, out / "llamagen", args.llamagen_steps, args.resolution), "--tokenizer",
         out / "tokenizer_ifsq", "--preset", "tiny", "--preset_overrides", json.dumps(LLAMAGEN_SIZE),
         "--factorized_groups", 2, "--repa_encoder", args.repa_encoder, "--learning_rate", 1e-3, "--ema_decay", 0.99,
         "--adam_weight_decay", 0.0, "--num_validation_classes", 12, "--bundled_split", "all", "--bundled_photo_size", PHOTO_SIZE_GENERATORS, "--num_validation_images_per_class", 6,
         "--validation_guidance_scale", 2.0],
        args.num_threads,
    )  # fmt: skip
    grid = max((out / "llamagen" / "validation").glob("samples-*.png"))
    grid_copy = out / "llamagen_samples.png"
    grid_copy.write_bytes(grid.read_bytes())
    return {"llamagen_train_seconds": seconds, "llamagen_samples": str(grid_copy)}


def _cell(summary: dict | float | None, key: str) -> str:
    """``mean ± std`` of a per-seed summary (just the mean with one seed or a structural column), or a value."""
    fmt = COLUMNS[key][1]
    if summary is None:
        return "–"
    if not isinstance(summary, dict):
        return "–" if math.isnan(summary) else fmt.format(summary)
    if summary["std"] is None or key in STRUCTURAL:
        return fmt.format(summary["mean"])
    # the std in the mean's unit ("{:.1%}" would print "±1.2%": the same percentage points)
    return f"{fmt.format(summary['mean'])} ± {fmt.format(summary['std']).rstrip('×')}"


def tokenizer_table(results: dict) -> str:
    """Mean ± std over seeds per tokenizer, and the bicubic baseline (one deterministic value)."""
    keys = [k for k in COLUMNS if any(k in row for row in results["tokenizers"].values())]
    n = len(results["seeds"])
    lines = [f"| method ({results['num_test_images']} held-out {results['tokenizer_resolution']} px crops; {n} seeds) | "
             + " | ".join(COLUMNS[k][0] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]  # fmt: skip
    for name, row in results["tokenizers"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(k), k) for k in keys) + " |")
    base = results["bicubic"]
    lines.append(f"| {base['label']} | " + " | ".join(_cell(base["metrics"].get(k), k) for k in keys) + " |")
    return "\n".join(lines)


def difference_table(results: dict) -> str:
    """The study's paired differences (same seed): mean and 95% t interval."""
    lines = ["| comparison | metric | mean difference | 95% CI | includes 0 |", "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        fmt = "{:+.2f}" if c["metric"] == "psnr" else "{:+.4f}"
        ci = "n/a (1 seed)" if c["low"] is None else f"[{fmt.format(c['low'])}, {fmt.format(c['high'])}]"
        zero = "" if c["includes_zero"] is None else ("yes" if c["includes_zero"] else "**no**")
        lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {fmt.format(c['mean'])} | {ci} | {zero} |")
    return "\n".join(lines)


def report_lines(results: dict) -> list[str]:
    lines = [f"# ifsq-hf demo (bundled photos; {results['num_threads']} torch thread(s))", ""]
    if "tokenizers" in results:
        tile = results["tokenizer_resolution"]
        check = ", ".join(
            f"{arm} PSNR {m['psnr']:.2f} dB" + (f" ({m[key]:.2f} dB on the same crops cut into {tile} px tiles, the "
                                                "training size)" if (key := f"psnr_as_{tile}px_tiles") in m else "")
            for arm, m in results["seed0_at_generator_resolution"].items()
        )  # fmt: skip
        lines += [
            f"## Tokenizers: iFSQ vs FSQ (the `bound` study, preset `{results['tokenizer_preset']}`, seeds "
            f"{results['seeds']}, {results['tokenizer_train_steps']} steps)",
            "",
            f"Same architecture and bits ({results['tokenizer_architecture']}) for every tokenizer; held-out crops of "
            "2 unseen photos; mean ± std over seeds (each seed: initialisation and data order, shared by the arms).",
            "",
            tokenizer_table(results),
            "",
            "Paired differences (same seed):",
            "",
            difference_table(results),
            "",
            "### What this does and does not show",
            "",
            *[f"- {line}" for line in results["reading"]],
            "",
            f"Full study report: [{results['study_report']}]({results['study_report']}) "
            f"(plots: {', '.join(f'[{Path(p).name}]({p})' for p in results['study_plots'])}).",
            "",
            f"![reconstructions](reconstructions.png) Seed-0 tokenizers on {results['resolution']} px held-out crops "
            f"(the generators' resolution): {check}.",
        ]
    for key, title in (("dit_samples", "DiT (flow matching + REPA)"), ("llamagen_samples", "LlamaGen-REPA")):
        if key in results:
            lines += ["", f"## {title} samples (one row per photo class)", "", f"![{key}]({Path(results[key]).name})"]
    lines += ["", f"Total time: {results['total_seconds'] / 60:.1f} min (stages: {', '.join(results['stages'])})."]
    return lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.argv = argv
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        raise SystemExit(f"unknown or empty --stages {sorted(unknown)}; choose from {', '.join(STAGES)}.")
    needs_tokenizer = ("dit" in stages or "llamagen" in stages) and "tokenizer" not in stages
    if needs_tokenizer and not (out / "tokenizer_ifsq" / "config.json").is_file():
        raise SystemExit(f"the generator stages need {out / 'tokenizer_ifsq'}: run the tokenizer stage first.")
    # One thread count for everything: results depend on it, and two threads on a busy 2-core box spin.
    torch.set_num_threads(args.num_threads)
    start = time.perf_counter()
    results: dict = {"resolution": args.resolution, "num_threads": args.num_threads, "stages": stages}
    previous = out / "results.json"
    if "tokenizer" not in stages and previous.is_file():
        # `--stages dit` after a full run keeps the tokenizer table (the generators train on those tokenizers).
        kept = json.loads(previous.read_text())
        if "tokenizer_architecture" in kept:  # written by this version of the demo
            results.update({k: v for k, v in kept.items() if k not in results})
    if "tokenizer" in stages:
        results.update(stage_tokenizers(args, out))
    if "dit" in stages:
        results.update(stage_dit(args, out))
    if "llamagen" in stages:
        results.update(stage_llamagen(args, out))
    results["total_seconds"] = time.perf_counter() - start

    report = report_lines(results)
    (out / "results.md").write_text("\n".join(report) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("\n" + "\n".join(report))
    print(f"\nEverything is in {out.resolve()} (tensorboard --logdir {out}).")
    return results


if __name__ == "__main__":
    main()
