"""ifsq-hf: iFSQ tokenizers, DiT and LlamaGen-REPA for the Hugging Face ecosystem."""

from .models import (
    LightningDiTTransformer2DModel,
    LightningDiTTransformer2DModelOutput,
    LlamaGenConfig,
    LlamaGenForImageGeneration,
    LlamaGenImageGenerationOutput,
    LlamaGenModel,
    iFSQAutoencoder,
    iFSQAutoencoderOutput,
    iFSQEncoderOutput,
)
from .pipelines import iFSQDiTPipeline
from .quantization import (
    FiniteScalarQuantizer,
    QuantizerOutput,
    UtilizationStats,
    code_usage,
    codebook_perplexity,
    levels_from_bits,
    per_dim_bin_histogram,
    utilization_stats,
)

__version__ = "0.1.0"

__all__ = [
    "FiniteScalarQuantizer",
    "LightningDiTTransformer2DModel",
    "LightningDiTTransformer2DModelOutput",
    "LlamaGenConfig",
    "LlamaGenForImageGeneration",
    "LlamaGenImageGenerationOutput",
    "LlamaGenModel",
    "QuantizerOutput",
    "UtilizationStats",
    "code_usage",
    "codebook_perplexity",
    "iFSQAutoencoder",
    "iFSQAutoencoderOutput",
    "iFSQDiTPipeline",
    "iFSQEncoderOutput",
    "levels_from_bits",
    "per_dim_bin_histogram",
    "utilization_stats",
]
