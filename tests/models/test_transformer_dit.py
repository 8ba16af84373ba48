import pytest
import torch
from peft import LoraConfig

from ifsq_hf.convert.dit import convert_official_dit_state_dict
from ifsq_hf.models.transformer_dit import (
    DIT_PRESETS,
    LightningDiTTransformer2DModel,
    LightningDiTTransformer2DModelOutput,
    rope_tables_2d,
    sincos_pos_embed_2d,
)


def tiny(**kw):
    model = LightningDiTTransformer2DModel.from_preset("tiny", **kw)
    # adaLN-Zero makes a fresh model output zeros; perturb so the tests see a real function.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def inputs(b=2, c=4, s=4):
    return torch.randn(b, c, s, s), torch.rand(b), torch.randint(0, 10, (b,))


def test_fresh_model_is_zero_and_shapes():
    model = LightningDiTTransformer2DModel.from_preset("tiny")
    x, t, y = inputs()
    out = model(x, t, y)
    assert isinstance(out, LightningDiTTransformer2DModelOutput)
    assert out.sample.shape == x.shape and out.repa_features is None
    assert torch.count_nonzero(out.sample) == 0  # zero-initialised final layer


@pytest.mark.parametrize("patch", [1, 2])
def test_patch_sizes_and_other_resolution(patch):
    model = tiny(patch_size=patch, sample_size=4)
    x, t, y = inputs(s=8)  # not the configured size: tables are rebuilt on the fly
    out = model(x, t, y).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert model(x, t, y, return_dict=False)[0].shape == x.shape


def test_official_l1_size():
    # Parameter count of the official DiT-L/1 + projector minus the stored pos_embed (1*256*1024), spec section 3.1.
    with torch.device("meta"):
        model = LightningDiTTransformer2DModel.from_preset("L/1", repa_feature_dim=768)
    n = sum(p.numel() for p in model.parameters())
    assert n + 256 * 1024 == pytest.approx(465.97e6, rel=1e-4)
    assert len(model.state_dict()) + 3 == 357  # official has pos_embed + feat_rope.freqs_{cos,sin}
    assert model.blocks[0].mlp.w12.out_features == 2 * 2730


def test_conditioning_matters_and_null_class():
    model = tiny()
    x, t, _ = inputs()
    a = model(x, t, torch.tensor([0, 0])).sample
    b = model(x, t, torch.tensor([1, 1])).sample
    null = model(x, t, torch.tensor([10, 10])).sample
    assert not torch.allclose(a, b) and not torch.allclose(a, null)
    assert not torch.allclose(a, model(x, t + 0.3, torch.tensor([0, 0])).sample)


def test_label_dropout_only_in_training():
    model = tiny(class_dropout_prob=1.0)
    x, t, y = inputs()
    null = model(x, t, torch.full_like(y, 10)).sample
    assert not torch.allclose(model(x, t, y).sample, null)  # eval: no dropout
    model.train()
    torch.testing.assert_close(model(x, t, y).sample, null)


def test_repa_projector_and_grads():
    model = tiny(repa_feature_dim=12, repa_depth=1).train()
    x, t, y = inputs()
    out = model(x, t, y, return_repa_features=True)
    assert out.repa_features.shape == (2, 16, 12)
    out.repa_features.pow(2).mean().backward()
    assert model.repa_projector[0].weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.blocks[1].attn.qkv.weight.grad is None  # after repa_depth: not on the path
    with pytest.raises(ValueError, match="repa_feature_dim"):
        tiny()(x, t, y, return_repa_features=True)


def test_gradient_checkpointing_matches():
    model = tiny(class_dropout_prob=0.0).train()
    x, t, y = inputs()
    model(x, t, y).sample.sum().backward()
    ref = model.blocks[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    model(x, t, y).sample.sum().backward()
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight.grad, ref)


def test_switches_off_gives_plain_dit():
    model = tiny(use_qk_norm=False, use_swiglu=False, use_rope=False, use_rmsnorm=False)
    keys = model.state_dict().keys()
    assert "blocks.0.mlp.fc1.weight" in keys and "blocks.0.norm1.weight" not in keys
    x, t, y = inputs()
    assert model(x, t, y).sample.shape == x.shape


def test_save_load_roundtrip(tmp_path):
    model = tiny(repa_feature_dim=8)
    model.save_pretrained(tmp_path)
    loaded = LightningDiTTransformer2DModel.from_pretrained(tmp_path).eval()
    x, t, y = inputs()
    torch.testing.assert_close(loaded(x, t, y).sample, model(x, t, y).sample)


