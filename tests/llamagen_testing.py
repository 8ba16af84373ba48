"""The tiny LlamaGen the model tests share."""

import torch

from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration


def tiny_llamagen(attn_implementation: str | None = None, **overrides) -> LlamaGenForImageGeneration:
    """The ``tiny`` preset in eval mode with random (not zero-initialised) heads, so that decoding is not trivially
    constant; ``overrides`` go to the config."""
    config = LlamaGenConfig.from_preset("tiny", **overrides)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    model = LlamaGenForImageGeneration(config)
    for head in model.lm_head if isinstance(model.lm_head, torch.nn.ModuleList) else [model.lm_head]:
        torch.nn.init.normal_(head.weight, std=0.5)
    return model.eval()
