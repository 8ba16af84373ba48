"""Class-conditional LlamaGen (arXiv 2406.06525) over iFSQ image tokens, as a transformers model.

Architecture as in the official iFSQ code (`llamagen/models/llamagen.py`, itself upstream LlamaGen `gpt.py`):
pre-RMSNorm Llama blocks with a fused QKV projection, SwiGLU, 2-D rotary embedding on interleaved pairs, one class
token whose rotary entry is zero (so its query and key are zeroed, exactly as upstream), optional token
factorization (K sub-indices per position predicted by extra causal blocks) and an optional REPA projector.

State-dict mapping from the official/upstream checkpoints (see `ifsq_hf.convert.llamagen.convert_llamagen_state_dict`):

| official / upstream key                     | this model                                          |
|---------------------------------------------|-----------------------------------------------------|
| `cls_embedding.embedding_table.weight`      | `model.class_embedding.weight`                      |
| `tok_embeddings.weight` / `{i}_emb.weight`  | `model.embed_tokens.weight` / `model.embed_tokens.{i}.weight` |
| `layers.{l}.attention.wqkv.weight`          | `model.layers.{l}.self_attn.qkv_proj.weight`        |
| `layers.{l}.attention.wo.weight`            | `model.layers.{l}.self_attn.o_proj.weight`          |
| `layers.{l}.feed_forward.w1/w3/w2.weight`   | `model.layers.{l}.mlp.gate_proj/up_proj/down_proj.weight` |
| `layers.{l}.attention_norm/ffn_norm.weight` | `model.layers.{l}.input_layernorm/post_attention_layernorm.weight` |
| `factorized_blocks.{j}.*`                   | `model.factorized_layers.{j}.*` (same sub-keys)     |
| `norm.weight`                               | `model.norm.weight`                                 |
| `projectors.0.{0,2,4}.*`                    | `model.repa_projector.{0,2,4}.*`                    |
| `output.weight` / `output.{i}.weight`       | `lm_head.weight` / `lm_head.{i}.weight`             |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import (
    GenerateDecoderOnlyOutput,
    GenerationMode,
    LogitsProcessorList,
    MaxLengthCriteria,
    StoppingCriteriaList,
)
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_llamagen import LlamaGenConfig

__all__ = [
    "LlamaGenForImageGeneration",
    "LlamaGenImageGenerationOutput",
    "LlamaGenModel",
    "LlamaGenModelOutput",
    "LlamaGenPreTrainedModel",
]


@dataclass
class LlamaGenModelOutput(ModelOutput):
    """Trunk output.

    Args:
        last_hidden_state: `(B, T, D)` hidden states after the final block (before the final norm).
        past_key_values: the KV cache, when one is used.
        hidden_states: `num_hidden_layers + 1` states `(B, T, D)` when `output_hidden_states=True`: the input
            embeddings, then each block's output (the last one equals `last_hidden_state`, before the final norm).
        attentions: per-block attention weights `(B, H, T, past + T)` when `output_attentions=True` (computed with
            the eager kernel for that call, whatever `attn_implementation` is).
        repa_features: `(B, T, F)` REPA projector output; position n is the state predicting image token n.
    """

    last_hidden_state: torch.Tensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    repa_features: torch.Tensor | None = None


@dataclass
class LlamaGenImageGenerationOutput(ModelOutput):
    """Output of [`LlamaGenForImageGeneration`].

    Args:
        loss: summed next-token cross-entropy (one term per sub-token with factorization) when `labels` is given.
        logits: `(B, T, vocab_size)`, or with factorization a tuple of K tensors `(B, T', V_k)`; position n scores
            image token n.
        past_key_values: the KV cache, when one is used.
        hidden_states: per-layer hidden states when `output_hidden_states=True` (see [`LlamaGenModelOutput`]).
        attentions: per-block attention weights when `output_attentions=True`.
        repa_features: `(B, T, F)` REPA projector output when `output_repa_features=True`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    repa_features: torch.Tensor | None = None


