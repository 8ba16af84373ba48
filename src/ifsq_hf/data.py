"""Image data: the real photos that ship inside scikit-image, scikit-learn and matplotlib wheels.

They let the demo and the tests run on real images with no network. Held-out photos are whole photos, never
crops of a training photo.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BUNDLED_HELD_OUT",
    "BUNDLED_PHOTO_NAMES",
    "BundledPhotoDataset",
    "ImageFolderDataset",
    "ImageTransform",
    "StreamingImageDataset",
    "bundled_photos",
    "collate_images",
    "held_out_split",
    "image_splits",
    "load_image_dataset",
    "pil_to_tensor",
    "resize_shorter_side",
]

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


# ----------------------------------------------------------------------------------------------------------------
# Transforms (PIL / numpy / torch only: torchvision does not import with the CPU torch build)
# ----------------------------------------------------------------------------------------------------------------


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit ("I;16*", "I") and float ("F") PIL images -> 8-bit "L"/"RGB" by scaling, not clipping.

    PIL's own ``convert("RGB")`` clips these modes at 255, which turns a 16-bit photo almost white.
    """
    array = np.asarray(image)
    if image.mode == "F":
        top = 1.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 255.0
        array = np.clip(np.nan_to_num(array.astype(np.float64)) / top * 255.0, 0, 255)
    else:  # integer modes: 16-bit data (PNG 16-bit greyscale opens as "I;16" or "I")
        top = 65535.0 if image.mode.startswith("I;16") or int(array.max(initial=0)) > 255 else 255.0
        array = np.clip(array.astype(np.float64) * (255.0 / top), 0, 255)
    return Image.fromarray(np.round(array).astype(np.uint8))


def _to_pil_rgb(image: Any) -> Image.Image:
    """Accept a PIL image or an (H, W[, C]) uint8/uint16 array; return an RGB PIL image (grey, 16-bit, RGBA,
    palette converted)."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16:  # 16-bit data: keep the top 8 bits' worth of range instead of clipping
            image = np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        if image.dtype != np.uint8:
            raise ValueError(
                f"numpy images must be uint8 or uint16 (H, W[, C]); got dtype {image.dtype}. Convert floats in "
                "[0, 1] with (x * 255).round().astype(np.uint8)."
            )
        if image.ndim == 3 and image.shape[2] == 4:
            image = Image.fromarray(image, mode="RGBA")
        else:
            image = Image.fromarray(image[..., :3] if image.ndim == 3 else image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}.")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels over white instead of letting them turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def pil_to_tensor(image: Any) -> torch.Tensor:
    """RGB image (PIL or uint8 array) -> (3, H, W) float32 tensor in [-1, 1]."""
    array = np.asarray(_to_pil_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageTransform:
    """Resize the shorter side, crop a square, optionally flip, and map to a (3, R, R) tensor in [-1, 1].

    Args:
        resolution: output side length ``R``.
        resize: resize the shorter side to ``R`` first (bilinear with PIL's antialiasing, like the official
            ``Resize(256)``). ``False`` crops at the image's own scale (the image must be at least ``R`` pixels).
        crop: ``"center"`` (evaluation) or ``"random"`` (training).
        flip: random horizontal flip with probability 0.5.

    Randomness comes from the ``rng`` passed to ``__call__`` (a ``numpy.random.Generator``), so a dataset can
    make crops reproducible per (seed, epoch, index); without one a fresh unseeded generator is used.
    """

    def __init__(self, resolution: int, resize: bool = True, crop: str = "center", flip: bool = False):
        if resolution <= 0:
            raise ValueError(f"resolution must be a positive int, got {resolution}.")
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}.")
        self.resolution = int(resolution)
        self.resize = resize
        self.crop = crop
        self.flip = flip

    def __repr__(self) -> str:
        return (
            f"ImageTransform(resolution={self.resolution}, resize={self.resize}, crop={self.crop!r}, flip={self.flip})"
        )

    def __call__(self, image: Any, rng: np.random.Generator | None = None) -> torch.Tensor:
        image = _to_pil_rgb(image)
        size = self.resolution
        if self.resize:
            image = resize_shorter_side(image, size)
        width, height = image.size
        if width < size or height < size:
            raise ValueError(
                f"image of size {width}x{height} is smaller than the crop {size}x{size}; use resize=True or a smaller resolution."
            )
        if self.crop == "random" or self.flip:
            rng = rng if rng is not None else np.random.default_rng()
        if self.crop == "random":
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        image = image.crop((left, top, left + size, top + size))
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(image)


def resize_shorter_side(image: Image.Image, size: int, resample: int = Image.Resampling.BILINEAR) -> Image.Image:
    """Resize so the shorter side equals ``size``, keeping the aspect ratio (PIL antialiases when shrinking)."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if new_size == (width, height) else image.resize(new_size, resample=resample)


