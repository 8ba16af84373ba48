"""LlamaGen checkpoints -> :class:`~ifsq_hf.models.llamagen.LlamaGenForImageGeneration` folder.

Two sources share one naming scheme (see :func:`convert_llamagen_state_dict`):

* ``"official"``: iFSQ's ``llamagen/train.py`` saves ``{"model", "ema", "opt", "config"}`` with the run's YAML
  as ``config``; single-codebook (``tok_embeddings``/``output``) or factorized (``{i}_emb``/``output.{i}``,
  ``factorized_blocks``) models, with the REPA projector ``projectors.0`` (kept, or dropped for inference).
* ``"upstream"``: FoundationVision/LlamaGen ``autoregressive/models/gpt.py`` class-conditional checkpoints
  (``{"model": ...}``; VQ vocabulary 16384, no projector). Training checkpoints that also pickle the argparse
  ``args`` cannot be opened with ``weights_only=True``; re-save their ``model`` entry first.

The vocabulary, factorized sub-vocabularies, number of classes, FFN width, KV heads, factorized depth and projector
sizes are read off the tensor shapes. The size (depth, width, heads) comes from the official YAML's
``model.model_type``, a ``preset`` (``"L"``, ``"LlamaGen-L"``, ``"GPT-L"``) or the width and depth of the weights.
The token grid (``image_token_size``) is not stored in the weights: it is ``data.image_size /
fsq.downsample_ratio`` from the YAML, else 16 (256 px with an f16 tokenizer); pass a JSON config of this library to
set anything else.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.llamagen import LLAMAGEN_PRESETS, LlamaGenConfig, LlamaGenForImageGeneration
from .common import ConversionError, load_checked, read_checkpoint, read_config, save_converted, strip_prefixes

__all__ = [
    "convert_llamagen_checkpoint",
    "convert_llamagen_state_dict",
    "llamagen_config_from_official",
    "load_official_llamagen",
]

SOURCES = ("official", "upstream")
# (layers, heads, width) of iFSQ's llamagen/models/llamagen.py and of upstream autoregressive/models/gpt.py.
_SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "official": {
        "S": (12, 12, 384),
        "B": (12, 12, 768),
        "L": (24, 16, 1024),
        "XL": (36, 20, 1280),
        "XXL": (48, 24, 1536),
        "XXXL": (24, 32, 3200),
    },
    "upstream": {
        "B": (12, 12, 768),
        "L": (24, 16, 1024),
        "XL": (36, 20, 1280),
        "XXL": (48, 24, 1536),
        "XXXL": (48, 40, 2560),
        "1B": (22, 32, 2048),
        "3B": (24, 32, 3200),
        "7B": (32, 32, 4096),
    },
}


def convert_llamagen_state_dict(state_dict: Mapping[str, torch.Tensor], keep_projector: bool = True) -> dict:
    """Rename an official iFSQ `llamagen.py` / upstream LlamaGen `gpt.py` state dict to this model's keys.

    Strips `module.` / `_orig_mod.` prefixes; drops the REPA projector when `keep_projector=False` (inference) and
    keys with no counterpart (`freqs_cis`, KV-cache buffers, `causal_mask`).
    """
    sub = [
        (".attention.wqkv.", ".self_attn.qkv_proj."),
        (".attention.wo.", ".self_attn.o_proj."),
        (".feed_forward.w1.", ".mlp.gate_proj."),
        (".feed_forward.w3.", ".mlp.up_proj."),
        (".feed_forward.w2.", ".mlp.down_proj."),
        (".attention_norm.", ".input_layernorm."),
        (".ffn_norm.", ".post_attention_layernorm."),
    ]
    out = {}
    for key, value in strip_prefixes(state_dict).items():
        if "freqs_cis" in key or "kv_cache" in key or key == "causal_mask":
            continue
        if key.startswith("projectors."):
            if not keep_projector:
                continue
            key = "model.repa_projector." + key.split(".", 2)[2]
        elif key.startswith("output."):
            key = "lm_head." + key[len("output.") :]
        elif key.startswith("cls_embedding.embedding_table."):
            key = "model.class_embedding." + key.split(".", 2)[2]
        elif key.startswith("tok_embeddings."):
            key = "model.embed_tokens." + key[len("tok_embeddings.") :]
        elif key.split(".")[0].endswith("_emb") and key.split(".")[0][:-4].isdigit():
            key = f"model.embed_tokens.{key.split('.')[0][:-4]}." + key.split(".", 1)[1]
        elif key.startswith("factorized_blocks."):
            key = "model.factorized_layers." + key[len("factorized_blocks.") :]
        else:
            key = "model." + key
        for old, new in sub:
            key = key.replace(old, new)
        out[key] = value
    return out


def _size(name: str, source: str) -> tuple[int, int, int]:
    """``"L"``, ``"LlamaGen-L"`` or ``"GPT-L"`` (or a preset of this library) -> (layers, heads, width)."""
    short = str(name).removeprefix("LlamaGen-").removeprefix("GPT-")
    if short in _SIZES[source]:
        return _SIZES[source][short]
    if short in LLAMAGEN_PRESETS:
        p = LLAMAGEN_PRESETS[short]
        return p["num_hidden_layers"], p["num_attention_heads"], p["hidden_size"]
    raise ValueError(
        f"unknown {source} LlamaGen size {name!r}; choose one of {sorted(_SIZES[source])} (or 'LlamaGen-L' / 'GPT-L')."
    )


def llamagen_config_from_official(run: dict[str, Any]) -> dict[str, Any]:
    """Map an official iFSQ LlamaGen ``config.yaml`` (or the ``config`` stored in a checkpoint) to
    :class:`LlamaGenConfig` keyword arguments; the vocabulary and other sizes come from the weights."""
    model = run.get("model") or {}
    if "model_type" not in model:
        raise ValueError(
            "the LlamaGen config has no model.model_type (e.g. 'LlamaGen-L'); pass the official config.yaml."
        )
    layers, heads, width = _size(model["model_type"], "official")
    data = run.get("data") or {}
    fsq = run.get("fsq") or {}
    image_size = int(data.get("image_size", 256))
    ratio = int(fsq.get("downsample_ratio", 16))
    if image_size % ratio:
        raise ValueError(f"data.image_size {image_size} is not a multiple of fsq.downsample_ratio {ratio}.")
    drop_path = float(model.get("drop_path_rate", 0.0))
    dropout = 0.0 if drop_path > 0 else float(model.get("dropout_p", 0.1))  # as llamagen/train.py
    ours: dict[str, Any] = {
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "hidden_size": width,
        "num_classes": int(data.get("num_classes", 1000)),
        "image_token_size": image_size // ratio,
        "token_dropout_prob": float(model.get("token_dropout_p", 0.1)),
        "residual_dropout_prob": dropout,
        "ffn_dropout_prob": dropout,
        "drop_path_rate": drop_path,
    }
    repa = run.get("repa") or {}
    if repa.get("use_repa", False):
        ours["repa_depth"] = int(repa.get("encoder_depth", 8))
    return ours


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    rx = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _shape_facts(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the (prefix-free, official-named) state dict tells about the architecture."""
    if "cls_embedding.embedding_table.weight" not in sd:
        text = " (a text-to-image checkpoint?)" if any(k.startswith("cls_embedding.cap_proj") for k in sd) else ""
        raise ConversionError(
            f"not a class-conditional LlamaGen state dict{text}: cls_embedding.embedding_table.weight is missing "
            f"(first keys: {sorted(sd)[:10]})."
        )
    facts: dict[str, Any] = {
        "class_rows": sd["cls_embedding.embedding_table.weight"].shape[0],
        "hidden_size": sd["cls_embedding.embedding_table.weight"].shape[1],
        "num_hidden_layers": _count(sd, "layers"),
    }
    sub = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^(\d+)_emb\.weight$", k)))
    if sub:
        if sub != list(range(len(sub))):
            raise ConversionError(f"factorized embeddings must be numbered 0..K-1, found {sub}.")
        facts["factorized_vocab_sizes"] = [sd[f"{i}_emb.weight"].shape[0] for i in sub]
        facts["vocab_size"] = math.prod(facts["factorized_vocab_sizes"])
        facts["factorized_num_layers"] = _count(sd, "factorized_blocks")
    elif "tok_embeddings.weight" in sd:
        facts["vocab_size"] = sd["tok_embeddings.weight"].shape[0]
    else:
        raise ConversionError("the state dict has neither tok_embeddings.weight nor 0_emb.weight (token embeddings).")
    if "layers.0.feed_forward.w1.weight" in sd:
        facts["intermediate_size"] = sd["layers.0.feed_forward.w1.weight"].shape[0]
    if "layers.0.attention.wqkv.weight" in sd:
        facts["qkv_rows"] = sd["layers.0.attention.wqkv.weight"].shape[0]
    if "projectors.0.0.weight" in sd and "projectors.0.4.weight" in sd:
        facts["repa_projector_dim"] = sd["projectors.0.0.weight"].shape[0]
        facts["repa_feature_dim"] = sd["projectors.0.4.weight"].shape[0]
    return facts


