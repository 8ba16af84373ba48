"""Encode an image dataset once with a frozen tokenizer (and optionally a REPA encoder) and train generators on the
stored result: ``examples/extract_latents.py`` and ``examples/extract_tokens.py`` write it, the DiT and LlamaGen
training scripts read it with :class:`PrecomputedLatentDataset`.

Every image is stored twice, as is and horizontally flipped, so training keeps flip augmentation without touching
pixels. Columns: ``latent`` (float32 ``(C, h, w)``, the continuous ``z_q``), ``indices`` (int64 ``(h, w)``),
``label`` (int), and with a REPA encoder ``repa_features`` (float32 ``(N, D)``); flipped copies are the ``flip_*``
columns. Quantization runs in fp32 (the quantizer forces it), so the indices are exact.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.import_utils import require
from .arguments import add_image_dataset_args
from .image_data import build_image_dataset, make_dataloader_from_args

__all__ = ["PrecomputedLatentDataset", "add_extraction_args", "encode_image_dataset", "run_extraction"]

METADATA_FILE = "ifsq_precomputed.json"


@torch.no_grad()
def encode_image_dataset(
    tokenizer,
    dataloader,
    output_dir: str | os.PathLike,
    *,
    repa_encoder: torch.nn.Module | None = None,
    id2label: dict[int, str] | None = None,
    tokenizer_name_or_path: str | None = None,
    device: torch.device | str = "cpu",
    with_flips: bool = True,
):
    """Encode every batch (``pixel_values`` in [-1, 1], ``labels``) and save a ``datasets`` Arrow dataset."""
    datasets = require("datasets", "train")

    tokenizer = tokenizer.to(device).eval()
    if repa_encoder is not None:
        repa_encoder = repa_encoder.to(device).eval()
    columns: dict[str, list] = {"latent": [], "indices": [], "label": []}
    if with_flips:
        columns.update(flip_latent=[], flip_indices=[])
    if repa_encoder is not None:
        columns["repa_features"] = []
        if with_flips:
            columns["flip_repa_features"] = []

    def encode(x: torch.Tensor, prefix: str) -> None:
        enc = tokenizer.encode(x)
        columns[prefix + "latent"] += list(enc.latent.float().cpu().numpy())
        columns[prefix + "indices"] += list(enc.indices.cpu().numpy().astype(np.int64))
        if repa_encoder is not None:
            columns[prefix + "repa_features"] += list(repa_encoder(x).float().cpu().numpy())

    for batch in tqdm(dataloader, desc="encode"):
        x = batch["pixel_values"].to(device, torch.float32)
        encode(x, "")
        if with_flips:
            encode(x.flip(-1), "flip_")
        columns["label"] += [int(v) for v in batch["labels"]]
    if not columns["label"]:
        raise ValueError("the dataloader yielded no images: check the dataset path and split.")
    dataset = datasets.Dataset.from_dict(columns)
    dataset.save_to_disk(str(output_dir))
    latent_shape = list(columns["latent"][0].shape)
    metadata = {
        "tokenizer": tokenizer_name_or_path,
        "latent_shape": latent_shape,
        "codebook_size": int(tokenizer.codebook_size),
        "num_images": len(columns["label"]),
        "with_flips": with_flips,
        "repa_feature_dim": int(columns["repa_features"][0].shape[-1]) if repa_encoder is not None else None,
        "id2label": {str(k): v for k, v in (id2label or {}).items()},
    }
    (Path(output_dir) / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return dataset


class PrecomputedLatentDataset(torch.utils.data.Dataset):
    """Items ``{"latents" | "image_tokens", "labels"[, "repa_features"]}`` from an ``encode_image_dataset`` folder.

    With ``random_flip`` each item is the stored flipped copy half of the time, drawn from ``(seed, epoch, index)``
    so a resumed run sees the same choice; call :meth:`set_epoch` (the training loop's ``batch_stream`` does).
    """

    def __init__(self, path: str | os.PathLike, kind: str = "latents", random_flip: bool = True, seed: int = 0):
        import datasets

        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ValueError(
                f"{path} is not a precomputed dataset (no {METADATA_FILE}); create one with "
                "examples/extract_latents.py or examples/extract_tokens.py."
            )
        if kind not in ("latents", "image_tokens"):
            raise ValueError(f"kind must be 'latents' or 'image_tokens', got {kind!r}.")
        self.metadata = json.loads(meta_path.read_text())
        self.kind = kind
        self.random_flip = random_flip and self.metadata["with_flips"]
        self.seed = seed
        self.epoch = 0
        self.data = datasets.load_from_disk(str(path)).with_format("torch")
        self.id2label = {int(k): v for k, v in self.metadata["id2label"].items()}

    @property
    def has_repa_features(self) -> bool:
        return self.metadata.get("repa_feature_dim") is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        row = self.data[index]
        flip = False
        if self.random_flip:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
            flip = bool(torch.rand((), generator=g) < 0.5)
        prefix = "flip_" if flip else ""
        item = {"labels": torch.as_tensor(row["label"], dtype=torch.long)}
        if self.kind == "latents":
            item["latents"] = row[prefix + "latent"].float()
        else:
            item["image_tokens"] = row[prefix + "indices"].long()
        if self.has_repa_features:
            item["repa_features"] = row[prefix + "repa_features"].float()
        return item


def add_extraction_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``examples/extract_latents.py`` / ``extract_tokens.py`` (plus the usual dataset arguments)."""
    parser.add_argument("--tokenizer", required=True, help="Saved iFSQAutoencoder folder or Hub id.")
    parser.add_argument("--tokenizer_subfolder", default=None)
    parser.add_argument("--output_dir", required=True, help="Where the Arrow dataset is written.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the random crops (bundled photos).")
    parser.add_argument("--no_flips", action="store_true", help="Do not store horizontally flipped copies.")
    parser.add_argument(
        "--repa_encoder",
        default="none",
        help="Also store REPA encoder features: a Hub id/path (e.g. facebook/dinov2-base), efficientnet-lite0, none.",
    )
    parser.add_argument("--device", default=None)
    add_image_dataset_args(parser, resolution=256)
    return parser


def run_extraction(args: argparse.Namespace):
    """Build the dataset from ``args``, encode it and save it; returns the ``datasets.Dataset``."""
    from ..models.autoencoder_ifsq import iFSQAutoencoder
    from .repa import load_repa_encoder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = iFSQAutoencoder.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    if args.resolution % tokenizer.downsample_factor:
        raise ValueError(
            f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
            f"{tokenizer.downsample_factor}."
        )
    args.random_flip = False  # flips are stored as separate columns instead
    args.train_batch_size, args.dataloader_num_workers = args.batch_size, 0
    dataset = build_image_dataset(args, args.split)
    loader = make_dataloader_from_args(dataset, args, shuffle=False)
    encoder = None if args.repa_encoder.lower() == "none" else load_repa_encoder(args.repa_encoder)
    return encode_image_dataset(
        tokenizer,
        loader,
        args.output_dir,
        repa_encoder=encoder,
        id2label=getattr(dataset, "id2label", None),
        tokenizer_name_or_path=args.tokenizer,
        device=device,
        with_flips=not args.no_flips,
    )
