"""LightningDiT (arXiv 2501.01423) as a diffusers model: the class-conditional flow-matching transformer that
iFSQ trains on its continuous latents (``dit/models/dit.py`` in the official repository).

Compared with the original DiT it adds QK-RMSNorm, SwiGLU feed-forward layers, 2-D rotary embeddings and RMSNorm,
each switchable from the config, and an optional REPA projector (an MLP on the hidden states after block
``repa_depth``) used only during training.

Time convention: ``timestep`` is the flow-matching time ``t`` in ``[0, 1]`` with ``t = 0`` pure noise and
``t = 1`` data, and the model predicts the velocity ``data - noise`` (see :mod:`ifsq_hf.schedulers.flow_matching`).

State-dict layout. Module names follow the official code, so an official checkpoint converts with
:func:`ifsq_hf.convert.dit.convert_official_dit_state_dict`:

================================================  =================================================
official key                                      this model
================================================  =================================================
``x_embedder.proj.{weight,bias}``                 same
``t_embedder.mlp.{0,2}.{weight,bias}``            same
``y_embedder.embedding_table.weight``             same (``num_classes + 1`` rows, last = null class)
``blocks.{i}.norm{1,2}.weight``                   same (RMSNorm; LayerNorm has no weight)
``blocks.{i}.attn.{qkv,proj}.{weight,bias}``      same
``blocks.{i}.attn.{q_norm,k_norm}.weight``        same
``blocks.{i}.mlp.{w12,w3}.{weight,bias}``         same (SwiGLU; ``mlp.{fc1,fc2}`` with GELU)
``blocks.{i}.adaLN_modulation.1.{weight,bias}``   same
``final_layer.norm_final.weight``                 same
``final_layer.{linear,adaLN_modulation.1}.*``     same
``projectors.0.{0,2,4}.{weight,bias}``            ``repa_projector.{0,2,4}.{weight,bias}``
``pos_embed``, ``feat_rope.freqs_{cos,sin}``      dropped: fixed tables recomputed from the config
================================================  =================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.utils import BaseOutput

__all__ = [
    "DIT_PRESETS",
    "LightningDiTTransformer2DModel",
    "LightningDiTTransformer2DModelOutput",
]

# LightningDiT sizes (depth, width, heads); the official iFSQ run is "L" with patch 1 on 16x16x4 latents.
DIT_PRESETS: dict[str, dict] = {
    "S": {"num_layers": 12, "hidden_size": 384, "num_attention_heads": 6},
    "B": {"num_layers": 12, "hidden_size": 768, "num_attention_heads": 12},
    "L": {"num_layers": 24, "hidden_size": 1024, "num_attention_heads": 16},
    "XL": {"num_layers": 28, "hidden_size": 1152, "num_attention_heads": 16},
    # Unit tests and CPU demos: a few hundred thousand parameters at most.
    "tiny": {
        "num_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "num_classes": 10,
        "sample_size": 4,
        "repa_depth": 1,
        "repa_hidden_dim": 32,
    },
}


@dataclass
class LightningDiTTransformer2DModelOutput(BaseOutput):
    """``sample``: predicted velocity ``(B, C, H, W)``; ``repa_features``: projected hidden states ``(B, N, D)``
    of block ``repa_depth`` when requested, else ``None``."""

    sample: torch.Tensor
    repa_features: torch.Tensor | None = None


class RMSNorm(nn.Module):
    """RMSNorm with a learnable scale, normalised in fp32 (as LightningDiT) so bf16 training keeps its statistics."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel (``F.rms_norm``) instead of pow/mean/rsqrt/mul; same math as the official
        # ``x.float() * rsqrt(mean(x^2) + eps)``, cast back, times the weight.
        shape = (x.shape[-1],)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, shape, self.weight, self.eps)
        return F.rms_norm(x.float(), shape, eps=self.eps).type_as(x) * self.weight


