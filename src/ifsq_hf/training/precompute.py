"""Encode an image dataset once with a frozen tokenizer (and optionally a REPA encoder) and train generators on the
stored result: ``examples/extract_latents.py`` (latents + indices, for DiT and LlamaGen) and
``examples/extract_tokens.py`` (indices only, for LlamaGen) write it; the training scripts read it with
:class:`PrecomputedLatentDataset`.

The output is written as it is computed, in Arrow shards of ``shard_size`` images (``shard-00000.arrow``, the
``datasets`` on-disk format): memory stays at one batch whatever the dataset size. Shard ``k`` holds images
``[k * shard_size, (k + 1) * shard_size)`` and shards are dealt round-robin to the processes of an
``accelerate launch``, so N processes write the same shards as one. A shard appears under its final name only when
complete, so a killed run resumes by skipping finished shards; the manifest ``ifsq_precomputed.json`` is written last,
by the main process, once every shard exists, and the folder is loaded as one memory-mapped dataset.

Every image is stored twice, as is and horizontally flipped, so training keeps flip augmentation without touching
pixels. Columns: ``latent`` (float32 ``(C, h, w)``, the continuous ``z_q``), ``indices`` (int32 ``(h, w)``),
``label`` (int64), and with a REPA encoder ``repa_features`` (float32 ``(N, D)``); flipped copies are the ``flip_*``
columns. Quantization runs in fp32 (the quantizer forces it), so the indices are exact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.import_utils import require
from .arguments import add_image_dataset_args
from .image_data import build_image_dataset

__all__ = ["PrecomputedLatentDataset", "add_extraction_args", "encode_image_dataset", "run_extraction"]

METADATA_FILE = "ifsq_precomputed.json"
FORMAT_VERSION = 2
COLUMN_SETS = {"latents": ("latent", "indices"), "tokens": ("indices",)}


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.arrow"


def _encode_batch(
    tokenizer, repa_encoder, x: torch.Tensor, stored: tuple[str, ...], with_flips: bool, repa_dtype: str = "float32"
) -> dict:
    out: dict[str, np.ndarray] = {}
    for prefix, images in (("", x), ("flip_", x.flip(-1))) if with_flips else (("", x),):
        enc = tokenizer.encode(images)
        if "latent" in stored:
            out[prefix + "latent"] = enc.latent.float().cpu().numpy()
        out[prefix + "indices"] = enc.indices.cpu().numpy().astype(np.int32)
        out[prefix + "latent_shape"] = np.asarray(enc.latent.shape[1:])
        if repa_encoder is not None:
            out[prefix + "repa_features"] = repa_encoder(images).float().cpu().numpy().astype(repa_dtype)
    return out


def _features(batch: dict):
    datasets = require("datasets", "train")

    features = {"label": datasets.Value("int64")}
    for name, array in batch.items():
        if name == "label":
            continue
        kind = {2: datasets.Array2D, 3: datasets.Array3D}[array.ndim - 1]
        features[name] = kind(tuple(array.shape[1:]), str(array.dtype))
    return datasets.Features(features)


def _write_shard(
    tokenizer, repa_encoder, batches: Iterable[dict], path: Path, device, stored, with_flips, repa_dtype="float32"
) -> dict:
    """Encode ``batches`` into ``path`` through a temporary file; returns the shard's shape facts."""
    from datasets.arrow_writer import ArrowWriter

    tmp = path.with_name(f".{path.name}.tmp")
    writer, facts = None, {"num_images": 0}
    try:
        for batch in batches:
            x = batch["pixel_values"].to(device, torch.float32)
            encoded = _encode_batch(tokenizer, repa_encoder, x, stored, with_flips, repa_dtype)
            facts["latent_shape"] = encoded.pop("latent_shape").tolist()
            encoded.pop("flip_latent_shape", None)
            if "repa_features" in encoded:
                facts["repa_feature_dim"] = int(encoded["repa_features"].shape[-1])
            encoded["label"] = [int(v) for v in batch["labels"]]
            if writer is None:
                writer = ArrowWriter(features=_features(encoded), path=str(tmp))
            writer.write_batch(encoded)
            facts["num_images"] += len(encoded["label"])
    finally:
        if writer is not None:
            writer.finalize()
            writer.close()
    if writer is None:
        raise ValueError(f"shard {path.name} got no images: check the dataset path and split.")
    path.with_name(f".{path.name}.json").write_text(json.dumps(facts))  # before the shard: a shard implies its facts
    os.replace(tmp, path)
    return facts


