"""Exponential moving average of a model, for diffusers and transformers models alike.

diffusers' ``EMAModel`` rebuilds the model with ``from_config`` when saving, which transformers models do not
have; keeping the average in a frozen copy of the model sidesteps that: the copy *is* the EMA model and saves
itself with its own ``save_pretrained``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """EMA weights ``ema = decay * ema + (1 - decay) * param`` held in a frozen deep copy of ``model``.

    Args:
        model: the (unwrapped) model to average; copied once at construction (the official recipes start the
            average from the initial weights, with no warm-up).
        decay: the EMA decay (0.999 for the tokenizer, 0.9999 for the generators in the official recipes).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages track faster.
        device: where the copy lives (default: the model's device).

    Register it with ``accelerator.register_for_checkpointing(ema)`` so it is saved and restored with the
    training state.
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, warmup: bool = False, device: torch.device | None = None
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}.")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self._names = [name for name, _ in self.model.named_parameters()]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (the unwrapped training model) into the average."""
        params = dict(model.named_parameters())
        missing = [n for n in self._names if n not in params]
        if missing:
            raise ValueError(
                f"the model passed to EMA.step lacks parameters {missing[:5]}; pass the unwrapped model "
                "(accelerator.unwrap_model(model))."
            )
        ema_params = [p for _, p in self.model.named_parameters()]
        new = [params[n].detach().to(device=e.device, dtype=e.dtype) for n, e in zip(self._names, ema_params)]
        torch._foreach_lerp_(ema_params, new, 1.0 - self.current_decay())
        buffers = dict(model.named_buffers())
        for name, buf in self.model.named_buffers():
            if name in buffers:
                buf.copy_(buffers[name])
        self.num_updates += 1

    def to(self, device: torch.device | str) -> ExponentialMovingAverage:
        self.model.to(device)
        return self

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Save the averaged model with its own ``save_pretrained`` (diffusers or transformers format)."""
        self.model.save_pretrained(save_directory, **kwargs)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "model": self.model.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.model.load_state_dict(state["model"])
