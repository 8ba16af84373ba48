"""diffusers pipelines: class-conditional generation with a LightningDiT on iFSQ latents."""

from .pipeline_ifsq_dit import iFSQDiTPipeline

__all__ = ["iFSQDiTPipeline"]
