"""Data: transforms, bundled-photo dataset (split by whole photo), image folders through `datasets`, batching."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ifsq_hf.data import (
    BUNDLED_HELD_OUT,
    BUNDLED_PHOTO_NAMES,
    BundledPhotoDataset,
    ImageTransform,
    collate_images,
    load_image_dataset,
    pil_to_tensor,
    resize_shorter_side,
)

pytest.importorskip("skimage")


def _gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


# ---------------------------------------------------------------- transforms


def test_pil_to_tensor_range_and_layout():
    array = np.zeros((2, 3, 3), np.uint8)
    array[0, 0] = (255, 0, 128)
    t = pil_to_tensor(array)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[:, 0, 0].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    assert t[:, 1, 2].tolist() == [-1.0, -1.0, -1.0]


def test_resize_shorter_side_keeps_aspect():
    image = Image.fromarray(_gradient(40, 100))
    assert resize_shorter_side(image, 20).size == (50, 20)
    assert resize_shorter_side(image, 40) is image


def test_center_crop_is_the_middle():
    array = _gradient(10, 20)
    t = ImageTransform(10, resize=False, crop="center")(array)
    assert torch.equal(t, pil_to_tensor(array[:, 5:15]))


def test_random_crop_and_flip_are_seeded():
    array = _gradient(30, 40)
    transform = ImageTransform(16, resize=False, crop="random", flip=True)
    a = transform(array, np.random.default_rng(3))
    b = transform(array, np.random.default_rng(3))
    assert torch.equal(a, b)
    outs = {transform(array, np.random.default_rng(s)).sum().item() for s in range(10)}
    assert len(outs) > 3


def test_flip_mirrors():
    array = _gradient(8, 8)
    flipped = [
        ImageTransform(8, resize=False, flip=True)(array, np.random.default_rng(s))
        for s in range(20)  # some seeds flip, some do not
    ]
    ref = pil_to_tensor(array)
    assert any(torch.equal(f, ref.flip(-1)) for f in flipped) and any(torch.equal(f, ref) for f in flipped)


def test_grey_and_rgba_become_rgb():
    grey = np.full((8, 8), 200, np.uint8)
    assert ImageTransform(8)(grey).shape == (3, 8, 8)
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black -> white background
    assert torch.allclose(ImageTransform(8)(rgba), torch.ones(3, 8, 8))


def test_transform_errors():
    with pytest.raises(ValueError, match="crop must be"):
        ImageTransform(8, crop="middle")
    with pytest.raises(ValueError, match="smaller than the crop"):
        ImageTransform(16, resize=False)(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        ImageTransform(8)(np.zeros((8, 8, 3), np.float32))


# ---------------------------------------------------------------- bundled photos


def test_bundled_split_is_by_whole_photo():
    train = BundledPhotoDataset(16, split="train", num_samples=40)
    test = BundledPhotoDataset(16, split="test", num_samples=8)
    assert set(train.names).isdisjoint(test.names)
    assert set(test.names) == set(BUNDLED_HELD_OUT)
    assert train.id2label == test.id2label == dict(enumerate(BUNDLED_PHOTO_NAMES))
    train_labels = {train[i]["labels"] for i in range(len(train))}
    test_labels = {test[i]["labels"] for i in range(len(test))}
    assert train_labels == {BUNDLED_PHOTO_NAMES.index(n) for n in train.names}
    assert test_labels <= {BUNDLED_PHOTO_NAMES.index(n) for n in BUNDLED_HELD_OUT}


def test_bundled_items_format():
    item = BundledPhotoDataset(16, num_samples=4)[0]
    assert item["pixel_values"].shape == (3, 16, 16)
    assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
    assert isinstance(item["labels"], int)


def test_bundled_random_crops_depend_on_epoch_only_through_set_epoch():
    ds = BundledPhotoDataset(16, num_samples=6, seed=1)
    first = torch.stack([ds[i]["pixel_values"] for i in range(6)])
    again = torch.stack([ds[i]["pixel_values"] for i in range(6)])
    assert torch.equal(first, again)
    ds.set_epoch(1)
    second = torch.stack([ds[i]["pixel_values"] for i in range(6)])
    assert not torch.equal(first, second)
    other_seed = BundledPhotoDataset(16, num_samples=6, seed=2)
    assert not torch.equal(first, torch.stack([other_seed[i]["pixel_values"] for i in range(6)]))


def test_bundled_grid_crops_are_deterministic_tiles():
    ds = BundledPhotoDataset(64, split="test")
    # chelsea 300x451 -> 4x7 tiles, flower 427x640 -> 6x10 tiles
    assert len(ds) == 4 * 7 + 6 * 10
    ds.set_epoch(5)
    chelsea = next(iter(BundledPhotoDataset(64, split="test", seed=9)))["pixel_values"]
    assert torch.equal(ds[0]["pixel_values"], chelsea)
    capped = BundledPhotoDataset(64, split="test", num_samples=10)
    assert len(capped) == 10 and {capped[i]["labels"] for i in range(10)} == {1, 10}


def test_bundled_errors():
    with pytest.raises(ValueError, match="split must be"):
        BundledPhotoDataset(16, split="val")
    with pytest.raises(ValueError, match="unknown held-out"):
        BundledPhotoDataset(16, held_out=("lena",))
    with pytest.raises(ValueError, match="smaller than resolution"):
        BundledPhotoDataset(64, photo_size=32)
    with pytest.raises(IndexError):
        BundledPhotoDataset(16, num_samples=2)[2]


def test_dataloader_batches_bundled():
    loader = torch.utils.data.DataLoader(
        BundledPhotoDataset(8, num_samples=10), batch_size=4, drop_last=True, collate_fn=collate_images
    )
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["pixel_values"].shape == (4, 3, 8, 8) and batches[0]["labels"].dtype == torch.long


# ---------------------------------------------------------------- image folders


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cats", "dogs"):
        (root / "train" / cls).mkdir(parents=True)
    Image.fromarray(_gradient(20, 30)).save(root / "train" / "cats" / "rgb.png")
    Image.fromarray(np.full((24, 24), 90, np.uint8), mode="L").save(root / "train" / "cats" / "grey.png")
    Image.fromarray(np.full((16, 20, 4), 200, np.uint8), mode="RGBA").save(root / "train" / "dogs" / "rgba.png")
    (root / "train" / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return root


def test_imagefolder_loads_converts_and_skips_corrupt(image_folder):
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt image file\(s\) of 4"):
        ds = load_image_dataset(str(image_folder), split="train", resolution=12)
    assert len(ds) == 3
    assert ds.id2label == {0: "cats", 1: "dogs"}
    items = [ds[i] for i in range(len(ds))]
    assert all(it["pixel_values"].shape == (3, 12, 12) for it in items)
    assert sorted(it["labels"] for it in items) == [0, 0, 1]
    grey = next(it for it in items if torch.allclose(it["pixel_values"][0], it["pixel_values"][1]))
    assert torch.allclose(grey["pixel_values"], torch.full((3, 12, 12), 90 / 127.5 - 1), atol=1e-6)
    batch = collate_images(items)
    assert batch["pixel_values"].shape == (3, 3, 12, 12)


def test_imagefolder_streaming_skips_corrupt(image_folder):
    ds = load_image_dataset(str(image_folder), split="train", resolution=8, streaming=True, random_crop=True)
    assert isinstance(ds, torch.utils.data.IterableDataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_images))
    assert sum(b["pixel_values"].shape[0] for b in batches) == 3
    assert ds.num_skipped == 1 and any("broken.png" in str(w.message) for w in caught)


def test_imagefolder_errors(tmp_path, image_folder):
    with pytest.raises(ValueError, match=r"does not exist.*Hub dataset name"):
        load_image_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"contains no image files"):
        load_image_dataset(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"not an existing local folder.*Hub"):
        load_image_dataset("no_such_user/no_such_dataset")  # tests run with HF_HUB_OFFLINE=1
    with pytest.raises(ValueError, match=r"has no split 'validation'"):
        load_image_dataset(str(image_folder), split="validation", verify_images=False)


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate_images([])
    with pytest.raises(ValueError, match="different shapes"):
        collate_images([{"pixel_values": torch.zeros(3, 4, 4)}, {"pixel_values": torch.zeros(3, 5, 5)}])
