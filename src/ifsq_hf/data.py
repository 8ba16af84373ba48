"""Image data: the real photos that ship inside scikit-image, scikit-learn and matplotlib wheels.

They let the demo and the tests run on real images with no network. Held-out photos are whole photos, never
crops of a training photo.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["BUNDLED_HELD_OUT", "BUNDLED_PHOTO_NAMES", "bundled_photos"]

# name -> (package, loader); order fixes the class ids used by the class-conditional demos.
BUNDLED_PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
    "china",
    "flower",
    "grace_hopper",
)
BUNDLED_HELD_OUT: tuple[str, ...] = ("chelsea", "flower")

_INSTALL_HINT = "pip install 'ifsq-hf[demo]' (scikit-image, scikit-learn and matplotlib ship the photos)"


def _load_one(name: str) -> np.ndarray:
    try:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_images

            images = load_sample_images()
            return images.images[0 if name == "china" else 1]
        if name == "grace_hopper":
            import matplotlib.cbook as cbook
            from PIL import Image

            with cbook.get_sample_data("grace_hopper.jpg") as f:
                return np.asarray(Image.open(f).convert("RGB"))
        import skimage.data as skdata

        if name.startswith("motorcycle_"):
            left, right, _ = skdata.stereo_motorcycle()
            return left if name.endswith("left") else right
        return getattr(skdata, name)()
    except ImportError as err:
        raise ImportError(f"bundled photo {name!r} needs an optional package: {_INSTALL_HINT}.") from err


@lru_cache(maxsize=1)
def _all_photos() -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(_load_one(name)[..., :3]) for name in BUNDLED_PHOTO_NAMES}


def bundled_photos(names: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """Real RGB photos as ``name -> (H, W, 3) uint8`` arrays (12 photos, 300x451 up to 1411x1411 pixels).

    Sources: scikit-image (astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry,
    retina, stereo_motorcycle), scikit-learn (china, flower), matplotlib (grace_hopper). All public domain,
    CC0 or CC BY per the packages' docs.
    """
    photos = _all_photos()
    if names is None:
        return dict(photos)
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise ValueError(f"unknown bundled photos {unknown}; choose from {list(BUNDLED_PHOTO_NAMES)}.")
    return {n: photos[n] for n in names}
