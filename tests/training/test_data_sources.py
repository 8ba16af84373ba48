"""What the training scripts read for each usual data layout, in-process (the script runs are in
tests/examples/test_run_safety.py): training split, held-out split or none, labels, --validation_split."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifsq_hf.data import load_image_dataset, pil_to_tensor
from ifsq_hf.training.data_sources import validation_dataset_from_args
from ifsq_hf.training.image_data import build_image_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tokenizer_args(*extra):
    return load_script("train_ifsq_autoencoder.py").parse_args(
        ["--output_dir", "unused", "--resolution", "16", "--validation_steps", "1", *map(str, extra)]
    )


def _png(path, value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)).save(path)


LAYOUTS = {
    # layout: (files, train size, held-out size or None, class names or None)
    "flat": ([f"{i}.png" for i in range(4)], 4, None, None),
    "classes": ([f"{c}/{i}.png" for c in ("cat", "dog") for i in range(2)], 4, None, ["cat", "dog"]),
    "split_classes": (
        [f"{s}/{c}/{i}.png" for s in ("train", "val") for c in ("cat", "dog") for i in range(2)],
        4,
        4,
        ["cat", "dog"],
    ),
    "split_classes_test": (
        [f"{s}/{c}/{i}.png" for s, n in (("train", 2), ("test", 1)) for c in ("cat", "dog") for i in range(n)],
        4,
        2,
        ["cat", "dog"],
    ),
    "flat_splits": ([f"{s}/{i}.png" for s in ("train", "test") for i in range(3)], 3, 3, None),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_training_data_and_the_held_out_split_that_exists(layout, tmp_path):
    files, n_train, n_val, classes = LAYOUTS[layout]
    for seed, name in enumerate(files):
        _png(tmp_path / name, seed=seed)
    args = tokenizer_args("--train_data_dir", tmp_path)
    train = build_image_dataset(args, "train")
    val = validation_dataset_from_args(args)
    assert len(train) == n_train and (val is None if n_val is None else len(val) == n_val)
    labels = {train[i]["labels"] for i in range(len(train))}
    if classes:
        assert list(train.id2label.values()) == classes and labels == {0, 1}
    else:  # flat folders and flat split folders are unlabelled: split names never become classes
        assert train.id2label == {0: "image"} and labels == {0}
        if val is not None:
            assert {val[i]["labels"] for i in range(len(val))} == {0}


def test_validation_split_fraction_is_disjoint_and_seeded(tmp_path):
    for seed, name in enumerate(LAYOUTS["classes"][0] * 2):
        _png(tmp_path / name.replace(".png", f"_{seed}.png"), seed=seed)
    args = tokenizer_args("--dataset_name", tmp_path, "--validation_split", 0.25)
    train, val = build_image_dataset(args, "train"), validation_dataset_from_args(args)
    assert (len(train), len(val)) == (6, 2)
    paths = lambda ds: {row["image"]["path"] for row in ds.dataset}  # noqa: E731
    assert not paths(train) & paths(val) and paths(val) == paths(validation_dataset_from_args(args))


def test_validation_steps_zero_never_looks_for_a_held_out_split(tmp_path, monkeypatch):
    import ifsq_hf.data as data

    monkeypatch.setattr(data, "held_out_split", lambda *a, **k: pytest.fail("looked for a validation split"))
    _png(tmp_path / "a.png")
    args = tokenizer_args("--train_data_dir", tmp_path, "--validation_steps", 0)
    assert validation_dataset_from_args(args) is None


def test_hub_dataset_uses_its_validation_split(monkeypatch):
    """A Hub dataset through the same code path (``datasets.load_dataset`` answered in memory: no network here)."""
    import datasets

    def table(n):
        buffers = []
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(buf, format="PNG")
            buffers.append({"bytes": buf.getvalue(), "path": None})
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"image": buffers, "label": [i % 2 for i in range(n)]}, features=features)

    splits = {"train": table(6), "validation": table(2)}
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda name, **kw: list(splits))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming=False, **kw: splits[split])
    args = tokenizer_args("--dataset_name", "someone/pictures")
    train, val = build_image_dataset(args, "train"), validation_dataset_from_args(args)
    assert (len(train), len(val)) == (6, 2) and train.id2label == {0: "a", 1: "b"}
    assert train[1]["labels"] == 1 and val[0]["pixel_values"].shape == (3, 16, 16)


def test_16_bit_grayscale_png_keeps_its_brightness(tmp_path):
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")
        tensor = pil_to_tensor(image)
    expected = torch.from_numpy(np.round(ramp / 257.0) / 127.5 - 1).float()
    assert torch.allclose(tensor[0], expected, atol=1 / 127.5) and abs(float(tensor.mean())) < 0.02
    ds = load_image_dataset(str(tmp_path), resolution=16)
    assert abs(float(ds[0]["pixel_values"].mean())) < 0.05  # mid-grey on average, not almost white
    assert torch.allclose(pil_to_tensor(ramp), tensor)  # uint16 arrays too


def test_recorded_config_keeps_only_the_data_options_that_were_used():
    from ifsq_hf.training.data_sources import used_data_args

    common = {"num_bundled_samples": 4096, "bundled_split": "all", "center_crop": False, "resolution": 32}
    folder = used_data_args({**common, "train_data_dir": "pets", "dataset_name": None})
    assert (
        "num_bundled_samples" not in folder and folder["center_crop"] is False and folder["train_data_dir"] == "pets"
    )
    bundled = used_data_args({**common, "train_data_dir": None})
    assert bundled["bundled_split"] == "all" and "center_crop" not in bundled and "train_data_dir" not in bundled
    precomputed = used_data_args({**common, "latents_dataset": "latents"})
    assert set(precomputed) == {"resolution", "latents_dataset"}
