"""The iFSQ image tokenizer as a diffusers model.

A convolutional autoencoder (no attention, GroupNorm + SiLU residual blocks, as in the official
``ImageFSQVAEModel``) with a :class:`~ifsq_hf.quantization.FiniteScalarQuantizer` bottleneck. ``encode`` gives the
quantized latent (continuous values on the FSQ grid, for diffusion) and its int64 token indices (for
autoregressive models); ``decode`` and ``decode_indices`` turn either back into pixels.

The preset ``"ifsq_f16_d4_4bit"`` is the released official tokenizer (f16, 4 channels, 17 levels, iFSQ bound with
alpha 1.6, 83.32 M parameters). Its state dict has the official 274 keys with the official names, so converting an
official checkpoint is an identity mapping on names (strip the DDP/compile prefixes ``module.`` /
``module._orig_mod.`` of an EMA dict and drop the non-persistent ``quantize._levels``/``quantize._basis*``):

=====================================================  ======================================================
official ``ImageFSQVAEModel`` key                      this model
=====================================================  ======================================================
``encoder.conv_in.*``                                  ``encoder.conv_in.*``
``encoder.down.{i}.block.{j}.{norm1,conv1,norm2,       same (``i`` = resolution level 0..4, ``j`` = 0..1)
conv2,nin_shortcut}.*``
``encoder.down.{i}.downsample.conv.*``                 same (``i`` = 0..3)
``encoder.mid_block.{0,1}.*``                          same
``encoder.norm_out.*``, ``encoder.conv_out.*``         same (``conv_out`` has ``2 * latent_channels`` outputs)
``quant_conv.*``, ``post_quant_conv.*``                same
``quantize.running_mean``, ``quantize.running_var``    same (monitoring only; they never change the output)
``decoder.conv_in.*``, ``decoder.mid_block.{0,1}.*``   same
``decoder.up.{i}.block.{j}.*``                         same (``i`` = level, ``up.4`` runs first; ``j`` = 0..2)
``decoder.up.{i}.upsample.conv.*``                     same (``i`` = 1..4)
``decoder.norm_out.*``, ``decoder.conv_out.*``         same
=====================================================  ======================================================

Numerics follow the official forward, except that ``quant_conv`` and the quantizer always run in float32 with
autocast disabled: the official AR pipeline quantizes under bf16 autocast, which changes ~10 % of the token
indices compared with fp32 (measured on the official ``fsq.py``). Here the indices depend only on the encoder trunk's
output, not on the autocast setting of the quantizer path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..quantization import FiniteScalarQuantizer
from .pre_quant_norm import RunningChannelNorm

__all__ = [
    "PRESETS",
    "DecoderOutput",
    "iFSQAutoencoder",
    "iFSQAutoencoderOutput",
    "iFSQEncoderOutput",
]


# Presets: the official released tokenizer, a CPU-trainable demo tokenizer, and a unit-test tokenizer.
PRESETS: dict[str, dict[str, Any]] = {
    # Tencent-Hunyuan/iFSQ configs/ifsq_f16_d4_4bit/run.json; 1.092421 is the latent multiplier of the official DiT.
    "ifsq_f16_d4_4bit": {
        "block_out_channels": [128, 128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "levels": [17, 17, 17, 17],
        "quantizer_bound": "ifsq",
        "quantizer_alpha": 1.6,
        "norm_num_groups": 32,
        "scaling_factor": 1.092421,
        "sample_size": 256,
    },
    # 0.48 M parameters, f8: trains for a few hundred steps on a laptop CPU.
    "tiny_f8_d4": {
        "block_out_channels": [16, 32, 32, 48],
        "layers_per_block": 1,
        "latent_channels": 4,
        "levels": [17, 17, 17, 17],
        "norm_num_groups": 8,
        "sample_size": 64,
    },
    # 19 k parameters, f4: for unit tests.
    "test_f4_d4": {
        "block_out_channels": [8, 8, 8],
        "layers_per_block": 1,
        "latent_channels": 4,
        "levels": [17, 17, 17, 17],
        "norm_num_groups": 4,
        "sample_size": 16,
    },
}


@dataclass
class iFSQEncoderOutput(BaseOutput):
    """Output of :meth:`iFSQAutoencoder.encode`.

    Args:
        latent: quantized latent ``(B, C, h, w)``, every value on the FSQ grid in ``[-1, 1]`` (the diffusion latent
            before ``shift_factor``/``scaling_factor``).
        indices: int64 token indices ``(B, h, w)`` (global indices, also for factorized quantizers; split them with
            ``model.quantizer.global_to_group_indices``).
    """

    latent: torch.Tensor
    indices: torch.Tensor = None  # always set; defaults let BaseOutput be rebuilt from a dict (see below)


@dataclass
class iFSQAutoencoderOutput(BaseOutput):
    """Output of :meth:`iFSQAutoencoder.forward`.

    Args:
        sample: reconstruction ``(B, 3, H, W)`` in about ``[-1, 1]``.
        latent: quantized latent ``(B, C, h, w)``.
        indices: int64 token indices ``(B, h, w)``.

    All three are always set. The later fields default to ``None`` only so that ``type(output)(dict(output))``
    works, which is how accelerate rebuilds outputs when it casts them to fp32 under ``--mixed_precision``.
    """

    sample: torch.Tensor
    latent: torch.Tensor = None
    indices: torch.Tensor = None


class ResnetBlock2D(nn.Module):
    """``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> dropout -> conv2`` plus a (1x1 when channels change) skip."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int, norm_eps: float, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=norm_eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=norm_eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Memory: one statement per step so each intermediate is released as soon as the next exists (a nested
        # call kept conv1's output alive through conv2), activations in place when no graph is recorded (autograd
        # needs SiLU's input), and the residual added into conv2's fresh output. Same values as before.
        inplace = not torch.is_grad_enabled()
        h = F.silu(self.norm1(x), inplace=inplace)
        h = self.conv1(h)
        h = F.silu(self.norm2(h), inplace=inplace)
        h = self.conv2(self.dropout(h))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return h.add_(x)