def _heads_from_width(hidden: int, layers: int, source: str) -> int:
    presets = {
        k: (v["num_hidden_layers"], v["num_attention_heads"], v["hidden_size"]) for k, v in LLAMAGEN_PRESETS.items()
    }
    for table in (_SIZES[source], *(_SIZES[s] for s in SOURCES if s != source), presets):
        for n_layers, heads, width in table.values():
            if (width, n_layers) == (hidden, layers):
                return heads
    raise ValueError(
        f"no known LlamaGen size has width {hidden} and {layers} layers, so the head count is unknown; pass "
        f"preset=<one of {sorted(_SIZES[source])}> or a JSON config with num_attention_heads."
    )


def load_official_llamagen(
    checkpoint: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    keep_projector: bool = True,
    source: str = "official",
    use_ema: bool = True,
) -> LlamaGenForImageGeneration:
    """Build a :class:`LlamaGenForImageGeneration` holding an iFSQ or upstream LlamaGen checkpoint's weights.

    Args:
        checkpoint: ``.pt`` of ``llamagen/train.py`` (official) or of upstream LlamaGen, or a bare state dict.
        config: official ``config.yaml``, or a JSON config of this library (``LlamaGenConfig`` keys) that overrides
            what is read from the weights; default: the ``config`` stored in the checkpoint.
        preset: size when there is no config (``"L"``, ``"LlamaGen-L"``, ``"GPT-L"``); default: inferred from the
            width and depth of the weights.
        keep_projector: keep the REPA projector (to resume REPA training); ``False`` drops it (inference).
        source: ``"official"`` (iFSQ) or ``"upstream"`` (FoundationVision); selects the size table, since e.g.
            ``XXXL`` means different models in the two.
        use_ema: take ``ema`` when present (the evaluated weights); ``False`` takes ``model``.

    Raises:
        ConversionError: unknown, missing or mis-shaped keys (all listed).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    if config is not None and preset is not None:
        raise ValueError("pass either config or preset, not both.")
    checkpoint = Path(checkpoint)
    raw_ckpt, state_dict = read_checkpoint(checkpoint, ["ema", "model"] if use_ema else ["model"], "LlamaGen")
    extra_projectors = sorted({k.split(".")[1] for k in state_dict if k.startswith("projectors.")} - {"0"})
    if keep_projector and extra_projectors:
        raise ValueError(
            f"the checkpoint has {len(extra_projectors) + 1} REPA projectors; LlamaGenForImageGeneration holds one. "
            "Convert with keep_projector=False (--drop_projector)."
        )
    facts = _shape_facts(state_dict)

    raw = read_config(config)
    if raw is None and preset is None and source == "official" and isinstance(raw_ckpt.get("config"), dict):
        raw = raw_ckpt["config"]
    native = raw is not None and "model" not in raw
    ours: dict[str, Any] = {} if raw is None or native else llamagen_config_from_official(raw)
    if preset is not None:
        layers, heads, width = _size(preset, source)
        ours.update(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=width)
    for key in ("vocab_size", "factorized_vocab_sizes", "factorized_num_layers", "intermediate_size"):
        if key in facts:
            ours.setdefault(key, facts[key])
    ours.setdefault("hidden_size", facts["hidden_size"])
    ours.setdefault("num_hidden_layers", facts["num_hidden_layers"])
    if native:
        ours.update({k: v for k, v in raw.items() if not k.startswith("_")})
    if "num_attention_heads" not in ours:
        ours["num_attention_heads"] = _heads_from_width(ours["hidden_size"], ours["num_hidden_layers"], source)
    if "qkv_rows" in facts and "num_key_value_heads" not in ours:
        head_dim = ours["hidden_size"] // ours["num_attention_heads"]
        kv_heads, rem = divmod(facts["qkv_rows"] // head_dim - ours["num_attention_heads"], 2)
        if kv_heads > 0 and not rem:
            ours["num_key_value_heads"] = kv_heads
    # The null-class row exists only with label dropout (class_dropout_prob > 0), as in both codebases.
    ours.setdefault("num_classes", facts["class_rows"] - 1)
    if facts["class_rows"] == ours["num_classes"]:
        ours["class_dropout_prob"] = 0.0
    if not keep_projector:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("projectors.")}
        ours["repa_feature_dim"] = None
    elif "repa_feature_dim" in facts:
        ours["repa_feature_dim"] = facts["repa_feature_dim"]
        ours["repa_projector_dim"] = facts["repa_projector_dim"]
        ours.setdefault("repa_depth", min(8, ours["num_hidden_layers"]))  # 8 is the official default

    model = LlamaGenForImageGeneration(LlamaGenConfig(**ours))
    converted = convert_llamagen_state_dict(state_dict, keep_projector=keep_projector)
    return load_checked(model, converted, f"{source} LlamaGen checkpoint {checkpoint}")


def convert_llamagen_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    keep_projector: bool = True,
    source: str = "official",
    use_ema: bool = True,
) -> Path:
    """Convert a LlamaGen checkpoint and ``save_pretrained`` it to ``output_dir`` (safetensors).

    Loadable with ``LlamaGenForImageGeneration.from_pretrained(output_dir)`` (or ``AutoModelForCausalLM`` after
    importing :mod:`ifsq_hf.models.llamagen`); arguments as in :func:`load_official_llamagen`. Nothing is written
    when the checkpoint does not match.
    """
    model = load_official_llamagen(
        checkpoint, config=config, preset=preset, keep_projector=keep_projector, source=source, use_ema=use_ema
    )
    return save_converted(model, output_dir)
