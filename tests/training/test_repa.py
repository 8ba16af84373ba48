import pytest
import torch
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel
from ifsq_hf.training.repa import (
    EfficientNetLiteEncoder,
    RepaEncoder,
    TransformersVisionEncoder,
    VGGRepaEncoder,
    load_repa_encoder,
    repa_projection_loss,
)

TINY_VIT = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "patch_size": 4,
    "image_size": 16,
}


@pytest.fixture
def dinov2_dir(tmp_path):
    model = Dinov2Model(Dinov2Config(**TINY_VIT))
    model.save_pretrained(tmp_path / "dino")
    return tmp_path / "dino"


def test_transformers_encoder_from_local_folder(dinov2_dir):
    enc = load_repa_encoder(str(dinov2_dir))
    assert isinstance(enc, TransformersVisionEncoder) and isinstance(enc, RepaEncoder)
    assert enc.feature_dim == 16 and enc.patch_size == 4
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = enc(images)
    # one token per 16 px -> 2x2 grid (images resized to 8 px), CLS token dropped
    assert feats.shape == (2, 4, 16) and enc.last_grid == (2, 2)
    assert not feats.requires_grad
    # Equals the backbone's patch tokens on the hand-preprocessed input.
    x = ((images + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False)
    ref = Dinov2Model.from_pretrained(dinov2_dir).eval()(pixel_values=x).last_hidden_state[:, 1:]
    torch.testing.assert_close(feats, ref)
    fixed = load_repa_encoder(str(dinov2_dir), image_size=16)
    assert fixed(images).shape == (2, 16, 16)
    enc.train()
    assert not enc.training  # stays frozen


def test_register_tokens_are_dropped(tmp_path):
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **TINY_VIT))
    enc = TransformersVisionEncoder(model, image_size=16)
    assert enc(torch.zeros(1, 3, 16, 16)).shape == (1, 16, 16)


def test_bad_encoder_inputs(dinov2_dir, tmp_path):
    enc = load_repa_encoder(str(dinov2_dir))
    with pytest.raises(ValueError, match="batch, 3"):
        enc(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        load_repa_encoder(str(dinov2_dir), image_size=10)
    with pytest.raises(OSError, match="efficientnet-lite0"):
        load_repa_encoder(str(tmp_path / "missing"))


def test_efficientnet_lite0_real_weights():
    enc = load_repa_encoder("efficientnet-lite0")
    assert isinstance(enc, EfficientNetLiteEncoder) and "not DINOv2" in enc.name
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    feats = enc(images)
    assert feats.shape == (2, 4, 1280) and enc.last_grid == (2, 2)
    s16 = load_repa_encoder("efficientnet-lite0-s16")
    assert s16(images).shape == (2, 16, 112) and s16.feature_dim == 112
    # Real (pretrained, not random) weights: the ImageNet classifier is confident on a real photo.
    from ifsq_hf.data import bundled_photos

    photo = torch.from_numpy(bundled_photos(["chelsea"])["chelsea"]).permute(2, 0, 1)[None].float() / 127.5 - 1
    photo = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = enc.net(((photo + 1) * 127.5 - 127) / 128)
    assert logits.softmax(-1).max() > 0.3


def test_repa_gradients_reach_projector_only_through_model(dinov2_dir):
    enc = load_repa_encoder(str(dinov2_dir), image_size=16)  # 4x4 grid = the DiT's 4x4 latent tokens
    model = LightningDiTTransformer2DModel.from_preset("tiny", repa_feature_dim=enc.feature_dim).train()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    target = enc(images)
    out = model(torch.randn(2, 4, 4, 4), torch.rand(2), torch.tensor([1, 2]), return_repa_features=True)
    loss = repa_projection_loss(out.repa_features, target)
    assert -1 <= loss.item() <= 1
    loss.backward()
    assert model.repa_projector[-1].weight.grad.abs().sum() > 0
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


def test_repa_loss_matches_grid_by_interpolation():
    projected = torch.randn(2, 16, 8, requires_grad=True)
    target = torch.randn(2, 4, 8)
    loss = repa_projection_loss(projected, target)  # 2x2 target grid upsampled to 4x4
    loss.backward()
    assert projected.grad is not None
    aligned = repa_projection_loss(target.clone(), target)
    torch.testing.assert_close(aligned, torch.tensor(-1.0))


def test_lpips_vgg16_encoder():
    enc = load_repa_encoder("lpips-vgg16")
    assert isinstance(enc, VGGRepaEncoder) and enc.feature_dim == 512 and "not DINOv2" in enc.name
    feats = enc(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert feats.shape == (1, 16, 512) and enc.last_grid == (4, 4)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(1, 16), atol=1e-4, rtol=1e-4)
