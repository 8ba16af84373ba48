"""Sample N images per class to PNG and one ``.npz`` (the ADM/FID evaluators' input), split over processes.

Shared by ``examples/sample_dit.py`` and ``examples/sample_llamagen.py``. Each process draws its own slice of the
(class, sample) list with its own seed ``seed * world_size + rank`` (the official LlamaGen sampler reuses one seed on
every GPU and so duplicates samples), writes ``{class:04d}_{sample:05d}.png``, and the main process packs all PNGs
into ``samples.npz`` (``arr_0``: uint8 ``(N, H, W, 3)``, ``labels``: int64 ``(N,)``) once everyone is done.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from tqdm.auto import tqdm

__all__ = ["add_sampling_args", "pack_npz", "resolve_class_ids", "run_sampling", "sample_per_class"]


def add_sampling_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--output_dir", required=True, help="Folder for the PNGs and samples.npz.")
    parser.add_argument("--num_images_per_class", type=int, default=50)
    parser.add_argument("--classes", default=None, help="Comma-separated class ids or names (default: all).")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per forward pass and process.")
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_npz", action="store_true", help="Only write PNGs.")
    return parser


def resolve_class_ids(classes: str | None, id2label: dict[int, str] | None, num_classes: int) -> list[int]:
    """``"0,3"`` or ``"cat,dog"`` (names through ``id2label``) -> class ids; ``None`` -> every class."""
    if classes is None:
        return list(range(num_classes))
    label2id = {str(v): int(k) for k, v in (id2label or {}).items()}
    ids = []
    for item in (c.strip() for c in classes.split(",") if c.strip()):
        if item.lstrip("-").isdigit():
            ids.append(int(item))
        elif item in label2id:
            ids.append(label2id[item])
        else:
            raise ValueError(f"unknown class {item!r}; known names: {sorted(label2id)[:20]}.")
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"class ids {bad} are outside [0, {num_classes - 1}].")
    return ids


def sample_per_class(
    generate: Callable[[list[int], torch.Generator], list[Image.Image]],
    class_ids: list[int],
    num_images_per_class: int,
    output_dir: str | os.PathLike,
    *,
    batch_size: int,
    seed: int,
    write_npz: bool = True,
) -> Path | None:
    """Run ``generate(labels, generator) -> PIL images`` over this process's share and save the results."""
    if num_images_per_class < 1:
        raise ValueError(f"num_images_per_class must be >= 1, got {num_images_per_class}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    state = PartialState()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(c, i) for c in class_ids for i in range(num_images_per_class)]
    mine = jobs[state.process_index :: state.num_processes]
    generator = torch.Generator(device="cpu").manual_seed(seed * state.num_processes + state.process_index)
    for start in tqdm(range(0, len(mine), batch_size), desc="sampling", disable=not state.is_local_main_process):
        chunk = mine[start : start + batch_size]
        images = generate([c for c, _ in chunk], generator)
        for (c, i), image in zip(chunk, images):
            image.save(out / f"{c:04d}_{i:05d}.png")
    state.wait_for_everyone()
    if write_npz and state.is_main_process:
        return pack_npz(out, jobs)
    return None


def run_sampling(generate, class_ids: list[int], args: argparse.Namespace) -> Path | None:
    """``sample_per_class`` with the options of ``add_sampling_args``; reports where the ``.npz`` went."""
    npz = sample_per_class(
        generate,
        class_ids,
        args.num_images_per_class,
        args.output_dir,
        batch_size=args.batch_size,
        seed=args.seed,
        write_npz=not args.no_npz,
    )
    if npz is not None:
        print(f"wrote {npz}")
    return npz


def pack_npz(folder: str | os.PathLike, jobs: list[tuple[int, int]]) -> Path:
    """Stack the PNGs of ``jobs`` into ``samples.npz`` in job order."""
    folder = Path(folder)
    arrays = [np.asarray(Image.open(folder / f"{c:04d}_{i:05d}.png").convert("RGB")) for c, i in jobs]
    path = folder / "samples.npz"
    np.savez(path, arr_0=np.stack(arrays), labels=np.array([c for c, _ in jobs], dtype=np.int64))
    return path
