"""LlamaGen as a transformers model: training forward, caches, CFG generation, REPA, save/load, LoRA, errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, StaticCache

from ifsq_hf.convert.llamagen import convert_llamagen_state_dict
from ifsq_hf.models.llamagen import (
    LlamaGenConfig,
    LlamaGenForImageGeneration,
    LlamaGenImageGenerationOutput,
    LlamaGenModel,
)
from ifsq_hf.models.llamagen.modeling_llamagen import rope_2d_table
from ifsq_hf.training.repa import repa_projection_loss
from llamagen_testing import tiny_llamagen as make_model

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(repa_feature_dim=8)


@pytest.fixture(scope="module")
def fmodel():
    torch.manual_seed(1)
    return make_model(factorized_vocab_sizes=[8, 8])


def test_presets_match_upstream_sizes():
    cfg = LlamaGenConfig.from_preset("L")
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (24, 1024, 16)
    assert cfg.intermediate_size == 2816 and cfg.repa_depth == 8 and cfg.vocab_size == 83521
    assert LlamaGenConfig.from_preset("3B").hidden_size == 3200
    assert LlamaGenConfig.from_preset("tiny", factorized_vocab_sizes=[8, 8]).num_sub_tokens == 2
    with pytest.raises(ValueError, match="unknown LlamaGen preset"):
        LlamaGenConfig.from_preset("M")
    with pytest.raises(ValueError, match="product of factorized_vocab_sizes"):
        LlamaGenConfig.from_preset("tiny", factorized_vocab_sizes=[8, 9])


def test_parameter_counts_match_official_llamagen_l():
    # Official iFSQ LlamaGen-L, measured on the official module: 480.41 M (83,521 vocab), 336.23 M (f2x2),
    # + 7.87 M REPA projector (1024 -> 2048 -> 2048 -> 768). Built on the meta device: no memory.
    def count(**kw):
        with torch.device("meta"):
            model = LlamaGenForImageGeneration(LlamaGenConfig.from_preset("L", **kw))
        return sum(p.numel() for p in model.parameters()) / 1e6

    assert round(count(), 2) == 480.41
    assert round(count(factorized_vocab_sizes=[289, 289]), 2) == 336.23
    assert round(count(repa_feature_dim=768) - count(), 2) == 7.87


def test_rope_table_zeroes_class_token_and_is_2d():
    cos, sin = rope_2d_table(grid_size=4, head_dim=16, theta=10000.0)
    assert cos.shape == (17, 8)
    assert torch.all(cos[0] == 0) and torch.all(sin[0] == 0)  # class token: q and k zeroed, as upstream
    assert torch.allclose(cos[1], torch.ones(8)) and torch.allclose(sin[1], torch.zeros(8))  # cell (0, 0)
    # cell (row 1, col 2) = index 1 + 6: first half rotates by the row, second half by the column.
    f = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    assert torch.allclose(sin[7], torch.cat([torch.sin(1 * f), torch.sin(2 * f)]))


def test_training_forward_shapes_and_loss(model):
    tokens = torch.randint(0, 64, (2, 16))
    out = model(class_labels=torch.tensor([1, 2]), image_tokens=tokens, labels=tokens, output_repa_features=True)
    assert isinstance(out, LlamaGenImageGenerationOutput)
    assert out.logits.shape == (2, 16, 64)  # position n scores token n
    assert out.repa_features.shape == (2, 16, 8)
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 64), tokens.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    # Prefix of a full image: position n depends only on tokens < n.
    part = model(class_labels=torch.tensor([1, 2]), image_tokens=tokens[:, :5])
    assert part.logits.shape == (2, 6, 64)
    torch.testing.assert_close(part.logits[:, :6], out.logits[:, :6], rtol=1e-5, atol=1e-5)
    masked = tokens.clone()
    masked[:, 8:] = -100
    loss_half = model(class_labels=torch.tensor([1, 2]), image_tokens=tokens, labels=masked).loss
    ref = torch.nn.functional.cross_entropy(out.logits[:, :8].reshape(-1, 64), tokens[:, :8].reshape(-1))
    torch.testing.assert_close(loss_half, ref)
    assert len(model(class_labels=torch.tensor([1]), image_tokens=tokens[:1], return_dict=False)) >= 1


def test_label_dropout_uses_null_class_and_regularisers_are_train_only():
    torch.manual_seed(0)
    quiet = {"token_dropout_prob": 0.0, "residual_dropout_prob": 0.0, "ffn_dropout_prob": 0.0}
    model = make_model(class_dropout_prob=1.0, **quiet)
    tokens = torch.randint(0, 64, (2, 16))
    null_logits = model(class_labels=torch.tensor([10, 10]), image_tokens=tokens).logits
    assert not torch.allclose(model(class_labels=torch.tensor([1, 2]), image_tokens=tokens).logits, null_logits)
    model.train()  # every label dropped to the null class
    torch.testing.assert_close(model(class_labels=torch.tensor([1, 2]), image_tokens=tokens).logits, null_logits)
    for kw in ({"drop_path_rate": 0.5, **quiet}, {"token_dropout_prob": 0.5}):
        noisy = make_model(**kw)
        a = noisy(class_labels=torch.tensor([1, 2]), image_tokens=tokens).logits
        torch.testing.assert_close(noisy(class_labels=torch.tensor([1, 2]), image_tokens=tokens).logits, a)
        noisy.train()
        b = noisy(class_labels=torch.tensor([1, 2]), image_tokens=tokens).logits
        assert not torch.allclose(a, b), kw


def test_bfloat16_generation_runs(model):
    half = make_model(repa_feature_dim=8)
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16)
    tokens = half.generate(
        class_labels=torch.tensor([1, 2]), guidance_scale=2.0, seed=0, cache_implementation="static"
    )
    assert tokens.shape == (2, 16) and int(tokens.max()) < 64
    out = half(class_labels=torch.tensor([1, 2]), image_tokens=tokens, labels=tokens)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.loss)


def test_factorized_shapes_and_loss(fmodel):
    sub = torch.randint(0, 8, (2, 16, 2))
    global_ids = fmodel.model.merge_tokens(sub)
    torch.testing.assert_close(fmodel.model.split_tokens(global_ids), sub)
    out = fmodel(class_labels=torch.tensor([0, 9]), image_tokens=global_ids, labels=global_ids)
    assert isinstance(out.logits, tuple) and [tuple(x.shape) for x in out.logits] == [(2, 16, 8), (2, 16, 8)]
    expected = sum(
        torch.nn.functional.cross_entropy(lg.reshape(-1, 8), sub[..., k].reshape(-1))
        for k, lg in enumerate(out.logits)
    )
    torch.testing.assert_close(out.loss, expected)
    out_sub = fmodel(class_labels=torch.tensor([0, 9]), image_tokens=sub, labels=sub)
    torch.testing.assert_close(out_sub.loss, out.loss)


def test_incremental_cache_matches_full_forward(model):
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([3, 4])
    full = model(class_labels=labels, image_tokens=tokens).logits
    for cache in (DynamicCache(config=model.config), StaticCache(config=model.config, max_cache_len=16)):
        step = model(class_labels=labels, past_key_values=cache, use_cache=True).logits
        rows = [step[:, -1]]
        for n in range(15):
            step = model(image_tokens=tokens[:, n : n + 1], past_key_values=cache, use_cache=True).logits
            rows.append(step[:, -1])
        torch.testing.assert_close(torch.stack(rows, 1), full, rtol=1e-4, atol=1e-4)


def test_greedy_cached_equals_uncached_and_caches_agree(model):
    labels = torch.tensor([1, 7])
    uncached = model.generate(class_labels=labels, do_sample=False, use_cache=False)
    assert uncached.shape == (2, 16) and uncached.dtype == torch.long
    assert len(set(uncached[0].tolist())) > 1
    for impl in ("dynamic", "static"):
        assert torch.equal(model.generate(class_labels=labels, do_sample=False, cache_implementation=impl), uncached)


def hand_cfg_loop(model, labels, scale, n_tokens, interval=(0.0, 1.0)):
    tokens = torch.zeros(labels.shape[0], 0, dtype=torch.long)
    null = torch.full_like(labels, model.config.num_classes)
    for n in range(n_tokens):
        cond = model(class_labels=labels, image_tokens=tokens).logits[:, -1]
        uncond = model(class_labels=null, image_tokens=tokens).logits[:, -1]
        guided = uncond + scale * (cond - uncond) if interval[0] <= n / n_tokens < interval[1] else cond
        tokens = torch.cat([tokens, guided.argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_cfg_generate_equals_hand_written_loop(model):
    labels = torch.tensor([2, 5])
    expected = hand_cfg_loop(model, labels, 3.0, 16)
    assert not torch.equal(expected, model.generate(class_labels=labels, do_sample=False))  # CFG changes tokens
    for batched in (True, False):
        for impl in ("dynamic", "static"):
            got = model.generate(
                class_labels=labels,
                guidance_scale=3.0,
                do_sample=False,
                batched_cfg=batched,
                cache_implementation=impl,
            )
            assert torch.equal(got, expected), (batched, impl)
    interval = (0.25, 0.75)
    got = model.generate(class_labels=labels, guidance_scale=3.0, guidance_interval=interval, do_sample=False)
    assert torch.equal(got, hand_cfg_loop(model, labels, 3.0, 16, interval))


def test_sampling_is_seeded_and_filters_work(model):
    labels = torch.tensor([1, 2, 3])
    a = model.generate(class_labels=labels, guidance_scale=2.0, seed=3, top_k=10, top_p=0.9, temperature=0.7)
    b = model.generate(class_labels=labels, guidance_scale=2.0, generator=torch.Generator().manual_seed(3), top_k=10,
                       top_p=0.9, temperature=0.7)  # fmt: skip
    assert torch.equal(a, b)
    assert torch.equal(
        model.generate(class_labels=labels, guidance_scale=2.0, seed=5, top_k=1),
        model.generate(class_labels=labels, guidance_scale=2.0, do_sample=False),
    )
    # Batched and unbatched CFG consume the random stream identically.
    c = model.generate(class_labels=labels, guidance_scale=2.0, seed=3, batched_cfg=False)
    assert torch.equal(c, model.generate(class_labels=labels, guidance_scale=2.0, seed=3))


def test_generation_config_defaults_and_logits_processor(model, tmp_path):
    from transformers import GenerationConfig, LogitsProcessor

    labels = torch.tensor([1, 2])
    guided = model.generate(class_labels=labels, guidance_scale=3.0, do_sample=False)
    cfg = GenerationConfig(guidance_scale=3.0, do_sample=False)
    assert torch.equal(model.generate(class_labels=labels, generation_config=cfg), guided)

    class Ban(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.index_fill(-1, guided[0, :1], float("-inf"))

    banned = model.generate(class_labels=labels, generation_config=cfg, logits_processor=[Ban()])
    assert int(guided[0, 0]) not in banned.flatten().tolist()


def test_factorized_generation(fmodel):
    labels = torch.tensor([0, 4])
    fast = fmodel.generate(class_labels=labels, guidance_scale=2.0, do_sample=False)
    assert fast.shape == (2, 16) and int(fast.max()) < 64
    slow = fmodel.generate(
        class_labels=labels, guidance_scale=2.0, do_sample=False, use_cache=False, batched_cfg=False
    )
    assert torch.equal(fast, slow)
    assert torch.equal(fmodel.generate(class_labels=labels, guidance_scale=[2.0, 2.0], do_sample=False), fast)
    mixed = fmodel.generate(class_labels=labels, guidance_scale=[2.0, 1.0], do_sample=False, return_sub_tokens=True)
    with pytest.raises(ValueError, match="one scale per sub-token"):
        fmodel.generate(class_labels=labels, guidance_scale=[2.0, 1.0, 3.0])
    sub = fmodel.generate(class_labels=labels, guidance_scale=2.0, do_sample=False, return_sub_tokens=True)
    assert torch.equal(mixed[:, 0, 0], sub[:, 0, 0])  # sub-token 0 of the first position: same scale, same choice
    assert sub.shape == (2, 16, 2) and torch.equal(fmodel.model.merge_tokens(sub), fast)
    # Greedy sub-token decoding equals argmax of the teacher-forced factorized logits at each position.
    logits = fmodel(class_labels=labels, image_tokens=fast).logits
    no_cfg = fmodel.generate(class_labels=labels, do_sample=False, return_sub_tokens=True)
    logits = fmodel(class_labels=labels, image_tokens=no_cfg).logits
    assert torch.equal(torch.stack([lg.argmax(-1) for lg in logits], -1), no_cfg)


def test_repa_gradients_reach_projector_and_trunk():
    torch.manual_seed(0)
    model = make_model(repa_feature_dim=8, repa_depth=1).train()
    tokens = torch.randint(0, 64, (2, 16))
    out = model(class_labels=torch.tensor([1, 2]), image_tokens=tokens, output_repa_features=True)
    loss = repa_projection_loss(out.repa_features, torch.randn(2, 16, 8))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["model.repa_projector.0.weight"].abs().sum() > 0
    assert grads["model.layers.0.self_attn.qkv_proj.weight"].abs().sum() > 0
    assert grads["model.embed_tokens.weight"].abs().sum() > 0
    assert grads["model.layers.1.mlp.up_proj.weight"] is None  # after the tap: untouched by the REPA loss
    with pytest.raises(ValueError, match="repa_feature_dim"):
        make_model()(class_labels=torch.tensor([1]), image_tokens=tokens[:1], output_repa_features=True)


def test_gradient_checkpointing_matches(model):
    tokens = torch.randint(0, 64, (2, 16))
    grads = []
    for checkpointing in (False, True):
        m = make_model(
            token_dropout_prob=0.0, residual_dropout_prob=0.0, ffn_dropout_prob=0.0, class_dropout_prob=1e-9
        )
        m.load_state_dict(model.state_dict(), strict=False)
        if checkpointing:
            m.activation_checkpointing_enable()
        m.train()
        m(class_labels=torch.tensor([1, 2]), image_tokens=tokens, labels=tokens).loss.backward()
        grads.append(m.model.layers[0].self_attn.qkv_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def to_official_keys(state_dict):
    """Our keys -> official iFSQ `llamagen.py` keys, by the documented mapping read backwards."""
    inverse = {
        ".self_attn.qkv_proj.": ".attention.wqkv.",
        ".self_attn.o_proj.": ".attention.wo.",
        ".mlp.gate_proj.": ".feed_forward.w1.",
        ".mlp.up_proj.": ".feed_forward.w3.",
        ".mlp.down_proj.": ".feed_forward.w2.",
        ".input_layernorm.": ".attention_norm.",
        ".post_attention_layernorm.": ".ffn_norm.",
    }
    official = {}
    for key, value in state_dict.items():
        k = key.replace("model.factorized_layers.", "factorized_blocks.").replace("lm_head.", "output.")
        k = k.replace("model.class_embedding.", "cls_embedding.embedding_table.")
        k = k.replace("model.repa_projector.", "projectors.0.")
        if k.startswith("model.embed_tokens.") and k.count(".") == 3:
            k = f"{k.split('.')[2]}_emb.weight"
        k = k.replace("model.embed_tokens.", "tok_embeddings.").removeprefix("model.")
        for new, old in inverse.items():
            k = k.replace(new, old)
        official[k] = value
    return official


def test_convert_official_state_dict_roundtrip(fmodel):
    official = {"module._orig_mod." + k: v for k, v in to_official_keys(fmodel.state_dict()).items()}
    official["freqs_cis"] = torch.zeros(1)
    assert {"module._orig_mod.0_emb.weight", "module._orig_mod.layers.0.attention.wqkv.weight"} <= set(official)
    converted = convert_llamagen_state_dict(official)
    assert set(converted) == set(fmodel.state_dict())
    assert all(torch.equal(converted[k], v) for k, v in fmodel.state_dict().items())
    assert "model.repa_projector.0.weight" not in convert_llamagen_state_dict(
        {"projectors.0.0.weight": torch.zeros(1)}, keep_projector=False
    )


# Logits of the official iFSQ `llamagen/models/llamagen.py` (commit e78bd70; dim 32, 3 layers, 2 heads, multiple_of 16,
# 10 classes, 4x4 tokens, REPA after block 1, projector 48 -> 8), all weights N(0, 0.2^2) drawn in sorted-official-key
# order from Generator(seed 0); tokens from Generator(seed 1); class labels [1, 10 (null)]. Computed once, offline.
GOLDEN_SINGLE = [
    [
        [-0.07334214, 0.19996099, -0.18888682],
        [-0.10714910, 0.19473597, 0.07203519],
        [0.00523114, 0.26090384, -0.13148715],
    ],
    [
        [0.02987527, -0.16989654, 0.03013666],
        [-0.08291690, -0.07981586, 0.12693377],
        [0.11055744, -0.28737199, 0.28508621],
    ],
]
GOLDEN_REPA = [[-0.84836596, 0.22896986, -0.23804173], [-0.14116110, -0.05735937, -0.26692656]]
GOLDEN_FACTORIZED = [
    [[[0.14284015, 0.27816188, 0.08769055], [-0.07629949, -0.01153240, -0.01113375]],
     [[0.03701111, 0.21754530, -0.26181906], [-0.24024093, -0.00927922, -0.04958330]]],
    [[[0.22162855, 0.00886712, -0.29583076], [0.09013811, -0.20161982, -0.13282024]],
     [[-0.33130142, -0.16181535, 0.09445763], [-0.11203100, -0.15215132, 0.29240152]]],
]  # fmt: skip


@pytest.mark.parametrize("factorized", [False, True])
def test_matches_official_implementation(factorized):
    kw = {"factorized_vocab_sizes": [8, 8]} if factorized else {"repa_feature_dim": 8, "repa_depth": 1}
    model = LlamaGenForImageGeneration(LlamaGenConfig.from_preset("tiny", **kw)).eval()
    official = to_official_keys(model.state_dict())
    g = torch.Generator().manual_seed(0)
    official = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in sorted(official.items())}
    model.load_state_dict(convert_llamagen_state_dict(official), strict=True)
    labels = torch.tensor([1, 10])
    g = torch.Generator().manual_seed(1)
    if factorized:
        sub = torch.randint(0, 8, (2, 16, 2), generator=g)
        logits = model(class_labels=labels, image_tokens=sub).logits
        got = [lg[:, [0, 15], :3] for lg in logits]
        torch.testing.assert_close(torch.stack(got), torch.tensor(GOLDEN_FACTORIZED), rtol=0, atol=2e-5)
    else:
        tokens = torch.randint(0, 64, (2, 16), generator=g)
        out = model(class_labels=labels, image_tokens=tokens, output_repa_features=True)
        torch.testing.assert_close(out.logits[:, [0, 5, 15], :3], torch.tensor(GOLDEN_SINGLE), rtol=0, atol=2e-5)
        torch.testing.assert_close(out.repa_features[1, [0, 15], :3], torch.tensor(GOLDEN_REPA), rtol=0, atol=2e-5)


@pytest.mark.slow
def test_save_load_and_auto_classes_in_fresh_process(model, tmp_path):
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llamagen"
    # the code travels with the weights (issue 12): Auto classes load it with trust_remote_code=True, without ifsq_hf
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_llamagen.LlamaGenForImageGeneration"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LlamaGenConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), LlamaGenModel)
    reloaded = LlamaGenForImageGeneration.from_pretrained(tmp_path).eval()
    labels = torch.tensor([1, 2])
    expected = model.generate(class_labels=labels, guidance_scale=2.0, do_sample=False)
    assert torch.equal(reloaded.generate(class_labels=labels, guidance_scale=2.0, do_sample=False), expected)
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {SRC!r})
        import ifsq_hf  # registers the Auto classes; no auto_map / trust_remote_code needed
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}).eval()
        assert type(m).__name__ == "LlamaGenForImageGeneration", type(m)
        out = m.generate(class_labels=torch.tensor([1, 2]), guidance_scale=2.0, do_sample=False)
        assert torch.equal(out, torch.load({str(tmp_path / "expected.pt")!r})), out
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), LlamaGenForImageGeneration)


def test_eager_attention_matches_sdpa(model, tmp_path):
    model.save_pretrained(tmp_path)
    eager = LlamaGenForImageGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config._attn_implementation == "eager" and model.config._attn_implementation == "sdpa"
    labels = torch.tensor([1, 2])
    tokens = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(
        eager(class_labels=labels, image_tokens=tokens).logits,
        model(class_labels=labels, image_tokens=tokens).logits,
        rtol=1e-4,
        atol=1e-4,
    )
    for impl in ("dynamic", "static"):
        kw = {"guidance_scale": 2.0, "do_sample": False, "cache_implementation": impl}
        assert torch.equal(eager.generate(class_labels=labels, **kw), model.generate(class_labels=labels, **kw))


def test_training_checkpoint_loads_without_projector(model, tmp_path):
    model.save_pretrained(tmp_path)  # has the REPA projector
    config = LlamaGenConfig.from_pretrained(tmp_path)
    config.repa_feature_dim = None
    slim = LlamaGenForImageGeneration.from_pretrained(tmp_path, config=config).eval()
    assert not hasattr(slim.model, "repa_projector")
    labels = torch.tensor([1, 2])
    tokens = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(
        slim(class_labels=labels, image_tokens=tokens).logits, model(class_labels=labels, image_tokens=tokens).logits
    )


def test_peft_lora_trains_and_merges(model):
    peft = pytest.importorskip("peft")
    base = make_model(token_dropout_prob=0.0, residual_dropout_prob=0.0, ffn_dropout_prob=0.0)
    base.load_state_dict(model.state_dict(), strict=False)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"]))
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert trainable and sum(p.numel() for p in trainable) < sum(p.numel() for p in base.parameters()) / 5
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    tokens = torch.randint(0, 64, (4, 16))
    labels = torch.tensor([0, 1, 2, 3])
    lora.train()
    losses = []
    for _ in range(8):
        loss = lora(class_labels=labels, image_tokens=tokens, labels=tokens).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    lora.eval()
    before = lora(class_labels=labels, image_tokens=tokens).logits
    merged = lora.merge_and_unload()
    assert isinstance(merged, LlamaGenForImageGeneration)
    torch.testing.assert_close(merged(class_labels=labels, image_tokens=tokens).logits, before, rtol=1e-4, atol=1e-4)
    assert merged.generate(class_labels=labels[:1], guidance_scale=2.0, seed=0).shape == (1, 16)


class _StubTokenizer(torch.nn.Module):
    """Stands in for iFSQAutoencoder: codebook size + decode_indices -> DecoderOutput-like."""

    def __init__(self, codebook_size, factor=2):
        super().__init__()
        self.codebook_size = codebook_size
        self.factor = factor
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.dummy.device

    def decode_indices(self, indices):
        x = (indices.float() / self.codebook_size * 2 - 1)[:, None].repeat(1, 3, 1, 1)
        return type("Out", (), {"sample": torch.nn.functional.interpolate(x, scale_factor=self.factor)})()


def test_generate_images_output_types(model):
    tok = _StubTokenizer(64)
    pt = model.generate_images([1, 2], tok, output_type="pt", guidance_scale=2.0, seed=0)
    assert pt.shape == (2, 3, 8, 8) and float(pt.min()) >= 0 and float(pt.max()) <= 1
    assert model.generate_images([1], tok, output_type="np", seed=0).shape == (1, 8, 8, 3)
    pil = model.generate_images([1], tok, output_type="pil", seed=0)
    assert pil[0].size == (8, 8)


@pytest.mark.parametrize("factorized", [False, True])
def test_generate_images_with_ifsq_tokenizer(factorized):
    from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder

    tokenizer = iFSQAutoencoder.from_preset("test_f4_d4", factorized_dims=[2, 2] if factorized else None).eval()
    kw = {"factorized_vocab_sizes": [289, 289]} if factorized else {}
    model = make_model(vocab_size=tokenizer.codebook_size, image_token_size=4, **kw)
    images = model.generate_images([3, 4], tokenizer, output_type="pt", guidance_scale=2.0, seed=0, top_k=100)
    assert images.shape == (2, 3, 16, 16) and float(images.min()) >= 0 and float(images.max()) <= 1
    tokens = model.generate(class_labels=[3, 4], guidance_scale=2.0, seed=0, top_k=100)
    expected = (tokenizer.decode_indices(tokens.reshape(2, 4, 4)).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(images, expected)
    if factorized:
        plain = iFSQAutoencoder.from_preset("test_f4_d4")  # one group of 83521: merged ids decode the same
        model.check_tokenizer(plain)
        other = iFSQAutoencoder.from_preset("test_f4_d4", levels=[17, 17, 17, 17], factorized_dims=[1, 3])
        with pytest.raises(ValueError, match="factorized groups"):
            model.generate_images([1], other)
    else:
        with pytest.raises(ValueError, match="codebook has 625 codes but this LlamaGen has vocab_size=83521"):
            model.generate_images([1], iFSQAutoencoder.from_preset("test_f4_d4", levels=[5, 5, 5, 5]))


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 10\]"):
        model.generate(class_labels=torch.tensor([11]))
    with pytest.raises(ValueError, match="class_labels must lie"):
        model(class_labels=torch.tensor([-1]), image_tokens=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="image_tokens must lie"):
        model(class_labels=torch.tensor([1]), image_tokens=torch.full((1, 4), 64))
    with pytest.raises(ValueError, match="codebook has 83521 codes but this LlamaGen has vocab_size=64"):
        model.generate_images([1], _StubTokenizer(83521))
    with pytest.raises(ValueError, match="output_type"):
        model.generate_images([1], _StubTokenizer(64), output_type="jpg")
    no_null = make_model(class_dropout_prob=0.0)
    assert no_null.model.null_class_id is None
    with pytest.raises(ValueError, match="needs a null class embedding"):
        no_null.generate(class_labels=torch.tensor([1]), guidance_scale=2.0)
    assert no_null.generate(class_labels=torch.tensor([1]), do_sample=False).shape == (1, 16)
    with pytest.raises(ValueError, match="needs class_labels"):
        model.generate()
    with pytest.raises(TypeError, match="unexpected generate"):
        model.generate(class_labels=torch.tensor([1]), num_steps=3)
    with pytest.raises(ValueError, match="guidance_interval must be"):
        model.generate(class_labels=torch.tensor([1]), guidance_scale=2.0, guidance_interval=(0.5, 0.2))
    with pytest.raises(ValueError, match="cache_implementation"):
        model.generate(class_labels=torch.tensor([1]), cache_implementation="paged")
