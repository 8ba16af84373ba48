"""`iFSQAutoencoder(pre_quant_norm=True)`: unit-variance activations into the bound, off by default, saved and loaded
with the weights, batch- and tiling-independent at inference."""

import pytest
import torch

from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.pre_quant_norm import RunningChannelNorm


def test_off_by_default_adds_nothing_to_the_state_dict():
    plain = iFSQAutoencoder.from_preset("test_f4_d4")
    assert plain.config.pre_quant_norm is False and plain.pre_quant_normalizer is None
    normed = iFSQAutoencoder.from_preset("test_f4_d4", pre_quant_norm=True)
    extra = set(normed.state_dict()) - set(plain.state_dict())
    assert extra == {"pre_quant_normalizer.running_mean", "pre_quant_normalizer.running_var"}


def test_running_norm_reaches_unit_variance_and_is_constant_at_inference():
    torch.manual_seed(0)
    norm = RunningChannelNorm(3, momentum=0.1)
    scale = torch.tensor([0.3, 2.0, 5.0]).view(1, 3, 1, 1)
    for _ in range(100):
        norm(torch.randn(64, 3, 4, 4) * scale + 1.0)
    norm.eval()
    out = norm(torch.randn(4096, 3, 4, 4) * scale + 1.0)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.ones(3), atol=0.1)
    before = norm.running_var.clone()
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(norm(x)[:1], norm(x[:1]))  # no batch dependence, no update in eval
    assert torch.equal(norm.running_var, before)
    with pytest.raises(ValueError, match=r"expected \(B, 3, ...\)"):
        norm(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="momentum"):
        RunningChannelNorm(3, momentum=0.0)


def test_training_updates_statistics_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = iFSQAutoencoder.from_preset("test_f4_d4", pre_quant_norm=True)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    model.train()
    for _ in range(3):
        model(x).sample.mean().backward()
    assert not torch.equal(model.pre_quant_normalizer.running_var, torch.ones(4))
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = iFSQAutoencoder.from_pretrained(tmp_path).eval()
    assert loaded.config.pre_quant_norm is True
    assert torch.equal(loaded.pre_quant_normalizer.running_var, model.pre_quant_normalizer.running_var)
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, model(x).sample)
        # encode_pre_quant returns what enters the bound: the normalised activations
        raw = model._pre_quant(x)
        norm = model.pre_quant_normalizer
        expected = (raw - norm.running_mean.view(1, -1, 1, 1)) * torch.rsqrt(norm.running_var + norm.eps).view(
            1, -1, 1, 1
        )
        assert torch.allclose(model.encode_pre_quant(x), expected, atol=1e-6)