# ----------------------------------------------------------------------------------------------------------------
# Bundled photos as a torch dataset
# ----------------------------------------------------------------------------------------------------------------


class BundledPhotoDataset(torch.utils.data.Dataset):
    """Crops of the 12 bundled real photos, split by whole photo, as ``{"pixel_values", "labels"}`` items.

    ``pixel_values`` is (3, R, R) float in [-1, 1]; ``labels`` is the photo id (its index in
    ``BUNDLED_PHOTO_NAMES``), so a class-conditional generator can be conditioned on "which photo".
    ``id2label`` always lists all 12 photos, whatever the split, so ids agree between splits.

    Args:
        resolution: crop side ``R``.
        split: ``"train"`` (photos not in ``held_out``), ``"test"`` (the ``held_out`` photos) or ``"all"``.
        num_samples: dataset length. Random crops: defaults to 1024 per epoch (crops are drawn afresh each epoch).
            Grid crops: caps the number of tiles (evenly spaced over the full grid); default all tiles.
        crops: ``"random"`` (default for train/all) or ``"grid"`` (default for test: non-overlapping tiles,
            row-major, identical on every call).
        flip: random horizontal flips (default: on for random crops, off for grid crops).
        seed: base seed; random crop ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``, so results do
            not depend on DataLoader workers or order.
        photo_size: resize each photo so its shorter side is this many pixels before cropping (``None`` keeps
            native pixels, 300-1411 px). Smaller values give crops with more content per pixel.
        held_out: names of the photos in the test split.
    """

    def __init__(
        self,
        resolution: int,
        split: str = "train",
        num_samples: int | None = None,
        crops: str | None = None,
        flip: bool | None = None,
        seed: int = 0,
        photo_size: int | None = None,
        held_out: tuple[str, ...] | list[str] = BUNDLED_HELD_OUT,
    ):
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
        crops = crops or ("grid" if split == "test" else "random")
        if crops not in ("random", "grid"):
            raise ValueError(f"crops must be 'random' or 'grid', got {crops!r}.")
        unknown = [n for n in held_out if n not in BUNDLED_PHOTO_NAMES]
        if unknown:
            raise ValueError(f"unknown held-out photos {unknown}; choose from {list(BUNDLED_PHOTO_NAMES)}.")
        if split == "train":
            names = [n for n in BUNDLED_PHOTO_NAMES if n not in held_out]
        elif split == "test":
            names = [n for n in BUNDLED_PHOTO_NAMES if n in held_out]
        else:
            names = list(BUNDLED_PHOTO_NAMES)
        if not names:
            raise ValueError(f"split {split!r} has no photos with held_out={list(held_out)}.")
        self.resolution = int(resolution)
        self.split = split
        self.crops = crops
        self.flip = (crops == "random") if flip is None else flip
        self.seed = seed
        self.epoch = 0
        self.names = names
        self.id2label = dict(enumerate(BUNDLED_PHOTO_NAMES))
        self.label2id = {name: i for i, name in self.id2label.items()}
        photos = bundled_photos(tuple(names))
        self._photos = []
        for name in names:
            image = Image.fromarray(photos[name])
            if photo_size is not None:
                image = resize_shorter_side(image, photo_size, Image.Resampling.BICUBIC)
            if min(image.size) < self.resolution:
                raise ValueError(
                    f"photo {name!r} is {image.size[0]}x{image.size[1]}, smaller than resolution {self.resolution}; "
                    "lower the resolution or raise photo_size."
                )
            self._photos.append(np.asarray(image))
        self._transform = ImageTransform(self.resolution, resize=False, crop="random", flip=self.flip)
        if crops == "grid":
            tiles = []
            for p, array in enumerate(self._photos):
                rows, cols = array.shape[0] // self.resolution, array.shape[1] // self.resolution
                tiles.extend((p, r * self.resolution, c * self.resolution) for r in range(rows) for c in range(cols))
            if num_samples is not None and num_samples < len(tiles):
                keep = np.linspace(0, len(tiles) - 1, num_samples).round().astype(int)
                tiles = [tiles[i] for i in keep]
            self._tiles = tiles
            self._length = len(tiles)
        else:
            self._tiles = []
            self._length = 1024 if num_samples is None else int(num_samples)
        if self._length <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of random crops for ``epoch`` (call at the start of every epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} crops.")
        if self.crops == "grid":
            p, top, left = self._tiles[index]
            size = self.resolution
            crop = self._photos[p][top : top + size, left : left + size]
            rng = np.random.default_rng((self.seed, self.epoch, index)) if self.flip else None
            pixel_values = ImageTransform(size, resize=False, crop="center", flip=self.flip)(crop, rng)
        else:
            p = index % len(self._photos)  # balanced over photos
            rng = np.random.default_rng((self.seed, self.epoch, index))
            pixel_values = self._transform(self._photos[p], rng)
        return {"pixel_values": pixel_values, "labels": self.label2id[self.names[p]]}


