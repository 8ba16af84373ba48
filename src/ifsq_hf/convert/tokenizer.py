"""Official iFSQ tokenizer checkpoint (``ifsq/train_ddp.py``) -> :class:`~ifsq_hf.models.iFSQAutoencoder` folder.

The official ``checkpoint-{step}.ckpt`` is a pickle ``{epoch, current_step, optimizer_state, state_dict:
{gen_model, dics_model}, ema_state_dict}``. The EMA weights (what the paper evaluates) are preferred; they carry the
DDP prefix ``module.`` (plus ``_orig_mod.`` after ``torch.compile``) and float copies of the quantizer's integer
constants ``quantize._levels``/``_basis``/``_basis_group_*``, which are recomputed from ``levels`` here and dropped.
The autoencoder keeps the official module names, so every other key maps to itself.

The architecture comes from the official ``config.json`` written next to the checkpoint (``ImageFSQVAEModel``
options), from a config of this library (``iFSQAutoencoder`` options) or from a preset.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..models.autoencoder_ifsq import PRESETS, iFSQAutoencoder
from .common import load_checked, read_checkpoint, read_config, save_converted

__all__ = ["convert_tokenizer_checkpoint", "load_official_tokenizer", "tokenizer_config_from_official"]

DEFAULT_PRESET = "ifsq_f16_d4_4bit"

# Constructor defaults of the official ImageFSQVAEModel (modeling_imagefsqvae.py), used for keys a config omits.
_OFFICIAL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "z_channels": 4,
    "hidden_size_mult": [1, 2, 4, 4],
    "attn_resolutions": [],
    "dropout": 0.0,
    "resolution": 256,
    "double_z": True,
    "embed_dim": 4,
    "num_res_blocks": 2,
    "q_conv": "Conv2d",
    "encoder_conv_in": "Conv2d",
    "encoder_conv_out": "Conv2d",
    "encoder_attention": "AttnBlock2D",
    "encoder_resnet_blocks": None,  # one "ResnetBlock2D" per level
    "encoder_spatial_downsample": None,  # "Downsample" on every level but the last
    "encoder_mid_resnet": "ResnetBlock2D",
    "decoder_conv_in": "Conv2d",
    "decoder_conv_out": "Conv2d",
    "decoder_attention": "AttnBlock2D",
    "decoder_resnet_blocks": None,
    "decoder_spatial_upsample": None,  # "Upsample" on every level but the first
    "decoder_mid_resnet": "ResnetBlock2D",
    "scale": None,  # stored but unused by the official model
    "shift": None,
    "use_quant_layer": True,
    "norm_type": "groupnorm",
    "levels": [5, 5, 5, 5],
    "factorized_bits": None,
    "do_simple_bound": False,
    "act_fun": "tanh",
}
# act_fun of the official simple (iFSQ-style) bound -> alpha of 2 * sigmoid(alpha * z) - 1.
_ACT_FUN_ALPHA = {"scale_sigmoid_16": 1.6, "scale_sigmoid_20": 2.0}
# Quantizer constants of the official GroupFSQ: non-persistent buffers that its EMA copy still stores as floats.
_DROPPED = re.compile(r"^quantize\.(_levels|_basis|_basis_group_\d+)$")
# The latent multiplier of the official DiT, tied to the released tokenizer (dit/configs/.../run.yaml).
_RELEASED_SCALING_FACTOR = PRESETS[DEFAULT_PRESET]["scaling_factor"]


def _unsupported(what: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"official tokenizer option {what}={value!r} is not supported by iFSQAutoencoder; {fix}")


def tokenizer_config_from_official(official: dict[str, Any], scaling_factor: float | None = None) -> dict[str, Any]:
    """Map an official ``ImageFSQVAEModel`` ``config.json`` to :class:`iFSQAutoencoder` keyword arguments.

    Raises ``ValueError`` for options this architecture cannot represent (attention blocks, LayerNorm/RMSNorm,
    other block types or resampling patterns, a quantizer with projections, no quant convs).
    """
    unknown = sorted(k for k in official if not k.startswith("_") and k not in _OFFICIAL_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown official tokenizer options {unknown}; expected ImageFSQVAEModel arguments "
            f"({sorted(_OFFICIAL_DEFAULTS)}). Remove them if they are not architecture options."
        )
    cfg = {**_OFFICIAL_DEFAULTS, **{k: v for k, v in official.items() if not k.startswith("_")}}
    mult = [int(m) for m in cfg["hidden_size_mult"]]
    n = len(mult)
    if cfg["norm_type"] != "groupnorm":
        raise _unsupported("norm_type", cfg["norm_type"], "only 'groupnorm' (GroupNorm(32), eps 1e-6) is implemented.")
    if not cfg["use_quant_layer"]:
        raise _unsupported("use_quant_layer", False, "the model always has quant_conv/post_quant_conv.")
    for key in ("q_conv", "encoder_conv_in", "encoder_conv_out", "decoder_conv_in", "decoder_conv_out"):
        if cfg[key] != "Conv2d":
            raise _unsupported(key, cfg[key], "only plain 'Conv2d' layers are implemented.")
    for key in ("encoder_mid_resnet", "decoder_mid_resnet"):
        if cfg[key] != "ResnetBlock2D":
            raise _unsupported(key, cfg[key], "only 'ResnetBlock2D' is implemented.")
    for key in ("encoder_resnet_blocks", "decoder_resnet_blocks"):
        blocks = cfg[key] if cfg[key] is not None else ["ResnetBlock2D"] * n
        if list(blocks) != ["ResnetBlock2D"] * n:
            raise _unsupported(key, blocks, f"expected {n} x 'ResnetBlock2D' (one per hidden_size_mult entry).")
    down = cfg["encoder_spatial_downsample"]
    if down is not None and list(down) != ["Downsample"] * (n - 1) + [""]:
        raise _unsupported(
            "encoder_spatial_downsample", down, "every level but the last must downsample ('Downsample', ..., '')."
        )
    up = cfg["decoder_spatial_upsample"]
    if up is not None and list(up) != [""] + ["Upsample"] * (n - 1):
        raise _unsupported(
            "decoder_spatial_upsample", up, "every level but the first must upsample ('', 'Upsample', ...)."
        )
    resolution = int(cfg["resolution"])
    attn = [r for r in (cfg["attn_resolutions"] or []) if r in {resolution // 2**i for i in range(n)}]
    if attn:
        raise _unsupported(
            "attn_resolutions", cfg["attn_resolutions"], "the ifsq-hf tokenizer has no attention blocks."
        )
    if int(cfg["num_res_blocks"]) != 2:
        raise _unsupported(
            "num_res_blocks",
            cfg["num_res_blocks"],
            "the official model ties the number of mid blocks to it, and iFSQAutoencoder has 2 mid blocks.",
        )
    levels = [int(v) for v in cfg["levels"]]
    if not int(cfg["z_channels"]) == int(cfg["embed_dim"]) == len(levels):
        raise _unsupported(
            "z_channels/embed_dim",
            (cfg["z_channels"], cfg["embed_dim"]),
            f"both must equal len(levels) = {len(levels)} (a quantizer without projections).",
        )
    if cfg["do_simple_bound"]:
        if cfg["act_fun"] not in _ACT_FUN_ALPHA:
            raise _unsupported("act_fun", cfg["act_fun"], f"the simple bound needs one of {sorted(_ACT_FUN_ALPHA)}.")
        bound, alpha = "ifsq", _ACT_FUN_ALPHA[cfg["act_fun"]]
    else:
        bound, alpha = "tanh", 1.6  # the official eps-widened tanh bound; alpha is unused
    ours: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": len(levels),
        "block_out_channels": [int(cfg["hidden_size"]) * m for m in mult],
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
        "dropout": float(cfg["dropout"]),
        "double_z": bool(cfg["double_z"]),
        "levels": levels,
        "quantizer_bound": bound,
        "quantizer_alpha": alpha,
        "factorized_dims": None if cfg["factorized_bits"] is None else [int(b) for b in cfg["factorized_bits"]],
        "sample_size": resolution,
    }
    if scaling_factor is None:
        released = PRESETS[DEFAULT_PRESET]
        same = all(ours.get(k) == v for k, v in released.items() if k not in ("scaling_factor",))
        scaling_factor = _RELEASED_SCALING_FACTOR if same and ours["factorized_dims"] is None else 1.0
    ours["scaling_factor"] = float(scaling_factor)
    return ours


def _resolve_config(
    checkpoint: Path, config: str | os.PathLike | dict | None, preset: str | None, scaling_factor: float | None
) -> dict[str, Any]:
    if config is not None and preset is not None:
        raise ValueError("pass either config or preset, not both.")
    if config is None and preset is None and (checkpoint.parent / "config.json").is_file():
        config = checkpoint.parent / "config.json"  # the official trainer writes its config next to checkpoints
    raw = read_config(config)
    if raw is None:
        name = preset or DEFAULT_PRESET
        if name not in PRESETS:
            raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {sorted(PRESETS)}.")
        ours = dict(PRESETS[name])
        if scaling_factor is not None:
            ours["scaling_factor"] = float(scaling_factor)
        return ours
    if "block_out_channels" in raw:  # already an iFSQAutoencoder config (e.g. a config.json of this library)
        ours = {k: v for k, v in raw.items() if not k.startswith("_")}
        if scaling_factor is not None:
            ours["scaling_factor"] = float(scaling_factor)
        return ours
    return tokenizer_config_from_official(raw, scaling_factor)


def _official_state_dict(checkpoint: str | os.PathLike, use_ema: bool) -> dict[str, torch.Tensor]:
    candidates = ["ema_state_dict", "state_dict/gen_model"] if use_ema else ["state_dict/gen_model"]
    _, state_dict = read_checkpoint(checkpoint, candidates, "tokenizer")
    return {k: v for k, v in state_dict.items() if not _DROPPED.match(k)}


def load_official_tokenizer(
    checkpoint: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    use_ema: bool = True,
    scaling_factor: float | None = None,
) -> iFSQAutoencoder:
    """Build an :class:`iFSQAutoencoder` holding the weights of an official tokenizer checkpoint.

    Args:
        checkpoint: official ``.ckpt`` (or a ``.safetensors``/pickle holding the model state dict).
        config: official ``config.json`` (``ImageFSQVAEModel`` options) or an ``iFSQAutoencoder`` config; by
            default the ``config.json`` next to the checkpoint, else ``preset``.
        preset: preset name when there is no config (default ``"ifsq_f16_d4_4bit"``, the released tokenizer).
        use_ema: take ``ema_state_dict`` (the evaluated weights); ``False`` takes ``state_dict/gen_model``.
        scaling_factor: diffusion latent multiplier stored in the config; default 1.092421 (the official DiT's) for
            the released architecture and 1.0 otherwise.

    Raises:
        ConversionError: unknown, missing or mis-shaped keys (all listed).
    """
    checkpoint = Path(checkpoint)
    ours = _resolve_config(checkpoint, config, preset, scaling_factor)
    state_dict = _official_state_dict(checkpoint, use_ema)
    model = iFSQAutoencoder(**ours)
    # running_mean/var only monitor the pre-quantization activations; checkpoints of a plain GroupFSQ lack them.
    for name, buffer in model.state_dict().items():
        if name.startswith("quantize.running_") and name not in state_dict:
            state_dict[name] = buffer.clone()
    return load_checked(model, state_dict, f"tokenizer checkpoint {checkpoint}")


def convert_tokenizer_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    preset: str | None = None,
    use_ema: bool = True,
    scaling_factor: float | None = None,
) -> Path:
    """Convert an official tokenizer checkpoint and ``save_pretrained`` it to ``output_dir`` (safetensors).

    Loadable with ``iFSQAutoencoder.from_pretrained(output_dir)``. Arguments as in :func:`load_official_tokenizer`;
    nothing is written when the checkpoint does not match.
    """
    model = load_official_tokenizer(
        checkpoint, config=config, preset=preset, use_ema=use_ema, scaling_factor=scaling_factor
    )
    return save_converted(model, output_dir)
