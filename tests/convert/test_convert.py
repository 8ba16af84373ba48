"""Converters of official checkpoints: every tensor lands under the documented name, the converted model computes
what the same architecture computes with the weights loaded by name, and bad checkpoints fail before anything is
written.

The official state dicts are generated here from the naming patterns of the official modules
(``modeling_imagefsqvae.py``, ``dit/models/dit.py``, ``llamagen/models/llamagen.py``), independently of the converters' mapping code, and wrapped like the official trainers save them.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifsq_hf.cli import main as cli_main
from ifsq_hf.convert import (
    ConversionError,
    convert_checkpoint,
    convert_dit_checkpoint,
    convert_tokenizer_checkpoint,
    load_official_llamagen,
    load_official_tokenizer,
)
from ifsq_hf.convert.dit import dit_config_from_official
from ifsq_hf.convert.llamagen import llamagen_config_from_official
from ifsq_hf.convert.tokenizer import tokenizer_config_from_official
from ifsq_hf.models.autoencoder_ifsq import PRESETS, iFSQAutoencoder
from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration
from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel

REPO = Path(__file__).resolve().parents[2]


def _random(shapes: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.2 for k, shape in sorted(shapes.items())}


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run_cli(*args: str, capsys) -> _Result:
    """``ifsq-hf convert ...`` in this process (argument parsing, printing and exit codes of the real entry point);
    ``test_cli_module_in_a_subprocess`` runs ``python -m ifsq_hf.cli`` itself."""
    capsys.readouterr()
    code = cli_main(["convert", *args])
    captured = capsys.readouterr()
    return _Result(code, captured.out, captured.err)


# ---------------------------------------------------------------------------------------------------- tokenizer
# A tiny official ImageFSQVAEModel config (GroupNorm(32) needs widths that are multiples of 32).
TINY_TOKENIZER = {
    "_class_name": "ImageFSQVAEModel",
    "hidden_size": 32,
    "hidden_size_mult": [1, 2],
    "encoder_resnet_blocks": ["ResnetBlock2D", "ResnetBlock2D"],
    "encoder_spatial_downsample": ["Downsample", ""],
    "decoder_resnet_blocks": ["ResnetBlock2D", "ResnetBlock2D"],
    "decoder_spatial_upsample": ["", "Upsample"],
    "num_res_blocks": 2,
    "z_channels": 3,
    "embed_dim": 3,
    "levels": [5, 5, 5],
    "do_simple_bound": True,
    "act_fun": "scale_sigmoid_16",
    "resolution": 16,
}


def official_tokenizer_shapes(hidden: int, mult: list[int], num_res_blocks: int, z: int) -> dict:
    """Key -> shape of the official ImageFSQVAEModel, spelled out from the official module names."""
    shapes = {}
    ch = [hidden * m for m in mult]

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resblock(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    conv("encoder.conv_in", 3, ch[0], 3)
    c = ch[0]
    for i, out in enumerate(ch):
        for j in range(num_res_blocks):
            resblock(f"encoder.down.{i}.block.{j}", c, out)
            c = out
        if i < len(ch) - 1:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    for j in range(num_res_blocks):
        resblock(f"encoder.mid_block.{j}", c, c)
    norm("encoder.norm_out", c)
    conv("encoder.conv_out", c, 2 * z, 3)
    conv("quant_conv", 2 * z, z, 1)
    shapes["quantize.running_mean"] = shapes["quantize.running_var"] = (1, z, 1, 1)
    conv("post_quant_conv", z, z, 1)
    conv("decoder.conv_in", z, c, 3)
    for j in range(num_res_blocks):
        resblock(f"decoder.mid_block.{j}", c, c)
    for i in reversed(range(len(ch))):
        for j in range(num_res_blocks + 1):
            resblock(f"decoder.up.{i}.block.{j}", c, ch[i])
            c = ch[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", c, 3, 3)
    return shapes


def official_tokenizer_checkpoint(seed: int = 0, prefix: str = "module.") -> tuple[dict, dict, dict]:
    """(checkpoint as train_ddp.py saves it, EMA weights by official name, raw weights by official name)."""
    shapes = official_tokenizer_shapes(32, [1, 2], 2, 3)
    ema, raw = _random(shapes, seed), _random(shapes, seed + 1)
    ema["quantize.running_var"] = ema["quantize.running_var"].abs()
    ema_wrapped = {prefix + k: v for k, v in ema.items()}
    # The EMA shadows every buffer of the DDP model, including float copies of the int quantizer constants.
    ema_wrapped[prefix + "quantize._levels"] = torch.tensor([5.0, 5.0, 5.0])
    ema_wrapped[prefix + "quantize._basis"] = torch.tensor([1.0, 5.0, 25.0])
    ema_wrapped[prefix + "quantize._basis_group_0"] = torch.tensor([1.0, 5.0, 25.0])
    checkpoint = {
        "epoch": 3,
        "current_step": 1000,
        "optimizer_state": {"gen_optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
        "state_dict": {"gen_model": raw, "dics_model": {"discriminator.main.0.weight": torch.zeros(2, 3, 4, 4)}},
        "ema_state_dict": ema_wrapped,
    }
    return checkpoint, ema, raw


def test_generated_official_keys_match_the_released_count():
    # Spec 2.3: the released f16 tokenizer has 274 state-dict keys (running stats included, int buffers excluded).
    assert len(official_tokenizer_shapes(128, [1, 1, 2, 4, 4], 2, 4)) == 274


def test_released_tokenizer_config_maps_to_the_preset():
    run_json = {
        "_class_name": "ImageFSQVAEModel",
        "hidden_size": 128,
        "dropout": 0.0,
        "z_channels": 4,
        "embed_dim": 4,
        "norm_type": "groupnorm",
        "hidden_size_mult": [1, 1, 2, 4, 4],
        "encoder_resnet_blocks": ["ResnetBlock2D"] * 5,
        "encoder_spatial_downsample": ["Downsample"] * 4 + [""],
        "decoder_resnet_blocks": ["ResnetBlock2D"] * 5,
        "decoder_spatial_upsample": [""] + ["Upsample"] * 4,
        "num_res_blocks": 2,
        "levels": [17, 17, 17, 17],
        "do_simple_bound": True,
        "act_fun": "scale_sigmoid_16",
    }
    ours = tokenizer_config_from_official(run_json)
    for key, value in PRESETS["ifsq_f16_d4_4bit"].items():
        assert ours[key] == value, key
    assert ours["norm_eps"] == 1e-6 and ours["double_z"] and ours["factorized_dims"] is None
    assert tokenizer_config_from_official({**run_json, "levels": [9] * 4})["scaling_factor"] == 1.0


@pytest.mark.parametrize(
    ("options", "bound", "alpha"),
    [
        ({"act_fun": "scale_sigmoid_20"}, "ifsq", 2.0),
        ({"do_simple_bound": False, "act_fun": "scale_sigmoid_16"}, "tanh", None),
    ],
)
def test_tokenizer_bound_options(options, bound, alpha):
    ours = tokenizer_config_from_official({**TINY_TOKENIZER, **options})
    assert ours["quantizer_bound"] == bound
    if alpha is not None:
        assert ours["quantizer_alpha"] == alpha


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"attn_resolutions": [8]}, "attn_resolutions"),
        ({"norm_type": "layernorm"}, "norm_type"),
        ({"num_res_blocks": 3}, "num_res_blocks"),
        ({"embed_dim": 8}, "z_channels/embed_dim"),
        ({"act_fun": "relu"}, "act_fun"),
        ({"encoder_spatial_downsample": ["", "Downsample"]}, "encoder_spatial_downsample"),
        ({"use_quant_layer": False}, "use_quant_layer"),
        ({"hidden_sise": 32}, "unknown official tokenizer options"),
    ],
)
def test_unsupported_tokenizer_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        tokenizer_config_from_official({**TINY_TOKENIZER, **options})
    # attention at a resolution the model never has is harmless, as in the official code
    tokenizer_config_from_official({**TINY_TOKENIZER, "attn_resolutions": [32]})


def _tokenizer_by_name(config: dict, weights: dict) -> iFSQAutoencoder:
    """The same architecture with the official weights loaded by name (the documented mapping is the identity)."""
    model = iFSQAutoencoder(**config)
    model.load_state_dict(weights, strict=True)
    return model.eval()


@pytest.mark.parametrize("prefix", ["module.", "module._orig_mod."])
def test_tokenizer_conversion_api(tmp_path, prefix):
    checkpoint, ema, raw = official_tokenizer_checkpoint(prefix=prefix)
    path = tmp_path / "run" / "checkpoint-1000.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    (path.parent / "config.json").write_text(json.dumps(TINY_TOKENIZER))  # picked up next to the checkpoint

    out = convert_checkpoint("tokenizer", path, tmp_path / "out")
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    model = iFSQAutoencoder.from_pretrained(out).eval()
    assert model.config.block_out_channels == [32, 64] and model.config.levels == [5, 5, 5]
    assert model.config.quantizer_bound == "ifsq" and model.config.quantizer_alpha == 1.6
    assert model.config.sample_size == 16
    got = model.state_dict()
    assert set(got) == set(ema)
    for name, value in ema.items():
        assert torch.equal(got[name], value), name

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ref = _tokenizer_by_name({k: v for k, v in model.config.items() if not k.startswith("_")}, ema)
    with torch.no_grad():
        a, b = model(x), ref(x)
    torch.testing.assert_close(a.sample, b.sample, rtol=0, atol=0)
    assert torch.equal(a.indices, b.indices)

    # use_ema=False takes the raw generator weights
    no_ema = load_official_tokenizer(path, config=TINY_TOKENIZER, use_ema=False)
    assert torch.equal(no_ema.state_dict()["decoder.conv_out.weight"], raw["decoder.conv_out.weight"])


def test_tokenizer_without_running_stats_and_with_preset(tmp_path):
    model = iFSQAutoencoder.from_preset("test_f4_d4")
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("quantize.running_")}
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"gen_model": weights}}, path)
    out = convert_tokenizer_checkpoint(path, tmp_path / "out", preset="test_f4_d4")
    loaded = iFSQAutoencoder.from_pretrained(out)
    assert torch.equal(loaded.quantize.running_var, torch.ones(1, 4, 1, 1))
    assert torch.equal(loaded.encoder.conv_in.weight, weights["encoder.conv_in.weight"])


def test_tokenizer_conversion_cli(tmp_path, capsys):
    checkpoint, ema, _ = official_tokenizer_checkpoint(seed=5)
    path, cfg = tmp_path / "checkpoint.ckpt", tmp_path / "official_config.json"
    torch.save(checkpoint, path)
    cfg.write_text(json.dumps({**TINY_TOKENIZER, "act_fun": "scale_sigmoid_20"}))
    result = _run_cli("tokenizer", str(path), str(tmp_path / "cli_out"), "--config", str(cfg), capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert "saved tokenizer" in result.stdout
    model = iFSQAutoencoder.from_pretrained(tmp_path / "cli_out")
    assert model.config.quantizer_alpha == 2.0
    assert torch.equal(
        model.state_dict()["decoder.up.1.upsample.conv.weight"], ema["decoder.up.1.upsample.conv.weight"]
    )


# ---------------------------------------------------------------------------------------------------------- DiT
DIT_RUN = {
    "data": {"image_size": 64, "num_classes": 10, "latent_multiplier": 1.092421},
    "vae": {"vae_type": "fsq", "downsample_ratio": 16},
    "model": {
        "model_type": "DiT-tiny/1",
        "use_qknorm": True,
        "use_swiglu": True,
        "use_rope": True,
        "use_rmsnorm": True,
        "in_chans": 4,
    },
    "repa": {"use_repa": True, "enc_type": "dinov2-vit-b", "encoder_depth": 1, "proj_coef": 0.5},
    "scheduler": {"diffusion": False, "transport": True},
}


def official_dit_shapes(depth=2, dim=32, heads=2, in_ch=4, grid=4, classes=10, z_dim=16, proj=48) -> dict:
    """Key -> shape of the official dit/models/dit.py (patch 1, all LightningDiT switches on), spec section 3.1."""
    mlp = int(2 / 3 * 4 * dim)
    shapes = {
        "x_embedder.proj.weight": (dim, in_ch, 1, 1),
        "x_embedder.proj.bias": (dim,),
        "t_embedder.mlp.0.weight": (dim, 256),
        "t_embedder.mlp.0.bias": (dim,),
        "t_embedder.mlp.2.weight": (dim, dim),
        "t_embedder.mlp.2.bias": (dim,),
        "y_embedder.embedding_table.weight": (classes + 1, dim),
        "pos_embed": (1, grid * grid, dim),
        "feat_rope.freqs_cos": (grid * grid, dim // heads),
        "feat_rope.freqs_sin": (grid * grid, dim // heads),
        "final_layer.norm_final.weight": (dim,),
        "final_layer.linear.weight": (in_ch, dim),
        "final_layer.linear.bias": (in_ch,),
        "final_layer.adaLN_modulation.1.weight": (2 * dim, dim),
        "final_layer.adaLN_modulation.1.bias": (2 * dim,),
        "projectors.0.0.weight": (proj, dim),
        "projectors.0.0.bias": (proj,),
        "projectors.0.2.weight": (proj, proj),
        "projectors.0.2.bias": (proj,),
        "projectors.0.4.weight": (z_dim, proj),
        "projectors.0.4.bias": (z_dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}"
        shapes.update(
            {
                f"{b}.norm1.weight": (dim,),
                f"{b}.norm2.weight": (dim,),
                f"{b}.attn.qkv.weight": (3 * dim, dim),
                f"{b}.attn.qkv.bias": (3 * dim,),
                f"{b}.attn.q_norm.weight": (dim // heads,),
                f"{b}.attn.k_norm.weight": (dim // heads,),
                f"{b}.attn.proj.weight": (dim, dim),
                f"{b}.attn.proj.bias": (dim,),
                f"{b}.mlp.w12.weight": (2 * mlp, dim),
                f"{b}.mlp.w12.bias": (2 * mlp,),
                f"{b}.mlp.w3.weight": (dim, mlp),
                f"{b}.mlp.w3.bias": (dim,),
                f"{b}.adaLN_modulation.1.weight": (6 * dim, dim),
                f"{b}.adaLN_modulation.1.bias": (6 * dim,),
            }
        )
    return shapes


def dit_name(official: str) -> str | None:
    """The documented DiT mapping, written out: projector renamed, fixed tables dropped, the rest unchanged."""
    if official == "pos_embed" or official.startswith("feat_rope."):
        return None
    return official.replace("projectors.0.", "repa_projector.", 1)


def official_dit_checkpoint(seed: int = 0, prefix: str = "", with_config: bool = True) -> tuple[dict, dict]:
    shapes = official_dit_shapes()
    ema, raw = _random(shapes, seed), _random(shapes, seed + 1)
    checkpoint = {
        "model": {prefix + k: v for k, v in raw.items()},
        "ema": {prefix + k: v for k, v in ema.items()},
        "opt": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.95)}]},
    }
    if with_config:
        checkpoint["config"] = DIT_RUN
    return checkpoint, ema


def _dit_by_name(config: dict, official: dict, keep_projector: bool) -> LightningDiTTransformer2DModel:
    model = LightningDiTTransformer2DModel(**config)
    weights = {dit_name(k): v for k, v in official.items() if dit_name(k) is not None}
    if not keep_projector:
        weights = {k: v for k, v in weights.items() if not k.startswith("repa_projector.")}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def test_official_dit_run_yaml_maps_to_l1():
    run = {
        "data": {"image_size": 256, "num_classes": 1000},
        "vae": {"downsample_ratio": 16},
        "model": {"model_type": "DiT-L/1", "use_qknorm": True, "use_swiglu": True, "use_rope": True,
                  "use_rmsnorm": True, "in_chans": 4},
        "repa": {"use_repa": True, "encoder_depth": 8},
        "scheduler": {"diffusion": False, "transport": True},
    }  # fmt: skip
    ours = dit_config_from_official(run)
    assert ours == {
        "sample_size": 16,
        "in_channels": 4,
        "patch_size": 1,
        "hidden_size": 1024,
        "num_layers": 24,
        "num_attention_heads": 16,
        "num_classes": 1000,
        "use_qk_norm": True,
        "use_swiglu": True,
        "use_rope": True,
        "use_rmsnorm": True,
        "repa_depth": 8,
    }
    with pytest.raises(ValueError, match="flow-matching"):
        dit_config_from_official({**run, "scheduler": {"diffusion": True, "transport": False}})
    with pytest.raises(ValueError, match="unknown DiT size"):
        dit_config_from_official({**run, "model": {"model_type": "DiT-H/2"}})


@pytest.mark.parametrize(
    ("keep_projector", "prefix", "with_config"),
    [(True, "", True), (False, "module._orig_mod.", False)],
)
def test_dit_conversion_api(tmp_path, keep_projector, prefix, with_config):
    checkpoint, ema = official_dit_checkpoint(prefix=prefix, with_config=with_config)
    path = tmp_path / "0100000.pt"
    torch.save(checkpoint, path)
    out = convert_dit_checkpoint(path, tmp_path / "out", keep_projector=keep_projector)
    model = LightningDiTTransformer2DModel.from_pretrained(out).eval()
    cfg = model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 32, 2)
    assert (cfg.sample_size, cfg.in_channels, cfg.patch_size, cfg.num_classes) == (4, 4, 1, 10)
    assert cfg.use_rope and cfg.use_swiglu and cfg.use_qk_norm and cfg.use_rmsnorm
    assert cfg.repa_feature_dim == (16 if keep_projector else None)
    got = model.state_dict()
    expected = {dit_name(k): v for k, v in ema.items() if dit_name(k) is not None}
    if not keep_projector:
        expected = {k: v for k, v in expected.items() if not k.startswith("repa_projector.")}
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name

    ref = _dit_by_name({k: v for k, v in cfg.items() if not k.startswith("_")}, ema, keep_projector)
    x, t, y = torch.randn(2, 4, 4, 4), torch.tensor([0.3, 0.9]), torch.tensor([1, 10])
    with torch.no_grad():
        a = model(x, t, y, return_repa_features=keep_projector)
        b = ref(x, t, y, return_repa_features=keep_projector)
    torch.testing.assert_close(a.sample, b.sample, rtol=0, atol=0)
    if keep_projector:
        assert cfg.repa_depth == 1
        torch.testing.assert_close(a.repa_features, b.repa_features, rtol=0, atol=0)


def test_dit_conversion_cli_with_run_yaml_and_preset(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    checkpoint, ema = official_dit_checkpoint(seed=3, with_config=False)
    path, run = tmp_path / "ckpt.pt", tmp_path / "run.yaml"
    torch.save(checkpoint, path)
    run.write_text(yaml.safe_dump(DIT_RUN))
    result = _run_cli("dit", str(path), str(tmp_path / "a"), "--config", str(run), "--drop_projector", capsys=capsys)
    assert result.returncode == 0, result.stderr
    model = LightningDiTTransformer2DModel.from_pretrained(tmp_path / "a")
    assert model.repa_projector is None
    assert torch.equal(model.blocks[1].mlp.w12.weight, ema["blocks.1.mlp.w12.weight"])
    result = _run_cli("dit", str(path), str(tmp_path / "b"), "--preset", "tiny", capsys=capsys)
    assert result.returncode == 0, result.stderr
    model = LightningDiTTransformer2DModel.from_pretrained(tmp_path / "b")
    assert torch.equal(model.repa_projector[4].weight, ema["projectors.0.4.weight"])


def test_reduced_precision_checkpoint_keeps_its_dtype(tmp_path):
    from safetensors.torch import load_file

    checkpoint, ema = official_dit_checkpoint(with_config=False)
    torch.save({"ema": {k: v.bfloat16() for k, v in checkpoint["ema"].items()}}, tmp_path / "bf16.pt")
    out = convert_dit_checkpoint(tmp_path / "bf16.pt", tmp_path / "out")
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.bfloat16}
    assert torch.equal(saved["x_embedder.proj.weight"], ema["x_embedder.proj.weight"].bfloat16())


def test_dit_grid_mismatch_is_caught(tmp_path):
    checkpoint, _ = official_dit_checkpoint(with_config=False)
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    run = {**DIT_RUN, "data": {**DIT_RUN["data"], "image_size": 128}}  # 8x8 tokens, the weights were 4x4
    with pytest.raises(ConversionError, match="pos_embed"):
        convert_dit_checkpoint(path, tmp_path / "out", config=run)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------- LlamaGen
def official_llamagen_shapes(factorized: list[int] | None, projector: bool, layers=3, dim=32, ffn=96, vocab=64):
    """Key -> shape of iFSQ's llamagen.py / upstream gpt.py (spec section 4.1), tiny sizes, 10 classes."""
    shapes = {"cls_embedding.embedding_table.weight": (11, dim), "norm.weight": (dim,)}

    def block(prefix):
        shapes.update(
            {
                f"{prefix}.attention.wqkv.weight": (3 * dim, dim),
                f"{prefix}.attention.wo.weight": (dim, dim),
                f"{prefix}.feed_forward.w1.weight": (ffn, dim),
                f"{prefix}.feed_forward.w3.weight": (ffn, dim),
                f"{prefix}.feed_forward.w2.weight": (dim, ffn),
                f"{prefix}.attention_norm.weight": (dim,),
                f"{prefix}.ffn_norm.weight": (dim,),
            }
        )

    for i in range(layers):
        block(f"layers.{i}")
    if factorized:
        for k, v in enumerate(factorized):
            shapes[f"{k}_emb.weight"] = (v, dim)
            shapes[f"output.{k}.weight"] = (v, dim)
        for j in range(2):
            block(f"factorized_blocks.{j}")
    else:
        shapes["tok_embeddings.weight"] = (vocab, dim)
        shapes["output.weight"] = (vocab, dim)
    if projector:
        shapes.update(
            {
                "projectors.0.0.weight": (48, dim),
                "projectors.0.0.bias": (48,),
                "projectors.0.2.weight": (48, 48),
                "projectors.0.2.bias": (48,),
                "projectors.0.4.weight": (16, 48),
                "projectors.0.4.bias": (16,),
            }
        )
    return shapes