def test_lora_with_peft(tmp_path):
    model = tiny()
    x, t, y = inputs()
    base = model(x, t, y).sample
    model.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["qkv", "proj", "w12", "w3"], init_lora_weights=False)
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapted = model(x, t, y).sample
    assert not torch.allclose(adapted, base)
    model.save_lora_adapter(tmp_path)
    fresh = LightningDiTTransformer2DModel.from_config(model.config).eval()
    fresh.load_state_dict({k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k})
    torch.testing.assert_close(fresh(x, t, y).sample, base)
    fresh.load_lora_adapter(tmp_path, prefix=None, use_safetensors=True)
    torch.testing.assert_close(fresh(x, t, y).sample, adapted)


def test_bad_inputs():
    model = tiny()
    x, t, y = inputs()
    with pytest.raises(ValueError, match="hidden_states"):
        model(x[:, :3], t, y)
    with pytest.raises(ValueError, match="divisible"):
        tiny(patch_size=2)(torch.randn(2, 4, 5, 5), t, y)
    with pytest.raises(ValueError, match="shape"):
        model(x, t[:1], y)
    with pytest.raises(ValueError, match="integer"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match="unknown DiT preset"):
        LightningDiTTransformer2DModel.from_preset("M")
    with pytest.raises(ValueError, match="divisible by 4"):
        LightningDiTTransformer2DModel(hidden_size=24, num_attention_heads=4, num_layers=1)


def test_presets_are_consistent():
    for name, cfg in DIT_PRESETS.items():
        assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0, name


def test_fixed_tables_layout():
    # Row-major tokens; sin-cos: first half encodes the column, second half the row.
    pos = sincos_pos_embed_2d(8, 2, 3)
    assert pos.shape == (6, 8)
    torch.testing.assert_close(pos[1, :4], pos[4, :4])  # (0,1) and (1,1): same column
    torch.testing.assert_close(pos[0, 4:], pos[2, 4:])  # (0,0) and (0,2): same row
    cos, sin = rope_tables_2d(8, 2, 3)
    torch.testing.assert_close(cos**2 + sin**2, torch.ones(6, 8))
    assert cos.shape == (6, 8)
    # Channels 0-3 rotate with the row, 4-7 with the column; pairs share an angle (interleaved layout).
    torch.testing.assert_close(cos[0, :4], cos[2, :4])
    torch.testing.assert_close(cos[0, 4:], cos[3, 4:])
    torch.testing.assert_close(cos[:, 0], cos[:, 1])
    assert torch.allclose(cos[3, 0], torch.cos(torch.tensor(1.0)))  # token (1,0), lowest freq = 1 rad/step


def test_convert_official_state_dict():
    model = tiny(repa_feature_dim=8)
    official = {}
    for k, v in model.state_dict().items():
        official["module." + k.replace("repa_projector.", "projectors.0.")] = v
    official["module.pos_embed"] = torch.zeros(1, 16, 32)
    official["module.feat_rope.freqs_cos"] = torch.zeros(16, 16)
    converted = convert_official_dit_state_dict(official)
    fresh = LightningDiTTransformer2DModel.from_config(model.config)
    fresh.load_state_dict(converted, strict=True)
    with pytest.raises(ValueError, match="projector"):
        convert_official_dit_state_dict({"projectors.1.0.weight": torch.zeros(1)})


def test_repa_depth_zero_projects_patch_embeddings():
    model = tiny(repa_feature_dim=6, repa_depth=0)
    x, t, y = inputs()
    feats = model(x, t, y, return_repa_features=True).repa_features
    tokens = model.x_embedder(x) + model.pos_embed
    torch.testing.assert_close(feats, model.repa_projector(tokens))


def test_qk_layernorm_when_rmsnorm_is_off():
    # The official code falls back to an affine LayerNorm for QK-norm without RMSNorm.
    model = tiny(use_rmsnorm=False)
    assert isinstance(model.blocks[0].attn.q_norm, torch.nn.LayerNorm)
    assert "blocks.0.attn.q_norm.bias" in model.state_dict()


def test_bfloat16_forward_close_to_float32():
    model = tiny(repa_feature_dim=8)
    x, t, y = inputs()
    ref = model(x, t, y).sample
    out = model.to(torch.bfloat16)(x.bfloat16(), t, y, return_repa_features=True)
    assert out.sample.dtype == torch.bfloat16 and out.repa_features.dtype == torch.bfloat16
    torch.testing.assert_close(out.sample.float(), ref, atol=0.05, rtol=0.05)


def test_fused_rmsnorm_matches_the_official_formula():
    from ifsq_hf.models.transformer_dit import RMSNorm

    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.add_(torch.randn(16))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 5, 16).to(dtype)
        xf = x.float()
        ref = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).type_as(x) * norm.weight
        out = norm(x)
        assert out.dtype == ref.dtype
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_rope_fast_path_matches_real_formula():
    from ifsq_hf.models.transformer_dit import _apply_rope

    cos, sin = rope_tables_2d(8, 3, 2)
    x = torch.randn(2, 3, 6, 8)
    pairs = x.unflatten(-1, (-1, 2))
    ref = x * cos + torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2) * sin
    torch.testing.assert_close(_apply_rope(x, cos, sin), ref)
    strided = torch.randn(2, 6, 3, 8).transpose(1, 2)  # not viewable as complex without a copy
    torch.testing.assert_close(_apply_rope(strided, cos, sin), _apply_rope(strided.contiguous(), cos, sin))


