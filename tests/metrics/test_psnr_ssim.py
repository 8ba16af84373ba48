"""PSNR and SSIM against closed forms and scikit-image."""

import math

import numpy as np
import pytest
import torch

from ifsq_hf.metrics import psnr, ssim


def test_psnr_of_known_noise():
    target = torch.zeros(2, 3, 16, 16)
    pred = target.clone()
    # +-0.1 in [-1, 1] is +-0.05 in [0, 1]: mse = 0.0025 -> 26.0206 dB
    pred[0] += 0.1 * torch.where(torch.rand(3, 16, 16) > 0.5, 1.0, -1.0)
    pred[1] += 0.2
    out = psnr(pred, target)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-4)
    assert out[1].item() == pytest.approx(10 * math.log10(1 / 0.1**2), abs=1e-4)


def test_psnr_identical_is_inf_and_clamp():
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    target = torch.ones(1, 3, 4, 4)
    assert torch.isinf(psnr(target + 0.5, target))  # clamped back to 1
    assert torch.isfinite(psnr(target + 0.5, target, clamp=False))


def test_ssim_identical_is_one_and_noise_lowers_it():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert (ssim(noisy, x) < 0.95).all()


@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_ssim_matches_skimage(window):
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 20, 24))).float()
    y = (x + torch.from_numpy(rng.normal(0, 0.2, x.shape)).float()).clamp(-1, 1)
    ours = ssim(y, x, window=window)
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if window == "gaussian" else {}
    for i in range(2):
        ref = metrics.structural_similarity(
            ((y[i] + 1) / 2).double().numpy(), ((x[i] + 1) / 2).double().numpy(), data_range=1.0, channel_axis=0, **kw
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="float tensor"):
        psnr(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="window must be"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), window="box")
