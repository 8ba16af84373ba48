"""``ifsq-hf fid``: a saved generator folder -> N samples per class -> Inception statistics -> FID report.

One command, any number of processes (``accelerate launch -m ifsq_hf.cli fid ...``):

1. sample with :func:`~ifsq_hf.training.sampling.sample_per_class` (per-batch seeds, so the samples do not depend on
   the number of processes; PNGs + ``samples.npz``, the ADM evaluator's input);
2. each process extracts pool3 activations for its share of the PNGs in chunks of ``--inception_batch_size``,
   saved as ``inception-<convention>/<chunk>.npy`` (so a killed run resumes where it stopped);
3. the main process gathers the chunks in order and computes FID, precision/recall (k = 3) against the reference,
   then writes ``fid.json``, ``fid.md`` and ``samples_inception.npz`` (mu, sigma, activations).

The reference is an ``.npz`` (this library's statistics or an ADM reference batch), an image folder, or ``bundled``
(grid crops of the bundled photos). Folder and bundled references are computed once, in parallel the same way, and
cached in ``--reference_cache_dir`` keyed by their files, resolution and convention.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .metrics.fid import InceptionStatistics

__all__ = ["add_fid_args", "reference_statistics", "run_fid"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def add_fid_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="Saved iFSQDiTPipeline folder or LlamaGen folder (with tokenizer/).")
    parser.add_argument(
        "--reference",
        required=True,
        help="Reference statistics .npz (ours or ADM's VIRTUAL_imagenet256_labeled.npz), an image folder, or "
        "'bundled' (the bundled photos).",
    )
    parser.add_argument("--output_dir", required=True, help="Samples, activation chunks, fid.json and fid.md.")
    parser.add_argument("--num_images_per_class", type=int, default=50, help="50 x 1000 classes = FID-50k.")
    parser.add_argument("--classes", default=None, help="Comma-separated class ids or names (default: all).")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per generator forward pass.")
    parser.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("generation")
    g.add_argument("--guidance_scale", type=float, default=1.0)
    g.add_argument("--num_inference_steps", type=int, default=50, help="DiT only.")
    g.add_argument("--timestep_shift", type=float, default=1.0, help="DiT only.")
    g.add_argument("--guidance_interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"), help="DiT only.")
    g.add_argument("--tokenizer", default=None, help="LlamaGen only (default: <model>/tokenizer).")
    g.add_argument("--temperature", type=float, default=1.0, help="LlamaGen only.")
    g.add_argument("--top_k", type=int, default=0, help="LlamaGen only; 0 keeps every token.")
    g.add_argument("--top_p", type=float, default=1.0, help="LlamaGen only.")
    g = parser.add_argument_group("statistics")
    g.add_argument("--inception_batch_size", type=int, default=50)
    g.add_argument("--inception_weights", default=None, help="FID InceptionV3 TorchScript (default: fid-helper).")
    g.add_argument(
        "--convention",
        choices=("adm", "pytorch"),
        default="adm",
        help="'adm' (default) matches the papers' evaluator; 'pytorch' is the older pytorch-fid style.",
    )
    g.add_argument("--reference_resolution", type=int, default=None, help="Default: the generator's resolution.")
    g.add_argument("--reference_max_images", type=int, default=None, help="Cap on folder/bundled reference images.")
    g.add_argument(
        "--reference_cache_dir",
        default=None,
        help="Where computed reference statistics are cached (default: $IFSQ_HF_CACHE or ~/.cache/ifsq_hf/fid).",
    )
    g.add_argument("--no_precision_recall", action="store_true", help="Skip the k-NN precision/recall.")
    return parser


def _to_uint8_chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def _adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM's reference-batch crop: halve with BOX while the short side is >= 2 * size, BICUBIC to size, center."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.Resampling.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def _distributed_activations(
    num_items: int,
    load: Callable[[range], torch.Tensor],
    extractor: torch.nn.Module,
    folder: Path,
    batch_size: int,
    state,
    desc: str,
) -> np.ndarray | None:
    """Activations of items ``0..num_items-1`` (``load(range) -> uint8 (B, 3, H, W)``), chunks dealt round-robin to
    the processes and saved as they finish; returns the ordered ``(N, D)`` array on the main process."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [range(s, min(s + batch_size, num_items)) for s in range(0, num_items, batch_size)]
    mine = list(range(state.process_index, len(chunks), state.num_processes))
    todo = [k for k in mine if not (folder / f"{k:06d}.npy").is_file()]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="batch",
               disable=not state.is_local_main_process)  # fmt: skip
    for k in todo:
        acts = extractor(load(chunks[k]).to(state.device)).float().cpu().numpy()
        tmp = folder / f".{k:06d}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, acts)
        os.replace(tmp, folder / f"{k:06d}.npy")
        bar.update(1)
    bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return np.concatenate([np.load(folder / f"{k:06d}.npy") for k in range(len(chunks))])


