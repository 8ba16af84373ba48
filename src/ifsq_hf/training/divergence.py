"""Stop a diverging run instead of saving it as a success.

A learning rate that is too high turns the loss, then the weights, into NaN/Inf; the optimizer keeps stepping and
the run would end with a saved model full of NaN. The checks here raise :class:`TrainingDivergedError` naming the
step. They synchronise the device once, so the loop calls them only where it synchronises anyway: on logging steps
(the loss is read for the log), before every checkpoint, and before the final save (weights), which therefore never
replace a good checkpoint with a diverged one. Between two checks a NaN cannot go unnoticed: once the weights are
NaN they stay NaN, and the next check sees them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["TrainingDivergedError", "check_finite_loss", "check_finite_weights", "nonfinite_parameters"]

_ADVICE = (
    "Lower --learning_rate (or add --lr_warmup_steps / --max_grad_norm), or try --mixed_precision no; "
    "resume from the last checkpoint with --resume_from_checkpoint latest."
)


class TrainingDivergedError(FloatingPointError):
    """The loss or the weights stopped being finite; the message names the step."""


def check_finite_loss(loss: torch.Tensor | float, step: int, accelerator=None) -> float:
    """Return the loss as a float; raise :class:`TrainingDivergedError` if it (on any process) is NaN/Inf.

    With an ``accelerator`` the flag is reduced over processes, so every process raises together instead of one
    raising while the others wait in the next collective. Call on every process at the same steps.
    """
    value = float(loss.detach().float()) if torch.is_tensor(loss) else float(loss)
    bad = not math.isfinite(value)
    if accelerator is not None and accelerator.num_processes > 1:
        flag = torch.tensor([1.0 if bad else 0.0], device=accelerator.device)
        bad = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    if bad:
        raise TrainingDivergedError(
            f"training diverged at step {step}: the loss is {value if not math.isfinite(value) else 'NaN/Inf on another process'}"
            f". Nothing was saved for this step. {_ADVICE}"
        )
    return value


def nonfinite_parameters(modules: Iterable[nn.Module] | nn.Module) -> list[tuple[str, int]]:
    """``(name, count)`` of every parameter or floating buffer holding NaN/Inf (one device sync in total)."""
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    names, counts = [], []
    for module in modules:
        prefix = f"{type(module).__name__}." if len(modules) > 1 else ""
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and tensor.numel():
                names.append(prefix + name)
                counts.append((~torch.isfinite(tensor.detach())).sum())
    if not counts:
        return []
    totals = torch.stack([c.to(counts[0].device) for c in counts]).tolist()
    return [(n, int(c)) for n, c in zip(names, totals) if c]


def check_finite_weights(modules: Iterable[nn.Module] | nn.Module, step: int, what: str = "the weights") -> None:
    """Raise :class:`TrainingDivergedError` if any parameter/buffer of ``modules`` holds NaN/Inf."""
    bad = nonfinite_parameters(modules)
    if bad:
        total = sum(c for _, c in bad)
        shown = ", ".join(f"{n} ({c})" for n, c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise TrainingDivergedError(
            f"training diverged by step {step}: {what} hold {total:,} non-finite values in {len(bad)} tensors "
            f"[{shown}]. They were not saved, so the last checkpoint on disk is the last good one. {_ADVICE}"
        )
