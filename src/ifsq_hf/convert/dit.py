"""Official iFSQ DiT checkpoint (``dit/train.py``) -> :class:`~ifsq_hf.models.LightningDiTTransformer2DModel` folder.

The official trainer saves ``{"model", "ema", "opt", "config"}`` pickles (``checkpoints/0100000.pt``) whose
``config`` is the run's YAML as a plain dict, so a checkpoint usually describes itself; ``dit/inference.py`` samples
with ``ema``, which is preferred here too. Names map one to one (see
:func:`convert_official_dit_state_dict`) except that the fixed tables ``pos_embed``
and ``feat_rope.freqs_{cos,sin}`` are dropped (recomputed from the config) and the REPA projector ``projectors.0``
becomes ``repa_projector`` (or is dropped for inference-only folders).

Configuration, in order: ``config`` (the official ``run.yaml``, or a config of this library), the ``config`` stored
in the checkpoint, or the tensor shapes (optionally with a size ``preset`` such as ``"L"``/``"DiT-L/1"`` when the
head count cannot be read off the shapes).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..models.transformer_dit import DIT_PRESETS, LightningDiTTransformer2DModel
from .common import ConversionError, load_checked, read_checkpoint, read_config, save_converted, strip_prefixes

__all__ = [
    "convert_dit_checkpoint",
    "convert_official_dit_state_dict",
    "dit_config_from_official",
    "load_official_dit",
]

# DiT sizes: the presets of this library (S/B/L/XL as LightningDiT, "tiny" for tests) and the official 1p0B/1p6B
# (dit/models/dit.py DiT_models); name -> (depth, hidden, heads).
_OFFICIAL_SIZES: dict[str, tuple[int, int, int]] = {
    **{k: (v["num_layers"], v["hidden_size"], v["num_attention_heads"]) for k, v in DIT_PRESETS.items()},
    "1p0B": (24, 1536, 24),
    "1p6B": (28, 1792, 28),
}


def _parse_model_type(name: str) -> tuple[tuple[int, int, int], int | None]:
    """``"DiT-L/1"``, ``"L/1"`` or ``"L"`` -> ((depth, hidden, heads), patch or None)."""
    size, _, patch = str(name).removeprefix("DiT-").partition("/")
    if size not in _OFFICIAL_SIZES:
        raise ValueError(
            f"unknown DiT size {name!r}; choose one of {sorted(_OFFICIAL_SIZES)} (optionally as 'DiT-L/1')."
        )
    if patch and not patch.isdigit():
        raise ValueError(f"the patch size in {name!r} must be an integer, e.g. 'DiT-L/1'.")
    return _OFFICIAL_SIZES[size], int(patch) if patch else None


def convert_official_dit_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official iFSQ/LightningDiT ``dit/models/dit.py`` state dict (or an EMA copy) to this model's keys.

    Strips ``module.``/``_orig_mod.`` prefixes (DDP, ``torch.compile``), renames ``projectors.0.*`` to
    ``repa_projector.*`` and drops the fixed tables ``pos_embed`` and ``feat_rope.*`` that this model recomputes.
    Load the result with ``model.load_state_dict(sd, strict=True)`` (drop ``repa_projector.*`` if the model was
    built without a projector).
    """
    out = {}
    for key, value in strip_prefixes(state_dict).items():
        if key == "pos_embed" or key.startswith("feat_rope."):
            continue
        if key.startswith("projectors.0."):
            key = "repa_projector." + key[len("projectors.0.") :]
        elif key.startswith("projectors."):
            raise ValueError(f"only one REPA projector is supported, found {key!r}.")
        out[key] = value
    return out


