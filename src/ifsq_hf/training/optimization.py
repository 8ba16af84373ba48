"""The optimizer side of the training scripts: learning rate, its schedule, weight-decay groups and one
accumulation micro-step."""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from torch import nn

__all__ = ["apply_gradients", "create_lr_scheduler", "learning_rate", "weight_decay_param_groups"]


def learning_rate(args: argparse.Namespace, accelerator: Accelerator) -> float:
    """``--learning_rate``, times batch x accumulation x processes with ``--scale_lr``."""
    if not args.scale_lr:
        return args.learning_rate
    return args.learning_rate * args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes


def create_lr_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, accelerator: Accelerator):
    """diffusers' ``get_scheduler`` (constant, cosine, ...) stepped once per process per optimizer step."""
    return get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )


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
