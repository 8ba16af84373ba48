"""Convert official iFSQ checkpoints (tokenizer, DiT, LlamaGen) and upstream LlamaGen checkpoints into folders that
``from_pretrained`` loads.

Every converter opens the pickle with ``weights_only=True``, maps the names explicitly, checks the result strictly
against the target model (an unexpected, missing or mis-shaped key raises :class:`ConversionError` listing them,
and nothing is written) and saves with ``save_pretrained`` (safetensors). ``ifsq-hf convert`` is the command line
front end of :func:`convert_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import ConversionError
from .dit import convert_dit_checkpoint, load_official_dit
from .llamagen import convert_llamagen_checkpoint, load_official_llamagen
from .tokenizer import convert_tokenizer_checkpoint, load_official_tokenizer

__all__ = [
    "ConversionError",
    "convert_checkpoint",
    "convert_dit_checkpoint",
    "convert_llamagen_checkpoint",
    "convert_tokenizer_checkpoint",
    "load_official_dit",
    "load_official_llamagen",
    "load_official_tokenizer",
]

KINDS = ("tokenizer", "dit", "llamagen")


def convert_checkpoint(
    kind: str,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    keep_projector: bool = True,
    source: str = "official",
    preset: str | None = None,
) -> Path:
    """Convert one checkpoint and save it to ``output_dir``; returns the folder.

    Args:
        kind: ``"tokenizer"`` (-> ``iFSQAutoencoder``), ``"dit"`` (-> ``LightningDiTTransformer2DModel``) or
            ``"llamagen"`` (-> ``LlamaGenForImageGeneration``).
        checkpoint: the official ``.ckpt``/``.pt`` (or a ``.safetensors``/pickle state dict).
        config: the official config (tokenizer ``config.json``, DiT ``run.yaml``, LlamaGen ``config.yaml``) or a
            config of this library; see the per-kind converters for the defaults.
        keep_projector: DiT/LlamaGen: keep the REPA projector (``False`` for inference-only folders).
        source: LlamaGen: ``"official"`` (iFSQ) or ``"upstream"`` (FoundationVision ``gpt.py``).
        preset: architecture preset when there is no config (tokenizer ``"ifsq_f16_d4_4bit"``, DiT ``"L"``,
            LlamaGen ``"L"``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if source != "official" and kind != "llamagen":
        raise ValueError(f"source={source!r} applies to LlamaGen checkpoints only; {kind} checkpoints are official.")
    if kind == "tokenizer":
        return convert_tokenizer_checkpoint(checkpoint, output_dir, config=config, preset=preset)
    if kind == "dit":
        return convert_dit_checkpoint(
            checkpoint, output_dir, config=config, preset=preset, keep_projector=keep_projector
        )
    return convert_llamagen_checkpoint(
        checkpoint, output_dir, config=config, preset=preset, keep_projector=keep_projector, source=source
    )
