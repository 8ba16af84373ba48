"""Command-line arguments the training scripts share (diffusers-example names) and their early checks."""

from __future__ import annotations

import argparse
import logging
import os

from .data_sources import check_data_args
from .run_config import ExplicitValue

__all__ = ["add_common_training_args", "add_image_dataset_args", "validate_common_args"]

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
    check_data_args(args)  # one data source, a sane --validation_split
    if args.push_to_hub and args.hub_token is None and not os.environ.get("HF_TOKEN"):
        logger.warning("--push_to_hub without --hub_token: using the token from `hf auth login` / HF_TOKEN.")
