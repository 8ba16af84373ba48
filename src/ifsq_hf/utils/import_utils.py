"""Optional dependencies: the core needs only torch, diffusers, transformers, huggingface_hub, safetensors, numpy and
pillow; training, metrics and the demo need more, installed with a pip extra (``pip install "ifsq-hf[train]"``).

:func:`require` is the one place that turns a missing optional package into an error naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "is_available", "require"]

# The pip extras and the packages each brings (declared in pyproject.toml under the same names).
# Import names, not distribution names (scikit-image is ``skimage``).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("accelerate", "datasets", "peft", "tensorboard", "tqdm"),
    "metrics": ("scipy", "evaluate", "datasets"),  # LPIPS/FID weight files: ifsq_hf.metrics.weights
    "demo": ("skimage", "sklearn", "matplotlib"),
}


def is_available(package: str) -> bool:
    """Whether ``package`` (a top-level name such as ``"scipy"``) is installed, without importing it."""
    return importlib.util.find_spec(package.split(".")[0]) is not None


def require(package: str, extra: str) -> ModuleType:
    """Import and return ``package`` (e.g. ``"scipy.linalg"``); if it is not installed, raise an ``ImportError``
    that names the pip extra bringing it, ``extra`` (one of :data:`EXTRAS`).

    Only a missing ``package`` is translated: an installed package that fails to import re-raises its own error.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; choose from {sorted(EXTRAS)}.")
    top = package.split(".")[0]
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != top:
            raise
        raise ImportError(
            f"this feature of ifsq-hf needs `{top}`, which is not installed; install the `{extra}` extra: "
            f'pip install "ifsq-hf[{extra}]" (or pip install {top}).',
            name=top,
        ) from err
