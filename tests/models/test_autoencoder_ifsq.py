"""iFSQAutoencoder: shapes, token round trips, official layout, save/load, slicing/tiling, checkpointing, LoRA."""

import pytest
import torch
from accelerate import init_empty_weights
from diffusers.models.autoencoders.vae import DecoderOutput

from ifsq_hf.models.autoencoder_ifsq import PRESETS, iFSQAutoencoder, iFSQAutoencoderOutput, iFSQEncoderOutput
from ifsq_hf.quantization import FiniteScalarQuantizer


@pytest.fixture
def model():
    return iFSQAutoencoder.from_preset("test_f4_d4").eval()


def images(b=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def official_keys() -> set[str]:
    """The 274 state-dict keys of the official ImageFSQVAEModel (``ifsq/src/model/fsqvae/modeling_imagefsqvae.py``), spelled out independently."""
    keys = {"quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias"}
    keys |= {"quantize.running_mean", "quantize.running_var"}
    block = ["norm1", "conv1", "norm2", "conv2"]
    for side, n_blocks, shortcuts, resample, resampled in (
        ("encoder.down", 2, (2, 3), "downsample", range(4)),
        ("decoder.up", 3, (1, 2), "upsample", range(1, 5)),
    ):
        for i in range(5):
            for j in range(n_blocks):
                keys |= {f"{side}.{i}.block.{j}.{m}.{p}" for m in block for p in ("weight", "bias")}
            if i in shortcuts:
                keys |= {f"{side}.{i}.block.0.nin_shortcut.{p}" for p in ("weight", "bias")}
            if i in resampled:
                keys |= {f"{side}.{i}.{resample}.conv.{p}" for p in ("weight", "bias")}
    for part in ("encoder", "decoder"):
        for j in range(2):
            keys |= {f"{part}.mid_block.{j}.{m}.{p}" for m in block for p in ("weight", "bias")}
        keys |= {f"{part}.{m}.{p}" for m in ("conv_in", "norm_out", "conv_out") for p in ("weight", "bias")}
    return keys


def test_official_preset_layout_and_size():
    with init_empty_weights():  # parameters on the meta device: no 83 M-parameter init
        model = iFSQAutoencoder.from_preset("ifsq_f16_d4_4bit")
    sd = model.state_dict()
    assert len(sd) == 274
    assert set(sd) == official_keys()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == 83_324_099
    assert round(count(model.encoder) / 1e6, 2) == 33.85
    assert round(count(model.decoder) / 1e6, 2) == 49.47
    shapes = {
        "encoder.conv_out.weight": (8, 512, 3, 3),
        "decoder.conv_in.weight": (512, 4, 3, 3),
        "quant_conv.weight": (4, 8, 1, 1),
        "post_quant_conv.weight": (4, 4, 1, 1),
        "decoder.conv_out.weight": (3, 128, 3, 3),
        "decoder.up.2.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "quantize.running_var": (1, 4, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert model.downsample_factor == 16
    assert model.codebook_size == 17**4
    assert model.config.scaling_factor == pytest.approx(1.092421)
    q = model.quantizer
    assert isinstance(q, FiniteScalarQuantizer)
    assert (q.levels, q.bound, q.alpha) == ([17, 17, 17, 17], "ifsq", 1.6)
    assert model.get_last_layer() is model.decoder.conv_out.weight


def test_presets_sizes():
    tiny = iFSQAutoencoder.from_preset("tiny_f8_d4")
    assert tiny.downsample_factor == 8
    assert 100_000 < sum(p.numel() for p in tiny.parameters()) < 1_000_000
    test = iFSQAutoencoder.from_preset("test_f4_d4", scaling_factor=0.5)
    assert test.downsample_factor == 4 and test.config.scaling_factor == 0.5
    assert set(PRESETS) == {"ifsq_f16_d4_4bit", "tiny_f8_d4", "test_f4_d4"}
    with pytest.raises(ValueError, match="unknown preset"):
        iFSQAutoencoder.from_preset("f32")


def test_shapes_and_outputs(model):
    x = images(2, 16)
    enc = model.encode(x)
    assert isinstance(enc, iFSQEncoderOutput)
    assert enc.latent.shape == (2, 4, 4, 4) and enc.latent.dtype == torch.float32
    assert enc.indices.shape == (2, 4, 4) and enc.indices.dtype == torch.int64
    assert enc.indices.min() >= 0 and enc.indices.max() < 17**4
    # the latent lies on the 17-level grid in [-1, 1]
    assert torch.equal(enc.latent * 8, (enc.latent * 8).round()) and enc.latent.abs().max() <= 1
    dec = model.decode(enc.latent)
    assert isinstance(dec, DecoderOutput) and dec.sample.shape == (2, 3, 16, 16)
    out = model(x)
    assert isinstance(out, iFSQAutoencoderOutput)
    assert torch.equal(out.sample, dec.sample) and torch.equal(out.indices, enc.indices)
    latent, indices = model.encode(x, return_dict=False)
    assert torch.equal(latent, enc.latent) and torch.equal(indices, enc.indices)
    (sample,) = model.decode(latent, return_dict=False)
    assert torch.equal(sample, dec.sample)
    assert len(model(x, return_dict=False)) == 3
    # non-square images work when both sides are divisible by the factor
    assert model.encode(images(1, 16)[..., :8]).latent.shape == (1, 4, 4, 2)


def test_indices_latent_consistency(model):
    x = images(2, 16)
    enc = model.encode(x)
    assert torch.equal(model.indices_to_latent(enc.indices), enc.latent)
    assert torch.equal(model.quantizer.codes_to_indices(enc.latent), enc.indices)
    assert torch.equal(model.decode_indices(enc.indices).sample, model.decode(enc.latent).sample)
    (sample,) = model.decode_indices(enc.indices, return_dict=False)
    assert torch.equal(sample, model.decode(enc.latent).sample)


def test_factorized_indices():
    model = iFSQAutoencoder.from_preset("test_f4_d4", factorized_dims=[2, 2]).eval()
    enc = model.encode(images(2, 16))
    assert enc.indices.shape == (2, 4, 4)  # global indices
    groups = model.quantizer.global_to_group_indices(enc.indices)
    assert groups.shape == (2, 4, 4, 2) and groups.max() < 17**2
    assert torch.equal(model.quantizer.group_indices_to_global(groups), enc.indices)
    ref = model.decode(enc.latent).sample
    assert torch.equal(model.decode_indices(groups).sample, ref)
    assert torch.equal(model.decode_indices(enc.indices).sample, ref)
    # the unfactorized model assigns the same global indices to the same weights
    plain = iFSQAutoencoder.from_preset("test_f4_d4").eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.encode(images(2, 16)).indices, enc.indices)


def test_save_load_round_trip_bit_exact(model, tmp_path):
    model.quantize.running_mean.fill_(0.25)  # persistent monitoring buffers travel too
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = iFSQAutoencoder.from_pretrained(tmp_path).eval()
    assert loaded.config.levels == [17, 17, 17, 17] and loaded.config.block_out_channels == [8, 8, 8]
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = images(2, 16)
    a, b = model(x), loaded(x)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.indices, b.indices)