_LLAMAGEN_RENAMES = [
    (".attention.wqkv.", ".self_attn.qkv_proj."),
    (".attention.wo.", ".self_attn.o_proj."),
    (".feed_forward.w1.", ".mlp.gate_proj."),
    (".feed_forward.w3.", ".mlp.up_proj."),
    (".feed_forward.w2.", ".mlp.down_proj."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
]


def llamagen_name(official: str) -> str:
    """The documented LlamaGen mapping (modeling_llamagen.py table), written out."""
    if official.startswith("output."):
        return "lm_head." + official[len("output.") :]
    if official == "cls_embedding.embedding_table.weight":
        return "model.class_embedding.weight"
    if official == "tok_embeddings.weight":
        return "model.embed_tokens.weight"
    if official.endswith("_emb.weight"):
        return f"model.embed_tokens.{official.split('_')[0]}.weight"
    if official.startswith("projectors.0."):
        return "model.repa_projector." + official[len("projectors.0.") :]
    name = "model." + official.replace("factorized_blocks.", "factorized_layers.")
    for old, new in _LLAMAGEN_RENAMES:
        name = name.replace(old, new)
    return name


LLAMAGEN_RUN = {
    "data": {"image_size": 64, "num_classes": 10},
    "fsq": {"factorized_bits": [2, 2], "downsample_ratio": 16},
    "model": {"model_type": "LlamaGen-tiny", "dropout_p": 0.1, "token_dropout_p": 0.1, "drop_path_rate": 0.0},
    "repa": {"use_repa": True, "enc_type": "dinov2-vit-b", "encoder_depth": 1, "proj_coef": 2.0},
}


def _llamagen_by_name(config: LlamaGenConfig, official: dict, keep_projector: bool) -> LlamaGenForImageGeneration:
    model = LlamaGenForImageGeneration(config)
    weights = {llamagen_name(k): v for k, v in official.items() if keep_projector or not k.startswith("projectors.")}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def _llamagen_logits(model, factorized: bool, repa: bool):
    g = torch.Generator().manual_seed(7)
    labels = torch.tensor([1, 10])  # 10 = the null class
    tokens = torch.randint(0, 8, (2, 16, 2), generator=g) if factorized else torch.randint(0, 64, (2, 16), generator=g)
    with torch.no_grad():
        out = model(class_labels=labels, image_tokens=tokens, output_repa_features=repa)
    logits = out.logits if factorized else (out.logits,)
    return [*logits, out.repa_features] if repa else list(logits)


@pytest.mark.parametrize(
    ("factorized", "keep_projector", "source", "prefix"),
    [
        (None, True, "official", "module."),
        ([8, 8], True, "official", "_orig_mod."),
        ([8, 8], False, "official", ""),
        (None, False, "upstream", ""),
    ],
)
def test_llamagen_conversion_api(tmp_path, factorized, keep_projector, source, prefix):
    official = source == "official"
    shapes = official_llamagen_shapes(factorized, projector=official)
    ema, raw = _random(shapes, 0), _random(shapes, 1)
    if official:
        checkpoint = {"model": {prefix + k: v for k, v in raw.items()}, "ema": {prefix + k: v for k, v in ema.items()}}
        checkpoint["config"] = LLAMAGEN_RUN
    else:
        checkpoint, ema = {"model": raw}, raw  # upstream releases hold the model weights only
    path = tmp_path / "0025000.pt"
    torch.save(checkpoint, path)
    out = convert_checkpoint("llamagen", path, tmp_path / "out", keep_projector=keep_projector, source=source)
    assert (out / "model.safetensors").is_file()
    model = LlamaGenForImageGeneration.from_pretrained(out).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size) == (3, 2, 32)
    assert cfg.num_classes == 10 and cfg.intermediate_size == 96
    assert cfg.image_token_size == (4 if official else 16)  # the YAML grid, else 256 px / f16
    assert cfg.factorized_vocab_sizes == factorized
    assert cfg.vocab_size == 64
    repa = official and keep_projector
    assert cfg.repa_feature_dim == (16 if repa else None)
    if repa:
        assert cfg.repa_depth == 1 and cfg.repa_projector_dim == 48
    expected = {llamagen_name(k): v for k, v in ema.items() if repa or not k.startswith("projectors.")}
    got = model.state_dict()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name

    ref = _llamagen_by_name(cfg, ema, repa)
    for a, b in zip(
        _llamagen_logits(model, bool(factorized), repa), _llamagen_logits(ref, bool(factorized), repa), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_official_llamagen_yaml_and_cli(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    ours = llamagen_config_from_official(
        {**LLAMAGEN_RUN, "model": {"model_type": "LlamaGen-L", "drop_path_rate": 0.1}}
    )
    assert (ours["num_hidden_layers"], ours["num_attention_heads"], ours["hidden_size"]) == (24, 16, 1024)
    assert ours["residual_dropout_prob"] == 0.0  # forced off with drop path, as llamagen/train.py does
    shapes = official_llamagen_shapes([8, 8], projector=True)
    ema = _random(shapes, 4)
    path, run = tmp_path / "ckpt.pt", tmp_path / "config.yaml"
    torch.save({"model": ema, "ema": ema}, path)
    run.write_text(yaml.safe_dump(LLAMAGEN_RUN))
    result = _run_cli("llamagen", str(path), str(tmp_path / "out"), "--config", str(run), capsys=capsys)
    assert result.returncode == 0, result.stderr
    model = LlamaGenForImageGeneration.from_pretrained(tmp_path / "out")
    assert model.config.factorized_vocab_sizes == [8, 8] and model.config.repa_depth == 1
    assert torch.equal(model.lm_head[1].weight, ema["output.1.weight"])
    # a LlamaGenConfig JSON overrides what the weights do not tell (here the token grid)
    native = tmp_path / "ours.json"
    native.write_text(json.dumps({"image_token_size": 8, "num_attention_heads": 4}))
    model = load_official_llamagen(path, config=native, keep_projector=False)
    assert model.config.image_token_size == 8 and model.config.num_attention_heads == 4


# ------------------------------------------------------------------------------------------------------ failures
def _tokenizer_weights() -> dict:
    return official_tokenizer_checkpoint()[1]


def _dit_weights() -> dict:
    return _random(official_dit_shapes(), 0)


def _llamagen_weights() -> dict:
    return _random(official_llamagen_shapes(None, projector=True), 0)


CASES = {
    "tokenizer": (_tokenizer_weights, {"config": TINY_TOKENIZER}, "decoder.conv_out.weight"),
    "dit": (_dit_weights, {"config": DIT_RUN}, "blocks.1.attn.qkv.weight"),
    "llamagen": (_llamagen_weights, {}, "layers.2.feed_forward.w2.weight"),
}
EXPECTED_NAME = {"tokenizer": "decoder.conv_out.weight", "dit": "blocks.1.attn.qkv.weight",
                 "llamagen": "model.layers.2.mlp.down_proj.weight"}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("problem", ["extra", "missing", "shape"])
def test_mismatched_checkpoints_raise_and_write_nothing(tmp_path, kind, problem):
    make, kwargs, victim = CASES[kind]
    weights = make()
    if problem == "extra":
        weights["encoder.attn.0.q.weight"] = torch.zeros(2, 2)
        match = r"unexpected keys: \[.*encoder\.attn\.0\.q\.weight"
    elif problem == "missing":
        del weights[victim]
        match = rf"missing keys: \[.*{EXPECTED_NAME[kind]}"
    else:
        weights[victim] = torch.zeros(*weights[victim].shape[:-1], weights[victim].shape[-1] + 1)
        match = rf"shape mismatches: \[.*{EXPECTED_NAME[kind]}"
    path = tmp_path / "bad.pt"
    torch.save({"model": weights} if kind != "tokenizer" else {"ema_state_dict": weights}, path)
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(kind, path, tmp_path / "out", config=kwargs.get("config"))
    assert not (tmp_path / "out").exists()


class NotATensor:
    """Stands for any pickled object beyond tensors and containers (an argparse Namespace, a model, ...)."""

    def __init__(self):
        self.lr = 1e-4


def test_pickles_with_objects_are_refused_and_cli_reports_errors(tmp_path, capsys):
    path = tmp_path / "args.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "args": NotATensor()}, f)
    for kind in ("tokenizer", "dit", "llamagen"):
        with pytest.raises(ValueError, match="weights_only=True"):
            convert_checkpoint(kind, path, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    weights = _dit_weights()
    del weights["final_layer.linear.bias"]
    bad = tmp_path / "bad.pt"
    torch.save({"ema": weights}, bad)
    result = _run_cli("dit", str(bad), str(tmp_path / "cli_out"), "--preset", "tiny", capsys=capsys)
    assert result.returncode == 2
    assert "missing keys" in result.stderr and "final_layer.linear.bias" in result.stderr
    assert not (tmp_path / "cli_out").exists()


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        convert_checkpoint("vae", tmp_path / "x.pt", tmp_path / "out")
    with pytest.raises(ValueError, match="LlamaGen checkpoints only"):
        convert_checkpoint("dit", tmp_path / "x.pt", tmp_path / "out", source="upstream")
    torch.save({"ema_state_dict": _tokenizer_weights()}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="either config or preset"):
        convert_checkpoint(
            "tokenizer", tmp_path / "x.pt", tmp_path / "out", config=TINY_TOKENIZER, preset="test_f4_d4"
        )
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="existing file"):
        convert_checkpoint("tokenizer", tmp_path / "x.pt", tmp_path / "file", config=TINY_TOKENIZER)


@pytest.mark.slow
def test_cli_module_in_a_subprocess(tmp_path):
    checkpoint, ema, _ = official_tokenizer_checkpoint(seed=9)
    path, cfg = tmp_path / "checkpoint.ckpt", tmp_path / "official.json"
    torch.save(checkpoint, path)
    cfg.write_text(json.dumps(TINY_TOKENIZER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "ifsq_hf.cli", "convert", "tokenizer", str(path), str(tmp_path / "out")]
    ok = subprocess.run([*command, "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    model = iFSQAutoencoder.from_pretrained(tmp_path / "out")
    assert torch.equal(model.encoder.conv_out.weight, ema["encoder.conv_out.weight"])
    bad = subprocess.run([*command, "--preset", "test_f4_d4"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "does not match the target architecture" in bad.stderr
