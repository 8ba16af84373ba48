"""Configuration of the class-conditional LlamaGen transformer (arXiv 2406.06525) used with iFSQ tokens."""

from __future__ import annotations

import math
from typing import ClassVar

from transformers import PreTrainedConfig

__all__ = ["LLAMAGEN_PRESETS", "MAX_CODEBOOK_SIZE", "LlamaGenConfig"]

# Largest codebook one embedding table / output head may have: 2**21 codes (5 bits/dim x 4 channels = 33**4 fits,
# 25x the 4-bit 83,521). Beyond it the tables and the (B, T, V) fp32 logits run to tens or hundreds of GB (8 bits/dim
# with one index group: 257**4 = 4.4e9 codes); token factorization splits the index into small sub-codebooks.
MAX_CODEBOOK_SIZE = 2**21

# Upstream GPT-* widths/depths/heads (FoundationVision/LlamaGen `autoregressive/models/gpt.py`); "tiny" is for tests.
LLAMAGEN_PRESETS: dict[str, dict[str, int]] = {
    "B": {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768},
    "L": {"num_hidden_layers": 24, "num_attention_heads": 16, "hidden_size": 1024},
    "XL": {"num_hidden_layers": 36, "num_attention_heads": 20, "hidden_size": 1280},
    "XXL": {"num_hidden_layers": 48, "num_attention_heads": 24, "hidden_size": 1536},
    "3B": {"num_hidden_layers": 24, "num_attention_heads": 32, "hidden_size": 3200},
    "tiny": {
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "hidden_size": 32,
        "multiple_of": 16,
        "vocab_size": 64,
        "num_classes": 10,
        "image_token_size": 4,
        "repa_projector_dim": 48,
    },
}


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


