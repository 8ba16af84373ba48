"""Tokenizer evaluation shared by the training script's validation, ``examples/evaluate_tokenizer.py``, the demo and
``ifsq-hf evaluate``: reconstruction metrics (PSNR, SSIM, LPIPS, optional rFID) and codebook statistics, both from
:class:`~ifsq_hf.metrics.ReconstructionMetrics`, and a grid of originals above their reconstructions.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .metrics import FrechetInceptionDistance, ReconstructionMetrics
from .utils.images import make_image_grid
from .utils.serialization import save_json

__all__ = [
    "TokenizerEvaluation",
    "add_evaluation_args",
    "bits_per_pixel",
    "evaluate_tokenizer",
    "evaluate_tokenizer_cli",
    "reconstruction_grid",
]


@dataclass
class TokenizerEvaluation:
    """Averaged metrics plus a few originals/reconstructions (in [-1, 1]) for a grid.

    ``metrics`` holds ``psnr``, ``ssim``, ``lpips`` (with an LPIPS model), ``rfid`` (with ``compute_fid``), the
    discrete code statistics ``code_usage``, ``code_perplexity``, ``code_entropy`` (bits), ``code_entropy_efficiency``,
    ``code_num_tokens``, the per-channel bin statistics ``bin_usage`` and ``bin_entropy_efficiency`` (channel means),
    ``bits_per_pixel``, ``compression_ratio`` and ``num_images``.
    """

    metrics: dict[str, float]
    originals: torch.Tensor
    reconstructions: torch.Tensor


def bits_per_pixel(model) -> float:
    """Bits of one token grid divided by the pixels it covers: sum(log2 L) / f²."""
    levels = model.quantizer.levels
    return sum(math.log2(level) for level in levels) / model.downsample_factor**2


@torch.no_grad()
def evaluate_tokenizer(
    model,
    dataloader,
    *,
    lpips_model: torch.nn.Module | None = None,
    compute_fid: bool = False,
    max_batches: int | None = None,
    num_grid_images: int = 8,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> TokenizerEvaluation:
    """Reconstruct every batch of ``dataloader`` (dicts with ``pixel_values`` in [-1, 1]) and average the metrics.

    rFID needs thousands of images to mean anything; on a handful it is reported but noisy (the docs say so).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    scores = ReconstructionMetrics(
        lpips=False if lpips_model is None else lpips_model.to(device).eval(),
        fid=FrechetInceptionDistance().to(device) if compute_fid else False,
        codebook_size=model.codebook_size,
        levels=model.quantizer.levels,
    )
    originals, reconstructions = [], []
    kept = num_images = 0
    batches = dataloader if max_batches is None else (b for i, b in enumerate(dataloader) if i < max_batches)
    for batch in tqdm(batches, desc="evaluate", disable=not show_progress, leave=False):
        x = batch["pixel_values"].to(device, torch.float32)
        out = model(x)
        recon = out.sample.float().clamp(-1, 1)
        scores.update(x, recon, out.indices)
        num_images += x.shape[0]
        if kept < num_grid_images:
            take = min(num_grid_images - kept, x.shape[0])
            originals.append(x[:take].cpu())
            reconstructions.append(recon[:take].cpu())
            kept += take
    if not num_images:
        raise ValueError("the evaluation dataloader yielded no images; check the dataset path and split.")
    metrics = {k: v if isinstance(v, int) else float(v) for k, v in scores.compute().items()}
    for name in ("usage", "perplexity", "entropy", "entropy_efficiency", "num_tokens"):
        metrics[f"code_{name}"] = metrics.pop(name)
    metrics["bits_per_pixel"] = bits_per_pixel(model)
    metrics["compression_ratio"] = 24.0 / metrics["bits_per_pixel"]
    return TokenizerEvaluation(metrics, torch.cat(originals), torch.cat(reconstructions))


def reconstruction_grid(evaluation: TokenizerEvaluation) -> Image.Image:
    """Originals in the top row, reconstructions below, one column per image."""
    n = evaluation.originals.shape[0]
    return make_image_grid(
        torch.cat([evaluation.originals, evaluation.reconstructions]), nrow=n, row_labels=["input", "recon"]
    )


def add_evaluation_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="Saved iFSQAutoencoder folder or Hub repo id.")
    parser.add_argument("--subfolder", default=None, help="Subfolder of the model repo (e.g. 'tokenizer').")
    parser.add_argument(
        "--data",
        default=None,
        help="Image folder, Hub dataset id, or omit for the held-out bundled photos (offline).",
    )
    parser.add_argument("--split", default="test", help="Dataset split (bundled photos: train/test/all).")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_images", type=int, default=None, help="Stop after this many images.")
    parser.add_argument("--lpips_net", default="alex", choices=["alex", "vgg", "none"])
    parser.add_argument("--fid", action="store_true", help="Also compute rFID (InceptionV3; slow on CPU).")
    parser.add_argument("--output_dir", default=None, help="Write metrics.json and reconstructions.png here.")
    parser.add_argument("--device", default=None)
    return parser


def evaluate_tokenizer_cli(args: argparse.Namespace) -> dict[str, float]:
    """Load, evaluate, and (with ``--output_dir``) write ``metrics.json`` and ``reconstructions.png``."""
    from .data import BundledPhotoDataset, collate_images, load_image_dataset
    from .metrics import LPIPS
    from .models.autoencoder_ifsq import iFSQAutoencoder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = iFSQAutoencoder.from_pretrained(args.model, subfolder=args.subfolder).to(device)
    if args.resolution % model.downsample_factor:
        raise ValueError(
            f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
            f"{model.downsample_factor}; pick e.g. {args.resolution // model.downsample_factor * model.downsample_factor}."
        )
    if args.data is None:
        dataset = BundledPhotoDataset(resolution=args.resolution, split=args.split, crops="grid")
    else:
        dataset = load_image_dataset(args.data, split=args.split, resolution=args.resolution)
    if args.max_images is not None:
        if hasattr(dataset, "__len__"):
            dataset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
        else:
            raise ValueError("--max_images needs a map-style dataset (drop --max_images for streaming data).")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate_images)
    lpips_model = None if args.lpips_net == "none" else LPIPS(net=args.lpips_net)
    result = evaluate_tokenizer(model, loader, lpips_model=lpips_model, compute_fid=args.fid, device=device)
    if args.output_dir:
        out = Path(args.output_dir)
        save_json({"model": args.model, **result.metrics}, out / "metrics.json")
        reconstruction_grid(result).save(out / "reconstructions.png")
    return result.metrics