class Downsample2D(nn.Module):
    """Halves the resolution: zero-pad right/bottom by one, then a stride-2 3x3 conv (the official layout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2D(nn.Module):
    """Doubles the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (a ModuleList) and an optional ``downsample``/``upsample`` (official names)."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(resample_name, resample)
        self.resample_name = resample_name

    def resample(self) -> nn.Module | None:
        return getattr(self, self.resample_name, None)


class _CheckpointedTrunk(nn.Module):
    """Runs residual blocks through the diffusers gradient-checkpointing function when it is enabled."""

    gradient_checkpointing: bool

    def _run(self, block: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, h)
        return block(h)


class Encoder(_CheckpointedTrunk):
    """``conv_in -> down[i] (blocks, downsample) -> mid_block -> norm_out -> SiLU -> conv_out``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: list[int],
        layers_per_block: int,
        norm_num_groups: int,
        norm_eps: float,
        dropout: float,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        channels = block_out_channels[0]
        for i, out_ch in enumerate(block_out_channels):
            blocks = []
            for _ in range(layers_per_block):
                blocks.append(ResnetBlock2D(channels, out_ch, norm_num_groups, norm_eps, dropout))
                channels = out_ch
            last = i == len(block_out_channels) - 1
            self.down.append(_Level(blocks, None if last else Downsample2D(channels), "downsample"))
        self.mid_block = nn.ModuleList(
            [ResnetBlock2D(channels, channels, norm_num_groups, norm_eps, dropout) for _ in range(2)]
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps, affine=True)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = self._run(block, h)
            resample = level.resample()
            if resample is not None:
                h = resample(h)
        for block in self.mid_block:
            h = self._run(block, h)
        h = F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled())
        return self.conv_out(h)


class Decoder(_CheckpointedTrunk):
    """``conv_in -> mid_block -> up[n-1] ... up[0] (blocks, upsample) -> norm_out -> SiLU -> conv_out``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_out_channels: list[int],
        layers_per_block: int,
        norm_num_groups: int,
        norm_eps: float,
        dropout: float,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        channels = block_out_channels[-1]
        self.conv_in = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.mid_block = nn.ModuleList(
            [ResnetBlock2D(channels, channels, norm_num_groups, norm_eps, dropout) for _ in range(2)]
        )
        levels: list[nn.Module] = [None] * len(block_out_channels)  # type: ignore[list-item]
        for i in reversed(range(len(block_out_channels))):
            out_ch = block_out_channels[i]
            blocks = []
            for _ in range(layers_per_block + 1):
                blocks.append(ResnetBlock2D(channels, out_ch, norm_num_groups, norm_eps, dropout))
                channels = out_ch
            levels[i] = _Level(blocks, Upsample2D(channels) if i > 0 else None, "upsample")
        # up[i] is resolution level i (up[0] is the full resolution and runs last), as in taming/LDM and iFSQ.
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps, affine=True)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid_block:
            h = self._run(block, h)
        for level in reversed(self.up):
            for block in level.block:
                h = self._run(block, h)
            resample = level.resample()
            if resample is not None:
                h = resample(h)
        h = F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled())
        return self.conv_out(h)


