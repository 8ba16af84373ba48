"""Mechanics the three training scripts share: arguments, the accelerator, the resumable batch stream,
optimizer parameter groups and run bookkeeping. The scripts stay readable top to bottom; the details live here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch import nn

from .checkpointing import TrainingState, load_checkpoint, resolve_resume_checkpoint, save_checkpoint
from .data_sources import check_data_args, image_dataset_from_args
from .divergence import check_finite_loss
from .run_config import ExplicitValue

__all__ = [
    "add_common_training_args",
    "add_image_dataset_args",
    "all_reduce_gradients",
    "apply_gradients",
    "batch_stream",
    "batches_per_epoch",
    "build_image_dataset",
    "count_parameters",
    "create_accelerator",
    "create_lr_scheduler",
    "init_trackers",
    "learning_rate",
    "make_dataloader_from_args",
    "on_optimizer_step",
    "progress_bar",
    "resume_if_requested",
    "save_json",
    "validate_common_args",
    "validation_class_labels",
    "weight_decay_param_groups",
]

logger = logging.getLogger(__name__)


def add_common_training_args(
    parser: argparse.ArgumentParser,
    *,
    learning_rate: float,
    train_batch_size: int,
    ema_decay: float,
    max_train_steps: int,
    checkpointing_steps: int = 500,
    validation_steps: int = 500,
    adam_beta2: float = 0.999,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
) -> argparse.ArgumentParser:
    """The diffusers-example arguments every script takes; defaults are per script (the official recipes)."""
    g = parser.add_argument_group("run")
    g.add_argument("--output_dir", type=str, required=True, help="Where checkpoints, logs and the model go.")
    g.add_argument("--seed", type=int, default=1234, help="Global seed (each process adds its rank).")
    g.add_argument("--report_to", type=str, default="tensorboard", help="'tensorboard', 'wandb', 'all' or 'none'.")
    g.add_argument("--logging_dir", type=str, default="logs", help="TensorBoard folder, relative to output_dir.")
    g.add_argument("--tracker_project_name", type=str, default=None)
    g.add_argument("--logging_steps", type=int, default=10, help="Log scalars every N optimizer steps.")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--train_batch_size", type=int, default=train_batch_size, help="Per-process batch size.")
    g.add_argument("--max_train_steps", type=int, default=max_train_steps, help="Total optimizer steps.")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    g.add_argument("--learning_rate", type=float, default=learning_rate)
    g.add_argument(
        "--scale_lr", action="store_true", help="Multiply the learning rate by batch x accumulation x processes."
    )
    g.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant",
        help="diffusers get_scheduler name: constant, constant_with_warmup, cosine, linear, ...",
    )
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=adam_beta2)
    g.add_argument("--adam_weight_decay", type=float, default=weight_decay)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument(
        "--max_grad_norm",
        type=float,
        default=max_grad_norm,
        help="Gradient clipping norm; 0 disables clipping.",
    )
    g.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    g.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g.add_argument("--dataloader_num_workers", type=int, default=0)

    g = parser.add_argument_group("EMA")
    g.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="Keep an EMA of weights.")
    g.add_argument("--ema_decay", type=float, default=ema_decay)

    g = parser.add_argument_group("checkpoints and validation")
    g.add_argument("--checkpointing_steps", type=int, default=checkpointing_steps)
    g.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    g.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="'latest' (newest complete checkpoint in output_dir; starts fresh if none) or a checkpoint folder.",
    )
    g.add_argument("--validation_steps", type=int, default=validation_steps, help="Validate every N steps (0: off).")

    g = parser.add_argument_group("hub")
    g.add_argument("--push_to_hub", action="store_true", help="Upload the final folder and its model card.")
    g.add_argument("--hub_model_id", type=str, default=None, help="Repo id (default: the output folder's name).")
    g.add_argument("--hub_token", type=str, default=None)
    g.add_argument("--hub_private_repo", action="store_true")
    return parser


def add_image_dataset_args(parser: argparse.ArgumentParser, *, resolution: int) -> argparse.ArgumentParser:
    """Image source: the bundled real photos (default, offline), a local image folder, or a Hub dataset."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset_name", type=str, default=None, help="Hub dataset id or a local imagefolder path (datasets)."
    )
    g.add_argument("--train_data_dir", type=str, default=None, help="Local folder of images (imagefolder).")
    g.add_argument("--dataset_config_name", type=str, default=None)
    g.add_argument("--image_column", type=str, default=None, help="Default: the first Image feature.")
    g.add_argument("--label_column", type=str, default=None, help="Default: the first ClassLabel feature.")
    g.add_argument("--streaming", action="store_true", help="Stream the dataset (large sets).")
    g.add_argument("--resolution", type=int, default=resolution, action=ExplicitValue)
    g.add_argument(
        "--validation_split",
        type=float,
        default=None,
        help="Hold out this fraction of the training images for validation (when the source has no val/test split).",
    )
    g.add_argument("--center_crop", action="store_true", help="Center crop instead of random crop.")
    g.add_argument("--random_flip", action="store_true", help="Random horizontal flips.")
    g.add_argument(
        "--num_bundled_samples",
        type=int,
        default=4096,
        help="Crops per epoch when training on the bundled photos (no --dataset_name/--train_data_dir).",
    )
    g.add_argument(
        "--bundled_split",
        choices=["train", "test", "all"],
        default=None,
        help="Bundled photos: which photos to use (default: the 10 training photos; 'all' for generators).",
    )
    g.add_argument(
        "--bundled_photo_size",
        type=int,
        default=None,
        help="Bundled photos: resize each photo's shorter side to this before cropping (more content per crop).",
    )
    return parser


