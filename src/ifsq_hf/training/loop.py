"""The training loop's mechanics: the resumable batch stream and what happens after each optimizer step (progress,
scalars, checkpoints, validation)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .checkpointing import TrainingState, save_checkpoint
from .divergence import check_finite_loss

__all__ = ["batch_stream", "batches_per_epoch", "on_optimizer_step", "progress_bar"]


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


def batches_per_epoch(dataloader) -> int | None:
    """Batches in one epoch, or ``None`` for a streaming dataset of unknown length."""
    try:
        return len(dataloader)
    except TypeError:
        return None


def progress_bar(accelerator: Accelerator, args: argparse.Namespace, state: TrainingState):
    """A step progress bar on the local main process that starts where a resumed run stands."""
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
    *,
    ema=None,
    ema_source: torch.nn.Module | None = None,
    lr_scheduler=None,
) -> None:
    """After each optimizer step: the EMA update (``ema.step(ema_source)``), progress bar, scalars every
    ``--logging_steps`` (``logs`` may be a callable, so costlier statistics are only computed then; with
    ``lr_scheduler`` the learning rate is logged as ``train/lr``), checkpoint every ``--checkpointing_steps`` (all
    processes), and ``validate(step)`` every ``--validation_steps`` on the main process."""
    step = state.global_step
    if ema is not None:
        ema.step(ema_source)
    progress.update(1)
    if step % args.logging_steps == 0 or step == 1:
        loss_value = check_finite_loss(loss, step, accelerator)  # raises on NaN/Inf, naming the step
        scalars = dict(logs() if callable(logs) else logs)
        if lr_scheduler is not None:
            scalars["train/lr"] = lr_scheduler.get_last_lr()[0]
        scalars["train/loss"] = loss_value
        accelerator.log(scalars, step=step)
        progress.set_postfix(loss=f"{loss_value:.4g}")
    if step % args.checkpointing_steps == 0:
        save_checkpoint(accelerator, args.output_dir, state, args.checkpoints_total_limit)
    due = bool(args.validation_steps) and step % args.validation_steps == 0
    if validate is not None and due and accelerator.is_main_process:
        validate(step)