def _blend_weights(size: int, start: int, total: int, overlap: int, device, dtype) -> torch.Tensor:
    """1-D blending weights of a tile ``[start, start + size)`` inside ``[0, total)``.

    Linear ramps over ``overlap`` positions on every side that borders another tile, 1 elsewhere, strictly
    positive so that the normalised sum is defined everywhere.
    """
    w = torch.ones(size, device=device, dtype=dtype)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device, dtype=dtype) + 0.5) / overlap
        n = min(overlap, size)
        if start > 0:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if start + size < total:
            w[size - n :] = torch.minimum(w[size - n :], ramp[:n].flip(0))
    return w


_COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _to_compute_dtype(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Cast inputs to the dtype ``module`` computes in, so a bf16/fp16 model takes fp32 images and latents.

    With diffusers' layerwise casting the weights are stored in a storage-only dtype (fp8) and upcast by a hook;
    the hook's compute dtype is used then.
    """
    dtype = module.weight.dtype
    if dtype not in _COMPUTE_DTYPES:
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("layerwise_casting") if registry is not None else None
        dtype = getattr(hook, "compute_dtype", None)
    return x if dtype is None else x.to(dtype)


def _tile_starts(total: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``[0, total)``; the last tile is shifted back so that all tiles have full size."""
    if total <= tile:
        return [0]
    starts = list(range(0, total - tile, stride))
    starts.append(total - tile)
    return starts


class iFSQAutoencoder(ModelMixin, AutoencoderMixin, ConfigMixin, PeftAdapterMixin):
    r"""iFSQ tokenizer: a convolutional encoder/decoder around a finite scalar quantizer.

    Args:
        in_channels: image channels.
        out_channels: reconstructed image channels.
        latent_channels: channels of the quantized latent; must equal ``len(levels)``.
        block_out_channels: channels of each resolution level; every level but the last halves the resolution,
            so the downsampling factor is ``2 ** (len(block_out_channels) - 1)``.
        layers_per_block: residual blocks per level in the encoder (the decoder has one more, as officially).
        norm_num_groups: GroupNorm groups (must divide every entry of ``block_out_channels``).
        norm_eps: GroupNorm epsilon.
        dropout: dropout inside the residual blocks.
        double_z: the encoder outputs ``2 * latent_channels`` channels that ``quant_conv`` maps to
            ``latent_channels`` (the official layout); ``False`` outputs ``latent_channels`` directly.
        levels: quantization levels per latent channel (odd for the iFSQ bound, e.g. ``[17] * 4`` = 4 bits).
        quantizer_bound: ``"ifsq"`` (``2 * sigmoid(alpha * z) - 1``) or ``"tanh"`` (vanilla FSQ).
        quantizer_alpha: slope of the iFSQ bound; 1.6 in the paper, 2.0 equals ``tanh``.
        factorized_dims: channels per token group for factorized AR heads (e.g. ``[2, 2]``: two tokens of
            ``17**2`` codes per position). ``encode`` still returns global indices.
        scaling_factor: multiplier that brings the latent to unit variance for diffusion models,
            ``(latent - shift_factor) * scaling_factor`` (official DiT: 1.092421).
        shift_factor: offset subtracted before scaling (0 for the official tokenizer).
        pre_quant_norm: normalise each latent channel to unit variance with running statistics before the bound
            (:class:`~ifsq_hf.models.pre_quant_norm.RunningChannelNorm`), so iFSQ's ``alpha = 1.6`` premise holds
            by construction. Off by default (official checkpoints have no such buffers).
        sample_size: training resolution; also the default tile size for tiled encoding/decoding.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ResnetBlock2D"]
    _skip_layerwise_casting_patterns: ClassVar[list[str]] = ["^quantize$", "^quant_conv$", "norm"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 4,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        double_z: bool = True,
        levels: tuple[int, ...] = (17, 17, 17, 17),
        quantizer_bound: str = "ifsq",
        quantizer_alpha: float = 1.6,
        factorized_dims: tuple[int, ...] | None = None,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        sample_size: int = 256,
        pre_quant_norm: bool = False,
    ):
        super().__init__()
        block_out_channels = list(block_out_channels)
        levels = list(levels)
        if len(block_out_channels) < 1:
            raise ValueError("block_out_channels needs at least one level, e.g. [128, 128, 256, 512, 512].")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={norm_num_groups} must divide every entry of block_out_channels, but {bad} are not "
                "divisible. Pick a smaller norm_num_groups or wider levels."
            )
        if len(levels) != latent_channels:
            raise ValueError(
                f"latent_channels ({latent_channels}) must equal len(levels) ({len(levels)}): each latent channel is "
                f"one quantized dimension. Use levels=[{levels[0] if levels else 17}] * {latent_channels}."
            )
        if not isinstance(scaling_factor, (int, float)) or not math.isfinite(scaling_factor) or scaling_factor == 0:
            raise ValueError(f"scaling_factor must be a finite non-zero number, got {scaling_factor!r}.")

        self.encoder = Encoder(
            in_channels,
            2 * latent_channels if double_z else latent_channels,
            block_out_channels,
            layers_per_block,
            norm_num_groups,
            norm_eps,
            dropout,
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels if double_z else latent_channels, latent_channels, 1)
        self.quantize = FiniteScalarQuantizer(
            levels,
            bound=quantizer_bound,
            alpha=quantizer_alpha,
            factorized_dims=None if factorized_dims is None else list(factorized_dims),
            track_running_stats=True,
        )
        # Off by default: official checkpoints have no such buffers (see models/pre_quant_norm.py for the why).
        self.pre_quant_normalizer = RunningChannelNorm(latent_channels) if pre_quant_norm else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(
            latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups, norm_eps, dropout
        )

        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_size = sample_size
        self.tile_sample_stride = self._default_stride(sample_size)

    # ------------------------------------------------------------------ presets / properties
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> iFSQAutoencoder:
        """diffusers' ``from_pretrained``, refusing to load trained weights into a quantizer with other levels.

        The weights' shapes do not depend on the levels, so ``from_pretrained(path, levels=[9] * 4)`` on a
        17-level tokenizer would load silently and quantize on the wrong grid. Changing ``levels``,
        ``quantizer_bound``, ``quantizer_alpha`` or ``factorized_dims`` needs ``allow_quantizer_change=True``
        (e.g. to fine-tune at another bit width).
        """
        allow = kwargs.pop("allow_quantizer_change", False)
        keys = ("levels", "quantizer_bound", "quantizer_alpha", "factorized_dims")
        if not allow and any(kwargs.get(k) is not None for k in keys):
            load_keys = (
                "subfolder",
                "revision",
                "cache_dir",
                "token",
                "local_files_only",
                "force_download",
                "proxies",
            )
            saved = cls.load_config(pretrained_model_name_or_path, **{k: kwargs[k] for k in load_keys if k in kwargs})

            def as_list(value):
                return list(value) if isinstance(value, (list, tuple)) else [value]

            changed = {
                k: (saved[k], kwargs[k])
                for k in keys
                if kwargs.get(k) is not None
                and saved.get(k) is not None
                and as_list(saved[k]) != as_list(kwargs[k])
                # another channel count changes weight shapes: the config check / diffusers' shape check report it
                and len(as_list(saved[k])) == len(as_list(kwargs[k]))
            }
            if changed:
                shown = ", ".join(f"{k}: saved {old!r}, requested {new!r}" for k, (old, new) in changed.items())
                raise ValueError(
                    f"{pretrained_model_name_or_path} was trained with another quantizer ({shown}); its weights "
                    "would load without error but quantize on the wrong grid. Drop the override, or pass "
                    "allow_quantizer_change=True to start a fine-tune at the new setting on purpose."
                )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **config_overrides) -> iFSQAutoencoder:
        """A randomly initialised model with a preset config (``list(PRESETS)``), optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        config = {**PRESETS[name], **config_overrides}
        return cls(**config)

    @property
    def quantizer(self) -> FiniteScalarQuantizer:
        """The FSQ/iFSQ quantizer (registered as ``quantize`` to keep the official state-dict names)."""
        return self.quantize

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction from image to latent (16 for the official tokenizer)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        """Number of distinct tokens, ``prod(levels)`` (83521 for 4 x 17 levels)."""
        return self.quantize.codebook_size

    def get_last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last conv (for the adaptive GAN loss weight)."""
        return self.decoder.conv_out.weight

    # ------------------------------------------------------------------ tiling
    def _default_stride(self, tile: int) -> int:
        f = self.downsample_factor
        return max(f, (tile * 3 // 4) // f * f)

    def enable_tiling(self, tile_sample_size: int | None = None, tile_sample_stride: int | None = None) -> None:
        """Encode and decode images larger than ``tile_sample_size`` tile by tile, blending the overlaps.

        Args:
            tile_sample_size: tile side in pixels (default: ``config.sample_size``), a multiple of the
                downsampling factor.
            tile_sample_stride: step between tiles in pixels (default: 3/4 of the tile, rounded down to a multiple
                of the downsampling factor); the overlap is ``tile_sample_size - tile_sample_stride``.

        The encoder's tiles are blended *before* quantization, so one image always gets one consistent set of
        codes; the decoder's tiles are blended in pixel space. Tiling is a memory-saving approximation, as in
        ``AutoencoderKL``: each tile sees less context, and every GroupNorm normalises with the statistics of its
        tile rather than of the whole image. Without normalisation layers the blended result matches the untiled
        one to ~1 % (encoder) and ~3 % (decoder) mean relative difference on the test model; with them the difference depends on how much the
        tiles' statistics differ. For the randomly initialised ``test_f4_d4`` model on noise it is large (only
        ~15 % of indices agree and decoded pixels differ by ~0.2 on average), so use tiling for large images
        with a trained tokenizer and keep untiled encoding when exact tokens matter.
        """
        f = self.downsample_factor
        size = self.tile_sample_size if tile_sample_size is None else int(tile_sample_size)
        stride = self._default_stride(size) if tile_sample_stride is None else int(tile_sample_stride)
        if size <= 0 or size % f:
            raise ValueError(
                f"tile_sample_size must be a positive multiple of the downsampling factor {f}, got {size}."
            )
        if stride <= 0 or stride % f or stride > size:
            raise ValueError(
                f"tile_sample_stride must be a positive multiple of {f} and at most tile_sample_size ({size}), "
                f"got {stride}."
            )
        self.tile_sample_size = size
        self.tile_sample_stride = stride
        self.use_tiling = True

    def _tiled(self, fn, x: torch.Tensor, tile: int, stride: int, scale: float) -> torch.Tensor:
        """Apply a fully convolutional ``fn`` tile by tile and blend the outputs with linear ramps.

        ``tile``/``stride`` are in input pixels; ``scale`` is the output/input resolution ratio of ``fn``.
        """
        _, _, height, width = x.shape
        out = weight = None
        overlap_out = round((tile - stride) * scale)
        out_h, out_w = round(height * scale), round(width * scale)
        for top in _tile_starts(height, tile, stride):
            for left in _tile_starts(width, tile, stride):
                y = fn(x[:, :, top : top + tile, left : left + tile])
                if out is None:
                    out = y.new_zeros(y.shape[0], y.shape[1], out_h, out_w, dtype=torch.float32)
                    weight = y.new_zeros(1, 1, out_h, out_w, dtype=torch.float32)
                t, lft = round(top * scale), round(left * scale)
                th, tw = y.shape[-2:]
                wy = _blend_weights(th, t, out_h, overlap_out, y.device, torch.float32)
                wx = _blend_weights(tw, lft, out_w, overlap_out, y.device, torch.float32)
                w = wy[:, None] * wx[None, :]
                out[:, :, t : t + th, lft : lft + tw] += y.float() * w
                weight[:, :, t : t + th, lft : lft + tw] += w
        return (out / weight).to(y.dtype)

    # ------------------------------------------------------------------ input checks
    def _check_sample(self, sample: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(sample):
            raise ValueError(f"sample must be a torch.Tensor of shape (B, C, H, W), got {type(sample).__name__}.")
        if not torch.is_floating_point(sample):
            raise ValueError(
                f"sample must be a floating-point image in [-1, 1], got dtype {sample.dtype}. Convert uint8 images "
                "with x.float() / 127.5 - 1."
            )
        if sample.ndim != 4:
            raise ValueError(f"sample must have shape (B, C, H, W), got {tuple(sample.shape)}.")
        if sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample has {sample.shape[1]} channels but the model expects in_channels={self.config.in_channels}; "
                "pass channel-first images (B, C, H, W)."
            )
        f = self.downsample_factor
        h, w = sample.shape[-2:]
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the downsampling factor {f}; resize or crop to a multiple "
                f"of {f} (e.g. {max(f, h // f * f)}x{max(f, w // f * f)})."
            )
        return _to_compute_dtype(sample, self.encoder.conv_in)

    def _check_latent(self, latent: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(latent) or not torch.is_floating_point(latent):
            what = latent.dtype if torch.is_tensor(latent) else type(latent).__name__
            raise ValueError(
                f"latent must be a floating-point tensor (B, C, h, w), got {what}; for integer tokens use "
                "decode_indices()."
            )
        if latent.ndim != 4 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latent must have shape (B, {self.config.latent_channels}, h, w), got {tuple(latent.shape)}."
            )
        return _to_compute_dtype(latent, self.post_quant_conv)

    # ------------------------------------------------------------------ encode
    def _pre_quant(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder trunk + ``quant_conv``; the 1x1 conv runs in fp32 with autocast off (see module docstring)."""
        h = self.encoder(x)
        with torch.autocast(device_type=h.device.type, enabled=False):
            weight, bias = self.quant_conv.weight, self.quant_conv.bias
            return F.conv2d(h.float(), weight.float(), None if bias is None else bias.float())

    def _pre_quant_any(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_slicing and x.shape[0] > 1:
            h = torch.cat([self._pre_quant_any_single(s) for s in x.split(1)])
        else:
            h = self._pre_quant_any_single(x)
        return h if self.pre_quant_normalizer is None else self.pre_quant_normalizer(h)

    def _pre_quant_any_single(self, x: torch.Tensor) -> torch.Tensor:
        size = self.tile_sample_size
        if self.use_tiling and (x.shape[-2] > size or x.shape[-1] > size):
            return self._tiled(self._pre_quant, x, size, self.tile_sample_stride, 1.0 / self.downsample_factor)
        return self._pre_quant(x)

    @apply_forward_hook
    def encode_pre_quant(self, sample: torch.Tensor) -> torch.Tensor:
        """Continuous activations right before the quantizer's bound, ``(B, latent_channels, h, w)`` float32.

        Useful to study how the bound maps them to bins (see :mod:`ifsq_hf.analysis`).
        """
        return self._pre_quant_any(self._check_sample(sample))

    @apply_forward_hook
    def encode(self, sample: torch.Tensor, return_dict: bool = True) -> iFSQEncoderOutput | tuple:
        """Images ``(B, C, H, W)`` in ``[-1, 1]`` -> quantized latent ``(B, C, h, w)`` and indices ``(B, h, w)``."""
        x = self._check_sample(sample)
        # Images in [0, 255] would encode "successfully" into garbage. Checked in eval mode (inference, frozen
        # tokenizers) at the cost of one device sync per call; training batches come from the [-1, 1] data pipeline.
        # `model.check_input_range = False` skips it.
        if getattr(self, "check_input_range", True) and not self.training and x.numel():
            peak = float(x.detach().abs().amax())
            if not peak <= 1.5:
                raise ValueError(
                    f"sample values reach {peak:.4g} but the tokenizer expects images in [-1, 1]: convert images in "
                    "[0, 255] with x / 127.5 - 1 and images in [0, 1] with x * 2 - 1 (NaN/Inf inputs also end here)."
                )
        h = self._pre_quant_any(x)
        codes, indices = self.quantize(h, return_dict=False)
        if self.quantize.num_groups > 1:
            indices = self.quantize.group_indices_to_global(indices)
        latent = codes.to(x.dtype)
        if not return_dict:
            return (latent, indices)
        return iFSQEncoderOutput(latent=latent, indices=indices)

    # ------------------------------------------------------------------ decode
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def _decode_any_single(self, z: torch.Tensor) -> torch.Tensor:
        size = self.tile_sample_size // self.downsample_factor
        if self.use_tiling and (z.shape[-2] > size or z.shape[-1] > size):
            stride = self.tile_sample_stride // self.downsample_factor
            return self._tiled(self._decode, z, size, stride, float(self.downsample_factor))
        return self._decode(z)

    @apply_forward_hook
    def decode(self, latent: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Latent ``(B, C, h, w)`` -> images ``(B, out_channels, h * f, w * f)``.

        The latent is used as given (not re-quantized), so continuous diffusion samples decode directly; undo
        the diffusion normalisation first: ``decode(x / scaling_factor + shift_factor)``.
        """
        z = self._check_latent(latent)
        if self.use_slicing and z.shape[0] > 1:
            sample = torch.cat([self._decode_any_single(s) for s in z.split(1)])
        else:
            sample = self._decode_any_single(z)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """Token indices ``(B, h, w)`` (or ``(B, h, w, G)`` per-group indices) -> quantized latent ``(B, C, h, w)``."""
        if not torch.is_tensor(indices):
            raise ValueError(f"indices must be an int64 tensor (B, h, w), got {type(indices).__name__}.")
        q = self.quantize
        if q.num_groups > 1 and indices.ndim == 4 and indices.shape[-1] == q.num_groups:
            indices = q.group_indices_to_global(indices)
        if indices.ndim != 3:
            extra = f" or (B, h, w, {q.num_groups})" if q.num_groups > 1 else ""
            raise ValueError(
                f"indices must have shape (B, h, w){extra}, got {tuple(indices.shape)}; reshape flat token "
                "sequences (B, h * w) with .view(B, h, w)."
            )
        if q.num_groups > 1:
            indices = q.global_to_group_indices(indices)  # validates the range and dtype
        # contiguous: the codes come back channels-last in memory, and convs pick other kernels for that layout
        return _to_compute_dtype(q.indices_to_codes(indices), self.post_quant_conv).contiguous()

    @apply_forward_hook
    def decode_indices(self, indices: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Token indices ``(B, h, w)`` int64 -> images; equals ``decode(encode(x).latent)`` for ``encode(x).indices``."""
        return self.decode(self.indices_to_latent(indices), return_dict=return_dict)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> iFSQAutoencoderOutput | tuple:
        """Encode, quantize (straight-through gradients) and decode."""
        latent, indices = self.encode(sample, return_dict=False)
        (recon,) = self.decode(latent, return_dict=False)
        if not return_dict:
            return (recon, latent, indices)
        return iFSQAutoencoderOutput(sample=recon, latent=latent, indices=indices)
