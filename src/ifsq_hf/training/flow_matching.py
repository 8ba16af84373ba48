"""Linear flow matching for the DiT: path, targets, timestep sampling, loss and ODE samplers.

Time convention (the one place it is defined; the DiT, its training script and ``iFSQDiTPipeline`` use it):

* ``t`` in ``[0, 1]``, **``t = 0`` is pure noise and ``t = 1`` is data** (the official iFSQ / LightningDiT / SiT
  direction): ``x_t = t * data + (1 - t) * noise``.
* The model predicts the velocity ``dx_t/dt = data - noise`` and is fed ``t`` itself (not ``1000 * t``).
* Sampling integrates ``dx/dt = v`` from ``t = 0`` (noise) to ``t = 1`` (data).

diffusers' ``FlowMatchEulerDiscreteScheduler`` runs the other way: ``x = (1 - sigma) * data + sigma * noise``,
``sigma`` from 1 (noise) to 0 (data), ``timestep = 1000 * sigma`` and a model output ``noise - data``. So

* ``sigma = 1 - t`` (:func:`t_to_sigma`), and the scheduler's ``timestep`` is ``1000 * (1 - t)``;
* ``scheduler model_output = -velocity`` (:func:`velocity_to_scheduler_output`);
* the official timestep shift ``t -> s t / (1 + (s - 1) t)`` (:func:`shift_timesteps`) equals the scheduler's
  ``shift = 1 / s``. ``s = 1`` is no shift; ``s < 1`` spends more steps near the noise end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput

__all__ = [
    "FlowMatchingLoss",
    "classifier_free_guidance",
    "flow_matching_loss",
    "interpolate",
    "prepare_flow_matching_batch",
    "prepare_flow_matching_inputs",
    "sample_logit_normal_timesteps",
    "sample_ode",
    "shift_timesteps",
    "sigma_to_t",
    "t_to_sigma",
    "timestep_grid",
    "velocity_target",
    "velocity_to_scheduler_output",
]


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def interpolate(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Point on the linear path: ``x_t = t * data + (1 - t) * noise`` (``t`` scalar or ``(B,)``)."""
    t = _expand(t, data)
    return t * data + (1 - t) * noise


def velocity_target(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Regression target of the model: the constant velocity ``data - noise`` of the linear path."""
    return data - noise


def t_to_sigma(t: torch.Tensor | float) -> torch.Tensor | float:
    """Flow time (``1`` = data) to diffusers' noise level ``sigma`` (``1`` = noise)."""
    return 1 - t


def sigma_to_t(sigma: torch.Tensor | float) -> torch.Tensor | float:
    """Inverse of :func:`t_to_sigma`."""
    return 1 - sigma


def velocity_to_scheduler_output(velocity: torch.Tensor) -> torch.Tensor:
    """The model's ``data - noise`` as the ``noise - data`` that ``FlowMatchEulerDiscreteScheduler.step`` expects."""
    return -velocity


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


def shift_timesteps(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Official timestep shift ``t -> s t / (1 + (s - 1) t)``; ``shift = 1`` is the identity.

    Equivalent to diffusers' scheduler ``shift = 1 / s`` in sigma space. The official config writes ``0`` for
    "off"; here pass ``1`` (a non-positive value raises).
    """
    if shift <= 0:
        raise ValueError(f"timestep shift must be > 0 (1 = no shift), got {shift}.")
    return shift * t / (1 + (shift - 1) * t)


def timestep_grid(num_steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """``num_steps + 1`` times from 0 (noise) to 1 (data), uniform then shifted: the official Euler grid."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    return shift_timesteps(torch.linspace(0.0, 1.0, num_steps + 1, device=device, dtype=torch.float64), shift).float()


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


def classifier_free_guidance(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance_scale: float, active: bool | torch.Tensor = True
) -> torch.Tensor:
    """``v_u + s (v_c - v_u)`` on **all** channels (the official code guides only 3 of 4, spec §3.4).

    ``active`` (bool or ``(B,)`` bool) switches guidance off outside a guidance interval (returns ``v_cond``).
    """
    guided = v_uncond + guidance_scale * (v_cond - v_uncond)
    if isinstance(active, bool):
        return guided if active else v_cond
    return torch.where(_expand(active, v_cond).bool(), guided, v_cond)


@torch.no_grad()
def sample_ode(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int = 250,
    method: str = "euler",
    shift: float = 1.0,
    return_trajectory: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Integrate ``dx/dt = velocity_fn(x, t)`` from ``t = 0`` (``noise``) to ``t = 1`` (data).

    ``velocity_fn(x, t)`` gets ``t`` as a ``(B,)`` tensor. ``method``: ``"euler"`` (official: 250 steps) or
    ``"heun"`` (2nd order, two evaluations per step). Returns the final sample, or every state if
    ``return_trajectory``.
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown ODE method {method!r}; use 'euler' or 'heun'.")
    grid = timestep_grid(num_steps, shift, device=noise.device)
    x = noise
    states = [x]
    batch = noise.shape[0]
    for i in range(num_steps):
        t0, t1 = grid[i], grid[i + 1]
        dt = (t1 - t0).to(x.dtype)
        v0 = velocity_fn(x, t0.expand(batch))
        x_next = x + dt * v0
        if method == "heun":
            v1 = velocity_fn(x_next, t1.expand(batch))
            x_next = x + dt * 0.5 * (v0 + v1)
        x = x_next
        if return_trajectory:
            states.append(x)
    return states if return_trajectory else x
