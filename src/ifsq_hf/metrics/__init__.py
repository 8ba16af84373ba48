"""Reconstruction and tokenizer metrics: PSNR, SSIM, LPIPS, FID, codebook usage, and `evaluate` modules.

Names are imported on first use, so ``from ifsq_hf.metrics import psnr`` does not load scipy (FID) or the LPIPS
weights; the optional packages some metrics need come with ``pip install "ifsq-hf[metrics]"``.
"""

import importlib
from typing import TYPE_CHECKING

_NAMES = {
    "bicubic_baseline": "baseline",
    "bicubic_resample": "baseline",
    "CodebookUsageTracker": "codebook",
    "evaluate_module_path": "evaluate_modules",
    "FrechetInceptionDistance": "fid",
    "InceptionV3FeatureExtractor": "fid",
    "default_inception_weights": "fid",
    "frechet_distance": "fid",
    "LPIPS": "lpips",
    "default_lpips_weights": "lpips",
    "psnr": "psnr",
    "ReconstructionMetrics": "reconstruction",
    "ssim": "ssim",
}

__all__ = [
    "LPIPS",
    "CodebookUsageTracker",
    "FrechetInceptionDistance",
    "InceptionV3FeatureExtractor",
    "ReconstructionMetrics",
    "bicubic_baseline",
    "bicubic_resample",
    "default_inception_weights",
    "default_lpips_weights",
    "evaluate_module_path",
    "frechet_distance",
    "psnr",
    "ssim",
]

if TYPE_CHECKING:
    from .baseline import bicubic_baseline, bicubic_resample
    from .codebook import CodebookUsageTracker
    from .evaluate_modules import evaluate_module_path
    from .fid import FrechetInceptionDistance, InceptionV3FeatureExtractor, default_inception_weights, frechet_distance
    from .lpips import LPIPS, default_lpips_weights
    from .psnr import psnr
    from .reconstruction import ReconstructionMetrics
    from .ssim import ssim


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
