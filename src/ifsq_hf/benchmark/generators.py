"""Generator studies' shared plumbing: one tokenizer, DiT and LlamaGen trained on it with the library's example
scripts, one held-out reference, one evaluation that scores both generator kinds identically, and the training
FLOPs of a generator step.

Used by the ``ar-vs-diffusion`` study (diffusion vs autoregression at equal compute) and the ``repa`` study.

Metrics (both computed the same way for a DiT and a LlamaGen):

* ``fid``: Fréchet Inception distance (:mod:`ifsq_hf.metrics.fid`, ADM convention) of decoded samples vs held-out
  real images at the generators' resolution. It is the papers' metric, but at a few hundred 32-64 px samples it is
  biased upwards and noisy (2048-d Inception features of upsampled thumbnails), so compare it only within a study.
* ``latent_fd``: Fréchet distance in the tokenizer's quantized latent space: held-out images are encoded to their
  quantized latent ``z_q``; DiT samples (continuous) are snapped to the same FSQ grid; LlamaGen tokens are turned
  into the same codes. Both generators are thus scored on exactly what the shared tokenizer can represent, with
  features of ``C * h * w`` dimensions (64-256 at CPU scale), which is cheap and far less noisy than FID, but it
  cannot see what the decoder adds and it does not correlate with human judgement the way FID is claimed to.

The held-out reference for the bundled photos is random crops of the same 12 photos (same classes: which photo)
drawn with a seed no training run uses: distinct crops, not unseen photos (the crops overlap the training crops'
content), so the metrics measure how well the training distribution is modelled, not generalisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import study_state, train_argv
from .runner import train_with_example

__all__ = [
    "GENERATOR_KINDS",
    "GeneratorReference",
    "build_reference",
    "evaluate_generator",
    "generator_is_complete",
    "load_generator_model",
    "prepare_tokenizer",
    "reference_images",
    "train_generator",
    "training_flops",
]

TOKENIZER_SCRIPT = "train_ifsq_autoencoder"
# kind -> (example script, its tokenizer flag)
GENERATOR_KINDS: dict[str, tuple[str, str]] = {
    "dit": ("train_dit", "--vae_model_name_or_path"),
    "llamagen": ("train_llamagen_repa", "--tokenizer"),
}
EVAL_FILE = "bench_eval.json"
# Evaluation settings and their defaults (config keys); they are part of the cache key of an evaluation.
EVAL_DEFAULTS: dict[str, Any] = {
    "num_eval_samples": 240,
    "eval_batch_size": 48,
    "fid": True,
    "num_fid_samples": None,  # FID on the first N samples (None: all); the latent FD always uses all
    "dit_sampling": {"num_inference_steps": 50, "guidance_scale": 1.0, "timestep_shift": 1.0},
    "llamagen_sampling": {"guidance_scale": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
}


def _check_kind(kind: str) -> tuple[str, str]:
    if kind not in GENERATOR_KINDS:
        raise ValueError(f"unknown generator kind {kind!r}; choose one of {sorted(GENERATOR_KINDS)}.")
    return GENERATOR_KINDS[kind]


def _eval_setting(config: dict, key: str) -> Any:
    value = config.get(key, EVAL_DEFAULTS[key])
    return {**EVAL_DEFAULTS[key], **value} if isinstance(EVAL_DEFAULTS[key], dict) else value


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def prepare_tokenizer(config: dict, output_dir: str | Path, examples_dir: str | Path | None = None) -> Path:
    """Train the study's one tokenizer with ``examples/train_ifsq_autoencoder.py`` (reused once finished).

    ``config["tokenizer"]``: ``{"model_preset": ..., "model": {overrides}, "train": {script args}, "seed": 0}``.
    Returns the saved model folder ``output_dir/tokenizer``.
    """
    from ..models.autoencoder_ifsq import PRESETS as MODEL_PRESETS

    tok = config.get("tokenizer")
    if not isinstance(tok, dict) or "model_preset" not in tok or "train" not in tok:
        raise ValueError('config["tokenizer"] must be a dict with "model_preset" and "train" (and optional "seed").')
    if tok["model_preset"] not in MODEL_PRESETS:
        raise ValueError(f"tokenizer model_preset {tok['model_preset']!r} is not one of {sorted(MODEL_PRESETS)}.")
    output_dir = Path(output_dir)
    run_dir = output_dir / "tokenizer"
    config_path = output_dir / "configs" / "tokenizer.json"
    state = study_state()
    if state.is_main_process:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        model_config = {**MODEL_PRESETS[tok["model_preset"]], **tok.get("model", {})}
        config_path.write_text(json.dumps(model_config, indent=2, sort_keys=True))
    state.wait_for_everyone()
    argv = [*train_argv(tok["train"]), "--model_config", str(config_path), "--seed", str(int(tok.get("seed", 0)))]
    train_with_example(TOKENIZER_SCRIPT, argv, run_dir, examples_dir)
    state.wait_for_everyone()
    return run_dir


def generator_is_complete(kind: str, run_dir: str | Path) -> bool:
    """True once a generator script saved its final model and run record (``training_config.json`` comes last)."""
    from ..hub import TRAINING_CONFIG_NAME

    _check_kind(kind)
    run_dir = Path(run_dir)
    model_file = "model_index.json" if kind == "dit" else "config.json"
    return (run_dir / model_file).is_file() and (run_dir / TRAINING_CONFIG_NAME).is_file()


def _link_checkpoint(source_dir: Path, run_dir: Path, max_steps: int) -> None:
    """Seed ``run_dir`` with the newest checkpoint of an earlier stage (hard links, copies across filesystems), so
    ``--resume_from_checkpoint latest`` continues that run instead of starting afresh."""
    from ..training.checkpointing import find_checkpoints

    found = [(s, p) for s, p in find_checkpoints(source_dir) if s <= max_steps]
    if not found:
        raise ValueError(
            f"resume_from {source_dir} holds no checkpoint at or below step {max_steps}; train the earlier stage "
            "first (its max_train_steps must be a multiple of checkpointing_steps)."
        )
    _, checkpoint = found[-1]
    target = run_dir / checkpoint.name
    tmp = run_dir / f".{checkpoint.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    run_dir.mkdir(parents=True, exist_ok=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(checkpoint, tmp, copy_function=link)
    os.replace(tmp, target)


def train_generator(
    kind: str,
    train: dict,
    tokenizer_dir: str | Path,
    run_dir: str | Path,
    seed: int,
    examples_dir: str | Path | None = None,
    *,
    resume_from: str | Path | None = None,
) -> bool:
    """Train a DiT (``kind="dit"``) or LlamaGen (``"llamagen"``) with its example script; returns whether it trained.

    ``train`` holds the script's arguments (``common.train_argv``); the tokenizer flag and ``--seed`` are added here.
    An unfinished run resumes from its ``latest`` checkpoint; a finished one is left alone. Staged training (curves
    without retraining): pass the previous stage's folder as ``resume_from`` and a larger ``max_train_steps``; the
    run then continues from that stage's last checkpoint, which equals one longer run when the learning-rate schedule
    does not depend on ``max_train_steps`` (e.g. ``constant_with_warmup``). Every stage must end on a checkpoint, so
    ``max_train_steps`` must be a multiple of ``checkpointing_steps``.
    """
    script, tokenizer_flag = _check_kind(kind)
    steps, every = train.get("max_train_steps"), train.get("checkpointing_steps")
    if not isinstance(steps, int) or not isinstance(every, int) or steps < 1 or every < 1:
        raise ValueError(f"the {kind} train args need integer max_train_steps and checkpointing_steps >= 1.")
    if steps % every:
        raise ValueError(
            f"max_train_steps {steps} is not a multiple of checkpointing_steps {every}: a later stage could not "
            "resume from this run's end; pick checkpointing_steps dividing every stage's step count."
        )
    for flag in (tokenizer_flag, "seed"):
        if flag.lstrip("-") in train:
            raise ValueError(f"{flag.lstrip('-')!r} is set by the study; remove it from the {kind} train args.")
    run_dir = Path(run_dir)
    if generator_is_complete(kind, run_dir):
        return False
    state = study_state()
    if resume_from is not None and state.is_main_process:
        from ..training.checkpointing import find_checkpoints

        if not find_checkpoints(run_dir):
            _link_checkpoint(Path(resume_from), run_dir, steps)
    state.wait_for_everyone()
    argv = [*train_argv(train), tokenizer_flag, str(tokenizer_dir), "--seed", str(int(seed))]
    train_with_example(script, argv, run_dir, examples_dir)
    state.wait_for_everyone()
    return True


# ---------------------------------------------------------------------------------------------------------------
# Held-out reference
# ---------------------------------------------------------------------------------------------------------------


def _reference_settings(config: dict) -> dict:
    """What defines the reference images (and so its cache key)."""
    for key in ("resolution", "num_reference_images"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ValueError(f"config[{key!r}] must be a positive int (the generators' resolution / image count).")
    return {
        "resolution": config["resolution"],
        "num_reference_images": config["num_reference_images"],
        "reference_seed": int(config.get("reference_seed", 1_000_003)),
        "bundled_photo_size": config.get("bundled_photo_size"),
        "reference_dataset": config.get("reference_dataset"),
        "fid_reference": config.get("fid_reference"),
        "fid": bool(_eval_setting(config, "fid")),
    }


def reference_images(config: dict, floor: bool = False) -> torch.utils.data.Dataset:
    """The held-out images: ``config["reference_dataset"]`` (``{"dataset_name", "split"}``, center crops) if set,
    else random crops of the 12 bundled photos with ``reference_seed`` (no training run draws crops with it; the
    crop index cycles through the photos, so the classes are balanced).

    ``floor=True``: a second, disjoint set of ``num_eval_samples`` real images (bundled: seed ``reference_seed + 1``)
    scored like generated samples, which gives the metrics' value for perfect samples at this sample count."""
    settings = _reference_settings(config)
    source = settings["reference_dataset"]
    if floor:
        if source:
            raise ValueError(
                "the real-image floor is only computed for the bundled photos; set reference_floor=False."
            )
        from ..data import BundledPhotoDataset

        return BundledPhotoDataset(
            settings["resolution"], split="all", num_samples=int(_eval_setting(config, "num_eval_samples")),
            crops="random", flip=False, seed=settings["reference_seed"] + 1, photo_size=settings["bundled_photo_size"],
        )  # fmt: skip
    if source:
        from ..data import load_image_dataset

        dataset = load_image_dataset(
            source["dataset_name"], split=source.get("split", "validation"), resolution=settings["resolution"]
        )
        if len(dataset) < settings["num_reference_images"]:
            raise ValueError(f"the reference split has {len(dataset)} images, fewer than num_reference_images.")
        # An evenly spaced subset: ImageNet's validation split is ordered by file name, not class.
        keep = np.linspace(0, len(dataset) - 1, settings["num_reference_images"]).round().astype(int).tolist()
        return torch.utils.data.Subset(dataset, keep)
    from ..data import BundledPhotoDataset

    return BundledPhotoDataset(
        settings["resolution"], split="all", num_samples=settings["num_reference_images"], crops="random",
        flip=False, seed=settings["reference_seed"], photo_size=settings["bundled_photo_size"],
    )  # fmt: skip