@pytest.mark.parametrize("size", [4, 8])  # the configured grid (buffers) and another one (computed tables)
def test_no_recompilation_across_identical_calls(size):
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = tiny()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x, t, y = inputs(s=size)
    with torch.no_grad():
        first = compiled(x, t, y).sample
        compiled(x, t.flip(0), y.flip(0))
        compiled(x, t, y)
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times"
    assert torch._dynamo.utils.counters["graph_break"] == {}
    torch.testing.assert_close(first, model(x, t, y).sample)
    torch._dynamo.reset()


def test_determinism_and_train_eval():
    model = tiny(class_dropout_prob=0.0)
    x, t, y = inputs()
    a, b = model(x, t, y).sample, model(x, t, y).sample
    assert torch.equal(a, b)
    torch.testing.assert_close(model.train()(x, t, y).sample, a)  # no dropout layers: same function


@pytest.mark.parametrize(
    "save_kwargs",
    [
        {"safe_serialization": False},
        {"variant": "fp16"},
        {"max_shard_size": "20KB"},
    ],
    ids=["pickle", "variant", "sharded"],
)
def test_save_load_variants(tmp_path, save_kwargs):
    model = tiny(repa_feature_dim=8)
    model.save_pretrained(tmp_path, **save_kwargs)
    files = sorted(p.name for p in tmp_path.iterdir())
    if "max_shard_size" in save_kwargs:
        assert any(name.endswith(".index.json") for name in files) and len(files) > 3, files
    load_kwargs = {"variant": save_kwargs["variant"]} if "variant" in save_kwargs else {}
    if "variant" in save_kwargs:
        assert "diffusion_pytorch_model.fp16.safetensors" in files
        with pytest.raises(OSError):
            LightningDiTTransformer2DModel.from_pretrained(tmp_path)  # the plain file is not there
    loaded = LightningDiTTransformer2DModel.from_pretrained(tmp_path, **load_kwargs).eval()
    x, t, y = inputs()
    torch.testing.assert_close(loaded(x, t, y).sample, model(x, t, y).sample)


def test_dtype_round_trip(tmp_path):
    model = tiny()
    x, t, y = inputs()
    ref = model(x, t, y).sample
    model.to(torch.float16).save_pretrained(tmp_path)
    loaded = LightningDiTTransformer2DModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.dtype == torch.float32 and loaded.rope_cos.dtype == torch.float32
    torch.testing.assert_close(loaded(x, t, y).sample, ref, atol=2e-2, rtol=2e-2)  # fp16 weights, fp32 compute
    half = LightningDiTTransformer2DModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert half(x.bfloat16(), t, y).sample.dtype == torch.bfloat16


def test_layerwise_casting():
    model = tiny()
    x, t, y = inputs()
    ref = model(x, t, y).sample
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model.blocks[0].attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert model.blocks[0].norm1.weight.dtype == torch.float32  # norms and embedders are skipped
    assert model.x_embedder.proj.weight.dtype == torch.float32
    out = model(x, t, y).sample
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=0.15, rtol=0.15)


def test_gradient_checkpointing_all_grads_match():
    model = tiny(class_dropout_prob=0.0, repa_feature_dim=8).train()
    x, t, y = inputs()

    def grads():
        model.zero_grad()
        out = model(x, t, y, return_repa_features=True)
        (out.sample.pow(2).mean() + out.repa_features.mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads()
    model.enable_gradient_checkpointing()
    got = grads()
    assert ref.keys() == got.keys() and len(ref) > 20
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], msg=name)


def test_repa_projector_leaves_the_transformer_initialisation_unchanged():
    """With or without the REPA projector, one seed gives the same transformer and the same global RNG state after
    construction (a REPA run and its no-REPA baseline differ only by the loss); the projector follows the seed."""
    states, after = [], []
    for seed, feature_dim in ((0, None), (0, 16), (1, 16), (0, 16)):
        torch.manual_seed(seed)
        model = LightningDiTTransformer2DModel.from_preset("tiny", repa_feature_dim=feature_dim)
        states.append(model.state_dict())
        after.append(torch.rand(1))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert torch.equal(after[0], after[1])
    proj = [k for k in states[1] if k.startswith("repa_projector") and k.endswith("weight")]
    assert len(proj) == 3
    for k in proj:
        assert torch.equal(states[1][k], states[3][k]) and not torch.equal(states[1][k], states[2][k])
