"""Resume trusts nothing it finds: verified checkpoints with fallback, weights-only unpickling, no diverged saves;
and what a run writes about itself carries no secret or local path."""

import json
import warnings

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from ifsq_hf.training.checkpointing import (
    MANIFEST_FILE,
    CheckpointError,
    TrainingState,
    load_checkpoint,
    resolve_resume_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from ifsq_hf.training.divergence import TrainingDivergedError, check_finite_loss, check_finite_weights
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.run_config import is_secret_key, neutral_event_file_names, sanitize_run_config


@pytest.fixture
def run(tmp_path):
    """An accelerator with a model, optimizer and EMA, and two checkpoints (steps 1 and 2) in ``tmp_path``."""
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    layer = nn.Linear(3, 3)
    model, _ = accelerator.prepare(layer, torch.optim.AdamW(layer.parameters(), lr=0.1))
    ema = ExponentialMovingAverage(accelerator.unwrap_model(model), decay=0.5)
    accelerator.register_for_checkpointing(ema)
    for step in (1, 2):
        with torch.no_grad():
            model.weight.fill_(step)
        save_checkpoint(accelerator, tmp_path, TrainingState(global_step=step))
    yield accelerator, model, tmp_path
    AcceleratorState._reset_state(reset_partial_state=True)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated safetensors": ("model.safetensors", _truncate, "model.safetensors has"),
    "flipped bytes": ("model.safetensors", _flip, "model.safetensors does not match its checksum"),
    "missing file": ("optimizer.bin", lambda p: p.unlink(), "optimizer.bin is missing"),
    "bad json": ("training_state.json", lambda p: p.write_text('{"global_step": 2,'), "training_state.json"),
    "truncated rng state": ("random_states_0.pkl", _truncate, "random_states_0.pkl has"),
    "truncated ema pickle": ("custom_checkpoint_0.pkl", _truncate, "custom_checkpoint_0.pkl has"),
    "bad manifest": (MANIFEST_FILE, lambda p: p.write_text("not json"), MANIFEST_FILE),
}


def test_checkpoint_has_a_manifest_of_every_file(run):
    _, _, root = run
    manifest = json.loads((root / "checkpoint-2" / MANIFEST_FILE).read_text())["files"]
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "training_state.json"} <= set(manifest)
    assert all(len(meta["sha256"]) == 64 and meta["size"] > 0 for meta in manifest.values())
    verify_checkpoint(root / "checkpoint-2")


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_newest_checkpoint_falls_back_with_a_warning(run, corruption):
    accelerator, model, root = run
    name, corrupt, message = CORRUPTIONS[corruption]
    corrupt(root / "checkpoint-2" / name)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(root / "checkpoint-2")
    with pytest.warns(UserWarning, match=r"skipping checkpoint checkpoint-2"):
        path = resolve_resume_checkpoint(root, "latest")
    assert path == root / "checkpoint-1"
    state = load_checkpoint(accelerator, path)
    assert state.global_step == 1 and torch.all(model.weight == 1)
    with pytest.raises(CheckpointError, match=message):  # an explicit path gets no fallback
        resolve_resume_checkpoint(root, str(root / "checkpoint-2"))


def test_all_checkpoints_corrupted_is_a_clear_error_naming_the_files(run):
    _, _, root = run
    _truncate(root / "checkpoint-2" / "model.safetensors")
    (root / "checkpoint-1" / "random_states_0.pkl").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"no usable checkpoint") as err:
            resolve_resume_checkpoint(root, "latest")
    assert "checkpoint-2: model.safetensors has" in str(err.value)
    assert "checkpoint-1: random_states_0.pkl is missing" in str(err.value)


def test_registered_objects_are_unpickled_weights_only(run):
    accelerator, _, root = run

    class Boom:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    path = root / "checkpoint-2" / "custom_checkpoint_0.pkl"
    torch.save({"decay": 0.5, "warmup": False, "num_updates": 1, "model": {}, "x": Boom()}, path)
    (root / "checkpoint-2" / MANIFEST_FILE).unlink()  # a legacy checkpoint: only headers are checked
    with pytest.warns(UserWarning, match="no manifest.json"):
        verify_checkpoint(root / "checkpoint-2")
    with pytest.raises(CheckpointError, match=r"could not load checkpoint .*checkpoint-2.*(Weights only|pickle)"):
        load_checkpoint(accelerator, root / "checkpoint-2")