class LlamaGenConfig(PreTrainedConfig):
    r"""Configuration of [`LlamaGenForImageGeneration`].

    Args:
        vocab_size: number of image tokens, i.e. the tokenizer's codebook size (17**4 = 83521 for the 4-bit iFSQ
            tokenizer). With `factorized_vocab_sizes` it must equal their product.
        factorized_vocab_sizes: sub-codebook sizes for token factorization (e.g. `[289, 289]` for "f2x2"): each
            position then carries K sub-indices predicted one after the other by `factorized_num_layers` extra
            causal blocks. `None` = one codebook.
        num_classes: number of class labels; id `num_classes` is the null class (unconditional input for CFG).
        hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads: trunk shape.
        intermediate_size: SwiGLU width; `None` = upstream rule `find_multiple(int(2 * 4 * hidden / 3), multiple_of)`.
        image_token_size: side of the square token grid (16 for 256 px images and an f16 tokenizer).
        rope_theta: base of the 2-D rotary embedding.
        class_dropout_prob: label dropout in training (replaces the label by the null class). As upstream, the null
            class embedding (row `num_classes`) exists only when this is > 0, and CFG needs it.
        token_dropout_prob: dropout on the input embeddings (class and tokens), as upstream `tok_dropout`.
        residual_dropout_prob, ffn_dropout_prob, attention_dropout: dropout rates inside the blocks.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        factorized_num_layers: depth of the sub-token head when `factorized_vocab_sizes` is set.
        repa_depth: the REPA projector reads the hidden state after this many blocks (`None` = depth // 3).
        repa_feature_dim: output width of the REPA projector (the encoder's feature size); `None` = no projector.
        repa_projector_dim: hidden width of the REPA projector MLP.
    """

    model_type = "llamagen"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 83521,
        factorized_vocab_sizes: list[int] | None = None,
        num_classes: int = 1000,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        intermediate_size: int | None = None,
        multiple_of: int = 256,
        image_token_size: int = 16,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        class_dropout_prob: float = 0.1,
        token_dropout_prob: float = 0.1,
        residual_dropout_prob: float = 0.1,
        ffn_dropout_prob: float = 0.1,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        factorized_num_layers: int = 2,
        repa_depth: int | None = None,
        repa_feature_dim: int | None = None,
        repa_projector_dim: int = 2048,
        use_cache: bool = True,
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
            )
        head_dim = hidden_size // num_attention_heads
        if head_dim % 4:
            raise ValueError(
                f"2-D RoPE needs a head dim divisible by 4, got {head_dim}; change hidden_size or num_attention_heads."
            )
        if factorized_vocab_sizes is not None:
            factorized_vocab_sizes = [int(v) for v in factorized_vocab_sizes]
            if len(factorized_vocab_sizes) < 2:
                raise ValueError("factorized_vocab_sizes needs at least 2 sub-codebooks; use None for one codebook.")
            if "vocab_size" not in kwargs and vocab_size == 83521:
                vocab_size = math.prod(factorized_vocab_sizes)
            if math.prod(factorized_vocab_sizes) != vocab_size:
                raise ValueError(
                    f"vocab_size ({vocab_size}) must equal the product of factorized_vocab_sizes "
                    f"{factorized_vocab_sizes} ({math.prod(factorized_vocab_sizes)})."
                )
        self.vocab_size = int(vocab_size)
        self.factorized_vocab_sizes = factorized_vocab_sizes
        self.check_codebook_sizes(hidden_size)
        self.num_classes = num_classes
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads.")
        self.head_dim = head_dim
        self.multiple_of = multiple_of
        self.intermediate_size = intermediate_size or _find_multiple(int(2 * 4 * hidden_size / 3), multiple_of)
        self.image_token_size = image_token_size
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.class_dropout_prob = class_dropout_prob
        self.token_dropout_prob = token_dropout_prob
        self.residual_dropout_prob = residual_dropout_prob
        self.ffn_dropout_prob = ffn_dropout_prob
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.factorized_num_layers = factorized_num_layers
        if repa_depth is None:
            repa_depth = num_hidden_layers // 3
        if not 0 <= repa_depth <= num_hidden_layers:
            raise ValueError(f"repa_depth must lie in [0, {num_hidden_layers}], got {repa_depth}.")
        self.repa_depth = repa_depth
        self.repa_feature_dim = repa_feature_dim
        self.repa_projector_dim = repa_projector_dim
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    def check_codebook_sizes(self, hidden_size: int | None = None) -> None:
        """Raise a `ValueError` when a codebook is too large for one embedding table / output head."""
        hidden = hidden_size or getattr(self, "hidden_size", 0)
        for size in self.factorized_vocab_sizes or [self.vocab_size]:
            if size <= MAX_CODEBOOK_SIZE:
                continue
            gigabytes = 2 * size * hidden * 4 / 1e9
            hint = "factorized_vocab_sizes=[...] whose product is the codebook size"
            for k in range(2, 9):
                root = round(self.vocab_size ** (1 / k))
                if root**k == self.vocab_size and root <= MAX_CODEBOOK_SIZE:
                    hint = f"factorized_vocab_sizes={[root] * k}"
                    break
            raise ValueError(
                f"a codebook of {size:,} codes is too large for one embedding table and output head "
                f"({gigabytes:,.0f} GB of fp32 weights at hidden_size={hidden}, more for the logits); the limit is "
                f"{MAX_CODEBOOK_SIZE:,}. Split the token index into sub-codebooks with {hint} "
                "(`--factorized_groups 2` or more in examples/train_llamagen_repa.py), or use fewer bits per dim."
            )

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image (`image_token_size ** 2`)."""
        return self.image_token_size**2

    @property
    def max_position_embeddings(self) -> int:
        """Longest input: the class token + the first N - 1 image tokens (the last token is never an input)."""
        return self.num_image_tokens

    @property
    def num_sub_tokens(self) -> int:
        """K sub-indices per position (1 without token factorization)."""
        return len(self.factorized_vocab_sizes) if self.factorized_vocab_sizes else 1

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        # A model saved with its code gets one `auto_map` entry for its own Auto class; the file holds the base model
        # too, so list it for `AutoModel` (a causal-LM folder then loads with either Auto class, as in transformers).
        auto_map = getattr(self, "auto_map", None)
        if isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map:
            module = auto_map["AutoModelForCausalLM"].rsplit(".", 1)[0]
            auto_map.setdefault("AutoModel", f"{module}.LlamaGenModel")
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LlamaGenConfig:
        """Upstream sizes: "B" (111M), "L" (343M), "XL" (775M), "XXL" (1.4B), "3B" (3.1B), or "tiny" for tests."""
        if name not in LLAMAGEN_PRESETS:
            raise ValueError(f"unknown LlamaGen preset {name!r}; choose one of {sorted(LLAMAGEN_PRESETS)}.")
        return cls(**{**LLAMAGEN_PRESETS[name], **overrides})
