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

# With this package imported, the Auto classes know the model (no trust_remote_code needed) ...
AutoConfig.register(LlamaGenConfig.model_type, LlamaGenConfig, exist_ok=True)
AutoModel.register(LlamaGenConfig, LlamaGenModel, exist_ok=True)
AutoModelForCausalLM.register(LlamaGenConfig, LlamaGenForImageGeneration, exist_ok=True)
# ... and without it, a saved folder carries `configuration_llamagen.py`, `modeling_llamagen.py` and an `auto_map`
# (transformers' custom-code mechanism), so `Auto*.from_pretrained(folder_or_repo, trust_remote_code=True)` loads it
# anywhere. The modeling file therefore imports only torch, transformers and `.configuration_llamagen`.
LlamaGenConfig.register_for_auto_class("AutoConfig")
LlamaGenModel.register_for_auto_class("AutoModel")
LlamaGenForImageGeneration.register_for_auto_class("AutoModelForCausalLM")
