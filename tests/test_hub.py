"""Model cards and Hub round trips: every model kind goes to the (loopback fake) Hub with a complete card and comes
back by repo id in a fresh process; the card's usage snippet runs as written."""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from ifsq_hf.hub import create_model_card, detect_model_kind, save_model_card, write_run_metadata
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder


def run_python(code: str, env: dict | None = None, timeout: int = 240) -> str:
    with tempfile.TemporaryDirectory(prefix="ifsq-hf-snippet-") as cwd:  # card snippets write files (sample.png)
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env or {**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def usage_snippet(card_text: str) -> str:
    match = re.search(r"## Usage\n\n```python\n(.*?)```", card_text, re.S)
    assert match, "the card has no python usage block"
    return match.group(1)


@pytest.fixture
def tokenizer_folder(tmp_path):
    folder = tmp_path / "tokenizer"
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(folder)
    write_run_metadata(folder, {"learning_rate": 1e-4, "hub_token": "secret", "dataset_name": "user/photos"},
                       {"psnr": 25.5, "lpips": 0.12, "code_usage": 0.9})  # fmt: skip
    return folder


def test_tokenizer_card_metadata_and_sections(tokenizer_folder):
    assert detect_model_kind(tokenizer_folder) == "tokenizer"
    card = create_model_card(tokenizer_folder, repo_id="me/tok")
    data = card.data.to_dict()
    assert data["library_name"] == "ifsq-hf" and data["license"] == "apache-2.0"
    assert {"ifsq", "image-tokenizer"} <= set(data["tags"]) and data["pipeline_tag"] == "image-feature-extraction"
    assert data["datasets"] == ["user/photos"]
    results = data["model-index"][0]["results"]
    assert {m["type"]: m["value"] for r in results for m in r["metrics"]} == {"psnr": 25.5, "lpips": 0.12,
                                                                           "code_usage": 0.9}  # fmt: skip
    text = str(card)
    for section in ("## Usage", "## Evaluation", "## Training", "## Intended use and limitations", "## Citation"):
        assert section in text
    assert "| psnr (↑) | 25.5 |" in text and "learning_rate" in text and "secret" not in text
    assert "83,521" in text and "2601.17124" in text
    assert 'iFSQAutoencoder.from_pretrained("me/tok")' in usage_snippet(text)


def test_local_card_usage_snippet_runs(tokenizer_folder):
    path = save_model_card(tokenizer_folder)
    out = run_python(usage_snippet(path.read_text()))
    assert "torch.Size([1, 4, 4, 4]) torch.Size([1, 4, 4]) torch.int64 torch.Size([1, 3, 16, 16])" in out


def test_detect_rejects_foreign_folders(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        detect_model_kind(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="holds no ifsq-hf model"):
        detect_model_kind(tmp_path)


@pytest.mark.slow
def test_push_tokenizer_with_cli_and_load_by_repo_id(fake_hub, tokenizer_folder, tmp_path):
    env = fake_hub.env(str(tmp_path / "home"))
    cli = [sys.executable, "-m", "ifsq_hf.cli", "push", str(tokenizer_folder), "--repo_id", "tester/tok"]
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = fake_hub.files("tester/tok")
    assert {"README.md", "config.json", "diffusion_pytorch_model.safetensors", "eval_results.json"} <= set(files)
    card_text = files["README.md"].decode()
    out = run_python(
        """
        import torch
        from huggingface_hub import ModelCard
        from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
        model = iFSQAutoencoder.from_pretrained("tester/tok")
        card = ModelCard.load("tester/tok")
        print(type(model).__name__, card.data.library_name, card.data.pipeline_tag)
        """,
        env,
    )
    assert "iFSQAutoencoder ifsq-hf image-feature-extraction" in out
    out = run_python(usage_snippet(card_text), env)  # the snippet Hub visitors copy
    assert "torch.int64" in out
    reloaded = iFSQAutoencoder.from_pretrained(tokenizer_folder)
    assert ModelCard(card_text).data.library_name == "ifsq-hf" and reloaded.codebook_size == 17**4


@pytest.mark.real_hub
@pytest.mark.skipif(not os.environ.get("HF_TOKEN_REAL"), reason="set HF_TOKEN_REAL (and HF_REAL_NAMESPACE) to run")
def test_push_to_the_real_hub(tokenizer_folder):
    from huggingface_hub import HfApi

    from ifsq_hf.hub import push_folder_to_hub

    token = os.environ["HF_TOKEN_REAL"]
    namespace = os.environ.get("HF_REAL_NAMESPACE") or HfApi(token=token).whoami()["name"]
    repo_id = f"{namespace}/ifsq-hf-ci-{os.getpid()}"
    try:
        push_folder_to_hub(tokenizer_folder, repo_id, token=token, private=True)
        assert ModelCard.load(repo_id, token=token).data.library_name == "ifsq-hf"
        model = iFSQAutoencoder.from_pretrained(repo_id, token=token)
        local = iFSQAutoencoder.from_pretrained(tokenizer_folder)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    finally:
        HfApi(token=token).delete_repo(repo_id, missing_ok=True)


def _tiny_dit_pipeline_folder(folder):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ifsq_hf import LightningDiTTransformer2DModel, iFSQDiTPipeline

    vae = iFSQAutoencoder.from_preset("test_f4_d4")
    transformer = LightningDiTTransformer2DModel.from_preset("tiny", sample_size=4, in_channels=4, num_classes=3)
    pipe = iFSQDiTPipeline(
        transformer, vae, FlowMatchEulerDiscreteScheduler(), id2label={0: "cat", 1: "dog", 2: "owl"}
    )
    pipe.save_pretrained(folder)
    write_run_metadata(folder, {"max_train_steps": 2}, {"fid": 123.4})


def _tiny_llamagen_folder(folder):
    from ifsq_hf import LlamaGenConfig, LlamaGenForImageGeneration

    config = LlamaGenConfig.from_preset("tiny", vocab_size=17**4, num_classes=3, image_token_size=4,
                                        id2label={0: "cat", 1: "dog", 2: "owl"})  # fmt: skip
    LlamaGenForImageGeneration(config).save_pretrained(folder)
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(folder / "tokenizer")
    write_run_metadata(folder, {"max_train_steps": 2}, {})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dit_pipeline", "llamagen"])
def test_generators_go_to_the_hub_and_come_back_by_repo_id(kind, fake_hub, tmp_path):
    folder = tmp_path / kind
    (_tiny_dit_pipeline_folder if kind == "dit_pipeline" else _tiny_llamagen_folder)(folder)
    assert detect_model_kind(folder) == kind
    env = fake_hub.env(str(tmp_path / "home"))
    run_python(
        f"from ifsq_hf.hub import push_folder_to_hub; push_folder_to_hub({str(folder)!r}, 'tester/{kind}')", env
    )
    card_text = fake_hub.files(f"tester/{kind}")["README.md"].decode()
    card = ModelCard(card_text)
    assert card.data.library_name == "ifsq-hf" and card.data.pipeline_tag == "unconditional-image-generation"
    assert "cat, dog, owl" in card_text and "## Citation" in card_text
    out = run_python(usage_snippet(card_text) + "\nprint(len(images), images[0].size)", env)
    assert "2 (16, 16)" in out
    if kind == "llamagen":  # transformers' Auto classes know the model once ifsq_hf is imported
        out = run_python(
            """
            import ifsq_hf
            from transformers import AutoModelForCausalLM
            print(type(AutoModelForCausalLM.from_pretrained("tester/llamagen")).__name__)
            """,
            env,
        )
        assert "LlamaGenForImageGeneration" in out