# ----------------------------------------------------------------------------------------------------------------
# Any image folder or Hub dataset through `datasets`
# ----------------------------------------------------------------------------------------------------------------


def _is_local_path(name_or_path: str) -> bool:
    # Hub names are "name" or "owner/name"; anything else that looks like a path is treated as a folder.
    return (
        os.path.exists(name_or_path)
        or name_or_path.startswith(("/", ".", "~"))
        or name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in name_or_path)
    )


def _decode(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(value["path"])
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    elif isinstance(value, np.ndarray):
        return _to_pil_rgb(value)
    else:
        raise ValueError(f"cannot decode an image from {type(value).__name__}.")
    image.load()
    return image


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "<in-memory bytes>")
    return repr(value)[:80]


class _DatasetsImages:
    """What the map-style and streaming wrappers of a ``datasets`` image table share: columns, transform, seed."""

    def __init__(
        self,
        dataset: Any,
        transform: ImageTransform,
        image_column: str = "image",
        label_column: str | None = None,
        id2label: dict[int, str] | None = None,
        seed: int = 0,
    ):
        self.dataset = dataset
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.id2label = id2label or {0: "image"}
        self.seed = seed
        self.epoch = 0

    def _label(self, row: dict) -> int:
        if not self.label_column:
            return 0
        value = row[self.label_column]
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not numeric or not float(value).is_integer():
            raise ValueError(
                f"image {_describe(row[self.image_column])} has label {value!r} in column {self.label_column!r}; "
                "labels must be integer class ids. Give every image a class, or pass label_column=None."
            )
        return int(value)


class ImageFolderDataset(_DatasetsImages, torch.utils.data.Dataset):
    """Map-style wrapper of a ``datasets.Dataset`` giving ``{"pixel_values", "labels"}`` items.

    Images are decoded with PIL on access (grey / RGBA / palette converted to RGB) and passed through
    ``transform``; random transforms draw from a generator seeded by ``(seed, epoch, index)``.
    """

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        # `verify_images` catches most corrupt files up front; a file that only fails on full decode (e.g. a
        # truncated JPEG) is replaced by the next readable one, with a warning, so an epoch never crashes.
        for offset in range(len(self.dataset)):
            row = self.dataset[(int(index) + offset) % len(self.dataset)]
            try:
                image = _decode(row[self.image_column])
            except (OSError, ValueError, SyntaxError) as err:
                warnings.warn(f"skipped undecodable image {_describe(row[self.image_column])} ({err}).", stacklevel=2)
                continue
            return {"pixel_values": self.transform(image, rng), "labels": self._label(row)}
        raise ValueError("no image in this dataset can be decoded; check the files.")


