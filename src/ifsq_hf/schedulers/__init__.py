"""The flow-matching time convention and its mapping onto diffusers' ``FlowMatchEulerDiscreteScheduler``."""

from .flow_matching import (
    classifier_free_guidance,
    interpolate,
    shift_timesteps,
    t_to_sigma,
    timestep_grid,
    velocity_target,
    velocity_to_scheduler_output,
)

__all__ = [
    "classifier_free_guidance",
    "interpolate",
    "shift_timesteps",
    "t_to_sigma",
    "timestep_grid",
    "velocity_target",
    "velocity_to_scheduler_output",
]
