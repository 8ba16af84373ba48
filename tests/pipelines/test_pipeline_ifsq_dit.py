import itertools
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch._dynamo
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.callbacks import PipelineCallback
from PIL import Image
from torch._dynamo.testing import CompileCounter

import ifsq_hf
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel
from ifsq_hf.pipelines import iFSQDiTPipeline
from ifsq_hf.schedulers.flow_matching import timestep_grid

SRC = os.path.dirname(os.path.dirname(ifsq_hf.__file__))
ID2LABEL = {i: f"class{i}" for i in range(10)}
ID2LABEL[3] = "cat, kitty"


def make_pipe():
    torch.manual_seed(0)
    transformer = LightningDiTTransformer2DModel.from_preset("tiny")
    with torch.no_grad():  # adaLN-Zero outputs zeros at init; give the model a real velocity field
        for p in transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vae = iFSQAutoencoder.from_preset("test_f4_d4", scaling_factor=1.5, shift_factor=0.1)
    pipe = iFSQDiTPipeline(transformer.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(), id2label=ID2LABEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types_and_determinism(pipe):
    out = pipe([1, 2], num_inference_steps=2, generator=gen(), output_type="pil")
    assert len(out.images) == 2 and isinstance(out.images[0], Image.Image) and out.images[0].size == (16, 16)
    a = pipe([1, 2], num_inference_steps=2, generator=gen(), output_type="np").images
    b = pipe([1, 2], num_inference_steps=2, generator=gen(), output_type="np").images
    assert a.shape == (2, 16, 16, 3) and np.array_equal(a, b)
    c = pipe([1, 2], num_inference_steps=2, generator=gen(1), output_type="np").images
    assert not np.array_equal(a, c)
    pt = pipe([1, 2], num_inference_steps=2, generator=gen(), output_type="pt", return_dict=False)[0]
    assert pt.shape == (2, 3, 16, 16) and pt.min() >= 0 and pt.max() <= 1
    lat = pipe([1, 2], num_inference_steps=2, generator=gen(), output_type="latent").images
    assert lat.shape == (2, 4, 4, 4)
    # Decoding undoes the diffusion normalisation: decode(x / scale + shift).
    expected = (pipe.vae.decode(lat / 1.5 + 0.1).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(pt, expected)
    big = pipe([1], num_inference_steps=1, height=32, width=24, generator=gen(), output_type="pt").images
    assert big.shape == (1, 3, 32, 24)


def test_scale_one_is_the_conditional_model_euler_ode(pipe):
    noise = torch.randn(2, 4, 4, 4, generator=gen(3))
    labels = torch.tensor([3, 7])
    lat = pipe(labels, num_inference_steps=4, latents=noise, timestep_shift=0.5, output_type="latent").images
    ref, grid = noise, timestep_grid(4, shift=0.5)
    for t0, t1 in itertools.pairwise(grid):  # the official Euler sampler
        ref = ref + (t1 - t0) * pipe.transformer(ref, t0.expand(2), labels).sample
    torch.testing.assert_close(lat, ref, atol=1e-5, rtol=1e-5)


def test_guidance_on_all_channels_and_interval(pipe):
    noise = torch.randn(1, 4, 4, 4, generator=gen(4))
    kw = {"num_inference_steps": 1, "latents": noise, "output_type": "latent"}
    plain = pipe([5], guidance_scale=1.0, **kw).images
    guided = pipe([5], guidance_scale=3.0, **kw).images
    # One Euler step from t=0: x1 = noise + v_u + 3 (v_c - v_u), every channel guided.
    t0 = torch.zeros(1)
    vc = pipe.transformer(noise, t0, torch.tensor([5])).sample
    vu = pipe.transformer(noise, t0, torch.tensor([10])).sample
    torch.testing.assert_close(guided, noise + vu + 3 * (vc - vu), atol=1e-5, rtol=1e-5)
    assert (guided - plain).abs().amax(dim=(0, 2, 3)).min() > 0  # no channel left unguided
    kw["num_inference_steps"] = 3
    excluded = pipe([5], guidance_scale=3.0, guidance_interval=(0.9, 1.0), **kw).images  # steps at t = 0, 1/3, 2/3
    torch.testing.assert_close(excluded, pipe([5], guidance_scale=1.0, **kw).images)
    partly = pipe([5], guidance_scale=3.0, guidance_interval=(0.5, 1.0), **kw).images
    assert not torch.allclose(partly, excluded)


def test_class_names(pipe):
    by_name = pipe(["kitty", "class4"], num_inference_steps=1, generator=gen(), output_type="latent").images
    by_id = pipe([3, 4], num_inference_steps=1, generator=gen(), output_type="latent").images
    torch.testing.assert_close(by_name, by_id)
    assert pipe.get_label_ids(["cat", "kitty"]) == [3, 3]
    assert pipe.id2label[3] == "cat, kitty"


BAD_CALLS = [
    # (kwargs, error type, message fragment)
    ({"class_labels": ["zebra"]}, ValueError, "unknown class name 'zebra'"),
    ({"class_labels": [10]}, ValueError, "out of range"),
    ({"class_labels": [-1]}, ValueError, "out of range"),
    ({"class_labels": None}, ValueError, "class_labels is required"),
    ({}, ValueError, "class_labels is required"),
    ({"class_labels": []}, ValueError, "empty"),
    ({"class_labels": [[]]}, ValueError, "empty"),
    ({"class_labels": [1.5]}, ValueError, "is a float"),
    ({"class_labels": 2.0}, ValueError, "is a float"),
    ({"class_labels": [True]}, ValueError, "boolean"),
    ({"class_labels": torch.tensor([1.0])}, ValueError, "integer class ids"),
    ({"class_labels": torch.tensor([True])}, ValueError, "integer class ids"),
    ({"class_labels": np.array([0.5])}, ValueError, "integer class ids"),
    ({"class_labels": [object()]}, ValueError, "not supported"),
    ({"class_labels": [1, 2], "latents": torch.randn(1, 4, 4, 4)}, ValueError, "latents must have shape"),
    ({"class_labels": [1], "latents": torch.randn(1, 3, 4, 4)}, ValueError, "latents must have shape"),
    ({"class_labels": [1], "num_images_per_prompt": 2, "latents": torch.randn(1, 4, 4, 4)}, ValueError, "latents"),
    ({"class_labels": [1], "height": 32, "latents": torch.randn(1, 4, 4, 4)}, ValueError, "latents must have shape"),
    ({"class_labels": [1], "num_inference_steps": 0}, ValueError, "num_inference_steps"),
    ({"class_labels": [1], "num_inference_steps": 2.5}, ValueError, "num_inference_steps must be an integer"),
    ({"class_labels": [1], "num_inference_steps": True}, ValueError, "num_inference_steps"),
    ({"class_labels": [1], "num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
    ({"class_labels": [1], "guidance_interval": (0.5, 0.2)}, ValueError, "guidance_interval"),
    ({"class_labels": [1], "guidance_interval": (0.5,)}, ValueError, "pair"),
    ({"class_labels": [1], "guidance_interval": 0.5}, ValueError, "pair"),
    ({"class_labels": [1], "guidance_interval": (0.1, float("nan"))}, ValueError, "pair"),
    ({"class_labels": [1], "guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite"),
    ({"class_labels": [1], "guidance_scale": float("inf")}, ValueError, "guidance_scale must be a finite"),
    ({"class_labels": [1], "guidance_scale": "4"}, ValueError, "guidance_scale"),
    ({"class_labels": [1], "timestep_shift": 0.0}, ValueError, "timestep_shift"),
    ({"class_labels": [1], "height": 70}, ValueError, "height=70 is not a multiple of 4"),
    ({"class_labels": [1], "width": 18}, ValueError, "use e.g. 16 or 20"),
    ({"class_labels": [1], "height": 0}, ValueError, "height must be a positive integer"),
    ({"class_labels": [1], "height": 16.0}, ValueError, "height must be a positive integer"),
    ({"class_labels": [1], "output_type": "jpg"}, ValueError, "output_type"),
    ({"class_labels": [1, 2], "generator": [torch.Generator()]}, ValueError, "generators"),
    ({"class_labels": [1], "callback_on_step_end_tensor_inputs": ["noise"]}, ValueError, "not available"),
]


@pytest.mark.parametrize(  # ids from the message (no object addresses: xdist workers must collect the same ids)
    ("kwargs", "error", "match"), BAD_CALLS, ids=[f"{i}-{case[2]}" for i, case in enumerate(BAD_CALLS)]
)
def test_bad_inputs(pipe, kwargs, error, match):
    with pytest.raises(error, match=re.escape(match)):
        pipe(num_inference_steps=kwargs.pop("num_inference_steps", 1), **kwargs)


def test_size_must_be_a_multiple_of_factor_times_patch():
    pipe = make_pipe()
    patch2 = LightningDiTTransformer2DModel.from_preset("tiny", patch_size=2)
    pipe2 = iFSQDiTPipeline(patch2.eval(), pipe.vae)
    pipe2.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        pipe2(1, num_inference_steps=1, height=20, output_type="latent")
    assert pipe2(1, num_inference_steps=1, height=24, width=16, output_type="latent").images.shape == (1, 4, 6, 4)


def test_names_need_id2label(pipe):
    no_names = iFSQDiTPipeline(transformer=pipe.transformer, vae=pipe.vae)  # default scheduler
    assert isinstance(no_names.scheduler, FlowMatchEulerDiscreteScheduler)
    with pytest.raises(ValueError, match="no id2label"):
        no_names(["cat"], num_inference_steps=1)


def test_label_forms_agree(pipe):
    def lat(labels, **kw):
        return pipe(labels, num_inference_steps=1, generator=gen(), output_type="latent", **kw).images

    ref = lat([1, 1])
    for form in ([[1], [1]], (1, 1), torch.tensor([[1], [1]]), np.array([1, 1]), [np.int64(1), "class1"]):
        torch.testing.assert_close(lat(form), ref)
    torch.testing.assert_close(lat(1, num_images_per_prompt=2), ref)
    torch.testing.assert_close(lat("class1", num_images_per_prompt=2), ref)


def test_num_images_per_prompt_order(pipe):
    noise = torch.randn(4, 4, 4, 4, generator=gen(2))
    out = pipe([3, 7], num_images_per_prompt=2, num_inference_steps=2, latents=noise, output_type="latent").images
    ref = pipe([3, 3, 7, 7], num_inference_steps=2, latents=noise, output_type="latent").images
    torch.testing.assert_close(out, ref)
    images = pipe([3, 7], num_images_per_prompt=3, num_inference_steps=1, generator=gen(), output_type="pil").images
    assert len(images) == 6


def test_batched_equals_single(pipe):
    kw = {"num_inference_steps": 3, "guidance_scale": 2.0, "output_type": "np"}
    batched = pipe([2, 5, 8], generator=[gen(s) for s in (0, 1, 2)], **kw).images
    for i, (label, seed) in enumerate(zip((2, 5, 8), (0, 1, 2), strict=True)):
        single = pipe(label, generator=gen(seed), **kw).images
        np.testing.assert_allclose(batched[i : i + 1], single, atol=1e-5, rtol=0)


def test_callback_on_step_end(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        seen.append((step, float(timestep), kwargs["latents"].shape))
        assert p is pipe and p.num_timesteps == 3 and p.guidance_scale == 2.0 and p.do_classifier_free_guidance
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 2 else {}

    out = pipe([1], num_inference_steps=3, guidance_scale=2.0, generator=gen(), output_type="latent",
               callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"]).images  # fmt: skip
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][1] == 1000.0 and seen[0][2] == (1, 4, 4, 4)
    assert torch.count_nonzero(out) == 0  # the callback's latents replace the pipeline's

    def stop(p, step, timestep, kwargs):
        p._interrupt = True
        return {}

    early = pipe([1], num_inference_steps=5, generator=gen(), output_type="latent", callback_on_step_end=stop).images
    one = pipe([1], num_inference_steps=5, generator=gen(), output_type="latent",
               callback_on_step_end=lambda p, i, t, k: {}).images  # fmt: skip
    assert not torch.allclose(early, one)  # interrupted after the first of five steps


def test_pipeline_callback_class(pipe):
    class Scale(PipelineCallback):
        tensor_inputs = ["latents"]  # noqa: RUF012

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            return {"latents": callback_kwargs["latents"] * 0}

    out = pipe([1], num_inference_steps=2, generator=gen(), output_type="latent", callback_on_step_end=Scale())
    assert torch.count_nonzero(out.images) == 0


def test_scheduler_none_uses_the_default(pipe):
    ref = pipe([4], num_inference_steps=3, generator=gen(), output_type="latent").images
    bare = iFSQDiTPipeline(transformer=pipe.transformer, vae=pipe.vae, id2label=ID2LABEL)
    bare.set_progress_bar_config(disable=True)
    bare.scheduler = None
    assert bare.scheduler is None and bare.config.scheduler == (None, None)
    torch.testing.assert_close(bare([4], num_inference_steps=3, generator=gen(), output_type="latent").images, ref)


def test_attention_slicing_is_refused_clearly(pipe):
    with pytest.raises(NotImplementedError, match="scaled_dot_product_attention"):
        pipe.enable_attention_slicing()
    pipe.disable_attention_slicing()  # nothing to undo: no error


def test_no_recompilation_in_the_pipeline():
    torch._dynamo.reset()
    pipe = make_pipe()
    counter = CompileCounter()
    pipe.transformer = torch.compile(pipe.transformer, backend=counter)
    first = pipe([1, 2], num_inference_steps=3, generator=gen(), output_type="latent").images
    pipe([1, 2], num_inference_steps=3, generator=gen(), output_type="latent")
    assert counter.frame_count == 1, f"transformer compiled {counter.frame_count} times"
    torch.testing.assert_close(first, make_pipe()([1, 2], num_inference_steps=3, generator=gen(),
                                                  output_type="latent").images)  # fmt: skip
    torch._dynamo.reset()


def test_default_scheduler_is_saved_and_reloaded(pipe, tmp_path):
    bare = iFSQDiTPipeline(transformer=pipe.transformer, vae=pipe.vae, id2label=ID2LABEL)
    bare.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "scheduler" / "scheduler_config.json").is_file()
    loaded = iFSQDiTPipeline.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.scheduler, FlowMatchEulerDiscreteScheduler) and loaded.id2label == ID2LABEL
    # A folder without a scheduler (older saves) still loads, with the default scheduler.
    import shutil

    shutil.rmtree(tmp_path / "p" / "scheduler")
    assert isinstance(iFSQDiTPipeline.from_pretrained(tmp_path / "p").scheduler, FlowMatchEulerDiscreteScheduler)


def run_python(code: str, env: dict | None = None) -> str:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_save_load_in_fresh_process(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    expected = pipe([3, 1], num_inference_steps=2, generator=gen(), output_type="pt").images
    torch.save(expected, tmp_path / "expected.pt")
    out = run_python(
        f"""
        import torch
        from ifsq_hf.pipelines import iFSQDiTPipeline
        pipe = iFSQDiTPipeline.from_pretrained({str(tmp_path / "pipe")!r})
        pipe.set_progress_bar_config(disable=True)
        images = pipe(["cat", 1], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="pt").images
        torch.testing.assert_close(images, torch.load({str(tmp_path / "expected.pt")!r}))
        print(type(pipe.vae).__name__, type(pipe.transformer).__name__, pipe.id2label[3])
        """
    )
    assert "iFSQAutoencoder LightningDiTTransformer2DModel cat, kitty" in out


@pytest.mark.slow
def test_load_by_hub_repo_id(pipe, fake_hub, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    expected = pipe([2], num_inference_steps=2, generator=gen(), output_type="latent").images
    torch.save(expected, tmp_path / "expected.pt")
    env = fake_hub.env(str(tmp_path / "home"))
    run_python(
        f"""
        from huggingface_hub import HfApi
        HfApi().create_repo("tester/tiny-ifsq-dit", exist_ok=True)
        HfApi().upload_folder(repo_id="tester/tiny-ifsq-dit", folder_path={str(tmp_path / "pipe")!r})
        """,
        env,
    )
    assert "model_index.json" in fake_hub.files("tester/tiny-ifsq-dit")
    code = f"""
        import torch
        from ifsq_hf.pipelines import iFSQDiTPipeline
        pipe = iFSQDiTPipeline.from_pretrained("tester/tiny-ifsq-dit")
        pipe.set_progress_bar_config(disable=True)
        lat = pipe([2], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent").images
        torch.testing.assert_close(lat, torch.load({str(tmp_path / "expected.pt")!r}))
        print("loaded", type(pipe.vae).__name__)
        """
    assert "loaded iFSQAutoencoder" in run_python(code, env)
    # Again from the local cache with the Hub switched off.
    assert "loaded iFSQAutoencoder" in run_python(code, {**env, "HF_HUB_OFFLINE": "1"})


def test_wrong_folders_are_named(pipe, tmp_path):
    import json
    import shutil

    pipe.save_pretrained(tmp_path / "p")
    pipe.transformer.save_pretrained(tmp_path / "just_transformer")
    with pytest.raises(ValueError, match=r"LightningDiTTransformer2DModel\.from_pretrained"):
        iFSQDiTPipeline.from_pretrained(tmp_path / "just_transformer")
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        iFSQDiTPipeline.from_pretrained(tmp_path)
    # A component folder of the wrong kind.
    shutil.copytree(tmp_path / "p", tmp_path / "swapped")
    shutil.rmtree(tmp_path / "swapped" / "vae")
    shutil.copytree(tmp_path / "p" / "transformer", tmp_path / "swapped" / "vae")
    with pytest.raises(ValueError, match=r"vae holds a LightningDiTTransformer2DModel.*iFSQAutoencoder"):
        iFSQDiTPipeline.from_pretrained(tmp_path / "swapped")
    # A missing component folder is named, not the root.
    shutil.rmtree(tmp_path / "swapped" / "vae")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "swapped" / "vae"))):
        iFSQDiTPipeline.from_pretrained(tmp_path / "swapped")
    assert iFSQDiTPipeline.from_pretrained(tmp_path / "swapped", vae=pipe.vae).vae is pipe.vae  # passed in: fine
    # Another pipeline's folder.
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    (tmp_path / "p" / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline pipeline"):
        iFSQDiTPipeline.from_pretrained(tmp_path / "p")


@pytest.mark.parametrize(
    "save_kwargs",
    [{"safe_serialization": False}, {"variant": "fp16"}, {"max_shard_size": "30KB"}],
    ids=["pickle", "variant", "sharded"],
)
def test_pipeline_save_load_variants(pipe, tmp_path, save_kwargs):
    pipe.save_pretrained(tmp_path / "p", **save_kwargs)
    load_kwargs = {"variant": save_kwargs["variant"]} if "variant" in save_kwargs else {}
    loaded = iFSQDiTPipeline.from_pretrained(tmp_path / "p", **load_kwargs)
    loaded.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 2, "output_type": "pt"}
    torch.testing.assert_close(
        loaded([1, 3], generator=gen(), **kw).images, pipe([1, 3], generator=gen(), **kw).images
    )


def test_pipeline_dtype(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    half = iFSQDiTPipeline.from_pretrained(tmp_path / "p", dtype=torch.bfloat16)
    half.set_progress_bar_config(disable=True)
    assert half.transformer.dtype == torch.bfloat16 and half.vae.dtype == torch.bfloat16
    noise = torch.randn(1, 4, 4, 4, generator=gen())  # bf16 draws differ from fp32 draws: share the noise
    kw = {"num_inference_steps": 2, "latents": noise}
    lat = half([1], output_type="latent", **kw).images
    assert lat.dtype == torch.bfloat16
    ref = pipe([1], output_type="latent", **kw).images
    torch.testing.assert_close(lat.float(), ref, atol=0.1, rtol=0.1)
    images = half([1], output_type="np", **kw).images
    assert images.dtype == np.float32 and np.isfinite(images).all()
