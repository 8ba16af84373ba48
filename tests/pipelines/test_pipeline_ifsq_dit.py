import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

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


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="unknown class name 'zebra'"):
        pipe(["zebra"], num_inference_steps=1)
    with pytest.raises(ValueError, match="out of range"):
        pipe([10], num_inference_steps=1)
    with pytest.raises(ValueError, match="out of range"):
        pipe([-1], num_inference_steps=1)
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe([1, 2], num_inference_steps=1, latents=torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe([1], num_inference_steps=1, latents=torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe([1], num_inference_steps=0)
    with pytest.raises(ValueError, match="guidance_interval"):
        pipe([1], num_inference_steps=1, guidance_interval=(0.5, 0.2))
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], num_inference_steps=1, output_type="jpg")
    with pytest.raises(ValueError, match="empty"):
        pipe([], num_inference_steps=1)
    no_names = iFSQDiTPipeline(transformer=pipe.transformer, vae=pipe.vae)  # default scheduler
    assert isinstance(no_names.scheduler, FlowMatchEulerDiscreteScheduler)
    with pytest.raises(ValueError, match="no id2label"):
        no_names(["cat"], num_inference_steps=1)


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
