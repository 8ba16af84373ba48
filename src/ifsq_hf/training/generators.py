"""What the two generator scripts (``train_dit.py``, ``train_llamagen_repa.py``) share: preset and REPA arguments,
class-conditional data (images or a precomputed dataset), the REPA encoder set-up, and validation sample grids.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.images import make_image_grid
from .accelerator import log_image_grid
from .data_sources import check_precomputed_args
from .divergence import check_finite_weights
from .image_data import build_image_dataset
from .precompute import PrecomputedLatentDataset
from .repa import load_repa_encoder, repa_projection_loss

__all__ = [
    "GeneratorData",
    "add_generator_args",
    "add_repa_loss",
    "load_class_conditional_data",
    "load_generator_data",
    "preset_config",
    "save_final_generator",
    "save_sample_grid",
    "setup_repa_encoder",
    "token_grid_size",
    "validation_class_labels",
]


def add_generator_args(
    parser: argparse.ArgumentParser,
    *,
    default_preset: str,
    presets: str,
    precomputed_flag: str,
    precomputed_script: str,
    repa_coefficient: float,
    repa_depth_help: str,
    guidance_scale: float,
) -> None:
    """Model size, precomputed data, REPA and validation-grid arguments, with per-script defaults."""
    g = parser.add_argument_group("model")
    g.add_argument("--preset", default=default_preset, help=f"Size preset: {presets}.")
    g.add_argument("--model_config", default=None, help="A config JSON file (replaces --preset).")
    g.add_argument(
        "--preset_overrides",
        type=json.loads,
        default={},
        help="JSON dict of config values changed on top of --preset, e.g. '{\"hidden_size\": 128}'.",
    )
    g.add_argument(precomputed_flag, default=None, help=f"Folder written by examples/{precomputed_script}.")

    g = parser.add_argument_group("REPA")
    g.add_argument(
        "--repa_encoder",
        default="facebook/dinov2-base",
        help="Hub id or folder of a transformers vision backbone, or offline efficientnet-lite0 / lpips-vgg16, "
        "or none.",
    )
    g.add_argument("--repa_coefficient", type=float, default=repa_coefficient)
    g.add_argument("--repa_depth", type=int, default=None, help=repa_depth_help)

    g = parser.add_argument_group("validation")
    g.add_argument("--num_validation_classes", type=int, default=8)
    g.add_argument("--num_validation_images_per_class", type=int, default=4)
    g.add_argument("--validation_guidance_scale", type=float, default=guidance_scale)


def preset_config(args: argparse.Namespace, overrides: dict) -> dict:
    """Config values on top of ``--preset``: the whole ``--model_config`` file when given, then
    ``--preset_overrides``, then what the data dictates (``overrides``), then ``--repa_depth``."""
    base = json.loads(Path(args.model_config).read_text()) if args.model_config else {}
    config = {**base, **args.preset_overrides, **overrides}
    if args.repa_depth is not None:
        config["repa_depth"] = args.repa_depth
    return config


def load_class_conditional_data(args: argparse.Namespace, precomputed: str | os.PathLike | None, kind: str):
    """``(dataset, id2label)``: a precomputed dataset (``kind`` "latents" / "image_tokens") or images."""
    if precomputed:
        dataset = PrecomputedLatentDataset(precomputed, kind=kind, random_flip=True, seed=args.seed)
        return dataset, dataset.id2label
    dataset = build_image_dataset(args, "train")
    id2label = getattr(dataset, "id2label", None)
    if not id2label:
        raise ValueError(
            "the training data has no class labels (id2label); use an image folder with one sub-folder per class, "
            "a Hub dataset with a ClassLabel column (--label_column), or the bundled photos."
        )
    return dataset, id2label


def setup_repa_encoder(args: argparse.Namespace, dataset, device) -> tuple[torch.nn.Module | None, int | None]:
    """``(encoder, feature_dim)``. Precomputed datasets carry the features, so no encoder is loaded for them;
    ``(None, None)`` when REPA is off."""
    if args.repa_encoder.lower() == "none" or args.repa_coefficient <= 0:
        return None, None
    if isinstance(dataset, PrecomputedLatentDataset):
        if not dataset.has_repa_features:
            raise ValueError(
                "the precomputed dataset holds no REPA features; re-run the extraction script with "
                "--repa_encoder, or train with --repa_encoder none."
            )
        return None, dataset.metadata["repa_feature_dim"]
    encoder = load_repa_encoder(args.repa_encoder).to(device).eval().requires_grad_(False)
    return encoder, encoder.feature_dim


def token_grid_size(args: argparse.Namespace, dataset, tokenizer) -> int:
    """Side of the latent/token grid the generator models."""
    if isinstance(dataset, PrecomputedLatentDataset):
        check_precomputed_args(args, dataset, tokenizer.downsample_factor)  # --resolution must agree with the data
        if dataset.metadata["codebook_size"] != tokenizer.codebook_size:
            raise ValueError(
                f"the precomputed dataset was encoded with a codebook of {dataset.metadata['codebook_size']} codes "
                f"but the tokenizer has {tokenizer.codebook_size}; pass the tokenizer used for the extraction."
            )
        return dataset.metadata["latent_shape"][-1]
    if args.resolution % tokenizer.downsample_factor:
        raise ValueError(
            f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
            f"{tokenizer.downsample_factor}."
        )
    return args.resolution // tokenizer.downsample_factor


def validation_class_labels(id2label: dict[int, str], num_classes: int) -> list[int]:
    """``num_classes`` class ids spread evenly over the label set (all of them when there are fewer)."""
    ids = sorted(int(k) for k in id2label)
    if num_classes >= len(ids):
        return ids
    step = len(ids) / num_classes
    return [ids[int(i * step)] for i in range(num_classes)]


@dataclass
class GeneratorData:
    """What a generator script trains on. ``repa_encoder`` is ``None`` when REPA is off or the precomputed dataset
    carries the features; ``repa_dim`` is ``None`` only when REPA is off."""

    dataset: torch.utils.data.Dataset
    id2label: dict
    repa_encoder: torch.nn.Module | None
    repa_dim: int | None
    grid_size: int


def load_generator_data(
    args: argparse.Namespace, precomputed: str | os.PathLike | None, kind: str, tokenizer, device
) -> GeneratorData:
    """:func:`load_class_conditional_data`, :func:`setup_repa_encoder` and :func:`token_grid_size` in one call."""
    dataset, id2label = load_class_conditional_data(args, precomputed, kind)
    repa_encoder, repa_dim = setup_repa_encoder(args, dataset, device)
    return GeneratorData(dataset, id2label, repa_encoder, repa_dim, token_grid_size(args, dataset, tokenizer))


def save_sample_grid(accelerator, generate, id2label: dict, args: argparse.Namespace, step: int):
    """Sample ``--num_validation_images_per_class`` images for spread-out classes with a fixed seed (so grids of
    successive steps compare), save ``validation/samples-{step}.png`` and log it to TensorBoard.

    ``generate(labels: list[int], generator) -> list[PIL.Image]``.
    """
    classes = validation_class_labels(id2label, args.num_validation_classes)
    labels = [c for c in classes for _ in range(args.num_validation_images_per_class)]
    images = generate(labels, torch.Generator(device="cpu").manual_seed(args.seed))
    grid = make_image_grid(
        images, nrow=args.num_validation_images_per_class, row_labels=[str(id2label[c]) for c in classes]
    )
    out = Path(args.output_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    grid.save(out / f"samples-{step:06d}.png")
    log_image_grid(accelerator, "val/samples", grid, step)
    return grid


def add_repa_loss(
    loss: torch.Tensor, logs: dict, predicted: torch.Tensor, target: torch.Tensor, coefficient: float
) -> torch.Tensor:
    """``loss + coefficient * REPA(predicted, target)``, logging the REPA term as ``train/repa``."""
    repa = repa_projection_loss(predicted, target)
    logs["train/repa"] = float(repa.detach())
    return loss + coefficient * repa


def save_final_generator(
    accelerator, args: argparse.Namespace, step: int, model: torch.nn.Module, save, validate
) -> bool:
    """End of a generator run: every process waits, then the main process refuses non-finite weights (nothing
    diverged is saved), calls ``save(model)`` and makes the last sample grid unless the loop just made it.
    Returns whether this process saved (the caller then writes the model card)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return False
    check_finite_weights(model, step, "the final weights")
    save(model)
    if args.validation_steps and step % args.validation_steps:
        validate(step)
    return True