def dit_config_from_official(run: dict[str, Any]) -> dict[str, Any]:
    """Map an official DiT ``run.yaml`` (or the ``config`` stored in a checkpoint) to model keyword arguments.

    The REPA projector size is not in the YAML (it is the encoder's width); :func:`load_official_dit` reads it
    from the projector's weights.
    """
    model = run.get("model") or {}
    if "model_type" not in model:
        raise ValueError("the DiT config has no model.model_type (e.g. 'DiT-L/1'); pass the official run.yaml.")
    scheduler = run.get("scheduler") or {}
    if scheduler.get("diffusion", False) or not scheduler.get("transport", True):
        raise ValueError(
            "only flow-matching (scheduler.transport) DiT checkpoints are supported; this run trained the DDPM "
            "'diffusion' objective, which LightningDiTTransformer2DModel and its pipeline do not implement."
        )
    (depth, hidden, heads), patch = _parse_model_type(model["model_type"])
    data = run.get("data") or {}
    vae = run.get("vae") or {}
    image_size = int(data.get("image_size", 256))
    ratio = int(vae.get("downsample_ratio", 16))
    if image_size % ratio:
        raise ValueError(f"data.image_size {image_size} is not a multiple of vae.downsample_ratio {ratio}.")
    repa = run.get("repa") or {}
    ours: dict[str, Any] = {
        "sample_size": image_size // ratio,
        "in_channels": int(model.get("in_chans", 4)),
        "patch_size": patch or 1,
        "hidden_size": hidden,
        "num_layers": depth,
        "num_attention_heads": heads,
        "num_classes": int(data.get("num_classes", 1000)),
        "use_qk_norm": bool(model.get("use_qknorm", False)),
        "use_swiglu": bool(model.get("use_swiglu", False)),
        "use_rope": bool(model.get("use_rope", False)),
        "use_rmsnorm": bool(model.get("use_rmsnorm", False)),
    }
    if repa.get("use_repa", False):
        ours["repa_depth"] = int(repa.get("encoder_depth", 8))
    return ours


