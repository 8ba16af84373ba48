"""What the three training scripts share: losses, REPA, flow matching, EMA, checkpointing, precompute, sampling,
logging. Each submodule has one job; the most used names are re-exported here."""

from .checkpointing import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from .ema import ExponentialMovingAverage
from .flow_matching import (
    FlowMatchingLoss,
    flow_matching_loss,
    prepare_flow_matching_inputs,
    sample_logit_normal_timesteps,
    sample_ode,
)
from .losses import NLayerDiscriminator, TokenizerLoss
from .precompute import PrecomputedLatentDataset, encode_image_dataset
from .repa import load_repa_encoder, repa_projection_loss

__all__ = [
    "ExponentialMovingAverage",
    "FlowMatchingLoss",
    "NLayerDiscriminator",
    "PrecomputedLatentDataset",
    "TokenizerLoss",
    "TrainingState",
    "encode_image_dataset",
    "flow_matching_loss",
    "latest_checkpoint",
    "load_checkpoint",
    "load_repa_encoder",
    "prepare_flow_matching_inputs",
    "repa_projection_loss",
    "sample_logit_normal_timesteps",
    "sample_ode",
    "save_checkpoint",
]
