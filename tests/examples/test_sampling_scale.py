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
@pytest.mark.parametrize("kind", ["dit", "ar"])
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
