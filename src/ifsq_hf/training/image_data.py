"""The image data a training or extraction run reads, chosen from its arguments (``add_image_dataset_args``), and
the run's DataLoader."""

from __future__ import annotations

import argparse

import torch

from ..data import BundledPhotoDataset, collate_images, load_image_dataset

__all__ = ["build_image_dataset", "make_dataloader_from_args"]


def build_image_dataset(args: argparse.Namespace, split: str = "train", *, train: bool = True):
    """The dataset chosen by ``add_image_dataset_args``: a Hub dataset / image folder, else the bundled photos.

    Items are ``{"pixel_values": (3, R, R) in [-1, 1], "labels": int}``. Training gets random crops and flips;
    held-out data gets deterministic center (folder) or grid (bundled) crops. With ``--validation_split`` the
    training split is divided with ``--seed``, and ``split`` ``"train"`` / ``"validation"`` pick the two parts.
    """
    source = getattr(args, "dataset_name", None) or getattr(args, "train_data_dir", None)
    if source is None:
        return BundledPhotoDataset(
            resolution=args.resolution,
            split=getattr(args, "bundled_split", None) or ("train" if split == "train" else "test"),
            num_samples=args.num_bundled_samples if train else None,
            crops="random" if train else "grid",
            flip=bool(args.random_flip) and train,
            seed=args.seed,
            photo_size=getattr(args, "bundled_photo_size", None),
        )
    load_kwargs = {"name": args.dataset_config_name} if getattr(args, "dataset_config_name", None) else {}
    if getattr(args, "validation_split", None) is not None:
        load_kwargs["holdout_fraction"] = args.validation_split
    return load_image_dataset(
        source,
        split=split,
        resolution=args.resolution,
        random_crop=train and not args.center_crop,
        random_flip=bool(args.random_flip) and train,
        image_column=args.image_column,
        label_column=args.label_column,
        streaming=args.streaming,
        seed=args.seed,
        **load_kwargs,
    )


def make_dataloader_from_args(
    dataset, args: argparse.Namespace, *, shuffle: bool, collate_fn=collate_images
) -> torch.utils.data.DataLoader:
    """A DataLoader with the run's batch size and workers; streaming (iterable) datasets are never shuffled here.

    ``collate_images`` stacks image batches and, like torch's default, the tensors of a precomputed dataset.
    """
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=shuffle and not iterable,
        num_workers=args.dataloader_num_workers,
        collate_fn=collate_fn,
        drop_last=shuffle and not iterable,
        # Its own generator: creating an iterator then draws from it, not from the global RNG, so a resumed run
        # (which restores the global RNG from the checkpoint, then starts a fresh iterator) sees the same noise.
        generator=torch.Generator().manual_seed(args.seed),
    )
