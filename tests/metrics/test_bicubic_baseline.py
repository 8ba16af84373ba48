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
