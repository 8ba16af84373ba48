"""Checks that keep a run's data unambiguous, and its validation images (``image_data`` builds the datasets).

One source is used: ``--dataset_name`` (a Hub dataset or a folder), ``--train_data_dir`` (a folder), a precomputed
``--latents_dataset`` / ``--tokens_dataset``, or the bundled photos; giving two is an error rather than one silently
winning. Validation reads whatever held-out split the source has (``validation``, else ``test``), or a
``--validation_split`` fraction of the training split; a source with neither trains without a validation set.
"""

from __future__ import annotations

import argparse
import logging

__all__ = [
    "check_data_args",
    "check_precomputed_args",
    "image_source",
    "used_data_args",
    "validation_dataset_from_args",
]

logger = logging.getLogger(__name__)


def image_source(args: argparse.Namespace) -> str | None:
    """The image folder / Hub dataset the run reads, or ``None`` for the bundled photos."""
    return getattr(args, "dataset_name", None) or getattr(args, "train_data_dir", None)


def _precomputed(args: argparse.Namespace) -> tuple[str, str] | None:
    for flag in ("latents_dataset", "tokens_dataset"):
        if getattr(args, flag, None):
            return flag, getattr(args, flag)
    return None


_BUNDLED_ARGS = ("num_bundled_samples", "bundled_split", "bundled_photo_size")
_IMAGE_ARGS = ("dataset_config_name", "image_column", "label_column", "streaming", "center_crop", "validation_split")


def used_data_args(config: dict) -> dict:
    """A run's recorded arguments without the data options of the sources it did not read, so the card names only
    the data that was used (no bundled-photo settings for a folder run, no crop settings for precomputed data)."""
    sources = ("dataset_name", "train_data_dir")
    if any(config.get(k) for k in ("latents_dataset", "tokens_dataset")):
        unused = (*_BUNDLED_ARGS, *_IMAGE_ARGS, *sources)
    elif any(config.get(k) for k in sources):
        unused = _BUNDLED_ARGS
    else:
        unused = (*_IMAGE_ARGS, *sources)
    return {k: v for k, v in config.items() if k not in unused}


def check_data_args(args: argparse.Namespace) -> None:
    """Refuse conflicting or impossible data arguments, naming the flags (call right after parsing)."""
    if getattr(args, "dataset_name", None) and getattr(args, "train_data_dir", None):
        raise ValueError(
            f"--dataset_name {args.dataset_name!r} and --train_data_dir {args.train_data_dir!r} both name the "
            "training images; pass only one (--dataset_name takes a Hub id or a folder, --train_data_dir a folder)."
        )
    precomputed = _precomputed(args)
    if precomputed and image_source(args):
        flag = "--dataset_name" if getattr(args, "dataset_name", None) else "--train_data_dir"
        raise ValueError(
            f"--{precomputed[0]} and {flag} both name the training data; the precomputed set already holds the "
            f"encoded images. Pass only one."
        )
    fraction = getattr(args, "validation_split", None)
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"--validation_split must lie strictly between 0 and 1 (e.g. 0.05), got {fraction}.")
        if precomputed:
            raise ValueError(f"--validation_split does not apply to --{precomputed[0]}; drop one of them.")
        if not image_source(args):
            raise ValueError(
                "--validation_split applies to --dataset_name/--train_data_dir; the bundled photos already hold out "
                "whole photos (chelsea, flower)."
            )
        if getattr(args, "streaming", False):
            raise ValueError(
                "--validation_split needs an indexable dataset; with --streaming use a source with a validation or "
                "test split."
            )
    for name in ("num_bundled_samples", "dataloader_num_workers"):
        value = getattr(args, name, None)
        if value is not None and value < (1 if name == "num_bundled_samples" else 0):
            raise ValueError(f"--{name} must be >= {1 if name == 'num_bundled_samples' else 0}, got {value}.")


def validation_dataset_from_args(args: argparse.Namespace):
    """Held-out images for validation, or ``None`` (validation off, or a source without a held-out split).

    Never loads anything with ``--validation_steps 0``.
    """
    from .image_data import build_image_dataset

    if not getattr(args, "validation_steps", 0):
        return None
    source = image_source(args)
    if source is None:
        return build_image_dataset(args, "test", train=False)
    if getattr(args, "validation_split", None) is not None:
        return build_image_dataset(args, "validation", train=False)
    from ..data import held_out_split

    load_kwargs = {"name": args.dataset_config_name} if getattr(args, "dataset_config_name", None) else {}
    split = held_out_split(source, **load_kwargs)
    if split is None:
        logger.warning(
            "%s has no validation or test split: training without validation metrics. Pass --validation_split 0.05 "
            "to hold out 5%% of the training images, or add a val/ or test/ folder.",
            source,
        )
        return None
    return build_image_dataset(args, split, train=False)


def check_precomputed_args(args: argparse.Namespace, dataset, downsample_factor: int) -> None:
    """A precomputed set fixes the resolution: refuse an explicit ``--resolution`` that disagrees, and record the
    real one in ``args`` (so the card and ``training_config.json`` show what was trained on)."""
    from .run_config import explicitly_set

    side = int(dataset.metadata["latent_shape"][-1]) * int(downsample_factor)
    precomputed = _precomputed(args)
    flag = f"--{precomputed[0]}" if precomputed else "the precomputed dataset"
    if explicitly_set(args, "resolution") and args.resolution != side:
        raise ValueError(
            f"--resolution {args.resolution} disagrees with {flag}, which was extracted at {side} px "
            f"({dataset.metadata['latent_shape'][-1]} tokens per side x {downsample_factor}); drop --resolution or "
            "extract the data again at that resolution."
        )
    args.resolution = side