def rope_2d_table(grid_size: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaGen's 2-D rotary table: `(1 + grid_size**2, head_dim // 2)` cos and sin.

    Row 0 is the class token and is all zeros (cos = sin = 0, which zeroes its query and key, as upstream);
    row 1 + n is grid cell n in raster order, whose angles are `[row * f ‖ col * f]` with `head_dim // 4`
    frequencies `f`.
    """
    half = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, half, 2, device=device)[: half // 2].float() / half))
    t = torch.arange(grid_size, device=device, dtype=torch.float32)
    f = torch.outer(t, freqs)
    angles = torch.cat(
        [f[:, None, :].expand(-1, grid_size, -1), f[None, :, :].expand(grid_size, -1, -1)], dim=-1
    ).flatten(0, 1)
    zeros = torch.zeros(1, half, device=device)
    return torch.cat([zeros, angles.cos()]), torch.cat([zeros, angles.sin()])


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs `(x[2i], x[2i+1])` of `x (B, H, T, D)` by `cos/sin (T, D/2)`, in fp32."""
    xs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xs[..., 0], xs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return out.flatten(-2).type_as(x)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention that also returns the weights.

    `attention_mask` is what transformers' mask utilities build: an additive float mask (eager), a boolean
    keep-mask (SDPA) or `None`, which means causal (aligned to the end of the keys) for a multi-token query.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if attention_mask is None and q_len > 1:
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


class LlamaGenRMSNorm(nn.Module):
    """RMSNorm computed in fp32, then scaled (upstream order: normalize, cast back, multiply by the weight)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LlamaGenDropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, rescaling the kept ones."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LlamaGenMLP(nn.Module):
    def __init__(self, config: LlamaGenConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.ffn_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class LlamaGenAttention(nn.Module):
    """Multi-head (or grouped-query) attention with a fused QKV projection and interleaved 2-D RoPE."""

    def __init__(self, config: LlamaGenConfig, layer_idx: int | None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.qkv_proj = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=False
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        self.resid_dropout = nn.Dropout(config.residual_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, _ = hidden_states.shape
        q, k, v = self.qkv_proj(hidden_states).split(
            [self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim],
            dim=-1,
        )
        q = q.view(b, t, -1, self.head_dim).transpose(1, 2)
        k = k.view(b, t, -1, self.head_dim).transpose(1, 2)
        v = v.view(b, t, -1, self.head_dim).transpose(1, 2)
        q = apply_rope_interleaved(q, *position_embeddings)
        k = apply_rope_interleaved(k, *position_embeddings)
        if past_key_values is not None:
            # StaticCache writes in place (index_copy_) into preallocated slots; DynamicCache concatenates.
            k, v = past_key_values.update(k, v, self.layer_idx)
        attn_fn: Callable = eager_attention_forward
        if not output_attentions:  # only the eager path materialises the weights
            attn_fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attn_fn(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.resid_dropout(self.o_proj(out.reshape(b, t, -1))), weights


class LlamaGenDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: `h = x + drop_path(attn(norm(x)))`, `out = h + drop_path(mlp(norm(h)))`."""

    def __init__(self, config: LlamaGenConfig, layer_idx: int | None, drop_path: float = 0.0):
        super().__init__()
        self.self_attn = LlamaGenAttention(config, layer_idx)
        self.mlp = LlamaGenMLP(config)
        self.input_layernorm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.drop_path = LlamaGenDropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            output_attentions=output_attentions,
        )
        h = hidden_states + self.drop_path(attn)
        return h + self.drop_path(self.mlp(self.post_attention_layernorm(h))), weights


class LlamaGenPreTrainedModel(PreTrainedModel):
    config_class = LlamaGenConfig
    config: LlamaGenConfig
    base_model_prefix = "model"
    main_input_name = "class_labels"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LlamaGenDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    # Flex attention is not declared: on CPU its forward matched SDPA but cached generation with a StaticCache gave
    # different tokens, and each call compiles for ~50 s, so it cannot be kept under test here.
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # one decoding step with a StaticCache compiles with fullgraph=True (tested)

    def _init_weights(self, module: nn.Module) -> None:
        # Upstream init: N(0, 0.02) for every Linear and Embedding, ones for norms, zeros for the output heads.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "_llamagen_zero_init", False):
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std, generator=_own_generator(module))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LlamaGenRMSNorm):
            init.ones_(module.weight)


def _own_generator(module: nn.Module) -> torch.Generator | None:
    """A generator for a module that must not consume the global RNG (the REPA projector), seeded from the global
    seed (``torch.initial_seed()``, set by ``set_seed``) so it still follows the run's seed; ``None`` otherwise."""
    offset = getattr(module, "_llamagen_rng_offset", None)
    if offset is None or module.weight.device.type == "meta":
        return None
    return torch.Generator(device=module.weight.device).manual_seed((torch.initial_seed() + 7919 * offset) % 2**63)