@dataclass
class GeneratorReference:
    """Statistics of the held-out images: latent Fréchet statistics (``latent_mu``, ``latent_sigma``), Inception
    statistics (``None`` when FID is off), and where they are cached."""

    path: Path
    num_images: int
    resolution: int
    num_classes: int
    latent_mu: np.ndarray
    latent_sigma: np.ndarray
    inception_mu: np.ndarray | None
    inception_sigma: np.ndarray | None
    description: str
    floor: dict | None = None

    def to_dict(self) -> dict:
        """JSON-able summary for a results file."""
        return {"path": str(self.path), "num_images": self.num_images, "resolution": self.resolution,
                "num_classes": self.num_classes, "latent_dim": int(self.latent_mu.shape[0]),
                "fid": self.inception_mu is not None, "description": self.description,
                "floor": self.floor}  # fmt: skip


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats -> uint8, exactly as a saved PNG would hold them."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """The tokenizer's weights digest: a retrained tokenizer invalidates cached latent statistics."""
    weights = sorted(Path(tokenizer_dir).glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{tokenizer_dir} holds no saved tokenizer weights (*.safetensors); train it first.")
    return "-".join(_file_digest(p) for p in weights)


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else study_state().device


_INCEPTION: dict[str, torch.nn.Module] = {}


def _inception(device: torch.device) -> torch.nn.Module:
    """One FID InceptionV3 per device and process: the TorchScript network re-optimises itself on its first calls,
    which costs more than a CPU evaluation of a few hundred images, so a study keeps it."""
    if str(device) not in _INCEPTION:
        from ..metrics.fid import InceptionV3FeatureExtractor

        _INCEPTION[str(device)] = InceptionV3FeatureExtractor().to(device)
    return _INCEPTION[str(device)]


@torch.no_grad()
def build_reference(
    config: dict,
    tokenizer_dir: str | Path,
    output_dir: str | Path,
    *,
    device: torch.device | str | None = None,
) -> GeneratorReference:
    """Statistics of the held-out images for both metrics, computed once and cached in ``output_dir/reference/``.

    Latent statistics come from the tokenizer's quantized latents of the images; Inception statistics from the
    images (or from ``config["fid_reference"]``, an ``.npz`` such as ADM's ImageNet reference batch). With
    ``config["reference_floor"]`` (default on; bundled photos only) ``floor`` holds the metrics of real images scored
    like samples (see :func:`reference_images`). Call it on the main process only.
    """
    settings = _reference_settings(config)
    key_data = {**settings, "tokenizer": _tokenizer_fingerprint(Path(tokenizer_dir))}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(output_dir) / "reference"
    path = folder / f"reference-{key}.npz"
    if not path.is_file():
        _write_reference(config, settings, key_data, Path(tokenizer_dir), path, _device(device))
    reference = _load_reference(path)
    if config.get("reference_floor", True):
        reference.floor = _real_floor(config, settings, key, Path(tokenizer_dir), reference, _device(device))
    return reference


def _write_reference(config: dict, settings: dict, key_data: dict, tokenizer_dir: Path, path: Path, device) -> None:
    from ..models.autoencoder_ifsq import iFSQAutoencoder

    dataset = reference_images(config)
    vae = iFSQAutoencoder.from_pretrained(tokenizer_dir).to(device).eval()
    extractor = None
    if settings["fid"] and not settings["fid_reference"]:
        extractor = _inception(device)
    batch_size = int(_eval_setting(config, "eval_batch_size"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    latents, acts, labels = [], [], []
    for batch in loader:
        pixels = batch["pixel_values"].to(device)
        latents.append(vae.encode(pixels).latent.flatten(1).double().cpu())
        labels.append(batch["labels"])
        if extractor is not None:
            acts.append(extractor(_uint8(pixels)).double().cpu())
    latent_mu, latent_sigma = _gaussian(torch.cat(latents).numpy())
    arrays = {"latent_mu": latent_mu, "latent_sigma": latent_sigma, "labels": torch.cat(labels).numpy()}
    description = f"{len(dataset)} held-out images at {settings['resolution']} px"
    if settings["fid_reference"]:
        from ..metrics.fid import load_reference_statistics

        stats = load_reference_statistics(settings["fid_reference"])
        arrays.update(inception_mu=stats.mu, inception_sigma=stats.sigma)
        description += f"; FID against {Path(settings['fid_reference']).name}"
    elif extractor is not None:
        arrays["inception_mu"], arrays["inception_sigma"] = _gaussian(torch.cat(acts).numpy())
    meta = {**key_data, "description": description, "num_classes": _num_classes(dataset)}
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@torch.no_grad()
def _real_floor(config: dict, settings: dict, key: str, tokenizer_dir: Path, reference, device) -> dict:
    """The metrics of real images scored like samples (disjoint crops, same counts): ``latent_fd`` and ``fid`` of
    perfect samples, and ``fid_reconstructed``, the FID of the tokenizer's reconstructions of them (what a generator
    that matched the latent distribution exactly would get through this decoder). Cached beside the reference."""
    from ..metrics.fid import frechet_distance
    from ..models.autoencoder_ifsq import iFSQAutoencoder

    num = int(_eval_setting(config, "num_eval_samples"))
    num_fid = int(_eval_setting(config, "num_fid_samples") or num)
    fid = settings["fid"] and reference.inception_mu is not None
    floor_key = hashlib.sha256(json.dumps([key, num, num_fid, fid]).encode()).hexdigest()[:16]
    path = reference.path.parent / f"floor-{floor_key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    dataset = reference_images(config, floor=True)
    vae = iFSQAutoencoder.from_pretrained(tokenizer_dir).to(device).eval()
    extractor = _inception(device) if fid else None
    batch_size = int(_eval_setting(config, "eval_batch_size"))
    latents, real, recon, seen = [], [], [], 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pixels = batch["pixel_values"].to(device)
        latent = vae.encode(pixels).latent
        latents.append(latent.flatten(1).double().cpu())
        if extractor is not None and seen < num_fid:
            take = num_fid - seen
            real.append(extractor(_uint8(pixels[:take])).double().cpu())
            recon.append(extractor(_uint8(vae.decode(latent[:take]).sample)).double().cpu())
        seen += pixels.shape[0]
    mu, sigma = _gaussian(torch.cat(latents).numpy())
    floor = {"num_samples": num, "latent_fd": frechet_distance(mu, sigma, reference.latent_mu, reference.latent_sigma)}
    if extractor is not None:
        for name, acts in (("fid", real), ("fid_reconstructed", recon)):
            mu, sigma = _gaussian(torch.cat(acts).numpy())
            floor[name] = frechet_distance(mu, sigma, reference.inception_mu, reference.inception_sigma)
        floor["num_fid_samples"] = num_fid
    path.write_text(json.dumps(floor, indent=2, sort_keys=True))
    return floor


def _num_classes(dataset) -> int:
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    id2label = getattr(base, "id2label", None)
    return len(id2label) if id2label else 0


def _load_reference(path: Path) -> GeneratorReference:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        has_fid = "inception_mu" in data.files
        return GeneratorReference(
            path=path,
            num_images=int(meta["num_reference_images"]),
            resolution=int(meta["resolution"]),
            num_classes=int(meta["num_classes"]),
            latent_mu=data["latent_mu"],
            latent_sigma=data["latent_sigma"],
            inception_mu=data["inception_mu"] if has_fid else None,
            inception_sigma=data["inception_sigma"] if has_fid else None,
            description=meta["description"],
        )


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


def _sampler(kind: str, run_dir: Path, config: dict, device: torch.device):
    """``(sample(labels, generator) -> (images in [-1, 1], quantized latents), num_classes, generator device)``:
    the DiT pipeline draws its noise on the CPU, LlamaGen samples tokens on the model's device (as
    ``training.sampling.load_generator`` does)."""
    from ..models.autoencoder_ifsq import iFSQAutoencoder

    if kind == "dit":
        from ..pipelines.pipeline_ifsq_dit import iFSQDiTPipeline

        settings = _eval_setting(config, "dit_sampling")
        pipe = iFSQDiTPipeline.from_pretrained(run_dir).to(device)
        pipe.set_progress_bar_config(disable=True)
        vae = pipe.vae.eval()
        scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0

        def sample_dit(labels: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            x = pipe(class_labels=labels, num_inference_steps=settings["num_inference_steps"],
                     guidance_scale=settings["guidance_scale"], timestep_shift=settings["timestep_shift"],
                     generator=generator, output_type="latent").images  # fmt: skip
            z = x.float() / scale + shift
            images = vae.decode(z).sample.float()  # what the pipeline decodes: the continuous sample
            # The same FSQ grid the tokenizer's latents live on (nearest level; the latent has no projection).
            snapped = vae.indices_to_latent(vae.quantizer.codes_to_indices(z.clamp(-1.0, 1.0)))
            return images, snapped

        return sample_dit, pipe.transformer.config.num_classes, torch.device("cpu")

    from ..models.llamagen import LlamaGenForImageGeneration

    settings = _eval_setting(config, "llamagen_sampling")
    model = LlamaGenForImageGeneration.from_pretrained(run_dir).to(device).eval()
    vae = iFSQAutoencoder.from_pretrained(run_dir, subfolder="tokenizer").to(device).eval()
    model.check_tokenizer(vae)
    side = model.config.image_token_size

    def sample_ar(labels: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = model.generate(class_labels=torch.tensor(labels, device=device), generator=generator,
                                guidance_scale=settings["guidance_scale"], temperature=settings["temperature"],
                                top_k=settings["top_k"] or None, top_p=settings["top_p"])  # fmt: skip
        latent = vae.indices_to_latent(tokens.reshape(tokens.shape[0], side, side).to(vae.device))
        return vae.decode(latent).sample.float(), latent

    return sample_ar, model.config.num_classes, device


def _eval_key(kind: str, run_dir: Path, reference: GeneratorReference, config: dict, seed: int) -> dict:
    keys = ("num_eval_samples", "eval_batch_size", "fid", "num_fid_samples", f"{kind}_sampling")
    return {"kind": kind, "reference": reference.path.name, "seed": int(seed),
            **{k: _eval_setting(config, k) for k in keys}}  # fmt: skip


@torch.no_grad()
def evaluate_generator(
    kind: str,
    run_dir: str | Path,
    reference: GeneratorReference,
    config: dict,
    seed: int,
    *,
    device: torch.device | str | None = None,
    cache: bool = True,
) -> dict:
    """Sample ``config["num_eval_samples"]`` images, class-balanced, from the saved model and score them.

    Labels cycle through the classes; batch ``k`` draws its noise from ``batch_seed(seed, k)``, so a rerun gives the
    same samples. Returns ``{"latent_fd", "fid" and "num_fid_samples" (when ``config["fid"]``), "num_samples",
    "num_classes"}``; FID uses the first ``config["num_fid_samples"]`` samples (all by default). Saves the first
    samples as ``bench_samples.png``; the result is cached in ``run_dir/bench_eval.json`` keyed by the settings.
    """
    from ..metrics.fid import frechet_distance
    from ..training.sampling import batch_seed
    from ..utils.images import make_image_grid

    _check_kind(kind)
    run_dir = Path(run_dir)
    if not generator_is_complete(kind, run_dir):
        raise ValueError(f"{run_dir} holds no finished {kind} run; train it first.")
    num_samples = int(_eval_setting(config, "num_eval_samples"))
    batch_size = int(_eval_setting(config, "eval_batch_size"))
    num_fid = int(_eval_setting(config, "num_fid_samples") or num_samples)
    if num_samples < 2 or batch_size < 1 or not 2 <= num_fid <= num_samples:
        raise ValueError(
            f"need num_eval_samples >= 2, eval_batch_size >= 1 and 2 <= num_fid_samples <= num_eval_samples, got "
            f"{num_samples}, {batch_size}, {num_fid}."
        )
    key = _eval_key(kind, run_dir, reference, config, seed)
    cached = run_dir / EVAL_FILE
    if cache and cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return saved["metrics"]

    device = _device(device)
    sample, num_classes, generator_device = _sampler(kind, run_dir, config, device)
    if reference.num_classes and reference.num_classes != num_classes:
        raise ValueError(f"the reference has {reference.num_classes} classes, the {kind} model {num_classes}.")
    extractor = None
    if key["fid"]:
        if reference.inception_mu is None:
            raise ValueError("FID is on but the reference holds no Inception statistics; rebuild it with fid=True.")
        extractor = _inception(device)
    labels = [i % num_classes for i in range(num_samples)]
    latents, fid_images, grid = [], [], []
    for k, start in enumerate(range(0, num_samples, batch_size)):
        batch = labels[start : start + batch_size]
        generator = torch.Generator(device=generator_device).manual_seed(batch_seed(seed, k))
        images, latent = sample(batch, generator)
        latents.append(latent.flatten(1).double().cpu())
        if extractor is not None and start < num_fid:
            fid_images.append(_uint8(images[: num_fid - start]).cpu())
        if start < 2 * num_classes:
            grid.append(((images.clamp(-1, 1) + 1) / 2).cpu())
    mu, sigma = _gaussian(torch.cat(latents).numpy())
    metrics = {
        "latent_fd": frechet_distance(mu, sigma, reference.latent_mu, reference.latent_sigma),
        "num_samples": num_samples,
        "num_classes": num_classes,
    }
    if extractor is not None:
        images = torch.cat(fid_images)
        acts = [extractor(images[i : i + batch_size].to(device)).double().cpu() for i in range(0, num_fid, batch_size)]
        mu, sigma = _gaussian(torch.cat(acts).numpy())
        metrics["num_fid_samples"] = num_fid
        metrics["fid"] = frechet_distance(mu, sigma, reference.inception_mu, reference.inception_sigma)
    shown = torch.cat(grid)[: 2 * num_classes] if num_classes <= 16 else torch.cat(grid)[:16]
    make_image_grid(shown, nrow=min(num_classes, 16)).save(run_dir / "bench_samples.png")
    if cache:
        cached.write_text(json.dumps({"key": key, "metrics": metrics}, indent=2, sort_keys=True))
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------------------------


def load_generator_model(kind: str, run_dir_or_model) -> torch.nn.Module:
    """The trained network of a saved run (the DiT transformer, or LlamaGen), or ``run_dir_or_model`` if a module."""
    if isinstance(run_dir_or_model, torch.nn.Module):
        return run_dir_or_model
    path = Path(run_dir_or_model)
    if kind == "dit":
        from ..models.transformer_dit import LightningDiTTransformer2DModel

        return LightningDiTTransformer2DModel.from_pretrained(path, subfolder="transformer")
    from ..models.llamagen import LlamaGenForImageGeneration

    return LlamaGenForImageGeneration.from_pretrained(path)


def _cpu_attention_flops() -> dict:
    """FLOP formulas for the CPU flash-attention kernels, which ``FlopCounterMode`` does not count by itself (it
    knows the CUDA ones), so CPU and GPU counts agree. Causal masks are counted as full attention, as torch does."""
    from torch.utils import flop_counter

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return mapping


def training_flops(kind: str, run_dir_or_model, train: dict) -> float:
    """Training FLOPs of one optimizer step: one forward + backward of the generator (with its REPA projector and
    loss) on ``train_batch_size x gradient_accumulation_steps`` random inputs of the model's shape, counted with
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention
    with causal masks counted as full; 2 FLOPs per multiply-add).

    Not counted, because both kinds pay them equally (same tokenizer, same images) or they are negligible: the
    frozen tokenizer's encoding and the frozen REPA encoder's forward (both zero with precomputed latents/tokens),
    the optimizer and EMA updates (O(parameters)), elementwise ops and data loading. Per process: multiply by the
    number of processes for the global step.
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_kind(kind)
    batch = int(train.get("train_batch_size", 0)) * int(train.get("gradient_accumulation_steps", 1))
    if batch < 1:
        raise ValueError(
            f"train_batch_size must be >= 1 to count training FLOPs, got {train.get('train_batch_size')}."
        )
    model = load_generator_model(kind, run_dir_or_model).train()
    gen = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()) as counter:
        if kind == "dit":
            from ..training.flow_matching import flow_matching_loss, prepare_flow_matching_inputs

            cfg = model.config
            latents = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
            noisy, t, target = prepare_flow_matching_inputs(latents.to(device))
            labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
            use_repa = cfg.repa_feature_dim is not None
            out = model(noisy, t, labels, return_repa_features=use_repa)
            loss = flow_matching_loss(out.sample, target).loss
            if use_repa:
                loss = loss + out.repa_features.float().square().mean()  # same shapes as the cosine REPA term
        else:
            cfg = model.config
            n = cfg.image_token_size**2
            sizes = cfg.factorized_vocab_sizes
            if sizes:
                tokens = torch.stack([torch.randint(0, s, (batch, n), generator=gen) for s in sizes], -1)
            else:
                tokens = torch.randint(0, cfg.vocab_size, (batch, n), generator=gen)
            tokens = tokens.to(device)
            labels = torch.randint(0, cfg.num_classes, (batch,), generator=gen).to(device)
            use_repa = cfg.repa_feature_dim is not None
            out = model(class_labels=labels, image_tokens=tokens, labels=tokens, output_repa_features=use_repa)
            loss = out.loss
            if use_repa:
                loss = loss + out.repa_features.float().square().mean()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())
