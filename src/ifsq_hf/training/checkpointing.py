"""Atomic training checkpoints with ``latest`` resume, shared by the three training scripts.

A checkpoint is an ``accelerator.save_state`` folder written under a temporary name and renamed to
``checkpoint-{step}`` only once every process has finished writing and ``training_state.json`` is in place.
A run killed mid-save therefore leaves at most a ``.checkpoint-{step}.tmp`` folder, which ``latest`` never
picks and the next save removes. Old checkpoints are pruned only after the new one is complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

__all__ = [
    "TrainingState",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_resume_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingState:
    """What a resumed run needs beyond the accelerate state: where in the schedule it stopped."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in ``epoch``
    extra: dict = field(default_factory=dict)

    def advance(self, epoch: int, batch_index: int, gradient_accumulation_steps: int, num_batches: int | None) -> None:
        """Record one optimizer step that consumed batches up to ``batch_index`` (0-based) of ``epoch``.

        A step that ends an epoch moves the position to the start of the next one, so a resume never replays
        the epoch's last (possibly partial) accumulation.
        """
        self.global_step += 1
        if num_batches is not None and batch_index + 1 >= num_batches:
            self.epoch, self.step_in_epoch = epoch + 1, 0
        else:
            self.epoch, self.step_in_epoch = epoch, (batch_index + 1) // gradient_accumulation_steps


def find_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = find_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """``"latest"`` -> newest complete checkpoint in ``output_dir`` (or ``None`` to start fresh); a path -> that
    checkpoint, which must be complete."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {resume_from_checkpoint!r} not found (looked in the working directory and in "
            f"{output_dir}); use --resume_from_checkpoint latest or a checkpoint-N folder."
        )
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"{path} is not a complete checkpoint (no {STATE_FILE}); it was probably cut short.")
    return path


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainingState,
    total_limit: int | None = None,
) -> Path:
    """Save the accelerate state plus ``state`` as ``output_dir/checkpoint-{global_step}``, atomically.

    Call on every process (each writes its RNG state). Returns the final path.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{state.global_step}"
    tmp = root / f".checkpoint-{state.global_step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _remove_tree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_path = tmp / STATE_FILE
        with open(state_path, "w") as f:
            json.dump(asdict(state), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # re-saving a step (e.g. after a resume): replace it only now that the new one is whole
            stale = root / f".checkpoint-{state.global_step}.old"
            _remove_tree(stale)
            final.rename(stale)
            tmp.rename(final)
            _remove_tree(stale)
        else:
            tmp.rename(final)
        _fsync_dir(root)
        if total_limit is not None and total_limit > 0:
            for _, old in find_checkpoints(root)[:-total_limit]:
                logger.info("removing old checkpoint %s (checkpoints_total_limit=%d)", old, total_limit)
                _remove_tree(old)
        for leftover in root.glob(".checkpoint-*.tmp"):
            if leftover != tmp:
                _remove_tree(leftover)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> TrainingState:
    """Restore the accelerate state (models, optimizers, schedulers, RNGs, registered objects) and return the
    saved :class:`TrainingState`."""
    path = Path(path)
    with open(path / STATE_FILE) as f:
        raw = json.load(f)
    accelerator.load_state(str(path))
    return TrainingState(**raw)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
