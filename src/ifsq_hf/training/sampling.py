"""Sample N images per class to PNG and one ``.npz`` (the ADM/FID evaluators' input), split over processes.

Shared by ``examples/sample_dit.py``, ``examples/sample_llamagen.py`` and ``ifsq-hf fid``. The (class, sample) list is
cut into fixed batches; batch ``k`` is drawn with its own seed (a pure function of ``(seed, k)``) and batches are dealt
round-robin to the processes. So the images depend on ``seed`` and ``batch_size`` only, never on the number of
processes: 8 GPUs give the same ``samples.npz`` as one (the official LlamaGen sampler reuses one seed on every GPU and
duplicates samples). Each process writes ``{class:04d}_{sample:05d}.png`` atomically; a re-run skips the batches whose
PNGs all exist (resume after a kill), and the main process packs ``samples.npz`` (``arr_0``: uint8 ``(N, H, W, 3)``,
``labels``: int64 ``(N,)``) once everyone is done, streaming, so memory stays at one image.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from PIL import Image
from tqdm.auto import tqdm

__all__ = [
    "SampledGenerator",
    "add_sampling_args",
    "batch_seed",
    "load_generator",
    "pack_npz",
    "resolve_class_ids",
    "run_sampling",
    "sample_per_class",
    "sampling_state",
]

SAMPLING_CONFIG = "sampling_config.json"


def sampling_state() -> PartialState:
    """The process group of ``accelerate launch`` / ``torchrun``, CPU multi-process included.

    ``PartialState()`` alone ignores ``ACCELERATE_USE_CPU`` (only ``Accelerator`` reads it), so a CPU run under
    ``accelerate launch --multi_gpu`` finds no GPU backend and every process believes it is "rank 0 of 1". Call this
    before anything else touches ``PartialState`` (it is a process-wide singleton).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (world > 1 and not torch.accelerator.is_available())
    state = PartialState(cpu=cpu)
    if state.num_processes != world:
        raise RuntimeError(
            f"launched with WORLD_SIZE={world} but the process group has {state.num_processes} process(es); "
            "on a machine without GPUs set ACCELERATE_USE_CPU=1 (see docs/scale.md)."
        )
    return state


