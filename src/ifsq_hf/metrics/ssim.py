"""Structural similarity (Wang et al. 2004) for images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import check_image_pair


def _window(kind: str, size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if kind == "gaussian":
        x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
        w = torch.exp(-(x**2) / (2 * sigma**2))
    elif kind == "uniform":
        w = torch.ones(size, dtype=dtype, device=device)
    else:
        raise ValueError(f"ssim window must be 'gaussian' or 'uniform', got {kind!r}.")
    w = w / w.sum()
    return torch.outer(w, w)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    window: str = "gaussian",
    window_size: int | None = None,
    sigma: float = 1.5,
    clamp: bool = True,
) -> torch.Tensor:
    """Per-image SSIM, ``(B,)``, of (B, C, H, W) images in [-1, 1], mapped to [0, 1] (data range 1).

    Default: the standard 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population (co)variances,
    evaluated only where the window fits (no padding), averaged over pixels and channels. This equals
    ``skimage.metrics.structural_similarity(data_range=1, channel_axis=0, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.

    ``window="uniform"`` (7x7, sample covariances) reproduces skimage's defaults, which is what the official
    iFSQ evaluation calls; its numbers are a little different from the Gaussian ones.
    """
    size = window_size or (11 if window == "gaussian" else 7)
    check_image_pair(pred, target, "ssim", min_size=size)
    x = pred.detach().double()
    y = target.detach().double()
    if clamp:
        x = x.clamp(-1, 1)
    x, y = (x + 1) / 2, (y + 1) / 2
    channels = x.shape[1]
    kernel = _window(window, size, sigma, x.dtype, x.device).expand(channels, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    if window == "uniform":  # skimage's default: unbiased (sample) covariances
        n = size * size
        var_x, var_y, cov = (v * n / (n - 1) for v in (var_x, var_y, cov))
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).float()