def build_image_dataset(args: argparse.Namespace, split: str = "train", *, train: bool = True):
    """The dataset chosen by ``add_image_dataset_args``: a Hub dataset / image folder, else the bundled photos.

    Items are ``{"pixel_values": (3, R, R) in [-1, 1], "labels": int}``. Training gets random crops and flips; the
    held-out split gets deterministic center (folder) or grid (bundled) crops.
    """
    return image_dataset_from_args(args, split, train=train)


def make_dataloader_from_args(
    dataset, args: argparse.Namespace, *, shuffle: bool, collate_fn=None
) -> torch.utils.data.DataLoader:
    """A DataLoader with the run's batch size and workers; streaming (iterable) datasets are never shuffled here.

    Image datasets use ``collate_images``; pass ``collate_fn`` for others (``None`` there means torch's default).
    """
    from ..data import collate_images
    from .precompute import PrecomputedLatentDataset

    if collate_fn is None and not isinstance(dataset, PrecomputedLatentDataset):
        collate_fn = collate_images
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


def validate_common_args(args: argparse.Namespace) -> None:
    """Fail early, with the fix in the message, on arguments that would only break hours into a run."""
    positive = ["train_batch_size", "max_train_steps", "gradient_accumulation_steps", "checkpointing_steps"]
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate}.")
    if not 0.0 <= args.ema_decay <= 1.0:
        raise ValueError(f"--ema_decay must lie in [0, 1], got {args.ema_decay}.")
    if getattr(args, "resolution", 1) < 1:
        raise ValueError(f"--resolution must be >= 1, got {args.resolution}.")
    check_data_args(args)
    if args.push_to_hub and args.hub_token is None and not os.environ.get("HF_TOKEN"):
        logger.warning("--push_to_hub without --hub_token: using the token from `hf auth login` / HF_TOKEN.")


def create_accelerator(args: argparse.Namespace) -> Accelerator:
    """An accelerator with the project folder layout, seedable data order (resume-exact) and trackers."""
    output_dir = Path(args.output_dir)
    project_config = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir))
    report_to = None if args.report_to in (None, "none") else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=project_config,
        # The shuffling order is a function of (seed, epoch), so a resumed run sees the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state)
    # Different randomness per process (noise, dropout), reproducible per (seed, rank).
    set_seed(args.seed, device_specific=True)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    return accelerator


def init_trackers(accelerator: Accelerator, args: argparse.Namespace, default_project: str) -> None:
    """Start TensorBoard (or the chosen tracker) with the run's arguments as hyper-parameters."""
    if not accelerator.is_main_process or accelerator.log_with is None or not accelerator.log_with:
        return
    from .run_config import tracker_config  # no secrets or local paths in what trackers store (and may upload)

    accelerator.init_trackers(args.tracker_project_name or default_project, config=tracker_config(args))


def resume_if_requested(accelerator: Accelerator, args: argparse.Namespace) -> TrainingState:
    """Load ``--resume_from_checkpoint`` (``latest`` or a folder) and return where training stopped."""
    path = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if path is None:
        if args.resume_from_checkpoint:
            accelerator.print(f"No checkpoint in {args.output_dir}: starting a new run.")
        return TrainingState()
    accelerator.print(f"Resuming from {path}")
    return load_checkpoint(accelerator, path)


