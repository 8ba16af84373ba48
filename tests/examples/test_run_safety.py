"""The training scripts on real-world inputs: every usual image-folder layout, a pushed run that must not leak the
token / local paths / host name, and an exploding learning rate that must stop the run, not be saved as success."""

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import run_example

TOKENIZER_ARGS = ["--preset", "test_f4_d4", "--disc_start", 1, "--disc_num_layers", 2, "--disc_ndf", 8,
                  "--perceptual_net", "alex", "--lpips_net", "none", "--resolution", 32, "--train_batch_size", 2,
                  "--max_train_steps", 1, "--checkpointing_steps", 1, "--num_validation_images", 2,
                  "--seed", 0]  # fmt: skip
FAKE_TOKEN = "hf_SafetyTestTokenQWERTYuiopASDFghjk"


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path)


def make_layout(root, layout: str):
    """Tiny PNGs in one of the usual layouts; returns the folder to pass."""
    files = {
        "flat": [f"{i}.png" for i in range(4)],
        "classes": [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(2)],
        "split_classes": [
            f"{s}/{c}/{i}.png" for s in ("train", "val", "test") for c in ("cat", "dog") for i in range(2)
        ],
        "flat_splits": [f"{s}/{i}.png" for s in ("train", "test") for i in range(3)],
    }[layout]
    for seed, name in enumerate(files):
        _image(root / layout / name, seed)
    return root / layout


# layout -> whether it has a held-out split to validate on
LAYOUTS = {"flat": False, "classes": False, "split_classes": True, "flat_splits": True}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tokenizer_script_trains_on_every_layout(layout, tmp_path):
    data = make_layout(tmp_path, layout)
    out = tmp_path / "out"
    run_example("train_ifsq_autoencoder.py", [*TOKENIZER_ARGS, "--train_data_dir", data, "--output_dir", out,
                                              "--validation_steps", 1])  # fmt: skip
    metrics = json.loads((out / "eval_results.json").read_text())
    assert bool(metrics) == LAYOUTS[layout], metrics  # validation only where a held-out split exists
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    assert f"| `train_data_dir` | `{layout}` |" in (out / "README.md").read_text()  # its name, not its local path


GENERATOR = ["--resolution", 16, "--train_batch_size", 2, "--repa_encoder", "none", "--preset", "tiny",
             "--seed", 0, "--num_validation_classes", 2, "--num_validation_images_per_class", 1]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_dit.py", "train_llamagen_repa.py"])
def test_generators_train_on_split_class_folders(script, tiny_assets, tmp_path):
    data = make_layout(tmp_path, "split_classes")
    tok = ["--vae_model_name_or_path" if script == "train_dit.py" else "--tokenizer", tiny_assets["tokenizer"]]
    extra = ["--validation_inference_steps", 2] if script == "train_dit.py" else []
    out = tmp_path / "out"
    run_example(script, [*GENERATOR, *tok, *extra, "--train_data_dir", data, "--output_dir", out,
                         "--max_train_steps", 1, "--validation_steps", 1])  # fmt: skip
    assert list((out / "validation").glob("samples-000001.png"))
    config = json.loads((out / ("model_index.json" if script == "train_dit.py" else "config.json")).read_text())
    assert {str(v) for v in config["id2label"].values()} == {"cat", "dog"}  # split names never become classes


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_dit.py", "train_llamagen_repa.py"])
def test_exploding_learning_rate_stops_with_the_step_and_keeps_good_checkpoints(script, tiny_assets, tmp_path):
    tok = ["--vae_model_name_or_path" if script == "train_dit.py" else "--tokenizer", tiny_assets["tokenizer"]]
    out = tmp_path / "out"
    proc = run_example(script, [*GENERATOR, *tok, "--bundled_split", "all", "--num_bundled_samples", 8,
                                "--output_dir", out, "--max_train_steps", 12, "--validation_steps", 0,
                                "--learning_rate", 1e8, "--max_grad_norm", 0, "--checkpointing_steps", 1,
                                "--logging_steps", 100],
                       check=False)  # fmt: skip
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "TrainingDivergedError: training diverged" in proc.stderr and "step" in proc.stderr
    assert not (out / "README.md").exists()  # nothing was saved as a finished model
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, "the first steps should have been checkpointed before the weights blew up"
    weights = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.slow
def test_pushed_run_leaks_no_token_path_or_host_name(fake_hub, tmp_path):
    data = make_layout(tmp_path, "split_classes")
    out = tmp_path / "leaky-run"
    args = [*TOKENIZER_ARGS, "--train_data_dir", data, "--output_dir", out, "--validation_steps", 1, "--push_to_hub",
            "--hub_model_id", "tester/leak-test", "--hub_token", FAKE_TOKEN]  # fmt: skip
    run_example("train_ifsq_autoencoder.py", args, env=fake_hub.env(str(tmp_path / "home")))
    uploaded = fake_hub.files("tester/leak-test")
    assert "README.md" in uploaded and any(name.startswith("logs/") for name in uploaded)
    assert any(name.endswith("hparams.yml") for name in uploaded), sorted(uploaded)
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    host = socket.gethostname()
    forbidden = [FAKE_TOKEN.encode(), b"hf_fake_token", str(tmp_path).encode(), str(tmp_path.resolve()).encode()]
    if len(host) >= 6:  # a short host name ("vm") would match random bytes; the file names are checked below
        forbidden.append(host.encode())
    for where, files in (("uploaded", uploaded), ("output folder", local)):
        for name, content in files.items():
            for secret in forbidden:
                assert secret not in content, f"{where} file {name} contains {secret[:12]!r}..."
            assert f".{host}." not in name and host not in name.split("/"), f"{where} file name {name} has the host"
    card = uploaded["README.md"].decode()
    config = json.loads(uploaded["training_config.json"])
    assert "hub_token" not in config and config["train_data_dir"] == "split_classes"
    assert "num_bundled_samples" not in config  # only the data that was used is recorded
    assert 'from_pretrained("tester/leak-test")' in card
