"""The generator studies' shared pieces (``ifsq_hf.benchmark.generators``) at the tiny scale: one tokenizer, DiT and
LlamaGen trained in two stages and continuously, the cached held-out reference, deterministic evaluation, FLOPs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ifsq_hf.benchmark import generators as gen
from ifsq_hf.benchmark.ar_vs_diffusion import PRESETS

CONFIG = PRESETS["tiny"]
WEIGHTS = {"dit": "transformer/diffusion_pytorch_model.safetensors", "llamagen": "model.safetensors"}


def train_args(kind: str, steps: int) -> dict:
    return {**CONFIG["generators"][kind], "max_train_steps": steps}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tokenizer, then both kinds trained 2 + 2 steps (staged) and 4 steps in one go."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("generators")
    tokenizer = gen.prepare_tokenizer(CONFIG, out)
    for kind in gen.GENERATOR_KINDS:
        assert gen.train_generator(kind, train_args(kind, 2), tokenizer, out / kind / "step2", 0)
        assert gen.train_generator(kind, train_args(kind, 4), tokenizer, out / kind / "step4", 0,
                                   resume_from=out / kind / "step2")  # fmt: skip
        assert gen.train_generator(kind, train_args(kind, 4), tokenizer, out / kind / "continuous", 0)
    return out, tokenizer


def test_staged_training_equals_one_continuous_run(trained):
    out, tokenizer = trained
    for kind, weights in WEIGHTS.items():
        staged, continuous = load_file(out / kind / "step4" / weights), load_file(out / kind / "continuous" / weights)
        assert staged.keys() == continuous.keys()
        assert all(torch.equal(staged[k], continuous[k]) for k in staged), kind
        # ... and the stages really differ from each other (the second stage trained)
        first = load_file(out / kind / "step2" / weights)
        assert any(not torch.equal(first[k], staged[k]) for k in staged), kind
        # a finished stage is not trained again
        assert not gen.train_generator(kind, train_args(kind, 4), tokenizer, out / kind / "step4", 0)


def test_reference_is_cached_and_keyed_by_its_settings(trained):
    out, tokenizer = trained
    ref = gen.build_reference(CONFIG, tokenizer, out)
    mtime = ref.path.stat().st_mtime_ns
    again = gen.build_reference(CONFIG, tokenizer, out)
    assert again.path == ref.path and again.path.stat().st_mtime_ns == mtime
    assert torch.equal(torch.from_numpy(again.latent_mu), torch.from_numpy(ref.latent_mu))
    assert ref.num_images == CONFIG["num_reference_images"] and ref.num_classes == 12
    assert ref.latent_mu.shape == (4 * 4 * 4,) and ref.inception_mu is None  # 16 px, f4, 4 channels; FID off
    other = gen.build_reference({**CONFIG, "num_reference_images": 36}, tokenizer, out)
    assert other.path != ref.path and other.num_images == 36
    # the held-out crops are not the training crops: another seed, the same 12 photos in turn
    images, floor_images = gen.reference_images(CONFIG), gen.reference_images(CONFIG, floor=True)
    assert [images[i]["labels"] for i in range(12)] == list(range(12))
    assert not torch.equal(images[0]["pixel_values"], floor_images[0]["pixel_values"])
    # the floor: other real crops scored like samples (the value perfect samples would get), cached beside
    assert ref.floor["num_samples"] == CONFIG["num_eval_samples"] and ref.floor["latent_fd"] > 0
    assert "fid" not in ref.floor and len(list(ref.path.parent.glob("floor-*.json"))) == 2
    assert gen.build_reference({**CONFIG, "reference_floor": False}, tokenizer, out).floor is None


def test_evaluation_is_deterministic_and_cached(trained):
    out, tokenizer = trained
    ref = gen.build_reference(CONFIG, tokenizer, out)
    for kind in WEIGHTS:
        run = out / kind / "step4"
        a = gen.evaluate_generator(kind, run, ref, CONFIG, 0, cache=False)
        b = gen.evaluate_generator(kind, run, ref, CONFIG, 0, cache=False)
        assert a == b and a["num_samples"] == CONFIG["num_eval_samples"] and a["latent_fd"] > 0
        assert "fid" not in a
        other_seed = gen.evaluate_generator(kind, run, ref, CONFIG, 1, cache=False)
        assert other_seed["latent_fd"] != a["latent_fd"]
        cached = gen.evaluate_generator(kind, run, ref, CONFIG, 0)
        assert cached == a and json.loads((run / gen.EVAL_FILE).read_text())["metrics"] == a
        assert (run / "bench_samples.png").is_file()


class _FakeInception(torch.nn.Module):
    """A stand-in for the FID InceptionV3 (whose CPU cost is a minute here): 6 pooled colour features."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_fid_uses_the_first_samples_and_the_same_features_for_the_reference(trained, monkeypatch):
    out, tokenizer = trained
    monkeypatch.setattr(gen, "_inception", lambda device: _FakeInception())
    config = {**CONFIG, "fid": True, "num_fid_samples": 12}
    ref = gen.build_reference(config, tokenizer, out / "fid")
    assert ref.inception_mu.shape == (6,)
    assert ref.floor["num_fid_samples"] == 12 and ref.floor["fid"] > 0 and ref.floor["fid_reconstructed"] > 0
    for kind in WEIGHTS:
        m = gen.evaluate_generator(kind, out / kind / "step4", ref, config, 0, cache=False)
        assert m["num_fid_samples"] == 12 and m["fid"] > 0
        plain = gen.evaluate_generator(kind, out / kind / "step4", ref, CONFIG, 0, cache=False)
        assert m["latent_fd"] == plain["latent_fd"]  # FID does not change the samples
    with pytest.raises(ValueError, match="num_fid_samples"):
        gen.evaluate_generator("dit", out / "dit" / "step4", ref, {**config, "num_fid_samples": 99}, 0)
    no_fid_ref = gen.build_reference(CONFIG, tokenizer, out)
    with pytest.raises(ValueError, match="no Inception statistics"):
        gen.evaluate_generator("dit", out / "dit" / "step4", no_fid_ref, config, 0, cache=False)