def _count(state_dict: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state_dict if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _config_from_shapes(sd: dict[str, torch.Tensor], preset: str | None) -> dict[str, Any]:
    """Everything the official state dict reveals; the head count needs QK-norm/RoPE tensors or a preset."""
    if "x_embedder.proj.weight" not in sd or "y_embedder.embedding_table.weight" not in sd:
        raise ConversionError(
            "not an official DiT state dict: x_embedder.proj.weight / y_embedder.embedding_table.weight are missing "
            f"(first keys: {sorted(sd)[:10]})."
        )
    hidden, in_channels, patch, _ = sd["x_embedder.proj.weight"].shape
    ours: dict[str, Any] = {
        "in_channels": in_channels,
        "patch_size": patch,
        "hidden_size": hidden,
        "num_layers": _count(sd, r"^blocks\.(\d+)\."),
        "num_classes": sd["y_embedder.embedding_table.weight"].shape[0] - 1,
        "use_qk_norm": "blocks.0.attn.q_norm.weight" in sd,
        "use_swiglu": "blocks.0.mlp.w12.weight" in sd,
        "use_rope": "feat_rope.freqs_cos" in sd,
        "use_rmsnorm": "blocks.0.norm1.weight" in sd,
    }
    if "final_layer.linear.weight" in sd:
        ours["out_channels"] = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    if "pos_embed" in sd:
        grid = math.isqrt(sd["pos_embed"].shape[1])
        ours["sample_size"] = grid * patch
    head_dim = None
    if "feat_rope.freqs_cos" in sd:
        head_dim = sd["feat_rope.freqs_cos"].shape[-1]
    elif "blocks.0.attn.q_norm.weight" in sd:
        head_dim = sd["blocks.0.attn.q_norm.weight"].shape[0]
    if preset is not None:
        (depth, width, heads), preset_patch = _parse_model_type(preset)
        ours.update(num_layers=depth, hidden_size=width, num_attention_heads=heads)
        if preset_patch is not None:
            ours["patch_size"] = preset_patch
    elif head_dim:
        ours["num_attention_heads"] = hidden // head_dim
    else:
        raise ValueError(
            "the number of attention heads cannot be read from this checkpoint (no QK-norm or RoPE tensors); pass "
            f"config=<run.yaml> or preset=<one of {sorted(_OFFICIAL_SIZES)}>."
        )
    return ours


def _check_fixed_tables(sd: dict[str, torch.Tensor], model: LightningDiTTransformer2DModel, checkpoint: Path) -> None:
    """The dropped tables still tell the grid and head size the checkpoint was trained with; they must match."""
    cfg = model.config
    grid = cfg.sample_size // cfg.patch_size
    expected = {
        "pos_embed": (1, grid * grid, cfg.hidden_size),
        "feat_rope.freqs_cos": (grid * grid, cfg.hidden_size // cfg.num_attention_heads),
        "feat_rope.freqs_sin": (grid * grid, cfg.hidden_size // cfg.num_attention_heads),
    }
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs config {shape}"
        for k, shape in expected.items()
        if k in sd and tuple(sd[k].shape) != shape
    ]
    if wrong:
        raise ConversionError(
            f"DiT checkpoint {checkpoint} was trained for another token grid or head size ({'; '.join(wrong)}). "
            "Check sample_size (image_size / downsample_ratio), patch size and heads; nothing was written."
        )


def load_official_dit(
    checkpoint: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    keep_projector: bool = True,
    use_ema: bool = True,
) -> LightningDiTTransformer2DModel:
    """Build a :class:`LightningDiTTransformer2DModel` holding an official DiT checkpoint's weights.

    Args:
        checkpoint: ``dit/train.py`` checkpoint (``.pt``), or a file holding the state dict alone.
        config: official ``run.yaml`` or a config of this library; default: the ``config`` in the checkpoint,
            else the tensor shapes.
        preset: size when there is no config: ``"S"``, ``"B"``, ``"L"``, ``"XL"``, ``"1p0B"``, ``"1p6B"``
            (optionally ``"DiT-L/1"``); the remaining options are read off the shapes.
        keep_projector: keep the REPA projector (to resume REPA training); ``False`` drops it (inference).
        use_ema: take ``ema`` (the sampled weights); ``False`` takes ``model``.

    Raises:
        ConversionError: unknown, missing or mis-shaped keys (all listed).
    """
    checkpoint = Path(checkpoint)
    if config is not None and preset is not None:
        raise ValueError("pass either config or preset, not both.")
    raw_ckpt, state_dict = read_checkpoint(checkpoint, ["ema", "model"] if use_ema else ["model"], "DiT")

    raw = read_config(config)
    if raw is None and preset is None and isinstance(raw_ckpt.get("config"), dict):
        raw = raw_ckpt["config"]
    if raw is None:
        ours = _config_from_shapes(state_dict, preset)
    elif "num_layers" in raw and "hidden_size" in raw:  # a config of this library
        ours = {k: v for k, v in raw.items() if not k.startswith("_")}
    else:
        ours = dit_config_from_official(raw)

    extra_projectors = sorted({k.split(".")[1] for k in state_dict if k.startswith("projectors.")} - {"0"})
    if keep_projector and extra_projectors:
        raise ValueError(
            f"the checkpoint has {len(extra_projectors) + 1} REPA projectors (several alignment encoders); "
            "LightningDiTTransformer2DModel holds one. Convert with keep_projector=False (--drop_projector)."
        )
    if not keep_projector:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("projectors.")}
        ours["repa_feature_dim"] = None
    elif "projectors.0.0.weight" in state_dict and "projectors.0.4.weight" in state_dict:
        ours["repa_hidden_dim"] = state_dict["projectors.0.0.weight"].shape[0]
        ours["repa_feature_dim"] = state_dict["projectors.0.4.weight"].shape[0]
        ours.setdefault("repa_depth", min(8, ours["num_layers"]))  # 8 is the official default encoder_depth
    converted = convert_official_dit_state_dict(state_dict)
    model = LightningDiTTransformer2DModel(**ours)
    _check_fixed_tables(state_dict, model, checkpoint)
    return load_checked(model, converted, f"DiT checkpoint {checkpoint}")


def convert_dit_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    keep_projector: bool = True,
    use_ema: bool = True,
) -> Path:
    """Convert an official DiT checkpoint and ``save_pretrained`` it to ``output_dir`` (safetensors).

    Loadable with ``LightningDiTTransformer2DModel.from_pretrained(output_dir)``; arguments as in
    :func:`load_official_dit`. Nothing is written when the checkpoint does not match.
    """
    model = load_official_dit(checkpoint, config=config, preset=preset, keep_projector=keep_projector, use_ema=use_ema)
    return save_converted(model, output_dir)
