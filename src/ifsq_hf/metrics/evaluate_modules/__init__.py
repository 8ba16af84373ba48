"""``evaluate`` metric modules wrapping :mod:`ifsq_hf.metrics` (load with ``evaluate.load(evaluate_module_path(name))``).

They work offline: ``evaluate.load`` on a local script folder resolves nothing on the Hub. Images are passed as
(C, H, W) float arrays in [-1, 1] (numpy arrays, tensors or nested lists); token indices as flat int lists.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

EVALUATE_MODULES = ("code_utilization", "fid", "lpips", "psnr", "ssim")


def evaluate_module_path(name: str) -> str:
    """Folder of the ``evaluate`` module ``name`` (one of ``EVALUATE_MODULES``), to pass to ``evaluate.load``."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown evaluate module {name!r}; choose from {list(EVALUATE_MODULES)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def image_features() -> Any:
    """``datasets.Features`` for pairs of (C, H, W) float images."""
    from ...utils.import_utils import require

    datasets = require("datasets", "metrics")

    image = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
    return datasets.Features({"predictions": image, "references": image})


def images_to_tensor(images: Any, name: str) -> torch.Tensor:
    """Stack what ``evaluate`` hands back (lists of nested lists / arrays) into a (B, C, H, W) float tensor."""
    try:
        array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    except ValueError as err:
        raise ValueError(f"{name}: all images must have the same (C, H, W) shape ({err}).") from err
    if array.ndim != 4:
        raise ValueError(f"{name}: each image must be (C, H, W) in [-1, 1], got item shape {array.shape[1:]}.")
    return torch.from_numpy(array)