def _cache_dir(args: argparse.Namespace) -> Path:
    if args.reference_cache_dir:
        return Path(args.reference_cache_dir)
    return Path(os.environ.get("IFSQ_HF_CACHE", Path.home() / ".cache" / "ifsq_hf")) / "fid"


def reference_statistics(
    reference: str,
    resolution: int,
    extractor: torch.nn.Module,
    args: argparse.Namespace,
    state,
    want_activations: bool = True,
) -> tuple[InceptionStatistics, str]:
    """``(statistics, description)`` of ``--reference``; folder and bundled references are computed once and cached."""
    from .metrics.fid import InceptionStatistics, load_reference_statistics

    if reference != "bundled" and Path(reference).is_file():
        # Only the main process computes precision/recall, so only it extracts the activations of ADM's image batch.
        extractor = extractor if want_activations and state.is_main_process else None
        stats = load_reference_statistics(reference, extractor, args.inception_batch_size, state.device)
        return stats, Path(reference).name
    if reference == "bundled":
        from .data import BundledPhotoDataset

        dataset = BundledPhotoDataset(resolution, split="all", crops="grid", num_samples=args.reference_max_images)
        num, name = len(dataset), f"bundled photos ({resolution} px grid crops)"
        fingerprint = ["bundled", resolution, num]

        def load(items: range) -> torch.Tensor:
            x = torch.stack([dataset[i]["pixel_values"] for i in items])
            return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    elif Path(reference).is_dir():
        files = sorted(p for p in Path(reference).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if args.reference_max_images:
            files = files[: args.reference_max_images]
        if len(files) < 2:
            raise ValueError(f"{reference} holds {len(files)} image(s); FID needs a reference of at least 2.")
        num, name = len(files), f"{Path(reference).name} ({len(files)} images, ADM center crop {resolution} px)"
        fingerprint = ["folder", resolution, *((str(p.relative_to(reference)), p.stat().st_size) for p in files)]

        def load(items: range) -> torch.Tensor:
            return torch.stack([_to_uint8_chw(_adm_center_crop(Image.open(files[i]), resolution)) for i in items])

    else:
        raise ValueError(f"--reference {reference!r} is not an .npz file, an image folder or 'bundled'.")
    fingerprint.append(getattr(extractor, "convention", type(extractor).__name__))
    key = hashlib.sha256(json.dumps(fingerprint, default=str).encode()).hexdigest()[:16]
    cache = _cache_dir(args) / f"reference-{key}.npz"
    if not cache.is_file():
        acts = _distributed_activations(num, load, extractor, _cache_dir(args) / f"reference-{key}-chunks",
                                        args.inception_batch_size, state, "reference statistics")  # fmt: skip
        if state.is_main_process:
            InceptionStatistics.from_activations(acts).save(cache)
        state.wait_for_everyone()
    return load_reference_statistics(cache), name


def _markdown_report(report: dict) -> str:
    rows = [("FID", report["fid"]), ("precision", report.get("precision")), ("recall", report.get("recall"))]
    lines = [
        f"# FID of `{report['model']}` ({report['kind']})",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in rows if v is not None),
        "",
        f"- samples: {report['num_samples']} ({report['num_images_per_class']} per class, {report['num_classes']} "
        f"classes), seed {report['seed']}, batch size {report['batch_size']}, {report['num_processes']} process(es)",
        f"- reference: {report['reference']} ({report['reference_num_images']} images)",
        f"- Inception convention: {report['convention']}; generation settings: `{json.dumps(report['settings'])}`",
        "",
    ]
    return "\n".join(lines)


