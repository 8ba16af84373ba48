"""Optional normalisation of the encoder's activations right before the FSQ bound (``pre_quant_norm=True``).

The iFSQ bound ``2 * sigmoid(1.6 z) - 1`` spreads ``z`` evenly over ``[-1, 1]`` only when ``z`` has roughly unit
variance; a trained encoder is free to pick any scale (measured: std 0.5-0.75 per channel, see docs/benchmark.md).
:class:`RunningChannelNorm` removes that freedom: every channel is shifted and scaled by running estimates of its
mean and variance, with no learnable affine, so the activations entering the bound have unit variance by
construction.

Why running statistics, not batch or instance statistics: the same image must give the same tokens whatever batch
it is in (batch statistics would not) and must keep its own mean colour and contrast (instance statistics over the
spatial grid would erase them, and would break tiled encoding). The statistics are updated from every training
batch (detached, exponential average) and used as constants in both training and inference, so training and
inference run the same function, tiling and slicing stay exact, and the buffers are saved with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningChannelNorm"]


class RunningChannelNorm(nn.Module):
    """``(z - running_mean) / sqrt(running_var + eps)`` per channel of ``(B, C, ...)``; no learnable parameters.

    Args:
        num_channels: ``C``.
        momentum: weight of each training batch in the running estimates (0.05: follows the encoder's scale
            within tens of steps, smooth across batches).
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}.")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    @torch.no_grad()
    def _update(self, z: torch.Tensor) -> None:
        dims = [d for d in range(z.ndim) if d != 1]
        mean = z.float().mean(dim=dims)
        var = z.float().var(dim=dims, unbiased=False)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var, self.momentum)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim < 2 or z.shape[1] != self.running_mean.numel():
            raise ValueError(f"expected (B, {self.running_mean.numel()}, ...) activations, got {tuple(z.shape)}.")
        if self.training and torch.is_grad_enabled():
            self._update(z)
        shape = (1, -1) + (1,) * (z.ndim - 2)
        mean = self.running_mean.view(shape).to(z.dtype)
        scale = torch.rsqrt(self.running_var + self.eps).view(shape).to(z.dtype)
        return (z - mean) * scale

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, momentum={self.momentum}, eps={self.eps}"