def add_sampling_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--output_dir", required=True, help="Folder for the PNGs and samples.npz.")
    parser.add_argument("--num_images_per_class", type=int, default=50)
    parser.add_argument("--classes", default=None, help="Comma-separated class ids or names (default: all).")
    parser.add_argument(
        "--batch_size", type=int, default=16, help="Images per forward pass (the unit of seeding and resume)."
    )
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


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of batch ``batch_index``: well mixed, independent of the process that draws it."""
    return int(np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(1, np.uint64)[0] >> 1)


def _png_name(label: int, index: int) -> str:
    return f"{label:04d}_{index:05d}.png"


def _check_or_write_config(out: Path, config: dict, state: PartialState) -> None:
    """A resumed run must sample what the first one did, else the folder would mix two settings."""
    path = out / SAMPLING_CONFIG
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise ValueError(
                f"{out} holds samples made with other settings ({', '.join(changed)} differ); "
                "use a new --output_dir or delete the folder."
            )
    elif state.is_main_process:  # atomically: another rank may be reading it already
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
        os.replace(tmp, path)
    state.wait_for_everyone()


def sample_per_class(
    generate: Callable[[list[int], torch.Generator], list[Image.Image]],
    class_ids: list[int],
    num_images_per_class: int,
    output_dir: str | os.PathLike,
    *,
    batch_size: int,
    seed: int,
    write_npz: bool = True,
    generator_device: torch.device | str = "cpu",
    settings: dict | None = None,
) -> Path | None:
    """Run ``generate(labels, generator) -> PIL images`` over this process's batches and save the results.

    ``settings`` (JSON-able generation options) are recorded with the seed and sizes in ``sampling_config.json``; a
    re-run into the same folder with other values is refused instead of mixing samples. Returns the ``.npz`` path on
    the main process.
    """
    if num_images_per_class < 1:
        raise ValueError(f"num_images_per_class must be >= 1, got {num_images_per_class}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not class_ids:
        raise ValueError("no classes to sample; check --classes.")
    state = sampling_state()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"classes": list(map(int, class_ids)), "num_images_per_class": int(num_images_per_class),
              "batch_size": int(batch_size), "seed": int(seed), "settings": settings or {}}  # fmt: skip
    _check_or_write_config(out, config, state)
    jobs = [(c, i) for c in class_ids for i in range(num_images_per_class)]
    batches = [jobs[start : start + batch_size] for start in range(0, len(jobs), batch_size)]
    mine = list(range(state.process_index, len(batches), state.num_processes))
    todo = [k for k in mine if not all((out / _png_name(c, i)).is_file() for c, i in batches[k])]
    print(f"process {state.process_index} of {state.num_processes}: {len(todo)} of {len(mine)} batches to sample",
          flush=True)  # fmt: skip
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="sampling", unit="batch",
               disable=not state.is_local_main_process)  # fmt: skip
    for k in todo:
        generator = torch.Generator(device=generator_device).manual_seed(batch_seed(seed, k))
        images = generate([c for c, _ in batches[k]], generator)
        if len(images) != len(batches[k]):
            raise RuntimeError(f"generate() returned {len(images)} images for a batch of {len(batches[k])}.")
        for (c, i), image in zip(batches[k], images):
            tmp = out / f".{_png_name(c, i)}.tmp"
            image.save(tmp, format="PNG")
            os.replace(tmp, out / _png_name(c, i))  # a kill never leaves a truncated PNG under the final name
        bar.update(1)
    bar.close()
    state.wait_for_everyone()
    path = None
    if write_npz and state.is_main_process:
        path = pack_npz(out, jobs)
    state.wait_for_everyone()
    return path


def run_sampling(generate, class_ids: list[int], args: argparse.Namespace, **kwargs) -> Path | None:
    """``sample_per_class`` with the options of ``add_sampling_args``; reports where the ``.npz`` went."""
    npz = sample_per_class(
        generate,
        class_ids,
        args.num_images_per_class,
        args.output_dir,
        batch_size=args.batch_size,
        seed=args.seed,
        write_npz=not args.no_npz,
        **kwargs,
    )
    if npz is not None:
        print(f"wrote {npz}")
    return npz


def pack_npz(folder: str | os.PathLike, jobs: list[tuple[int, int]]) -> Path:
    """Stream the PNGs of ``jobs`` into ``samples.npz`` in job order, one image in memory at a time."""
    folder = Path(folder)
    first = np.asarray(Image.open(folder / _png_name(*jobs[0])).convert("RGB"))
    header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (len(jobs), *first.shape)}
    path, tmp = folder / "samples.npz", folder / ".samples.npz.tmp"
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for c, i in jobs:
                array = np.asarray(Image.open(folder / _png_name(c, i)).convert("RGB"))
                if array.shape != first.shape:
                    raise ValueError(f"{_png_name(c, i)} is {array.shape}, the first sample is {first.shape}.")
                f.write(np.ascontiguousarray(array, np.uint8).tobytes())
        with archive.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.array([c for c, _ in jobs], dtype=np.int64))
    os.replace(tmp, path)
    return path


@dataclass
class SampledGenerator:
    """A saved generator ready for ``sample_per_class``: ``generate(labels, generator) -> PIL images``."""

    kind: str  # "dit" or "llamagen"
    generate: Callable[[list[int], torch.Generator], list[Image.Image]]
    num_classes: int
    id2label: dict[int, str]
    generator_device: torch.device
    resolution: int


def load_generator(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    guidance_scale: float = 1.0,
    num_inference_steps: int = 50,
    timestep_shift: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    tokenizer: str | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> SampledGenerator:
    """Load a saved ``iFSQDiTPipeline`` folder (``model_index.json``) or LlamaGen folder (``config.json``).

    DiT options: ``num_inference_steps``, ``timestep_shift``, ``guidance_interval``; LlamaGen options: ``tokenizer``
    (default ``<path>/tokenizer``), ``temperature``, ``top_k`` (0 = off), ``top_p``; both take ``guidance_scale``.
    """
    folder = Path(path)
    device = torch.device(device)
    if (folder / "model_index.json").is_file():
        from ..pipelines.pipeline_ifsq_dit import iFSQDiTPipeline

        pipe = iFSQDiTPipeline.from_pretrained(folder).to(device)
        pipe.set_progress_bar_config(disable=True)
        interval = tuple(guidance_interval) if guidance_interval else (0.0, 1.0)

        def generate_dit(labels: list[int], generator: torch.Generator) -> list[Image.Image]:
            return pipe(class_labels=labels, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        timestep_shift=timestep_shift, guidance_interval=interval, generator=generator).images  # fmt: skip

        resolution = pipe.transformer.config.sample_size * pipe.vae.downsample_factor
        return SampledGenerator("dit", generate_dit, pipe.transformer.config.num_classes,
                                dict(pipe.config.id2label or {}), torch.device("cpu"), resolution)  # fmt: skip
    if (folder / "config.json").is_file():
        from ..models.autoencoder_ifsq import iFSQAutoencoder
        from ..models.llamagen import LlamaGenForImageGeneration

        model = LlamaGenForImageGeneration.from_pretrained(folder).to(device).eval()
        if tokenizer is None:
            if not (folder / "tokenizer").is_dir():
                raise ValueError(f"{folder} has no tokenizer/ subfolder; pass the iFSQAutoencoder with --tokenizer.")
            vae = iFSQAutoencoder.from_pretrained(folder, subfolder="tokenizer")
        else:
            vae = iFSQAutoencoder.from_pretrained(tokenizer)
        vae = vae.to(device).eval()

        def generate_ar(labels: list[int], generator: torch.Generator) -> list[Image.Image]:
            return model.generate_images(class_labels=torch.tensor(labels, device=device), tokenizer=vae,
                                         guidance_scale=guidance_scale, temperature=temperature, top_k=top_k,
                                         top_p=top_p, generator=generator, output_type="pil")  # fmt: skip

        resolution = model.config.image_token_size * vae.downsample_factor
        id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
        return SampledGenerator("llamagen", generate_ar, model.config.num_classes, id2label, device, resolution)
    raise ValueError(
        f"{folder} is neither a saved iFSQDiTPipeline (model_index.json) nor a LlamaGen folder (config.json)."
    )