def _shard_batches(dataset, k: int, shard_size: int, batch_size: int, num_workers: int):
    from ..data import collate_images

    indices = range(k * shard_size, min((k + 1) * shard_size, len(dataset)))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                       shuffle=False, num_workers=num_workers, collate_fn=collate_images)  # fmt: skip


@torch.no_grad()
def encode_image_dataset(
    tokenizer,
    dataset: torch.utils.data.Dataset,
    output_dir: str | os.PathLike,
    *,
    columns: str = "latents",
    batch_size: int = 32,
    shard_size: int = 10_000,
    num_workers: int = 0,
    repa_encoder: torch.nn.Module | None = None,
    id2label: dict[int, str] | None = None,
    tokenizer_name_or_path: str | None = None,
    device: torch.device | str = "cpu",
    with_flips: bool = True,
    repa_features_dtype: str = "float32",
):
    """Encode ``dataset`` (items ``{"pixel_values" in [-1, 1], "labels"}``) into Arrow shards under ``output_dir``.

    ``columns``: ``"latents"`` (latents and indices) or ``"tokens"`` (indices only). ``repa_features_dtype``
    ``"float16"`` halves the largest column (DINOv2-B: 786 KB -> 393 KB per image and copy); training reads it back
    as float32. Runs this process's share of
    the shards (see the module docstring) and, on the main process, writes the manifest once all shards exist.
    Returns the loaded ``datasets.Dataset`` on every process.
    """
    from .sampling import sampling_state

    if columns not in COLUMN_SETS:
        raise ValueError(f"columns must be one of {sorted(COLUMN_SETS)}, got {columns!r}.")
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError(
            "precompute needs a map-style dataset (it shards by index to run on many processes and resume); "
            "drop --streaming: image folders and Hub datasets are memory-mapped, not loaded into RAM."
        )
    if repa_features_dtype not in ("float32", "float16"):
        raise ValueError(f"repa_features_dtype must be 'float32' or 'float16', got {repa_features_dtype!r}.")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}.")
    if len(dataset) == 0:
        raise ValueError("the dataset has no images: check the dataset path and split.")
    state = sampling_state()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"columns": columns, "shard_size": shard_size, "num_images": len(dataset), "with_flips": with_flips,
                "tokenizer": tokenizer_name_or_path, "repa": repa_encoder is not None,
                "repa_features_dtype": repa_features_dtype}  # fmt: skip
    _check_or_write_run_settings(out, settings, state)

    stored = COLUMN_SETS[columns]
    tokenizer = tokenizer.to(device).eval()
    if repa_encoder is not None:
        repa_encoder = repa_encoder.to(device).eval()
    num_shards = math.ceil(len(dataset) / shard_size)
    mine = list(range(state.process_index, num_shards, state.num_processes))
    todo = [k for k in mine if not (out / _shard_name(k)).is_file()]
    print(f"process {state.process_index} of {state.num_processes}: {len(todo)} of {len(mine)} shards to encode",
          flush=True)  # fmt: skip
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="encode", unit="shard",
               disable=not state.is_local_main_process)  # fmt: skip
    for k in todo:
        batches = _shard_batches(dataset, k, shard_size, batch_size, num_workers)
        _write_shard(tokenizer, repa_encoder, batches, out / _shard_name(k), device, stored, with_flips,
                     repa_features_dtype)  # fmt: skip
        bar.update(1)
    bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        _write_manifest(out, num_shards, settings, tokenizer, id2label)
    state.wait_for_everyone()
    return PrecomputedLatentDataset(out, kind="image_tokens", random_flip=False).data


def _check_or_write_run_settings(out: Path, settings: dict, state) -> None:
    path = out / ".ifsq_precompute_run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds shards written with other settings ({', '.join(changed)} differ); use a new "
                "--output_dir or delete the folder."
            )
    elif state.is_main_process:  # atomically: another rank may be reading it already
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2))
        os.replace(tmp, path)
    state.wait_for_everyone()


def _write_manifest(out: Path, num_shards: int, settings: dict, tokenizer, id2label) -> None:
    shards, facts = [], {}
    for k in range(num_shards):
        facts = json.loads((out / f".{_shard_name(k)}.json").read_text())
        shards.append({"file": _shard_name(k), "num_images": facts["num_images"]})
    metadata = {
        "format_version": FORMAT_VERSION,
        "columns": settings["columns"],
        "tokenizer": settings["tokenizer"],
        "latent_shape": facts["latent_shape"],
        "codebook_size": int(tokenizer.codebook_size),
        "num_images": sum(s["num_images"] for s in shards),
        "with_flips": settings["with_flips"],
        "repa_feature_dim": facts.get("repa_feature_dim"),
        "id2label": {str(k): v for k, v in (id2label or {}).items()},
        "shard_size": settings["shard_size"],
        "shards": shards,
    }
    tmp = out / f".{METADATA_FILE}.tmp"
    tmp.write_text(json.dumps(metadata, indent=2))
    os.replace(tmp, out / METADATA_FILE)