class StreamingImageDataset(_DatasetsImages, torch.utils.data.IterableDataset):
    """Iterable wrapper of a streaming ``datasets.IterableDataset``; undecodable images are skipped with a warning.

    With several DataLoader workers each worker reads a disjoint shard (``datasets`` splits by worker itself).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_skipped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng((self.seed, self.epoch, worker.id if worker else 0))
        for row in self.dataset:
            try:
                image = _decode(row[self.image_column])
            except (OSError, ValueError, SyntaxError) as err:
                self.num_skipped += 1
                warnings.warn(
                    f"skipped undecodable image {_describe(row[self.image_column])} ({err}); "
                    f"{self.num_skipped} skipped so far.",
                    stacklevel=2,
                )
                continue
            yield {"pixel_values": self.transform(image, rng), "labels": self._label(row)}


def _find_valid_rows(dataset: Any, image_column: str) -> tuple[list[int], list[str]]:
    valid, bad = [], []
    # Read in chunks: Hub datasets embed image bytes, and the whole column may not fit in memory.
    values = (v for start in range(0, len(dataset), 1024) for v in dataset[start : start + 1024][image_column])
    for i, value in enumerate(values):
        try:
            with (
                Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") is not None else Image.open(value["path"])
            ) as image:
                image.verify()
            valid.append(i)
        except (OSError, ValueError, SyntaxError):
            bad.append(_describe(value))
    return valid, bad


# Held-out split names `datasets` gives an image folder ("val"/"valid"/"dev" folders become "validation"), preferred
# first; and folder names that are splits, never classes.
HELD_OUT_SPLITS: tuple[str, ...] = ("validation", "test")
_SPLIT_NAMES = {"train", "training", "test", "testing", "eval", "evaluation", "validation", "valid", "val", "dev"}


def _checked_folder(name_or_path: str) -> str:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
        raise ValueError(
            f"image folder {path!r} does not exist; pass an existing folder of images (optionally with "
            "class sub-folders) or a Hub dataset name such as 'user/dataset'."
        )
    extensions = {e.lower() for e in ImageFolder.EXTENSIONS}
    if not any(os.path.splitext(f)[1].lower() in extensions for _, _, files in os.walk(path) for f in files):
        raise ValueError(
            f"image folder {path!r} contains no image files (.png, .jpg, ...); put images in it, "
            "e.g. <folder>/train/<class>/<image>.png, or point at the right folder."
        )
    return path


def image_splits(name_or_path: str, **load_kwargs: Any) -> list[str]:
    """The split names of an image folder or Hub dataset, found without decoding any image.

    A plain folder (flat or ``<class>/`` sub-folders) has only ``"train"``; ``train/``, ``val/`` (or
    ``validation/``, ``valid/``, ``dev/``) and ``test/`` sub-folders add ``"validation"`` and ``"test"``.
    """
    import datasets

    if _is_local_path(name_or_path):
        builder = datasets.load_dataset_builder("imagefolder", data_dir=_checked_folder(name_or_path), **load_kwargs)
        return [str(split) for split in builder.config.data_files]
    try:
        return list(datasets.get_dataset_split_names(name_or_path, **load_kwargs))
    except (ConnectionError, FileNotFoundError) as err:
        raise ValueError(
            f"{name_or_path!r} is not an existing local folder and could not be loaded from the Hub ({err}); "
            "pass the path of a folder of images, or a Hub dataset name with network access (HF_HUB_OFFLINE unset)."
        ) from err


def held_out_split(name_or_path: str, **load_kwargs: Any) -> str | None:
    """The held-out split to validate on: ``"validation"`` if there is one, else ``"test"``, else ``None``."""
    splits = image_splits(name_or_path, **load_kwargs)
    return next((split for split in HELD_OUT_SPLITS if split in splits), None)


def load_image_dataset(
    name_or_path: str,
    split: str = "train",
    resolution: int = 256,
    *,
    random_crop: bool = False,
    random_flip: bool = False,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    verify_images: bool = True,
    seed: int = 0,
    holdout_fraction: float | None = None,
    **load_kwargs: Any,
) -> ImageFolderDataset | StreamingImageDataset:
    """Load an image dataset with ``datasets`` and return a torch dataset of ``{"pixel_values", "labels"}`` items.

    Args:
        name_or_path: a local folder (read with the ``imagefolder`` builder; class sub-folders become labels,
            ``train/`` / ``validation/`` / ``test/`` sub-folders become splits) or a Hub dataset name.
        split: which split to load.
        resolution: output side; images are resized on the shorter side and cropped square.
        random_crop / random_flip: training augmentation (default: center crop, no flip).
        streaming: read lazily (``datasets`` streaming) for sets too large to index; corrupt images are then
            skipped as they are met.
        image_column / label_column: defaults: the first ``Image`` feature, and the first ``ClassLabel`` (unless its
            names are split names, as for ``root/train/*.png`` + ``root/test/*.png``: those images are unlabelled).
        verify_images: for map-style datasets, check every file with ``PIL.Image.verify`` up front and drop the
            corrupt ones (a warning reports how many). Costs one header read per image.
        holdout_fraction: hold out this fraction of the ``"train"`` split, drawn with ``seed``, for a source that
            has no held-out split: ``split="train"`` then returns the rest and ``split="validation"`` the held-out
            part (the two never overlap).
        load_kwargs: forwarded to ``datasets.load_dataset`` (e.g. ``cache_dir``, ``revision``).

    Raises:
        ValueError: missing folder, a folder without images, an unknown split, no image column, labels that are
        not class ids, or a ``holdout_fraction`` outside (0, 1) or with ``streaming``.
    """
    from .utils.import_utils import require

    datasets = require("datasets", "train")
    transform = ImageTransform(resolution, resize=True, crop="random" if random_crop else "center", flip=random_flip)
    holdout_part = None
    if holdout_fraction is not None:
        if not 0.0 < float(holdout_fraction) < 1.0:
            raise ValueError(f"holdout_fraction must lie strictly between 0 and 1, got {holdout_fraction}.")
        if streaming:
            raise ValueError(
                "holdout_fraction needs an indexable dataset; with streaming=True use a source that has a "
                "validation/test split."
            )
        if split not in ("train", "validation"):
            raise ValueError(f"with holdout_fraction, split must be 'train' or 'validation', got {split!r}.")
        holdout_part, split = ("test" if split == "validation" else "train"), "train"
    if _is_local_path(name_or_path):
        args, kwargs = ("imagefolder",), {"data_dir": _checked_folder(name_or_path)}
    else:
        args, kwargs = (name_or_path,), {}
    try:
        ds = datasets.load_dataset(*args, split=split, streaming=streaming, **kwargs, **load_kwargs)
    except (ConnectionError, FileNotFoundError) as err:
        if "data_dir" in kwargs:
            raise
        raise ValueError(
            f"{name_or_path!r} is not an existing local folder and could not be loaded from the Hub ({err}); "
            "pass the path of a folder of images, or a Hub dataset name with network access (HF_HUB_OFFLINE unset)."
        ) from err
    except ValueError as err:
        if "Unknown split" in str(err):
            raise ValueError(
                f"{name_or_path!r} has no split {split!r} ({err}); pass one of the listed splits. An image folder "
                "without train/validation/test sub-folders has only 'train'."
            ) from err
        raise

    features = ds.features or {}
    if image_column is None:
        image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise ValueError(f"{name_or_path!r} has no Image column (columns: {list(features)}); pass image_column=.")
    if label_column is None:
        label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        names = getattr(features.get(label_column), "names", None)
        if names and {n.lower() for n in names} <= _SPLIT_NAMES:
            label_column = None  # `root/train/*.png` + `root/test/*.png`: folder names are splits, not classes
    elif features and label_column not in features:
        raise ValueError(f"{name_or_path!r} has no column {label_column!r} (columns: {list(features)}).")
    if holdout_part is not None:
        if len(ds) < 2:
            raise ValueError(f"{name_or_path!r} has {len(ds)} image(s); holding out a fraction needs at least 2.")
        count = min(len(ds) - 1, max(1, round(len(ds) * float(holdout_fraction))))
        ds = ds.train_test_split(test_size=count, seed=seed, shuffle=True)[holdout_part]
    id2label = None
    if label_column is not None and isinstance(features.get(label_column), datasets.ClassLabel):
        id2label = dict(enumerate(features[label_column].names))
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    if streaming:
        return StreamingImageDataset(ds, transform, image_column, label_column, id2label, seed)
    if verify_images:
        valid, bad = _find_valid_rows(ds, image_column)
        if bad:
            warnings.warn(
                f"skipped {len(bad)} corrupt image file(s) of {len(ds)} in {name_or_path!r}: {bad[:5]}"
                + (" ..." if len(bad) > 5 else ""),
                stacklevel=2,
            )
            ds = ds.select(valid)
        if len(ds) == 0:
            raise ValueError(f"no readable images in {name_or_path!r} (all {len(bad)} files are corrupt).")
    return ImageFolderDataset(ds, transform, image_column, label_column, id2label, seed)


# ----------------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------------


def collate_images(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``pixel_values`` into (B, 3, H, W) and ``labels`` into a (B,) int64 tensor; other keys stack if they can."""
    if not batch:
        raise ValueError("collate_images got an empty batch.")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key == "labels":
            out[key] = torch.as_tensor(values, dtype=torch.long)
        elif isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack {key!r} of different shapes {sorted(shapes)}; use a fixed-size crop.")
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.as_tensor(values)
        else:
            out[key] = values
    return out