def _drop_path_rates(rate: float, n: int) -> list[float]:
    # torch.linspace(0, rate, n) in plain Python, so construction also works on the meta device.
    return [rate * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


class LlamaGenModel(LlamaGenPreTrainedModel):
    """The LlamaGen trunk: class/token embeddings, the decoder blocks and the final norm.

    The factorized sub-token blocks and the REPA projector live here too (so the whole network shares one
    `model.` prefix); the output heads are in [`LlamaGenForImageGeneration`].
    """

    def __init__(self, config: LlamaGenConfig):
        super().__init__(config)
        config.check_codebook_sizes()  # also when the config was edited after construction
        has_null = config.class_dropout_prob > 0
        self.class_embedding = nn.Embedding(config.num_classes + int(has_null), config.hidden_size)
        if config.factorized_vocab_sizes:
            self.embed_tokens = nn.ModuleList(
                [nn.Embedding(v, config.hidden_size) for v in config.factorized_vocab_sizes]
            )
        else:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_dropout = nn.Dropout(config.token_dropout_prob)
        rates = _drop_path_rates(config.drop_path_rate, config.num_hidden_layers)
        self.layers = nn.ModuleList(
            [LlamaGenDecoderLayer(config, i, rates[i]) for i in range(config.num_hidden_layers)]
        )
        if config.factorized_vocab_sizes:
            frates = _drop_path_rates(config.drop_path_rate, config.factorized_num_layers)
            # No layer_idx: the sub-token sequence (K <= a few tokens) is recomputed rather than cached.
            self.factorized_layers = nn.ModuleList(
                [LlamaGenDecoderLayer(config, None, frates[i]) for i in range(config.factorized_num_layers)]
            )
        self.norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.repa_feature_dim:
            d = config.repa_projector_dim
            # The projector draws from its own generators (construction here, init in _init_weights), so turning
            # REPA on or off leaves the trunk's initialisation for a given seed unchanged: a no-REPA baseline and
            # a REPA run with the same seed start from the same network.
            with torch.random.fork_rng(devices=[]):
                self.repa_projector = nn.Sequential(
                    nn.Linear(config.hidden_size, d),
                    nn.SiLU(),
                    nn.Linear(d, d),
                    nn.SiLU(),
                    nn.Linear(d, config.repa_feature_dim),
                )
            linears = [m for m in self.repa_projector if isinstance(m, nn.Linear)]
            for offset, linear in enumerate(linears, start=1):
                linear._llamagen_rng_offset = offset
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.post_init()

    @property
    def null_class_id(self) -> int | None:
        """Id of the unconditional (null) class, or `None` when the model has no null class embedding."""
        return self.config.num_classes if self.class_embedding.num_embeddings > self.config.num_classes else None

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def rope(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The full `(1 + N, head_dim/2)` cos/sin table; derived from the config, so never part of the state dict."""
        if self._rope_cache is None or self._rope_cache[0].device != torch.device(device):
            self._rope_cache = rope_2d_table(
                self.config.image_token_size, self.config.head_dim, self.config.rope_theta, device=device
            )
        return self._rope_cache

    def check_class_labels(self, class_labels: torch.Tensor) -> torch.Tensor:
        """Dtype/shape checks always; the value range only where it costs no device sync (CPU, not compiling)."""
        if class_labels.ndim != 1 or torch.is_floating_point(class_labels) or class_labels.dtype == torch.bool:
            raise ValueError(
                f"class_labels must be a 1-D tensor of integer class ids, got {class_labels.dtype} "
                f"{tuple(class_labels.shape)}."
            )
        if _can_check_values(class_labels):
            hi = self.class_embedding.num_embeddings - 1
            if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) > hi):
                null = f" (id {self.null_class_id} is the null class)" if self.null_class_id is not None else ""
                raise ValueError(
                    f"class_labels must lie in [0, {hi}]{null}; got values in "
                    f"[{int(class_labels.min())}, {int(class_labels.max())}]."
                )
        return class_labels.long()

    def split_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Global token ids `(B, T)` -> factorized sub-indices `(B, T, K)` (sub-token 0 least significant)."""
        sizes = self.config.factorized_vocab_sizes
        if image_tokens.ndim == 3:
            if image_tokens.shape[-1] != len(sizes):
                raise ValueError(f"expected {len(sizes)} sub-indices per position, got {image_tokens.shape[-1]}.")
            return image_tokens
        mults = torch.tensor([math.prod(sizes[:k]) for k in range(len(sizes))], device=image_tokens.device)
        return torch.div(image_tokens.unsqueeze(-1), mults, rounding_mode="floor") % torch.tensor(
            sizes, device=image_tokens.device
        )

    def merge_tokens(self, sub_tokens: torch.Tensor) -> torch.Tensor:
        """Factorized sub-indices `(..., K)` -> global ids `(...)` (inverse of `split_tokens`)."""
        sizes = self.config.factorized_vocab_sizes
        mults = torch.tensor([math.prod(sizes[:k]) for k in range(len(sizes))], device=sub_tokens.device)
        return (sub_tokens * mults).sum(-1)

    def check_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Dtype/shape checks always; the value range only where it costs no device sync (CPU, not compiling)."""
        if (
            torch.is_floating_point(image_tokens)
            or image_tokens.dtype == torch.bool
            or image_tokens.ndim not in (2, 3)
        ):
            raise ValueError(
                f"image_tokens must be integer (B, T) ids, got {image_tokens.dtype} {tuple(image_tokens.shape)}."
            )
        image_tokens = image_tokens.long()
        if image_tokens.ndim == 3 and not self.config.factorized_vocab_sizes:
            raise ValueError("(B, T, K) sub-token ids need a config with factorized_vocab_sizes.")
        if not _can_check_values(image_tokens) or not image_tokens.numel():
            return image_tokens
        if image_tokens.ndim == 3:
            hi = torch.tensor(self.config.factorized_vocab_sizes, device=image_tokens.device)
            bad = (image_tokens < 0) | (image_tokens >= hi)
        else:
            bad = (image_tokens < 0) | (image_tokens >= self.config.vocab_size)
        if bool(bad.any()):
            raise ValueError(
                f"image_tokens must lie in [0, {self.config.vocab_size - 1}] (the tokenizer codebook); got values "
                f"in [{int(image_tokens.min())}, {int(image_tokens.max())}]. Check the tokenizer matches the model."
            )
        return image_tokens

    def embed_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings; with factorization the sum of the K sub-token embeddings (as upstream)."""
        if not self.config.factorized_vocab_sizes:
            return self.embed_tokens(image_tokens)
        sub = self.split_tokens(image_tokens)
        return sum(emb(sub[..., k]) for k, emb in enumerate(self.embed_tokens))

    def embed_classes(self, class_labels: torch.Tensor) -> torch.Tensor:
        """`(B, 1, D)` class embeddings, with label dropout to the null class in training."""
        class_labels = self.check_class_labels(class_labels)
        if self.training and self.config.class_dropout_prob > 0:
            drop = torch.rand(class_labels.shape, device=class_labels.device) < self.config.class_dropout_prob
            class_labels = torch.where(drop, self.config.num_classes, class_labels)
        return self.class_embedding(class_labels)[:, None]

    def forward(
        self,
        class_labels: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_repa_features: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LlamaGenModelOutput | tuple:
        """Run the trunk on `[class token, image tokens...]`.

        `class_labels` starts a new sequence at position 0; without it `image_tokens` (or `inputs_embeds`) continue
        the sequence held in `past_key_values`. With all N image tokens of an image the last one is dropped (it
        predicts nothing), so a training call yields N positions where position n predicts token n.
        `attention_mask` is an optional `(B, past + T)` padding mask (1 = attend), turned into the attention
        backend's mask by transformers' mask utilities; `position_ids` default to the cache length onwards.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = bool(output_hidden_states)
        output_attentions = bool(output_attentions)
        use_cache = use_cache if use_cache is not None else (past_key_values is not None)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if not use_cache:
            past_key_values = None
        # An int for DynamicCache, a 0-d tensor for StaticCache (no sync: only used in tensor arithmetic).
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        known_past = isinstance(past, int)

        parts = []
        if class_labels is not None:
            if known_past and past:
                raise ValueError("class_labels start a new sequence; pass a fresh (empty) cache with them.")
            parts.append(self.embed_classes(class_labels))
        elif known_past and past == 0:
            raise ValueError("class_labels are required (or a cache holding the class token and earlier tokens).")
        if image_tokens is not None:
            image_tokens = self.check_image_tokens(image_tokens)
            if class_labels is not None and image_tokens.shape[1] >= self.config.max_position_embeddings:
                image_tokens = image_tokens[
                    :, : self.config.num_image_tokens - 1
                ]  # a full image: last one predicts nothing
            parts.append(self.embed_image_tokens(image_tokens))
        if inputs_embeds is not None:
            parts.append(inputs_embeds)
        if not parts:
            raise ValueError("nothing to run: pass class_labels, image_tokens or inputs_embeds.")
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        h = self.token_dropout(h)
        t = h.shape[1]
        if known_past and past + t > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {past + t} positions exceeds image_token_size**2 = {self.config.max_position_embeddings} "
                "(the class token + N - 1 image tokens)."
            )
        if position_ids is None:
            position_ids = (torch.arange(t, device=h.device) + past)[None]
        cos, sin = self.rope(h.device)
        rope = (cos[position_ids][:, None], sin[position_ids][:, None])  # (B|1, 1, T, head_dim/2)
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=h,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )

        all_hidden = (h,) if output_hidden_states else None
        all_attn = () if output_attentions else None
        repa = None
        if output_repa_features:
            if not self.config.repa_feature_dim:
                raise ValueError("output_repa_features=True needs a config with repa_feature_dim set.")
            if self.config.repa_depth == 0:
                repa = self.repa_projector(h)
        for i, layer in enumerate(self.layers):
            h, weights = layer(
                h, rope, attention_mask=mask, past_key_values=past_key_values, output_attentions=output_attentions
            )
            if output_hidden_states:
                all_hidden += (h,)
            if output_attentions:
                all_attn += (weights,)
            if output_repa_features and i + 1 == self.config.repa_depth:
                repa = self.repa_projector(h)
        out = LlamaGenModelOutput(
            last_hidden_state=h,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden,
            attentions=all_attn,
            repa_features=repa,
        )
        return out if return_dict else out.to_tuple()

    def factorized_hidden(self, context: torch.Tensor) -> torch.Tensor:
        """Run the sub-token blocks on `(M, k, D)` sequences `[h_n, emb_0(s_0), ...]`; returns normed `(M, k, D)`.

        Positions use the first k rows of the rotary table (row 0 zero, row 1 identity...), as upstream.
        """
        cos, sin = self.rope(context.device)
        k = context.shape[1]
        mask = create_causal_mask(config=self.config, inputs_embeds=context, attention_mask=None, past_key_values=None)
        for layer in self.factorized_layers:
            context, _ = layer(context, (cos[:k], sin[:k]), attention_mask=mask)
        return self.norm(context)


def _can_check_values(tensor: torch.Tensor) -> bool:
    # Value checks read the data: free on CPU, a device sync elsewhere, and a graph break under compile/export.
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def _repeat_rows(x: torch.Tensor, reps: int) -> torch.Tensor:
    return x.repeat(reps, *([1] * (x.dim() - 1))) if reps > 1 else x


def _cat_layers(per_stream: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Per-layer tensors of the CFG streams (conditional rows first) joined along the batch."""
    if len(per_stream) == 1:
        return per_stream[0]
    return tuple(torch.cat(layer) for layer in zip(*per_stream))


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


class LlamaGenForImageGeneration(LlamaGenPreTrainedModel, GenerationMixin):
    """LlamaGen with its output head(s): class-conditional next-image-token prediction and CFG sampling.

    Example:
        ```python
        >>> config = LlamaGenConfig.from_preset("tiny")
        >>> model = LlamaGenForImageGeneration(config).eval()
        >>> tokens = model.generate(class_labels=torch.tensor([1, 2]), guidance_scale=2.0, seed=0)  # (2, 16)
        ```
    """

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"model\.repa_projector\..*"]

    def __init__(self, config: LlamaGenConfig):
        super().__init__(config)
        self.model = LlamaGenModel(config)
        if config.factorized_vocab_sizes:
            self.lm_head = nn.ModuleList(
                [nn.Linear(config.hidden_size, v, bias=False) for v in config.factorized_vocab_sizes]
            )
            for head in self.lm_head:
                head._llamagen_zero_init = True
        else:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.lm_head._llamagen_zero_init = True
        self.post_init()
        for key in ("do_sample", "cache_implementation"):  # saved with the model in generation_config.json
            value = self._generation_defaults[key]
            if getattr(self.generation_config, key, None) is None:
                setattr(self.generation_config, key, value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        class_labels: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_repa_features: bool = False,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LlamaGenImageGenerationOutput | tuple:
        r"""Teacher-forced scores for image tokens given a class.

        Args:
            class_labels: `(B,)` class ids; `num_classes` is the null class.
            image_tokens: `(B, T)` token ids of the image so far, in raster order (a full image: `T = N`); with
                factorization also `(B, T, K)` sub-indices.
            labels: `(B, L)` targets aligned with the logits (usually `labels=image_tokens`); -100 is ignored.
            inputs_embeds: `(B, T, D)` token embeddings appended after the class token / image tokens.
            attention_mask, position_ids, past_key_values, use_cache: as in transformers decoders.
            output_repa_features: also return the REPA projector output (the loss lives in
                `ifsq_hf.training.repa.repa_projection_loss`).
            logits_to_keep: `n > 0` computes the head on the last `n` positions only (decoding); 0 = all.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.model(
            class_labels=class_labels,
            image_tokens=image_tokens,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_repa_features=output_repa_features,
            return_dict=True,
        )
        h = out.last_hidden_state
        if self.config.factorized_vocab_sizes:
            logits = self._factorized_logits(h, image_tokens, labels)
        else:
            logits = self.lm_head(self.model.norm(h[:, -logits_to_keep:] if logits_to_keep else h)).float()
        loss = None
        if labels is not None:
            loss = self.loss_from_logits(logits, labels)
        result = LlamaGenImageGenerationOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            repa_features=out.repa_features,
        )
        return result if return_dict else result.to_tuple()

    def _factorized_logits(
        self, h: torch.Tensor, image_tokens: torch.Tensor | None, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        # Sub-token k at position n is predicted from [h_n, emb_0(s_0[n]), ..., emb_{k-1}(s_{k-1}[n])], teacher-forced
        # with the target token's own earlier sub-indices.
        targets = labels if labels is not None else image_tokens
        if targets is None:
            raise ValueError("factorized logits are teacher-forced: pass image_tokens (or labels) with the targets.")
        targets = self.model.check_image_tokens(targets.masked_fill(targets < 0, 0))
        sub = self.model.split_tokens(targets)
        n = min(h.shape[1], sub.shape[1])
        b, _, d = h.shape
        ctx = [h[:, :n]] + [emb(sub[:, :n, k]) for k, emb in enumerate(self.model.embed_tokens[:-1])]
        ctx = torch.stack(ctx, dim=2).reshape(b * n, -1, d)
        hk = self.model.factorized_hidden(ctx).reshape(b, n, -1, d)
        return tuple(head(hk[:, :, k]).float() for k, head in enumerate(self.lm_head))

    def loss_from_logits(self, logits: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy, summed over sub-tokens with factorization (upstream: Σ_k CE_k)."""
        if not isinstance(logits, tuple):
            return _cross_entropy(logits[:, : labels.shape[1]], labels)
        ignore = labels < 0 if labels.ndim == 2 else (labels < 0).any(-1)
        sub = self.model.split_tokens(labels.masked_fill(labels < 0, 0)).masked_fill(ignore[..., None], -100)
        n = logits[0].shape[1]
        return sum(_cross_entropy(lg, sub[:, :n, k]) for k, lg in enumerate(logits))

    # ------------------------------------------------------------------------------------------------ generation

    # Image generation decodes greedily or by sampling. Beam, group-beam, constrained and contrastive search and
    # assisted/prompt-lookup decoding are text strategies with no meaning for a fixed-length token grid.
    _supported_generation_modes: ClassVar[tuple[GenerationMode, ...]] = (
        GenerationMode.GREEDY_SEARCH,
        GenerationMode.SAMPLE,
    )
    # Upstream LlamaGen sampling defaults (`sample_c2i.py`: multinomial, temperature 1, no top-k/top-p) and the
    # preallocated cache; used wherever neither the caller nor `model.generation_config` sets a value (instead of
    # transformers' text defaults: greedy, top_k=50). The first two are also written into a new model's
    # generation_config (the filters stay unset there, so a saved greedy config remains valid).
    _generation_defaults: ClassVar[dict[str, Any]] = {
        "do_sample": True,
        "cache_implementation": "static",
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }
    # generate() arguments of text models that have no image counterpart.
    _unsupported_generate_args: ClassVar[tuple[str, ...]] = (
        "assistant_model",
        "assistant_tokenizer",
        "tokenizer",
        "prefix_allowed_tokens_fn",
        "negative_prompt_ids",
        "negative_prompt_attention_mask",
        "synced_gpus",
        "custom_generate",
        "input_ids",
        "attention_mask",
    )

    @staticmethod
    def _guided(logits: torch.Tensor, b: int, scale: float, active: bool) -> torch.Tensor:
        # CFG on raw logits, as upstream: rows [:b] conditional, [b:] unconditional.
        cond, uncond = logits[:b], logits[b:]
        return uncond + scale * (cond - uncond) if active and uncond.shape[0] else cond

    def _prepare_llamagen_generation_config(
        self, generation_config: GenerationConfig | None, kwargs: dict[str, Any]
    ) -> tuple[GenerationConfig, dict[str, Any]]:
        """transformers' config merge (call kwargs > `generation_config` > `model.generation_config`), with
        LlamaGen's defaults in place of the text defaults (`top_k=50`, greedy, 20 tokens) where nothing was set."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None = "not set", as in transformers
        bad = sorted(set(kwargs) & set(self._unsupported_generate_args))
        if bad:
            raise ValueError(
                f"generate() arguments {bad} are for text models; LlamaGen samples image tokens from class_labels "
                "(greedy or sampling, with guidance_scale / guidance_interval for CFG)."
            )
        gen, model_kwargs = self._prepare_generation_config(generation_config, **kwargs)
        for key, value in self._generation_defaults.items():
            set_by_caller = key in kwargs or getattr(generation_config, key, None) is not None
            if not set_by_caller and getattr(self.generation_config, key, None) is None:
                setattr(gen, key, value)
        if model_kwargs.get("past_key_values") is not None and "cache_implementation" not in kwargs:
            gen.cache_implementation = None  # the caller's cache wins over the saved default
        unexpected = sorted(set(model_kwargs) - {"output_attentions", "output_hidden_states", "past_key_values"})
        if unexpected:
            raise TypeError(
                f"unexpected generate() arguments {unexpected}; LlamaGen takes class_labels, guidance_scale, "
                "guidance_interval, generator/seed, batched_cfg, return_sub_tokens, logits_processor, "
                "stopping_criteria, streamer and GenerationConfig fields (max_new_tokens, do_sample, temperature, "
                "top_k, top_p, num_return_sequences, output_scores, output_logits, return_dict_in_generate, "
                "use_cache, cache_implementation, ...)."
            )
        return gen, model_kwargs

    def _check_generation_settings(self, gen: GenerationConfig, scales: list[float], interval) -> int:
        """Reject settings transformers would silently ignore; returns the number of tokens to generate."""
        mode = gen.get_generation_mode()
        if mode not in self._supported_generation_modes:
            raise ValueError(
                f"LlamaGen generates images by greedy decoding (do_sample=False) or sampling (do_sample=True with "
                f"temperature/top_k/top_p); got generation mode {mode.value!r}. Beam search (num_beams > 1), "
                "constrained/group beam search, contrastive search (penalty_alpha) and assisted or prompt-lookup "
                "decoding are not supported."
            )

        def number(name, value, ok, rule):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise ValueError(f"{name} must be {rule}, got {value!r}.")

        number("temperature", gen.temperature, gen.temperature >= 0, "a finite number >= 0 (0 = greedy)")
        number("top_p", gen.top_p, 0 < gen.top_p <= 1, "in (0, 1] (1.0 keeps every token)")
        number("top_k", gen.top_k, isinstance(gen.top_k, int) and gen.top_k >= 0, "an integer >= 0 (0 = off)")
        n = gen.num_return_sequences
        number("num_return_sequences", n, isinstance(n, int) and n >= 1, "an integer >= 1")
        for s in scales:
            number("guidance_scale", s, True, "a finite number (1.0 = no guidance)")
        start, end = interval
        if not (
            all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (start, end))
            and 0.0 <= start < end <= 1.0
        ):
            raise ValueError(
                f"guidance_interval must be (start, end) fractions of the token sequence with 0 <= start < end <= 1, "
                f"got {interval}."
            )
        if gen.cache_implementation not in (None, "dynamic", "static"):
            raise ValueError(
                f"cache_implementation must be 'static' (preallocated, the default), 'dynamic' or None, got "
                f"{gen.cache_implementation!r}."
            )
        n_max = self.config.num_image_tokens
        new = gen.max_new_tokens if gen.max_new_tokens is not None else n_max
        number("max_new_tokens", new, isinstance(new, int) and 1 <= new <= n_max, f"an integer in [1, {n_max}]")
        return new

    def _generation_class_labels(self, class_labels) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("generate() needs class_labels, e.g. model.generate(class_labels=torch.tensor([207])).")
        labels = torch.as_tensor(class_labels)
        if not labels.numel():
            raise ValueError("class_labels is empty; pass at least one class id.")
        if labels.dtype == torch.bool or torch.is_floating_point(labels) or torch.is_complex(labels):
            raise ValueError(
                f"class_labels must be integer class ids, got {labels.dtype} values {labels.flatten()[:4].tolist()}."
            )
        if labels.ndim > 1 and labels.shape[1:].numel() != 1:
            raise ValueError(f"class_labels must be (B,) or (B, 1) class ids, got shape {tuple(labels.shape)}.")
        labels = labels.reshape(-1).to(device=self.device, dtype=torch.long)
        hi = self.model.class_embedding.num_embeddings - 1
        lo_val, hi_val = int(labels.min()), int(labels.max())  # one sync per call, at the API boundary
        if lo_val < 0 or hi_val > hi:
            null = (
                f" (id {self.model.null_class_id} is the null class)" if self.model.null_class_id is not None else ""
            )
            raise ValueError(f"class_labels must lie in [0, {hi}]{null}; got values in [{lo_val}, {hi_val}].")
        return labels

    @torch.no_grad()
    def generate(
        self,
        class_labels: torch.Tensor | list[int] | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer: Any | None = None,
        guidance_scale: float | list[float] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        batched_cfg: bool = True,
        return_sub_tokens: bool = False,
        **kwargs,
    ) -> torch.Tensor | GenerateDecoderOnlyOutput:
        r"""Sample the `(B, N)` image-token grid (raster order) for `class_labels`, transformers-style.

        Settings follow transformers: a `GenerationConfig` and/or its fields as keyword arguments (call arguments >
        `generation_config` > `model.generation_config` > LlamaGen defaults: sampling, temperature 1, no top-k/top-p,
        static cache, `max_new_tokens` = the image's `N` tokens). Greedy decoding and sampling are supported; the
        logits processors and warpers are transformers' own (`logits_processor=` adds yours before the warpers).

        Args:
            class_labels: `(B,)` integer class ids (`num_return_sequences` images each).
            guidance_scale: CFG scale `s` on raw logits, `u + s (c - u)` with the null class as unconditional input
                (conditional and unconditional rows batched in one forward); 1.0 disables guidance. Factorized
                models also take one scale per sub-token. Also read from `generation_config.guidance_scale`.
            guidance_interval: `(start, end)` fractions of the token sequence where CFG applies (token n is guided
                when `start <= n / N < end`); `None` = every token (upstream `cfg_interval=-1`).
            generator, seed: randomness for sampling (default: torch's global RNG).
            batched_cfg: `False` runs the unconditional rows as a second pass with its own cache (a reference).
            return_sub_tokens: with factorization, return `(B, N, K)` sub-indices instead of global ids.
            logits_processor, stopping_criteria, streamer: as in transformers. The streamer receives each
                position's `(B,)` token ids; stopping criteria see the tokens so far and end generation early once
                they hold for every row (the grid is then shorter than `N`).
            kwargs: `GenerationConfig` fields (`max_new_tokens`, `do_sample`, `temperature`, `top_k`, `top_p`,
                `num_return_sequences`, `output_scores`, `output_logits`, `return_dict_in_generate`,
                `output_hidden_states`, `output_attentions`, `use_cache`, `cache_implementation`,
                `compile_config`, ...) and `past_key_values`.

        Returns:
            `(B, n)` token ids, or a `GenerateDecoderOnlyOutput` with `return_dict_in_generate=True` whose
            `logits` are the guided logits and `scores` the processed ones, one `(B, V)` entry per generated token
            (per sub-token with factorization, `V = V_k`).
        """
        gen, model_kwargs = self._prepare_llamagen_generation_config(generation_config, kwargs)
        if guidance_scale is None:
            guidance_scale = gen.guidance_scale if gen.guidance_scale is not None else 1.0
        gen.guidance_scale = None  # CFG is applied here, batched; not transformers' unbatched CFG processor
        if guidance_interval is None:
            guidance_interval = getattr(gen, "guidance_interval", None) or (0.0, 1.0)
        k_sub = self.config.num_sub_tokens
        if isinstance(guidance_scale, (list, tuple)):
            if len(guidance_scale) != k_sub or k_sub == 1:
                raise ValueError(
                    f"a list guidance_scale needs one scale per sub-token ({k_sub}); got {list(guidance_scale)}."
                )
            scales = list(guidance_scale)
        else:
            scales = [guidance_scale] * k_sub
        if isinstance(guidance_interval, (list, tuple)) and len(guidance_interval) == 2:
            start, end = guidance_interval
        else:
            raise ValueError(f"guidance_interval must be a (start, end) pair of fractions, got {guidance_interval!r}.")
        n_new = self._check_generation_settings(gen, scales, (start, end))
        scales = [float(x) for x in scales]
        use_cfg = any(x != 1.0 for x in scales)
        null = self.model.null_class_id
        if use_cfg and null is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a null class embedding, but this model was built with "
                "class_dropout_prob=0 (no unconditional class). Use guidance_scale=1.0 or a model trained with label "
                "dropout."
            )
        device = self.device
        labels = self._generation_class_labels(class_labels).repeat_interleave(gen.num_return_sequences)
        if gen.do_sample and gen.temperature == 0:
            gen.do_sample = False  # temperature 0 = greedy (upstream divides by 1e-5 instead)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)

        self._prepare_special_tokens(gen, False, device=device)
        gen.max_length = n_new  # sequences hold image tokens only (the class label is not a token)
        procs = self._get_logits_processor(
            generation_config=gen,
            input_ids_seq_length=0,
            logits_processor=LogitsProcessorList(logits_processor or []),
            device=device,
            model_kwargs=model_kwargs,
        )
        criteria = [
            c
            for c in self._get_stopping_criteria(gen, stopping_criteria or StoppingCriteriaList())
            if not isinstance(c, MaxLengthCriteria)  # the loop bound
        ]

        b = labels.shape[0]
        if use_cfg and batched_cfg:
            streams = [torch.cat([labels, torch.full_like(labels, null)])]
        elif use_cfg:
            streams = [labels, torch.full_like(labels, null)]
        else:
            streams = [labels]
        user_cache = model_kwargs.pop("past_key_values", None)
        if user_cache is not None and len(streams) > 1:
            raise ValueError("past_key_values holds one cache; pass batched_cfg=True (the default) with it.")
        caches = []
        for rows in streams:
            mk = {"past_key_values": user_cache} if user_cache is not None else {}
            if gen.use_cache:
                self._prepare_cache_for_generation(gen, mk, GenerationMode.SAMPLE, rows.shape[0], n_new)
            caches.append(mk.get("past_key_values"))
        decode_fn = self.__call__
        if gen.use_cache and self._valid_auto_compile_criteria({"past_key_values": caches[0]}, gen):
            decode_fn = self.get_compiled_call(gen.compile_config)  # whole decode step, static shapes

        want = gen.return_dict_in_generate
        record_scores = () if want and gen.output_scores else None
        record_logits = () if want and gen.output_logits else None
        record_hidden = () if want and gen.output_hidden_states else None
        record_attn = () if want and gen.output_attentions else None
        out_flags = {
            "output_hidden_states": record_hidden is not None,
            "output_attentions": record_attn is not None,
        }
        factorized = bool(self.config.factorized_vocab_sizes)
        sizes = self.config.factorized_vocab_sizes or [self.config.vocab_size]
        out = torch.zeros(b, n_new, len(sizes), dtype=torch.long, device=device)
        n_image = self.config.num_image_tokens

        def pick(logits: torch.Tensor, n: int) -> torch.Tensor:
            nonlocal record_scores, record_logits
            scores = procs(out[:, :n].reshape(b, -1), logits)
            if record_logits is not None:
                record_logits += (logits,)
            if record_scores is not None:
                record_scores += (scores,)
            if not gen.do_sample:
                return scores.argmax(-1)
            return torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator).squeeze(-1)

        def run_stream(rows: torch.Tensor, cache: Cache | None, n: int):
            reps = rows.shape[0] // b
            call = self.model if factorized else self
            extra = {} if factorized else {"logits_to_keep": 1}
            if cache is None:  # reference path: recompute the whole prefix
                prefix = _repeat_rows(self._tokens_for_model(out[:, :n]), reps)
                return call(class_labels=rows, image_tokens=prefix, use_cache=False, **out_flags, **extra)
            if n == 0:
                return call(class_labels=rows, past_key_values=cache, use_cache=True, **out_flags, **extra)
            prev = _repeat_rows(self._tokens_for_model(out[:, n - 1 : n]), reps)
            embeds = self.model.embed_image_tokens(prev)  # sampled ids are in range: no validation needed
            fn = self.model if factorized else decode_fn
            return fn(inputs_embeds=embeds, past_key_values=cache, use_cache=True, **out_flags, **extra)

        n_done = n_new
        for n in range(n_new):
            active = use_cfg and start <= n / n_image < end
            outputs = [run_stream(rows, cache, n) for rows, cache in zip(streams, caches)]
            if record_hidden is not None:
                record_hidden += (_cat_layers([o.hidden_states for o in outputs]),)
            if record_attn is not None:
                record_attn += (_cat_layers([o.attentions for o in outputs]),)
            if not factorized:
                logits = torch.cat([o.logits[:, -1] for o in outputs]).float()
                out[:, n, 0] = pick(self._guided(logits, b, scales[0], active), n)
            else:
                # Sub-token by sub-token, CFG per sub-token; the unconditional rows see the same sampled sub-indices.
                ctx = torch.cat([o.last_hidden_state[:, -1] for o in outputs])[:, None]
                rows_total = ctx.shape[0]
                for k, head in enumerate(self.lm_head):
                    logits = head(self.model.factorized_hidden(ctx)[:, -1]).float()
                    sub = pick(self._guided(logits, b, scales[k], active), n)
                    out[:, n, k] = sub
                    if k + 1 < len(sizes):
                        emb = self.model.embed_tokens[k](sub.repeat(rows_total // b))
                        ctx = torch.cat([ctx, emb[:, None]], dim=1)
            if streamer is not None:
                token = self.model.merge_tokens(out[:, n]) if factorized else out[:, n, 0]
                streamer.put(token.cpu())
            if criteria:
                done = torch.zeros(b, dtype=torch.bool, device=device)
                ids = self._grid_tokens(out[:, : n + 1], factorized, False)
                for criterion in criteria:
                    done |= criterion(ids, record_scores[-1] if record_scores else None)
                if bool(done.all()):
                    n_done = n + 1
                    break
        if streamer is not None:
            streamer.end()
        sequences = self._grid_tokens(out[:, :n_done], factorized, return_sub_tokens)
        if not want:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=record_scores,
            logits=record_logits,
            attentions=record_attn,
            hidden_states=record_hidden,
            past_key_values=caches[0],
        )

    def _grid_tokens(self, out: torch.Tensor, factorized: bool, sub_tokens: bool) -> torch.Tensor:
        if not factorized:
            return out[..., 0]
        return out if sub_tokens else self.model.merge_tokens(out)

    def _tokens_for_model(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens if self.config.factorized_vocab_sizes else tokens[..., 0]

    @torch.no_grad()
    def generate_images(
        self,
        class_labels: torch.Tensor | list[int],
        tokenizer: nn.Module,
        output_type: str = "pil",
        **generate_kwargs: Any,
    ):
        """Sample tokens with [`generate`] and decode them with an iFSQ tokenizer (`iFSQAutoencoder`).

        Returns a list of PIL images (`"pil"`), a `(B, H, W, 3)` float array in [0, 1] (`"np"`) or a
        `(B, 3, H, W)` tensor in [0, 1] (`"pt"`).
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}.")
        self.check_tokenizer(tokenizer)
        tokens = self.generate(class_labels=class_labels, **generate_kwargs)
        s = self.config.image_token_size
        indices = tokens.reshape(tokens.shape[0], s, s).to(tokenizer.device)
        images = tokenizer.decode_indices(indices).sample
        images = ((images.float().clamp(-1, 1) + 1) / 2).cpu()
        if output_type == "pt":
            return images
        arr = images.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return arr
        from PIL import Image

        return [Image.fromarray((a * 255).round().astype("uint8")) for a in arr]

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        """Raise a `ValueError` unless the tokenizer's codebook (and factorized groups) match this model."""
        size = getattr(tokenizer, "codebook_size", None)
        if size is None:
            raise ValueError(f"{type(tokenizer).__name__} has no codebook_size; pass an iFSQAutoencoder.")
        if int(size) != self.config.vocab_size:
            raise ValueError(
                f"the tokenizer's codebook has {size} codes but this LlamaGen has vocab_size={self.config.vocab_size}; "
                "use the tokenizer the model was trained with (vocab_size = prod(levels))."
            )
        if self.config.factorized_vocab_sizes:
            groups = list(getattr(getattr(tokenizer, "quantizer", None), "group_sizes", []) or [])
            # A single-group tokenizer decodes merged ids too; a factorized one must use the same groups.
            if len(groups) > 1 and groups != list(self.config.factorized_vocab_sizes):
                raise ValueError(
                    f"the tokenizer's factorized groups {groups} differ from the model's factorized_vocab_sizes "
                    f"{self.config.factorized_vocab_sizes}."
                )