def test_nonfinite_weights_are_never_checkpointed(run):
    accelerator, model, root = run
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(
        TrainingDivergedError, match=r"diverged by step 3: the weights to checkpoint hold 1 non-finite"
    ):
        save_checkpoint(accelerator, root, TrainingState(global_step=3))
    assert not (root / "checkpoint-3").exists() and not (root / ".checkpoint-3.tmp").exists()
    # Re-saving an existing step with diverged weights does not replace the good one either.
    with pytest.raises(TrainingDivergedError):
        save_checkpoint(accelerator, root, TrainingState(global_step=2))
    verify_checkpoint(root / "checkpoint-2")


def test_divergence_checks_name_the_step():
    assert check_finite_loss(torch.tensor(0.25), 5) == 0.25
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 7: the loss is nan"):
        check_finite_loss(torch.tensor(float("nan")), 7)
    with pytest.raises(TrainingDivergedError, match=r"step 9.*inf"):
        check_finite_loss(float("inf"), 9)
    layer = nn.Linear(2, 2)
    check_finite_weights(layer, 1)
    with torch.no_grad():
        layer.bias.fill_(float("inf"))
    with pytest.raises(
        TrainingDivergedError, match=r"step 4: the weights hold 2 non-finite values in 1 tensors \[bias"
    ):
        check_finite_weights(layer, 4)


def test_run_config_drops_secrets_and_local_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_envTOKENabcdefghijklmnopqrstuv")
    out = tmp_path / "run"
    config = {
        "hub_token": "hf_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef",
        "wandb_api_key": "k" * 40,
        "tokenizer": str(tmp_path / "my-tokenizer"),
        "tokenizer_subfolder": "vae",
        "tokens_dataset": str(out / "tokens"),
        "output_dir": str(out),
        "repa_encoder": "facebook/dinov2-base",
        "note": "pushed with hf_envTOKENabcdefghijklmnopqrstuv",
        "preset_overrides": {"api_token": "x" * 8, "hidden_size": 64},
        "logging_dir": "logs",
        "_explicitly_set": {"resolution"},
    }
    clean = sanitize_run_config(config)
    text = json.dumps(clean)
    assert "hf_" not in text and str(tmp_path) not in text and "k" * 40 not in text
    assert clean["tokenizer"] == "my-tokenizer" and clean["tokenizer_subfolder"] == "vae"
    assert clean["tokens_dataset"] == "tokens" and clean["output_dir"] == "run"
    assert clean["repa_encoder"] == "facebook/dinov2-base" and clean["preset_overrides"] == {"hidden_size": 64}
    assert clean["note"] == "pushed with <redacted>" and "_explicitly_set" not in clean
    assert is_secret_key("hub_token") and not is_secret_key("tokenizer") and not is_secret_key("tokens_dataset")


def test_event_files_lose_the_host_name(tmp_path):
    (tmp_path / "logs" / "run").mkdir(parents=True)
    (tmp_path / "logs" / "run" / "events.out.tfevents.1700000000.my-box.lab.123.0").write_bytes(b"x")
    renamed = neutral_event_file_names(tmp_path, host="my-box.lab")
    assert [p.name for p in renamed] == ["events.out.tfevents.1700000000.host.123.0"]


def test_llamagen_card_keeps_tokenizer_fields_but_never_the_token(tmp_path):
    from ifsq_hf.hub import create_model_card
    from ifsq_hf.models.llamagen import LlamaGenConfig

    LlamaGenConfig.from_preset("tiny", vocab_size=17**4, num_classes=2, image_token_size=4).save_pretrained(tmp_path)
    config = {"tokenizer": "me/ifsq-tok", "tokenizer_subfolder": "tokenizer", "tokens_dataset": "me/tokens",
              "hub_token": "hf_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"}  # fmt: skip
    card = str(create_model_card(tmp_path, repo_id="me/ar", training_config=config))
    for row in ("| `tokenizer` | `me/ifsq-tok` |", "| `tokenizer_subfolder` | `tokenizer` |",
                "| `tokens_dataset` | `me/tokens` |"):  # fmt: skip
        assert row in card
    assert "hub_token" not in card and "hf_ABC" not in card
