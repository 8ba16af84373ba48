"""The bicubic x4 reference the demo prints next to the tokenizer's numbers."""

import pytest
import torch

from ifsq_hf.metrics import bicubic_baseline, bicubic_resample, psnr


def test_resample_keeps_smooth_images_and_loses_detail():
    ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16)
    assert psnr(bicubic_resample(ramp), ramp).item() > 25  # edges lose a little
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1
    checker = checker.expand(1, 3, 16, 16)
    assert psnr(bicubic_resample(checker), checker).item() < 10
    with pytest.raises(ValueError, match="divisible by 4"):
        bicubic_resample(torch.zeros(1, 3, 10, 10))


def test_baseline_on_given_images():
    torch.manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8) * 2 - 1, size=32, mode="bilinear")
    out = bicubic_baseline(images, lpips=_NoLpips())
    assert out["num_images"] == 4 and 20 < out["psnr"] < 60 and 0 < out["ssim"] <= 1


class _NoLpips(torch.nn.Module):
    def forward(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


def test_reconstruction_metrics_stream_over_batches():
    import numpy as np

    from ifsq_hf.metrics import FrechetInceptionDistance, ReconstructionMetrics, ssim

    torch.manual_seed(0)
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    idx = torch.randint(0, 8, (5, 4, 4))
    fid = FrechetInceptionDistance(feature_extractor=_MeanColour())
    metrics = ReconstructionMetrics(lpips=_NoLpips(), fid=fid, codebook_size=8)
    metrics.update(x[:2], y[:2], idx[:2])
    metrics.update(x[2:], y[2:], idx[2:])  # unequal batches: per-image mean, not mean of batch means
    out = metrics.compute()
    assert out["psnr"] == pytest.approx(psnr(y, x).mean().item(), rel=1e-5)
    assert out["ssim"] == pytest.approx(ssim(y, x).mean().item(), rel=1e-5)
    assert out["lpips"] == pytest.approx((x - y).abs().mean().item(), rel=1e-5)
    assert np.isfinite(out["rfid"]) and out["num_images"] == 5 and 0 < out["usage"] <= 1
    with pytest.raises(ValueError, match="token indices"):
        metrics.update(x, y)
    metrics.reset()
    with pytest.raises(ValueError, match="before any update"):
        metrics.compute()


class _MeanColour(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))
