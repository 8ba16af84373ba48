"""Per-class sampling to PNG + npz: class resolution, per-rank seeds, packing order."""

import numpy as np
import pytest
import torch
from PIL import Image

from ifsq_hf.training.checkpointing import TrainingState
from ifsq_hf.training.generators import validation_class_labels
from ifsq_hf.training.sampling import resolve_class_ids, sample_per_class


def test_resolve_class_ids_by_id_and_name():
    id2label = {0: "astronaut", 1: "coffee", 2: "chelsea"}
    assert resolve_class_ids(None, id2label, 3) == [0, 1, 2]
    assert resolve_class_ids("2, coffee", id2label, 3) == [2, 1]
    with pytest.raises(ValueError, match="unknown class 'dog'"):
        resolve_class_ids("dog", id2label, 3)
    with pytest.raises(ValueError, match=r"outside \[0, 2\]"):
        resolve_class_ids("3", id2label, 3)


def test_sample_per_class_writes_pngs_and_npz(tmp_path):
    calls = []

    def generate(labels, generator):
        calls.append(list(labels))
        value = torch.randint(0, 255, (1,), generator=generator).item()
        return [Image.fromarray(np.full((4, 4, 3), (label * 40 + value) % 255, np.uint8)) for label in labels]

    path = sample_per_class(generate, [1, 3], 3, tmp_path, batch_size=4, seed=5)
    data = np.load(path)
    assert data["arr_0"].shape == (6, 4, 4, 3) and data["arr_0"].dtype == np.uint8
    assert data["labels"].tolist() == [1, 1, 1, 3, 3, 3]
    assert calls == [[1, 1, 1, 3], [3, 3]]
    assert sorted(p.name for p in tmp_path.glob("*.png"))[0] == "0001_00000.png"
    with pytest.raises(ValueError, match="num_images_per_class"):
        sample_per_class(generate, [1], 0, tmp_path, batch_size=1, seed=0)


def test_validation_class_labels_spread():
    id2label = {i: str(i) for i in range(10)}
    assert validation_class_labels(id2label, 4) == [0, 2, 5, 7]
    assert validation_class_labels(id2label, 20) == list(range(10))


def test_training_state_advance_moves_to_next_epoch_at_the_end():
    state = TrainingState()
    state.advance(epoch=0, batch_index=3, gradient_accumulation_steps=2, num_batches=10)
    assert (state.global_step, state.epoch, state.step_in_epoch) == (1, 0, 2)
    state.advance(epoch=0, batch_index=9, gradient_accumulation_steps=2, num_batches=10)
    assert (state.global_step, state.epoch, state.step_in_epoch) == (2, 1, 0)
    state.advance(epoch=1, batch_index=0, gradient_accumulation_steps=1, num_batches=None)
    assert (state.epoch, state.step_in_epoch) == (1, 1)
