"""Run set-up the training scripts share: the accelerator (project layout, seeds, resume-exact data order), its
trackers (hyper-parameters, image grids) and resuming from a checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from PIL import Image

from ..utils.import_utils import require
from .checkpointing import TrainingState, load_checkpoint, resolve_resume_checkpoint
from .run_config import tracker_config

__all__ = ["create_accelerator", "init_trackers", "log_image_grid", "resume_if_requested"]

logger = logging.getLogger(__name__)


def create_accelerator(args: argparse.Namespace) -> Accelerator:
    """An accelerator with the project folder layout, seedable data order (resume-exact) and trackers."""
    output_dir = Path(args.output_dir)
    project_config = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir))
    report_to = None if args.report_to in (None, "none") else args.report_to
    if report_to == "tensorboard":
        require("tensorboard", "train")  # a missing TensorBoard is reported with the extra that brings it
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
    # No secrets or local paths in what trackers store (TensorBoard's hparams.yml is uploaded with the folder).
    accelerator.init_trackers(args.tracker_project_name or default_project, config=tracker_config(args))


def log_image_grid(accelerator, tag: str, grid: Image.Image, step: int) -> None:
    """Log a grid to every tracker that takes images (TensorBoard's ``add_image``; others via ``log_images``)."""
    array = np.asarray(grid.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(tag, array, step, dataformats="HWC")
            tracker.writer.flush()
        elif hasattr(tracker, "log_images"):
            tracker.log_images({tag: [array]}, step=step)


def resume_if_requested(accelerator: Accelerator, args: argparse.Namespace) -> TrainingState:
    """Load ``--resume_from_checkpoint`` (``latest`` or a folder) and return where training stopped."""
    path = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if path is None:
        if args.resume_from_checkpoint:
            accelerator.print(f"No checkpoint in {args.output_dir}: starting a new run.")
        return TrainingState()
    accelerator.print(f"Resuming from {path}")
    return load_checkpoint(accelerator, path)