def _make_norm(dim: int, use_rmsnorm: bool, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if use_rmsnorm else nn.LayerNorm(dim, elementwise_affine=False, eps=eps)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table ``(height*width, dim)``; the first half encodes the column, the second the row
    (the MAE/DiT layout the official ``pos_embed`` buffer holds)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols.flatten()), _sincos_1d(dim // 2, rows.flatten())], dim=1)
    return emb.float()


def rope_tables_2d(
    head_dim: int, height: int, width: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``(height*width, head_dim)`` for 2-D RoPE on interleaved channel pairs: the first half of a
    head rotates with the row index, the second half with the column index (LightningDiT's layout)."""
    quarter = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(0, 2 * quarter, 2, dtype=torch.float32) / (2 * quarter))
    f_row = torch.arange(height, dtype=torch.float32)[:, None] * freqs  # (H, quarter)
    f_col = torch.arange(width, dtype=torch.float32)[:, None] * freqs  # (W, quarter)
    f_row = f_row.repeat_interleave(2, dim=-1)[:, None, :].expand(height, width, 2 * quarter)
    f_col = f_col.repeat_interleave(2, dim=-1)[None, :, :].expand(height, width, 2 * quarter)
    angles = torch.cat([f_row, f_col], dim=-1).reshape(height * width, 4 * quarter)
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])`` by the table's angles (the official formula
    ``x * cos + rotate_half(x) * sin`` with ``rotate_half`` = ``(-x[2i+1], x[2i])``)."""
    if not torch.compiler.is_compiling() and x.dtype == torch.float32:
        # Eager fast path: one complex multiply instead of stack/neg/mul/add passes (3x less time in fwd+bwd,
        # bit-identical on CPU). Compiled code takes the real formula, which inductor fuses anyway.
        pairs = x if _complex_viewable(x) else x.contiguous()
        freqs = torch.complex(cos[:, ::2], sin[:, ::2])
        return torch.view_as_real(torch.view_as_complex(pairs.unflatten(-1, (-1, 2))) * freqs).flatten(-2)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def _complex_viewable(x: torch.Tensor) -> bool:
    return x.stride(-1) == 1 and x.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in x.stride()[:-1])


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of ``t`` in ``[0, 1]`` (not scaled by 1000, as the official code) and a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.frequency_embedding_size % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table with one extra row, the null class ``num_classes`` used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, use_qk_norm: bool, use_rmsnorm: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        # QK-norm is RMSNorm, or (official code, use_rmsnorm=False) a default affine LayerNorm.
        self.q_norm = self._qk_norm(use_qk_norm, use_rmsnorm, eps)
        self.k_norm = self._qk_norm(use_qk_norm, use_rmsnorm, eps)
        self.proj = nn.Linear(dim, dim)

    def _qk_norm(self, use_qk_norm: bool, use_rmsnorm: bool, eps: float) -> nn.Module:
        if not use_qk_norm:
            return nn.Identity()
        return RMSNorm(self.head_dim, eps) if use_rmsnorm else nn.LayerNorm(self.head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = _apply_rope(q.float(), *rope).to(v.dtype), _apply_rope(k.float(), *rope).to(v.dtype)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class LightningDiTBlock(nn.Module):
    """Pre-norm attention + MLP, both modulated and gated by the conditioning vector (adaLN-Zero)."""

    def __init__(self, dim, num_heads, mlp_ratio, use_qk_norm, use_swiglu, use_rmsnorm, eps):
        super().__init__()
        self.norm1 = _make_norm(dim, use_rmsnorm, eps)
        self.attn = Attention(dim, num_heads, use_qk_norm, use_rmsnorm, eps)
        self.norm2 = _make_norm(dim, use_rmsnorm, eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, int(2 / 3 * hidden)) if use_swiglu else GeluMLP(dim, hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, rope):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: int, out_channels: int, use_rmsnorm: bool, eps: float):
        super().__init__()
        self.norm_final = _make_norm(dim, use_rmsnorm, eps)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LightningDiTTransformer2DModel(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Class-conditional LightningDiT velocity model on latent images.

    Args:
        sample_size: latent side the fixed position table is built for (other sizes are recomputed on the fly).
        in_channels / out_channels: latent channels (``out_channels`` defaults to ``in_channels``).
        patch_size: 1 or 2 (any positive divisor of the latent side works).
        hidden_size, num_layers, num_attention_heads, mlp_ratio: transformer size (see :data:`DIT_PRESETS`).
        num_classes: number of real classes; id ``num_classes`` is the null (unconditional) class.
        class_dropout_prob: probability of replacing a label by the null class in training mode (CFG training).
        use_qk_norm, use_swiglu, use_rope, use_rmsnorm, use_pos_embed: the LightningDiT switches (all on in iFSQ).
        repa_depth: the projector reads the hidden states after this many blocks (as the official code; 0 = the
            patch embeddings).
        repa_feature_dim: output size of the REPA projector (the encoder's feature size); ``None`` = no projector.
        repa_hidden_dim: width of the projector's hidden layers.

    LoRA: the linear layers are named ``qkv``, ``proj``, ``w12``, ``w3`` (or ``fc1``, ``fc2``) and
    ``adaLN_modulation.1``.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LightningDiTBlock"]
    _skip_layerwise_casting_patterns: ClassVar[list[str]] = ["x_embedder", "t_embedder", "y_embedder", "norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 4,
        out_channels: int | None = None,
        patch_size: int = 1,
        hidden_size: int = 1024,
        num_layers: int = 24,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        use_qk_norm: bool = True,
        use_swiglu: bool = True,
        use_rope: bool = True,
        use_rmsnorm: bool = True,
        use_pos_embed: bool = True,
        norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        frequency_embedding_size: int = 256,
        repa_depth: int = 8,
        repa_feature_dim: int | None = None,
        repa_hidden_dim: int = 2048,
    ):
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}."
            )
        head_dim = hidden_size // num_attention_heads
        if use_rope and head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}; change the width or heads.")
        if patch_size < 1 or sample_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must be >= 1 and divide sample_size {sample_size}.")
        if repa_feature_dim is not None and not 0 <= repa_depth <= num_layers:
            raise ValueError(f"repa_depth must be in [0, num_layers={num_layers}], got {repa_depth}.")
        if not 0.0 <= class_dropout_prob <= 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1], got {class_dropout_prob}.")
        self.out_channels = out_channels or in_channels

        self.x_embedder = PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size, frequency_embedding_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.blocks = nn.ModuleList(
            LightningDiTBlock(
                hidden_size, num_attention_heads, mlp_ratio, use_qk_norm, use_swiglu, use_rmsnorm, norm_eps
            )
            for _ in range(num_layers)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, use_rmsnorm, norm_eps)
        self.repa_projector = None
        if repa_feature_dim is not None:
            with torch.random.fork_rng(devices=[]):  # see _init_repa_projector
                self.repa_projector = nn.Sequential(
                    nn.Linear(hidden_size, repa_hidden_dim),
                    nn.SiLU(),
                    nn.Linear(repa_hidden_dim, repa_hidden_dim),
                    nn.SiLU(),
                    nn.Linear(repa_hidden_dim, repa_feature_dim),
                )
        grid = sample_size // patch_size
        # Fixed tables, recomputed from the config instead of stored (not in the state dict).
        self._grid = grid
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, grid, grid)[None], persistent=False)
        cos, sin = rope_tables_2d(head_dim, grid, grid, rope_theta) if use_rope else (torch.empty(0),) * 2
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._table_cache: dict = {}
        self.gradient_checkpointing = False
        self._init_weights()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides) -> LightningDiTTransformer2DModel:
        """Build ``"S"|"B"|"L"|"XL"|"tiny"``, optionally with a patch suffix (``"L/1"``, ``"XL/2"``)."""
        size, _, patch = name.partition("/")
        if size not in DIT_PRESETS:
            raise ValueError(
                f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)} (optionally '/1', '/2')."
            )
        config = dict(DIT_PRESETS[size])
        if patch:
            if not patch.isdigit():
                raise ValueError(f"preset patch suffix must be an integer, got {name!r} (e.g. 'L/1').")
            config["patch_size"] = int(patch)
        config.update(overrides)
        return cls(**config)

    def _init_weights(self) -> None:
        projector = set() if self.repa_projector is None else set(self.repa_projector.modules())
        for module in self.modules():
            if isinstance(module, nn.Linear) and module not in projector:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts closed
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        self._init_repa_projector()

    def _init_repa_projector(self) -> None:
        """Xavier init of the projector from its own generator, seeded from the global seed (``torch.initial_seed()``,
        set by ``set_seed``): with or without REPA, the same seed gives the same transformer and leaves the global
        RNG in the same state, so a no-REPA baseline and a REPA run differ only by the REPA loss."""
        if self.repa_projector is None:
            return
        for offset, module in enumerate((m for m in self.repa_projector if isinstance(m, nn.Linear)), start=1):
            generator = None
            if module.weight.device.type != "meta":
                seed = (torch.initial_seed() + 7919 * offset) % 2**63
                generator = torch.Generator(device=module.weight.device).manual_seed(seed)
            nn.init.xavier_uniform_(module.weight, generator=generator)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ helpers
    def _tables(self, h: int, w: int, device: torch.device, dtype: torch.dtype):
        """Position table and RoPE tables ``(cos, sin)`` for an ``h x w`` token grid.

        The configured grid reads non-persistent buffers (they follow ``.to()`` and are plain module state for
        ``torch.compile``, so no guard on a Python cache). Other grids are computed; eagerly they are memoised
        in a one-entry cache that compiled code never touches (a dict lookup there would make dynamo guard on
        the dict and recompile).
        """
        cfg = self.config
        if (h, w) == (self._grid, self._grid):
            pos = self.pos_embed.to(device, dtype) if cfg.use_pos_embed else None
            rope = (self.rope_cos.float(), self.rope_sin.float()) if cfg.use_rope else None
            return pos, rope
        if torch.compiler.is_compiling():
            return self._build_tables(h, w, device, dtype)
        key = (h, w, device, dtype)
        if key not in self._table_cache:
            self._table_cache = {key: self._build_tables(h, w, device, dtype)}
        return self._table_cache[key]

    def _build_tables(self, h: int, w: int, device: torch.device, dtype: torch.dtype):
        cfg = self.config
        pos = sincos_pos_embed_2d(cfg.hidden_size, h, w)[None].to(device, dtype) if cfg.use_pos_embed else None
        rope = None
        if cfg.use_rope:
            cos, sin = rope_tables_2d(cfg.hidden_size // cfg.num_attention_heads, h, w, cfg.rope_theta)
            rope = (cos.to(device), sin.to(device))
        return pos, rope

    def _drop_labels(self, class_labels: torch.Tensor) -> torch.Tensor:
        p = self.config.class_dropout_prob
        if not self.training or p == 0:
            return class_labels
        drop = torch.rand(class_labels.shape, device=class_labels.device) < p
        return torch.where(drop, torch.full_like(class_labels, self.config.num_classes), class_labels)

    def _unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        p, c = self.config.patch_size, self.out_channels
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.Tensor,
        return_repa_features: bool = False,
        return_dict: bool = True,
    ) -> LightningDiTTransformer2DModelOutput | tuple:
        """Predict the velocity ``data - noise`` at flow time ``timestep`` (``0`` = noise, ``1`` = data).

        Args:
            hidden_states: noisy latents ``(B, in_channels, H, W)``, ``H`` and ``W`` divisible by ``patch_size``.
            timestep: ``(B,)`` or scalar float in ``[0, 1]``.
            class_labels: ``(B,)`` int ids in ``[0, num_classes]``; ``num_classes`` is the null class. In training
                mode labels are replaced by the null class with probability ``class_dropout_prob``.
            return_repa_features: also return the REPA projector output on the hidden states of block
                ``repa_depth`` (needs ``repa_feature_dim``).
        """
        cfg = self.config
        if hidden_states.ndim != 4 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(
                f"hidden_states must be (batch, {cfg.in_channels}, height, width), got {tuple(hidden_states.shape)}."
            )
        b, _, height, width = hidden_states.shape
        p = cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not divisible by patch_size {p}.")
        if return_repa_features and self.repa_projector is None:
            raise ValueError("return_repa_features=True needs a projector: build the model with repa_feature_dim=D.")
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        class_labels = torch.as_tensor(class_labels, device=hidden_states.device)
        if timestep.shape != (b,) or class_labels.shape != (b,):
            raise ValueError(
                f"timestep and class_labels must have shape ({b},), got {tuple(timestep.shape)} and "
                f"{tuple(class_labels.shape)}."
            )
        if class_labels.is_floating_point():
            raise ValueError("class_labels must be integer class ids, got a float tensor.")

        h, w = height // p, width // p
        pos, rope = self._tables(h, w, hidden_states.device, hidden_states.dtype)
        x = self.x_embedder(hidden_states)
        if pos is not None:
            x = x + pos
        c = self.t_embedder(timestep) + self.y_embedder(self._drop_labels(class_labels.long()))

        repa_features = None
        if return_repa_features and cfg.repa_depth == 0:
            repa_features = self.repa_projector(x)
        for i, block in enumerate(self.blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, c, rope)
            else:
                x = block(x, c, rope)
            if return_repa_features and i + 1 == cfg.repa_depth:
                repa_features = self.repa_projector(x)
        sample = self._unpatchify(self.final_layer(x, c), h, w)
        if not return_dict:
            return (sample, repa_features) if return_repa_features else (sample,)
        return LightningDiTTransformer2DModelOutput(sample=sample, repa_features=repa_features)
