"""The library's models: the iFSQ tokenizer and the DiT transformer (diffusers), LlamaGen (transformers)."""

from .autoencoder_ifsq import iFSQAutoencoder, iFSQAutoencoderOutput, iFSQEncoderOutput
from .llamagen import LlamaGenConfig, LlamaGenForImageGeneration, LlamaGenImageGenerationOutput, LlamaGenModel
from .transformer_dit import LightningDiTTransformer2DModel, LightningDiTTransformer2DModelOutput

__all__ = [
    "LightningDiTTransformer2DModel",
    "LightningDiTTransformer2DModelOutput",
    "LlamaGenConfig",
    "LlamaGenForImageGeneration",
    "LlamaGenImageGenerationOutput",
    "LlamaGenModel",
    "iFSQAutoencoder",
    "iFSQAutoencoderOutput",
    "iFSQEncoderOutput",
]
