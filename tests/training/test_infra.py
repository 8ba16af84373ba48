"""Shared training mechanics: EMA, atomic checkpoints, resumable batch order, image grids."""

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration
from torch import nn

from ifsq_hf.training.checkpointing import (
    TrainingState,
    find_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.loop import batch_stream
from ifsq_hf.training.optimization import weight_decay_param_groups
from ifsq_hf.utils.images import make_image_grid, save_image_grid, to_uint8


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=3))
    yield acc
    AcceleratorState._reset_state(reset_partial_state=True)


# ------------------------------------------------------------------------------------------------ EMA


def test_ema_follows_the_formula_and_copies_buffers():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ExponentialMovingAverage(model, decay=0.9)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema.step(model)
    assert torch.allclose(ema.model[0].weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert ema.num_updates == 1


def test_ema_warmup_and_state_dict_round_trip():
    model = nn.Linear(4, 4)
    ema = ExponentialMovingAverage(model, decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.step(model)
    other = ExponentialMovingAverage(nn.Linear(4, 4), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.decay == 0.999 and other.warmup
    assert torch.equal(other.model.weight, ema.model.weight)


def test_ema_rejects_a_wrapped_or_different_model():
    ema = ExponentialMovingAverage(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unwrap"):
        ema.step(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(nn.Linear(2, 2), decay=1.5)


def test_ema_save_pretrained_works_for_transformers_and_diffusers_models(tmp_path):
    from diffusers import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from transformers import BertConfig, BertModel

    class Tiny(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, width: int = 3):
            super().__init__()
            self.lin = nn.Linear(width, width)

    bert = BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10)
    )
    for model, cls in [(bert, BertModel), (Tiny(), Tiny)]:
        ema = ExponentialMovingAverage(model, decay=0.5)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(2.0)
        ema.step(model)
        ema.save_pretrained(tmp_path / cls.__name__)
        loaded = cls.from_pretrained(tmp_path / cls.__name__)
        for (n, a), (_, b) in zip(loaded.named_parameters(), ema.model.named_parameters()):
            assert torch.equal(a, b), n


# ------------------------------------------------------------------------------------------------ checkpoints


def _prepared(accelerator):
    model = nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return accelerator.prepare(model, opt)


def test_checkpoint_save_is_atomic_and_prunes(accelerator, tmp_path):
    _prepared(accelerator)
    for step in (2, 4, 6):
        path = save_checkpoint(accelerator, tmp_path, TrainingState(global_step=step, epoch=1), total_limit=2)
        assert path.name == f"checkpoint-{step}"
    assert [s for s, _ in find_checkpoints(tmp_path)] == [4, 6]
    assert json.loads((tmp_path / "checkpoint-6" / "training_state.json").read_text())["global_step"] == 6
    # A save killed half-way leaves a temporary folder, or a folder without the state file: never "latest".
    (tmp_path / ".checkpoint-8.tmp").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    assert resolve_resume_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-6"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-10"))
    with pytest.raises(ValueError, match="not found"):
        resolve_resume_checkpoint(tmp_path, "checkpoint-99")
    # The next save removes the leftover temporary folder.
    save_checkpoint(accelerator, tmp_path, TrainingState(global_step=12))
    assert not (tmp_path / ".checkpoint-8.tmp").exists()


def test_checkpoint_failure_mid_save_keeps_the_previous_one(accelerator, tmp_path, monkeypatch):
    _prepared(accelerator)
    save_checkpoint(accelerator, tmp_path, TrainingState(global_step=1))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(accelerator, "save_state", explode)
    with pytest.raises(OSError):
        save_checkpoint(accelerator, tmp_path, TrainingState(global_step=2), total_limit=1)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"


def test_checkpoint_round_trip_restores_weights_and_state(accelerator, tmp_path):
    model, opt = _prepared(accelerator)
    ema = ExponentialMovingAverage(accelerator.unwrap_model(model), decay=0.5)
    accelerator.register_for_checkpointing(ema)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ema.step(accelerator.unwrap_model(model))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    ema_saved = ema.model.weight.clone()
    save_checkpoint(accelerator, tmp_path, TrainingState(global_step=7, epoch=2, step_in_epoch=3, extra={"a": 1}))
    with torch.no_grad():
        model.weight.zero_()
        ema.model.weight.zero_()
    state = load_checkpoint(accelerator, tmp_path / "checkpoint-7")
    assert state == TrainingState(global_step=7, epoch=2, step_in_epoch=3, extra={"a": 1})
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert torch.equal(ema.model.weight, ema_saved)


# ------------------------------------------------------------------------------------------------ batch order


def _order(accelerator, state, n, grad_accum=1):
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=2, shuffle=True))
    out = []
    for epoch, index, (batch,) in batch_stream(accelerator, loader, state, grad_accum):
        out.append((epoch, index, batch.tolist()))
        if len(out) == n:
            return out


def test_batch_stream_resumes_mid_epoch_with_the_same_batches(accelerator):
    full = _order(accelerator, TrainingState(), 12)
    assert [e for e, _, _ in full] == [0] * 5 + [1] * 5 + [2] * 2
    assert full[0][2] != full[5][2] or full[1][2] != full[6][2]  # reshuffled each epoch
    resumed = _order(accelerator, TrainingState(global_step=7, epoch=1, step_in_epoch=2), 5)
    assert resumed == full[7:12]
    accum = _order(accelerator, TrainingState(global_step=3, epoch=1, step_in_epoch=1), 3, grad_accum=2)
    assert accum == full[7:10]


def test_weight_decay_groups_skip_norms_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))
    decay, no_decay = weight_decay_param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 2
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


# ------------------------------------------------------------------------------------------------ images


def test_image_grid_layout_and_values(tmp_path):
    images = torch.stack([torch.full((3, 4, 5), v) for v in (-1.0, 0.0, 1.0)])
    grid = make_image_grid(images, nrow=2, padding=1)
    assert grid.size == (2 * 5 + 3, 2 * 4 + 3)
    arr = to_uint8(images)
    assert arr.shape == (3, 4, 5, 3) and arr[0].max() == 0 and arr[2].min() == 255 and arr[1, 0, 0, 0] == 128
    labelled = save_image_grid(images, tmp_path / "g" / "grid.png", nrow=3, row_labels=["abc"])
    assert (tmp_path / "g" / "grid.png").exists() and labelled.size[0] > 3 * 5
    with pytest.raises(ValueError, match="N, C, H, W"):
        to_uint8(torch.zeros(3, 4, 5))