def batch_stream(
    accelerator: Accelerator, dataloader, state: TrainingState, gradient_accumulation_steps: int
) -> Iterator[tuple[int, int, object]]:
    """Yield ``(epoch, batch_index, batch)`` forever, starting where ``state`` stopped.

    Epochs reshuffle deterministically (seedable sampler), datasets with ``set_epoch`` get the epoch (for
    per-sample seeded augmentation), and a resumed epoch skips the batches already consumed.
    """
    epoch = state.epoch
    skip = state.step_in_epoch * gradient_accumulation_steps
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        dataset = getattr(dataloader, "dataset", None)
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        empty = True
        for i, batch in enumerate(loader, start=skip):
            empty = False
            yield epoch, i, batch
        if empty and skip == 0:
            raise ValueError("the training dataloader is empty: check the dataset and the batch size.")
        epoch += 1
        skip = 0


def all_reduce_gradients(accelerator: Accelerator, module: nn.Module) -> None:
    """Average ``module``'s gradients over processes, for a trained module that is not wrapped in DDP (the GAN
    discriminator, called inside the loss). A no-op on one process."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= accelerator.num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def learning_rate(args: argparse.Namespace, accelerator: Accelerator) -> float:
    """``--learning_rate``, times batch x accumulation x processes with ``--scale_lr``."""
    if not args.scale_lr:
        return args.learning_rate
    return args.learning_rate * args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes


def create_lr_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, accelerator: Accelerator):
    """diffusers' ``get_scheduler`` (constant, cosine, ...) stepped once per process per optimizer step."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )


def apply_gradients(
    accelerator: Accelerator,
    loss: torch.Tensor,
    parameters,
    optimizer: torch.optim.Optimizer,
    lr_scheduler=None,
    max_grad_norm: float | None = None,
) -> None:
    """Backward, clip (on synchronising micro-batches, if ``max_grad_norm``), step and zero: one accumulation
    micro-step inside ``accelerator.accumulate`` (the prepared optimizer only steps when gradients sync)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm:
        accelerator.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def progress_bar(accelerator: Accelerator, args: argparse.Namespace, state: TrainingState):
    """A step progress bar on the local main process that starts where a resumed run stands."""
    from tqdm.auto import tqdm

    return tqdm(
        total=args.max_train_steps,
        initial=state.global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )


def on_optimizer_step(
    accelerator: Accelerator,
    args: argparse.Namespace,
    state: TrainingState,
    progress,
    loss: torch.Tensor,
    logs: dict | Callable[[], dict],
    validate: Callable[[int], object] | None,
) -> None:
    """After each optimizer step: progress bar, scalars every ``--logging_steps`` (``logs`` may be a callable, so
    costlier statistics are only computed then), checkpoint every ``--checkpointing_steps`` (all processes), and
    ``validate(step)`` every ``--validation_steps`` on the main process."""
    step = state.global_step
    progress.update(1)
    if step % args.logging_steps == 0 or step == 1:
        loss_value = check_finite_loss(loss, step, accelerator)  # raises on NaN/Inf, naming the step
        scalars = dict(logs() if callable(logs) else logs)
        scalars["train/loss"] = loss_value
        accelerator.log(scalars, step=step)
        progress.set_postfix(loss=f"{loss_value:.4g}")
    if step % args.checkpointing_steps == 0:
        save_checkpoint(accelerator, args.output_dir, state, args.checkpoints_total_limit)
    due = bool(args.validation_steps) and step % args.validation_steps == 0
    if validate is not None and due and accelerator.is_main_process:
        validate(step)


def batches_per_epoch(dataloader) -> int | None:
    """Batches in one epoch, or ``None`` for a streaming dataset of unknown length."""
    try:
        return len(dataloader)
    except TypeError:
        return None


def validation_class_labels(id2label: dict[int, str], num_classes: int) -> list[int]:
    """``num_classes`` class ids spread evenly over the label set (all of them when there are fewer)."""
    ids = sorted(int(k) for k in id2label)
    if num_classes >= len(ids):
        return ids
    step = len(ids) / num_classes
    return [ids[int(i * step)] for i in range(num_classes)]


def weight_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices/embeddings (ndim >= 2); norms and biases get none (upstream LlamaGen's rule)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save_json(obj, path: str | os.PathLike) -> None:
    """Write JSON atomically (temp file + rename), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