def run_fid(args: argparse.Namespace) -> dict | None:
    """Sample, extract, compare; returns the report on the main process (``None`` on the others)."""
    from .metrics.fid import InceptionStatistics, InceptionV3FeatureExtractor, frechet_distance, precision_recall
    from .training.sampling import load_generator, resolve_class_ids, sample_per_class, sampling_state

    state = sampling_state()
    if args.num_images_per_class < 1 or args.batch_size < 1 or args.inception_batch_size < 1:
        raise ValueError("--num_images_per_class, --batch_size and --inception_batch_size must be >= 1.")
    settings = {"guidance_scale": args.guidance_scale}
    model_folder = Path(args.model)
    is_dit = (model_folder / "model_index.json").is_file()
    if is_dit:
        settings.update(num_inference_steps=args.num_inference_steps, timestep_shift=args.timestep_shift,
                        guidance_interval=args.guidance_interval)  # fmt: skip
    else:
        settings.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    generator = load_generator(model_folder, device=state.device, tokenizer=None if is_dit else args.tokenizer,
                               **settings)  # fmt: skip
    class_ids = resolve_class_ids(args.classes, generator.id2label, generator.num_classes)
    extractor = InceptionV3FeatureExtractor(args.inception_weights, convention=args.convention).to(state.device)
    want_pr = not args.no_precision_recall
    reference, reference_name = reference_statistics(args.reference, args.reference_resolution or generator.resolution,
                                                     extractor, args, state, want_activations=want_pr)  # fmt: skip

    out = Path(args.output_dir)
    sample_per_class(generator.generate, class_ids, args.num_images_per_class, out, batch_size=args.batch_size,
                     seed=args.seed, generator_device=generator.generator_device, settings=settings)  # fmt: skip
    jobs = [(c, i) for c in class_ids for i in range(args.num_images_per_class)]

    def load(items: range) -> torch.Tensor:
        return torch.stack([_to_uint8_chw(Image.open(out / f"{jobs[j][0]:04d}_{jobs[j][1]:05d}.png")) for j in items])

    acts = _distributed_activations(len(jobs), load, extractor, out / f"inception-{args.convention}",
                                    args.inception_batch_size, state, "sample statistics")  # fmt: skip
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    samples = InceptionStatistics.from_activations(acts)
    samples.save(out / "samples_inception.npz")
    report = {
        "model": model_folder.name,
        "kind": generator.kind,
        "fid": frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma),
        "num_samples": len(jobs),
        "num_images_per_class": args.num_images_per_class,
        "num_classes": len(class_ids),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "num_processes": state.num_processes,
        "reference": reference_name,
        "reference_num_images": reference.num_images,
        "convention": args.convention,
        "settings": settings,
    }
    if want_pr:
        if reference.activations is None:
            report["precision_recall"] = "skipped: the reference file holds no activations or images"
        else:
            report["precision"], report["recall"] = precision_recall(reference.activations, acts, device=state.device)
    if math.isnan(report["fid"]):
        raise RuntimeError("FID is NaN: the samples or the reference statistics are degenerate.")
    (out / "fid.json").write_text(json.dumps(report, indent=2))
    (out / "fid.md").write_text(_markdown_report(report))
    state.wait_for_everyone()
    return report