def test_training_flops_are_positive_and_scale_with_the_batch(trained):
    out, _ = trained
    for kind in WEIGHTS:
        small = gen.training_flops(kind, out / kind / "step4", train_args(kind, 4))
        double = gen.training_flops(kind, out / kind / "step4", {**train_args(kind, 4), "train_batch_size": 8})
        accumulated = gen.training_flops(kind, out / kind / "step4",
                                         {**train_args(kind, 4), "gradient_accumulation_steps": 2})  # fmt: skip
        assert small > 0 and double == pytest.approx(2 * small) and accumulated == double


def test_attention_is_counted_on_cpu():
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=gen._cpu_attention_flops()) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    assert counter.get_total_flops() > 0


def test_bad_input(trained, tmp_path):
    out, tokenizer = trained
    with pytest.raises(ValueError, match="unknown generator kind"):
        gen.train_generator("vae", train_args("dit", 2), tokenizer, tmp_path / "x", 0)
    with pytest.raises(ValueError, match="not a multiple of checkpointing_steps"):
        gen.train_generator("dit", train_args("dit", 3), tokenizer, tmp_path / "x", 0)
    with pytest.raises(ValueError, match="'seed' is set by the study"):
        gen.train_generator("dit", {**train_args("dit", 2), "seed": 3}, tokenizer, tmp_path / "x", 0)
    with pytest.raises(ValueError, match="no checkpoint"):
        gen.train_generator("dit", train_args("dit", 2), tokenizer, tmp_path / "x", 0, resume_from=tmp_path)
    ref = gen.build_reference(CONFIG, tokenizer, out)
    with pytest.raises(ValueError, match="no finished dit run"):
        gen.evaluate_generator("dit", tmp_path, ref, CONFIG, 0)
    with pytest.raises(ValueError, match="model_preset"):
        gen.prepare_tokenizer({"tokenizer": {"train": {}}}, tmp_path)
    with pytest.raises(ValueError, match="num_reference_images"):
        gen.build_reference({**CONFIG, "num_reference_images": 0}, tokenizer, tmp_path)
