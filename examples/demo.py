#!/usr/bin/env python
"""The end-to-end demo (README's first command): iFSQ vs FSQ tokenizers, then a DiT and a LlamaGen on top.

    python examples/demo.py --output_dir outputs

Everything runs offline on the real photos bundled with the install (scikit-image, scikit-learn, matplotlib): 10
photos train, 2 are held out. Stages, each a real run of the library's training scripts (single process here;
the same scripts run under ``accelerate launch`` on many GPUs):

1. Train two tokenizers with the same architecture and the same bits (17 levels x 4 channels, f8): the iFSQ bound
   ``2*sigmoid(1.6x)-1`` and vanilla FSQ ``tanh``, with L1 + LPIPS (the GAN term of the full recipe starts after
   tens of thousands of steps, beyond a CPU demo). Evaluate both on held-out crops beside a bicubic
   down/up-sampling baseline with the same downsampling factor, and print one table.
2. Train a class-conditional DiT (flow matching + REPA) on the iFSQ tokenizer's continuous latents; the class is
   which photo a crop comes from. Save a sample grid and the ``iFSQDiTPipeline`` folder.
3. Train LlamaGen-REPA on the same tokenizer's discrete indices, with the official factorized head (two 289-code
   sub-tokens per position instead of one 83,521-code token); save a sample grid and the model folder.

The REPA encoder here is EfficientNet-Lite0 (real ImageNet weights that install offline), not DINOv2: online users
pass ``--repa_encoder facebook/dinov2-base`` to the training scripts. Outputs: ``outputs/results.{json,md}``,
``outputs/*.png``, TensorBoard logs in each run's ``logs/`` (``tensorboard --logdir outputs``), and
``save_pretrained`` folders: ``tokenizer_ifsq/``, ``tokenizer_fsq/``, ``dit/``, ``llamagen/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent
TOKENIZERS = {"ifsq": "iFSQ (2·sigmoid(1.6x)−1)", "fsq": "FSQ (tanh)"}
# Photos are resized (shorter side) before cropping: the tokenizers see detail, the generators whole-ish scenes.
PHOTO_SIZE_TOKENIZER, PHOTO_SIZE_GENERATORS = 256, 128
# CPU-sized generators (~1.7 M parameters each): about two minutes of training each on 2 cores.
DIT_SIZE = {"num_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "repa_depth": 2, "repa_hidden_dim": 256}
LLAMAGEN_SIZE = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "multiple_of": 32,
                 "repa_projector_dim": 256}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs")
    parser.add_argument("--resolution", type=int, default=64, help="Crop size for evaluation and the generators.")
    parser.add_argument("--tokenizer_resolution", type=int, default=32, help="Training crops of the tokenizers.")
    parser.add_argument("--tokenizer_steps", type=int, default=1200)
    parser.add_argument("--dit_steps", type=int, default=600)
    parser.add_argument("--llamagen_steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repa_encoder", default="efficientnet-lite0", help="'none' skips REPA.")
    parser.add_argument("--stages", default="tokenizer,dit,llamagen", help="Comma-separated subset to run.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_script(name: str, args: list[str]) -> float:
    """Run ``examples/<name>`` in a fresh process (progress bars stream through); return its wall time."""
    cmd = [sys.executable, str(EXAMPLES / name), *map(str, args)]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def common_args(args, output: Path, steps: int, resolution: int, validation_steps: int | None = None) -> list:
    return [
        "--output_dir", output, "--resolution", resolution, "--train_batch_size", args.batch_size,
        "--max_train_steps", steps, "--checkpointing_steps", max(steps // 2, 1), "--checkpoints_total_limit", 1,
        "--validation_steps", validation_steps or steps, "--logging_steps", 10, "--seed", args.seed, "--random_flip",
    ]  # fmt: skip


def stage_tokenizers(args, out: Path) -> dict:
    from ifsq_hf.data import BundledPhotoDataset, collate_images
    from ifsq_hf.evaluation import evaluate_tokenizer
    from ifsq_hf.metrics import LPIPS, bicubic_baseline, bicubic_resample
    from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
    from ifsq_hf.utils.images import make_image_grid

    timings = {}
    for name in TOKENIZERS:
        timings[name] = run_script(
            "train_ifsq_autoencoder.py",
            [*common_args(args, out / f"tokenizer_{name}", args.tokenizer_steps, args.tokenizer_resolution,
                          validation_steps=args.tokenizer_steps // 4),
             "--preset", "tiny_f8_d4", "--quantizer_bound", "ifsq" if name == "ifsq" else "tanh",
             "--learning_rate", 1e-3, "--lr_scheduler", "cosine", "--lr_warmup_steps", 50, "--ema_decay", 0.99,
             "--num_validation_images", 32,
             "--bundled_photo_size", PHOTO_SIZE_TOKENIZER, "--perceptual_net", "alex", "--perceptual_weight", 0.1,
             "--disc_start", args.tokenizer_steps + 1],
        )  # fmt: skip

    test = BundledPhotoDataset(resolution=args.resolution, split="test", crops="grid", photo_size=PHOTO_SIZE_TOKENIZER)
    loader = torch.utils.data.DataLoader(test, batch_size=32, collate_fn=collate_images)
    lpips = LPIPS(net="alex")
    rows, grids = {}, []
    for name, title in TOKENIZERS.items():
        model = iFSQAutoencoder.from_pretrained(out / f"tokenizer_{name}")
        result = evaluate_tokenizer(model, loader, lpips_model=lpips, num_grid_images=8)
        rows[title] = result.metrics
        if not grids:
            grids.append(result.originals)
        grids.append(result.reconstructions)
        factor = model.downsample_factor
    images = torch.cat([batch["pixel_values"] for batch in loader])
    baseline = bicubic_baseline(images, factor=factor, lpips=lpips)
    # The downsampled image stored as 8-bit RGB: 24 bits per low-res pixel.
    baseline.update(bits_per_pixel=24 / factor**2, compression_ratio=float(factor**2))
    rows[f"bicubic ×{factor} down/up (8-bit RGB)"] = baseline
    grids.append(bicubic_resample(grids[0], factor))
    labels = ["input", *TOKENIZERS, "bicubic"]
    make_image_grid(torch.cat(grids), nrow=grids[0].shape[0], row_labels=labels).save(out / "reconstructions.png")
    return {"tokenizers": rows, "tokenizer_train_seconds": timings, "num_test_images": len(test)}


def stage_dit(args, out: Path) -> dict:
    seconds = run_script(
        "train_dit.py",
        [*common_args(args, out / "dit", args.dit_steps, args.resolution), "--vae_model_name_or_path",
         out / "tokenizer_ifsq", "--preset", "tiny", "--preset_overrides", json.dumps(DIT_SIZE), "--repa_encoder", args.repa_encoder, "--learning_rate", 1e-3, "--ema_decay", 0.99,
         "--num_validation_classes", 12, "--bundled_split", "all", "--bundled_photo_size", PHOTO_SIZE_GENERATORS, "--num_validation_images_per_class", 6,
         "--validation_inference_steps", 25, "--validation_guidance_scale", 2.0],
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
    )  # fmt: skip
    grid = max((out / "llamagen" / "validation").glob("samples-*.png"))
    grid_copy = out / "llamagen_samples.png"
    grid_copy.write_bytes(grid.read_bytes())
    return {"llamagen_train_seconds": seconds, "llamagen_samples": str(grid_copy)}


def markdown_table(rows: dict[str, dict]) -> str:
    columns = [
        ("psnr", "PSNR (dB) ↑", "{:.2f}"),
        ("ssim", "SSIM ↑", "{:.4f}"),
        ("lpips", "LPIPS ↓", "{:.4f}"),
        ("bin_usage", "bins used ↑", "{:.1%}"),
        ("bin_entropy_efficiency", "bin entropy ↑", "{:.1%}"),
        ("code_perplexity", "code perplexity ↑", "{:.0f}"),
        ("bits_per_pixel", "bits/pixel", "{:.4f}"),
        ("compression_ratio", "compression", "{:.0f}×"),
    ]
    lines = ["| method | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [fmt.format(metrics[key]) if metrics.get(key) is not None else "–" for key, _, fmt in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - {"tokenizer", "dit", "llamagen"}
    if unknown:
        raise SystemExit(f"unknown --stages {sorted(unknown)}; choose from tokenizer, dit, llamagen.")
    needs_tokenizer = ("dit" in stages or "llamagen" in stages) and "tokenizer" not in stages
    if needs_tokenizer and not (out / "tokenizer_ifsq" / "config.json").is_file():
        raise SystemExit(f"the generator stages need {out / 'tokenizer_ifsq'}: run the tokenizer stage first.")
    start = time.perf_counter()
    results: dict = {"resolution": args.resolution}
    if "tokenizer" in stages:
        results.update(stage_tokenizers(args, out))
    if "dit" in stages:
        results.update(stage_dit(args, out))
    if "llamagen" in stages:
        results.update(stage_llamagen(args, out))
    results["total_seconds"] = time.perf_counter() - start

    report = [f"# ifsq-hf demo ({args.resolution}px crops of the bundled photos)", ""]
    if "tokenizers" in results:
        report += [
            f"Held-out reconstruction on {results['num_test_images']} crops of 2 unseen photos; same architecture "
            "and bits (4 channels × 17 levels, f8) for both tokenizers.",
            "",
            markdown_table(results["tokenizers"]),
            "",
            "![reconstructions](reconstructions.png)",
        ]
    for key, title in (("dit_samples", "DiT (flow matching + REPA)"), ("llamagen_samples", "LlamaGen-REPA")):
        if key in results:
            report += ["", f"## {title} samples (one row per photo class)", "", f"![{key}]({Path(results[key]).name})"]
    report += ["", f"Total time: {results['total_seconds'] / 60:.1f} min."]
    (out / "results.md").write_text("\n".join(report) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n" + "\n".join(report))
    print(f"\nEverything is in {out.resolve()} (tensorboard --logdir {out}).")
    return results


if __name__ == "__main__":
    main()
