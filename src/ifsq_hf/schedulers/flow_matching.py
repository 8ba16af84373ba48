"""Linear flow matching: the time convention, the path, the sampling grid and the glue to diffusers' scheduler.

Time convention (the one place it is defined; the DiT, its training code and ``iFSQDiTPipeline`` use it):

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

Training-only pieces (timestep sampling, the loss) live in :mod:`ifsq_hf.training.flow_matching`.
"""

from __future__ import annotations

import torch

__all__ = [
    "classifier_free_guidance",
    "interpolate",
    "shift_timesteps",
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


def velocity_to_scheduler_output(velocity: torch.Tensor) -> torch.Tensor:
    """The model's ``data - noise`` as the ``noise - data`` that ``FlowMatchEulerDiscreteScheduler.step`` expects."""
    return -velocity


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


def classifier_free_guidance(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance_scale: float, active: bool | torch.Tensor = True
) -> torch.Tensor:
    """``v_u + s (v_c - v_u)`` on **all** channels (the official ``forward_with_cfg`` in ``dit/models/dit.py``
    guides only channels ``[:3]``, a quirk inherited from DiT/LightningDiT that is wrong for 4-channel latents).

    ``active`` (bool or ``(B,)`` bool) switches guidance off outside a guidance interval (returns ``v_cond``).
    """
    guided = v_uncond + guidance_scale * (v_cond - v_uncond)
    if isinstance(active, bool):
        return guided if active else v_cond
    return torch.where(_expand(active, v_cond).bool(), guided, v_cond)