def test_slicing_matches(model):
    x = images(3, 16)
    ref = model(x)
    model.enable_slicing()
    out = model(x)
    model.disable_slicing()
    assert torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(out.sample, ref.sample, rtol=1e-5, atol=1e-5)


def _without_norms(model):
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(module, name, torch.nn.Identity())
    return model


def test_tiling_blends_tiles_close_to_untiled(model):
    # GroupNorm uses per-tile statistics (a documented approximation); without it only the cut receptive fields at
    # the seams differ, which the blending must keep small everywhere.
    model = _without_norms(model)
    x = images(1, 64, seed=1)
    with torch.no_grad():
        pre, latent = model.encode_pre_quant(x), model.encode(x).latent
        ref_sample = model.decode(latent).sample
        model.enable_tiling(tile_sample_size=32, tile_sample_stride=16)
        tiled_pre, tiled = model.encode_pre_quant(x), model.encode(x)
        tiled_sample = model.decode(latent).sample
        model.disable_tiling()
    assert tiled_pre.shape == pre.shape and tiled_sample.shape == ref_sample.shape
    assert (tiled_pre - pre).abs().mean() < 1e-2 * pre.abs().mean()
    assert (tiled_sample - ref_sample).abs().mean() < 5e-2 * ref_sample.abs().mean()  # ~3 % measured
    # the codes come from one quantization of the blended activations: consistent with the blended latent
    assert torch.equal(tiled.indices, model.quantizer(tiled_pre).indices)
    assert (tiled.indices == model.encode(x).indices).float().mean() > 0.9


