"""Flow-matching training for the DiT: logit-normal timesteps, the noisy inputs and their velocity targets, and the
loss. The time convention and the path are defined once in :mod:`ifsq_hf.schedulers.flow_matching` (``t = 0``
noise, ``t = 1`` data, the model predicts ``data - noise``); the pipeline samples with the same convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput

from ..schedulers.flow_matching import interpolate, velocity_target

__all__ = [
    "FlowMatchingLoss",
    "flow_matching_loss",
    "prepare_flow_matching_batch",
    "prepare_flow_matching_inputs",
    "sample_logit_normal_timesteps",
]


def sample_logit_normal_timesteps(
    batch_size: int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``t = sigmoid(N(mean, std))``: the official schedule (mean 0, std 1) concentrates training on mid times.

    Symmetric around ``t = 0.5`` for ``mean = 0``, so the direction convention does not change it.
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    z = torch.randn(batch_size, generator=generator, device=device)
    return torch.sigmoid(z * std + mean)


def prepare_flow_matching_inputs(
    data: torch.Tensor,
    noise: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw noise and logit-normal times (unless given) and return ``(x_t, t, target_velocity)``."""
    if noise is None:
        noise = torch.randn(data.shape, generator=generator, device=data.device, dtype=data.dtype)
    if t is None:
        t = sample_logit_normal_timesteps(data.shape[0], logit_mean, logit_std, generator, data.device)
    x_t, target = prepare_flow_matching_batch(data, t, noise=noise)
    return x_t, t.to(data.device), target


def prepare_flow_matching_batch(
    data: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, target_velocity)`` for given times ``t`` (``(B,)``), drawing the noise unless given."""
    if noise is None:
        noise = torch.randn(data.shape, generator=generator, device=data.device, dtype=data.dtype)
    return interpolate(data, noise, t), velocity_target(data, noise)


@dataclass
class FlowMatchingLoss(BaseOutput):
    """``loss = mse + cosine_weight * cosine`` (batch means); the terms are returned (detached) for logging.

    Attribute or key access (``out.loss`` / ``out["loss"]``), like every diffusers output.
    """

    loss: torch.Tensor
    mse: torch.Tensor
    cosine: torch.Tensor


def flow_matching_loss(prediction: torch.Tensor, target: torch.Tensor, cosine_weight: float = 1.0) -> FlowMatchingLoss:
    """Velocity regression loss of the official recipe, in fp32.

    ``mse`` = mean squared error over all elements; ``cosine`` = mean over samples and positions of
    ``1 - cos(prediction, target)`` along the channel axis (dim 1): it rewards the right direction of the
    velocity independently of its norm. The official run uses ``cosine_weight = 1``; ``0`` gives plain MSE.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape.")
    pred, tgt = prediction.float(), target.float()
    mse = (pred - tgt).pow(2).mean()
    if cosine_weight:
        cosine = (1 - F.cosine_similarity(pred, tgt, dim=1, eps=1e-8)).mean()
    else:
        cosine = torch.zeros((), device=pred.device)
    return FlowMatchingLoss(loss=mse + cosine_weight * cosine, mse=mse.detach(), cosine=cosine.detach())