class PrecomputedLatentDataset(torch.utils.data.Dataset):
    """Items ``{"latents" | "image_tokens", "labels"[, "repa_features"]}`` from an ``encode_image_dataset`` folder.

    The shards are memory-mapped (``datasets.Dataset.from_file``), so opening ImageNet costs no RAM. With
    ``random_flip`` each item is the stored flipped copy half of the time, drawn from ``(seed, epoch, index)`` so a
    resumed run sees the same choice; call :meth:`set_epoch` (the training loop's ``batch_stream`` does).
    """

    def __init__(self, path: str | os.PathLike, kind: str = "latents", random_flip: bool = True, seed: int = 0):
        import datasets

        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            hint = (
                " (an unfinished extraction: re-run the same command to resume)" if list(path.glob("*.arrow")) else ""
            )
            raise ValueError(
                f"{path} is not a precomputed dataset (no {METADATA_FILE}){hint}; create one with "
                "examples/extract_latents.py or examples/extract_tokens.py."
            )
        if kind not in ("latents", "image_tokens"):
            raise ValueError(f"kind must be 'latents' or 'image_tokens', got {kind!r}.")
        self.metadata = json.loads(meta_path.read_text())
        if kind == "latents" and self.metadata.get("columns") == "tokens":
            raise ValueError(
                f"{path} holds token indices only (examples/extract_tokens.py); DiT needs latents: write them with "
                "examples/extract_latents.py."
            )
        self.kind = kind
        self.random_flip = random_flip and self.metadata["with_flips"]
        self.seed = seed
        self.epoch = 0
        if "shards" in self.metadata:
            missing = [s["file"] for s in self.metadata["shards"] if not (path / s["file"]).is_file()]
            if missing:
                raise ValueError(f"{path} is missing shards {missing[:5]}; re-run the extraction to rebuild them.")
            parts = [datasets.Dataset.from_file(str(path / s["file"])) for s in self.metadata["shards"]]
            data = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        else:  # format 1: one save_to_disk folder
            data = datasets.load_from_disk(str(path))
        self.data = data.with_format("torch")
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
    parser.add_argument("--output_dir", required=True, help="Where the Arrow shards and the manifest are written.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--shard_size", type=int, default=10_000, help="Images per shard (the unit of multi-process work and resume)."
    )
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="Image decoding workers per process.")
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the random crops (bundled photos).")
    parser.add_argument("--no_flips", action="store_true", help="Do not store horizontally flipped copies.")
    parser.add_argument(
        "--repa_encoder",
        default="none",
        help="Also store REPA encoder features: a Hub id/path (e.g. facebook/dinov2-base), efficientnet-lite0, none.",
    )
    parser.add_argument(
        "--repa_features_dtype",
        choices=["float32", "float16"],
        default="float32",
        help="Storage of the REPA features; float16 halves the largest column (recommended for ImageNet).",
    )
    parser.add_argument("--device", default=None, help="Default: this process's accelerator (or CPU).")
    add_image_dataset_args(parser, resolution=256)
    return parser


def run_extraction(args: argparse.Namespace, columns: str = "latents"):
    """Build the dataset from ``args``, encode it into shards and write the manifest; returns the dataset."""
    from ..models.autoencoder_ifsq import iFSQAutoencoder
    from .repa import load_repa_encoder
    from .sampling import sampling_state

    device = args.device or sampling_state().device
    tokenizer = iFSQAutoencoder.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    if args.resolution % tokenizer.downsample_factor:
        raise ValueError(
            f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
            f"{tokenizer.downsample_factor}."
        )
    args.random_flip = False  # flips are stored as separate columns instead
    dataset = build_image_dataset(args, args.split)
    encoder = None if args.repa_encoder.lower() == "none" else load_repa_encoder(args.repa_encoder)
    return encode_image_dataset(
        tokenizer,
        dataset,
        args.output_dir,
        columns=columns,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        num_workers=args.dataloader_num_workers,
        repa_encoder=encoder,
        id2label=getattr(dataset, "id2label", None),
        tokenizer_name_or_path=args.tokenizer,
        device=device,
        with_flips=not args.no_flips,
        repa_features_dtype=args.repa_features_dtype,
    )