def test_tiling_with_norms(model):
    x = images(1, 48, seed=1)
    ref = model.encode(x)
    model.enable_tiling(tile_sample_size=32, tile_sample_stride=16)
    assert model.use_tiling
    tiled = model.encode(x)
    sample = model.decode(ref.latent).sample
    assert tiled.latent.shape == ref.latent.shape and sample.shape == (1, 3, 48, 48)
    assert torch.isfinite(sample).all()
    # an image no larger than a tile is never tiled: exact
    small = images(1, 32)
    model.disable_tiling()
    exact = model.encode(small).indices
    model.enable_tiling(tile_sample_size=32, tile_sample_stride=16)
    assert torch.equal(model.encode(small).indices, exact)
    with pytest.raises(ValueError, match="multiple of the downsampling factor"):
        model.enable_tiling(tile_sample_size=18)
    with pytest.raises(ValueError, match="tile_sample_stride"):
        model.enable_tiling(tile_sample_size=16, tile_sample_stride=20)


def test_gradient_checkpointing_same_grads():
    torch.manual_seed(0)
    model = iFSQAutoencoder.from_preset("test_f4_d4")
    x = images(2, 16)

    def grads():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out.sample.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    ckpt = grads()
    model.disable_gradient_checkpointing()
    assert ref.keys() == ckpt.keys() and "encoder.conv_in.weight" in ref  # gradients reach the encoder (STE)
    for name in ref:
        torch.testing.assert_close(ckpt[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_autocast_bf16_quantizer_path_matches_fp32(model):
    x = images(2, 16)
    pre = model.encode_pre_quant(x)
    assert pre.dtype == torch.float32 and pre.shape == (2, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre_bf16 = model.encode_pre_quant(x)
        out_bf16 = model.quantizer(pre_bf16)
        enc_bf16 = model.encode(x)
    assert pre_bf16.dtype == torch.float32  # quant_conv runs in fp32 even under autocast
    # same pre-quantization activations -> identical indices whether autocast is on or not
    assert torch.equal(out_bf16.indices, model.quantizer(pre_bf16).indices)
    assert torch.equal(enc_bf16.indices, out_bf16.indices)
    # the bf16 trunk changes activations, but only slightly
    assert (pre_bf16 - pre).abs().max() < 0.1


def test_lora_adapter_attaches(model):
    from peft import LoraConfig

    before = model(images(1, 16)).sample
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["conv1", "conv2"], init_lora_weights=True))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    # a freshly initialised LoRA (B = 0) does not change the output
    torch.testing.assert_close(model(images(1, 16)).sample, before)
    out = model(images(1, 16))
    out.sample.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 4"):
        model.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match="channels"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="floating-point"):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model.encode(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="latent must have shape"):
        model.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="decode_indices"):
        model.decode(torch.zeros(1, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.decode_indices(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="must lie in"):
        model.decode_indices(torch.full((1, 4, 4), 17**4, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        model.decode_indices(torch.full((1, 4, 4), -1, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model.decode_indices(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="len\\(levels\\)"):
        iFSQAutoencoder.from_preset("test_f4_d4", levels=[17, 17, 17])
    with pytest.raises(ValueError, match="norm_num_groups"):
        iFSQAutoencoder.from_preset("test_f4_d4", norm_num_groups=3)
    with pytest.raises(ValueError, match="odd levels"):
        iFSQAutoencoder.from_preset("test_f4_d4", levels=[16] * 4)


def test_half_precision_models_take_fp32_inputs(model):
    x = images(2, 16)
    ref = model(x)
    bf16 = iFSQAutoencoder.from_preset("test_f4_d4").eval()
    bf16.load_state_dict(model.state_dict())
    bf16.to(torch.bfloat16)
    out = bf16(x)  # fp32 images are cast to the weights' dtype
    assert out.sample.dtype == torch.bfloat16 and out.latent.dtype == torch.bfloat16
    assert bf16.decode_indices(out.indices).sample.dtype == torch.bfloat16
    assert (out.sample.float() - ref.sample).abs().mean() < 0.05
    # fp8 storage with bf16 compute (diffusers layerwise casting): inputs follow the compute dtype
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert model.quant_conv.weight.dtype == torch.float32 and model.post_quant_conv.weight.dtype == torch.float8_e4m3fn
    out = model(x)
    assert out.sample.dtype == torch.bfloat16 and out.indices.shape == (2, 4, 4)
    assert model.decode_indices(out.indices).sample.dtype == torch.bfloat16


class _PeakLiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of tensors created inside the mode and still referenced (views and in-place results of a live
    storage are not counted twice). Library-internal workspaces (e.g. a conv's im2col buffer) are not seen."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        self.now -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref

        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                ptr, size = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                self.live[ptr] = size
                self.now += size
                self.peak = max(self.peak, self.now)
                weakref.finalize(t, self._release, ptr)
        return out


def test_residual_block_holds_at_most_two_activations_without_grad():
    # Official-level memory: the block keeps one intermediate next to the one being computed, plus GroupNorm
    # statistics (the nested call it replaced kept three); activations run in place without autograd.
    from ifsq_hf.models.autoencoder_ifsq import ResnetBlock2D

    block = ResnetBlock2D(8, 8, norm_num_groups=4, norm_eps=1e-6, dropout=0.0).eval()
    x = torch.randn(1, 8, 32, 32)
    expected = x + block.conv2(
        torch.nn.functional.silu(block.norm2(block.conv1(torch.nn.functional.silu(block.norm1(x)))))
    )
    with torch.no_grad(), _PeakLiveBytes() as meter:
        out = block(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert meter.peak <= 2 * x.nbytes + 1024, f"peak {meter.peak / x.nbytes:.1f} activations"


def test_in_place_activations_keep_autograd_and_outputs():
    model = iFSQAutoencoder.from_preset("test_f4_d4").train()
    x = images()
    with torch.no_grad():
        ref = model(x).sample
    out = model(x).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.pow(2).mean().backward()  # in-place ops only where autograd does not need the overwritten values
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("mixed_precision", ["bf16", "fp16"])
def test_forward_under_accelerate_mixed_precision(mixed_precision):
    """accelerate casts a prepared model's outputs to fp32 by rebuilding them from a dict (what the training script's
    --mixed_precision does); the outputs must survive that with exact int64 indices."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the state is a process-wide singleton
    model = iFSQAutoencoder.from_preset("test_f4_d4")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    reference = model(images)
    try:
        prepared = Accelerator(mixed_precision=mixed_precision, cpu=True).prepare(model)
        out = prepared(images)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert out.sample.dtype == torch.float32 and out.indices.dtype == torch.int64
    assert out.latent.shape == reference.latent.shape and out.indices.shape == reference.indices.shape
    rebuilt = iFSQEncoderOutput(dict(model.encode(images)))  # the same dict round trip for the encoder output
    assert rebuilt.indices.dtype == torch.int64
