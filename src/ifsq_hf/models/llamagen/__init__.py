"""LlamaGen for iFSQ tokens as a transformers model; importing this package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig
from .modeling_llamagen import (
    LlamaGenForImageGeneration,
    LlamaGenImageGenerationOutput,
    LlamaGenModel,
    LlamaGenModelOutput,
    LlamaGenPreTrainedModel,
)

__all__ = [
    "LLAMAGEN_PRESETS",
    "LlamaGenConfig",
    "LlamaGenForImageGeneration",
    "LlamaGenImageGenerationOutput",
    "LlamaGenModel",
    "LlamaGenModelOutput",
    "LlamaGenPreTrainedModel",
]

AutoConfig.register(LlamaGenConfig.model_type, LlamaGenConfig, exist_ok=True)
AutoModel.register(LlamaGenConfig, LlamaGenModel, exist_ok=True)
AutoModelForCausalLM.register(LlamaGenConfig, LlamaGenForImageGeneration, exist_ok=True)
