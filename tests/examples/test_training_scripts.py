"""The three training scripts run as users run them: 2-step runs, a SIGKILL then `latest` resume that ends with the
same weights as an uninterrupted run, 2 processes with `accelerate launch`, precomputed data, sampling, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import accelerate_launch, run_example, run_killed_after_first_checkpoint

COMMON = ["--resolution", 32, "--train_batch_size", 4, "--num_bundled_samples", 16, "--checkpointing_steps", 2,
          "--logging_steps", 1, "--seed", 0, "--random_flip"]  # fmt: skip
WEIGHTS = {
    "train_ifsq_autoencoder.py": "diffusion_pytorch_model.safetensors",
    "train_dit.py": "transformer/diffusion_pytorch_model.safetensors",
    "train_llamagen_repa.py": "model.safetensors",
}


def script_args(script: str, assets: dict) -> list:
    if script == "train_ifsq_autoencoder.py":
        return ["--preset", "test_f4_d4", "--disc_start", 1, "--disc_num_layers", 2, "--disc_ndf", 8,
                "--perceptual_net", "alex", "--num_validation_images", 4]  # fmt: skip
    generator = ["--repa_encoder", assets["dino"], "--bundled_split", "all", "--num_validation_classes", 2,
                 "--num_validation_images_per_class", 1, "--preset", "tiny"]  # fmt: skip
    if script == "train_dit.py":
        return [*generator, "--vae_model_name_or_path", assets["tokenizer"], "--validation_inference_steps", 2]
    return [*generator, "--tokenizer", assets["tokenizer"]]


def final_weights(output_dir) -> dict:
    return load_file(str(output_dir / WEIGHTS[output_dir.name.split("-")[0]]))


@pytest.mark.slow
@pytest.mark.parametrize("script", list(WEIGHTS))
@pytest.mark.xdist_group("examples")
def test_train_kill_resume_equals_uninterrupted(script, tiny_assets, tmp_path):
    args = [*COMMON, *script_args(script, tiny_assets), "--max_train_steps", 3, "--validation_steps", 3]
    straight = tmp_path / f"{script}-straight"
    run_example(script, [*args, "--output_dir", straight])

    # What a user gets: weights, config, a model card with the run's metrics, pictures, TensorBoard logs.
    assert (straight / WEIGHTS[script]).is_file() and (straight / "README.md").is_file()
    assert "library_name: ifsq-hf" in (straight / "README.md").read_text()
    assert list((straight / "validation").glob("*-000003.png"))
    assert list((straight / "logs").rglob("events.out.tfevents.*"))
    assert json.loads((straight / "training_config.json").read_text())["max_train_steps"] == 3

    crashed = tmp_path / f"{script}-crashed"
    proc = run_killed_after_first_checkpoint(script, [*args, "--output_dir", crashed])
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL right after checkpoint-2 was complete
    assert (crashed / "checkpoint-2" / "training_state.json").is_file() and not (crashed / "README.md").exists()
    run_example(script, [*args, "--output_dir", crashed, "--resume_from_checkpoint", "latest"])
    state = json.loads((crashed / "checkpoint-2" / "training_state.json").read_text())
    assert state["global_step"] == 2

    expected, resumed = final_weights(straight), final_weights(crashed)
    assert expected.keys() == resumed.keys()
    mismatched = [k for k in expected if not torch.equal(expected[k], resumed[k])]
    assert not mismatched, f"resumed run differs from the uninterrupted run in {mismatched[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("script", list(WEIGHTS))
def test_two_processes_with_accelerate_launch(script, tiny_assets, tmp_path):
    out = tmp_path / script
    args = [*COMMON, *script_args(script, tiny_assets), "--max_train_steps", 2, "--validation_steps", 2]
    proc = accelerate_launch(script, [*args, "--output_dir", out])
    assert "Num processes: 2" in proc.stdout + proc.stderr
    assert (out / WEIGHTS[script]).is_file() and (out / "checkpoint-2" / "random_states_1.pkl").is_file()


@pytest.mark.slow
def test_precomputed_latents_train_both_generators_and_sample(tiny_assets, tmp_path):
    data = tmp_path / "latents"
    run_example("extract_latents.py", ["--tokenizer", tiny_assets["tokenizer"], "--output_dir", data, "--resolution",
                32, "--num_bundled_samples", 8, "--batch_size", 4, "--repa_encoder", tiny_assets["dino"],
                "--bundled_split", "all"])  # fmt: skip
    meta = json.loads((data / "ifsq_precomputed.json").read_text())
    assert meta["num_images"] == 8 and meta["latent_shape"] == [4, 8, 8] and meta["repa_feature_dim"] == 16

    gen = [*COMMON, "--max_train_steps", 2, "--validation_steps", 0, "--repa_encoder", tiny_assets["dino"],
           "--preset", "tiny"]  # fmt: skip
    run_example("train_dit.py", [*gen, "--output_dir", tmp_path / "dit", "--latents_dataset", data,
                                 "--vae_model_name_or_path", tiny_assets["tokenizer"]])  # fmt: skip
    run_example("train_llamagen_repa.py", [*gen, "--output_dir", tmp_path / "ar", "--tokens_dataset", data,
                                           "--mixed_precision", "bf16",
                                           "--tokenizer", tiny_assets["tokenizer"]])  # fmt: skip

    run_example("sample_dit.py", ["--pipeline", tmp_path / "dit", "--output_dir", tmp_path / "s_dit", "--classes",
                                  "astronaut,3", "--num_images_per_class", 2, "--num_inference_steps", 2,
                                  "--guidance_scale", 2.0, "--timestep_shift", 0.5])  # fmt: skip
    run_example("sample_llamagen.py", ["--model", tmp_path / "ar", "--output_dir", tmp_path / "s_ar", "--classes",
                                       "0,rocket", "--num_images_per_class", 2, "--guidance_scale", 2.0])  # fmt: skip
    for folder in ("s_dit", "s_ar"):
        samples = np.load(tmp_path / folder / "samples.npz")
        assert samples["arr_0"].shape == (4, 32, 32, 3) and samples["arr_0"].dtype == np.uint8
        assert samples["labels"].tolist() == [0, 0, 3, 3]
        assert len(list((tmp_path / folder).glob("*.png"))) == 4


@pytest.mark.slow
def test_evaluate_tokenizer_script(tiny_assets, tmp_path):
    proc = run_example("evaluate_tokenizer.py", [tiny_assets["tokenizer"], "--resolution", 32, "--max_images", 8,
                                                 "--output_dir", tmp_path])  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 8 and 0 < metrics["bin_usage"] <= 1 and metrics["lpips"] > 0
    assert (tmp_path / "reconstructions.png").is_file() and '"psnr"' in proc.stdout


@pytest.mark.parametrize(
    ("script", "extra", "message"),
    [
        ("train_ifsq_autoencoder.py", ["--preset", "test_f4_d4", "--resolution", 30], "not divisible"),
        (
            "train_dit.py",
            ["--vae_model_name_or_path", "TOKENIZER", "--latents_dataset", "NOWHERE"],
            "not a precomputed dataset",
        ),
        ("train_llamagen_repa.py", ["--tokenizer", "TOKENIZER", "--train_data_dir", "NOWHERE"], "does not exist"),
        ("train_dit.py", ["--vae_model_name_or_path", "TOKENIZER", "--max_train_steps", 0], "max_train_steps"),
    ],
)
def test_bad_input_fails_with_a_clear_message(script, extra, message, tiny_assets, tmp_path):
    extra = [str(tiny_assets["tokenizer"]) if a == "TOKENIZER" else str(tmp_path / "x") if a == "NOWHERE" else a
             for a in extra]  # fmt: skip
    repa = [] if script == "train_ifsq_autoencoder.py" else ["--repa_encoder", "none"]
    proc = run_example(script, ["--output_dir", tmp_path / "out", *repa, *extra], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_push_to_hub_at_the_end_of_training(fake_hub, tiny_assets, tmp_path):
    out = tmp_path / "tok"
    args = [*COMMON, *script_args("train_ifsq_autoencoder.py", tiny_assets), "--max_train_steps", 1,
            "--validation_steps", 1, "--output_dir", out, "--push_to_hub", "--hub_model_id", "tester/tok-run"]  # fmt: skip
    run_example("train_ifsq_autoencoder.py", args, env=fake_hub.env(str(tmp_path / "home")))
    files = fake_hub.files("tester/tok-run")
    assert {"README.md", "config.json", "diffusion_pytorch_model.safetensors", "eval_results.json"} <= set(files)
    assert not any(name.startswith("checkpoint-") for name in files)  # training state stays local
    assert b"| psnr (" in files["README.md"] and "validation/reconstructions-000001.png" in files
