"""Atomic training checkpoints with ``latest`` resume, shared by the three training scripts.

A checkpoint is an ``accelerator.save_state`` folder written under a temporary name and renamed to
``checkpoint-{step}`` only once every process has finished writing and ``training_state.json`` is in place.
A run killed mid-save therefore leaves at most a ``.checkpoint-{step}.tmp`` folder, which ``latest`` never
picks and the next save removes. Old checkpoints are pruned only after the new one is complete.

The last file written is ``manifest.json`` (size and SHA-256 of every other file). Resume verifies the checkpoint it
picks against it (plus the JSON and safetensors headers), so a truncated, bit-flipped or half-deleted checkpoint is
never loaded: ``latest`` falls back to the previous verified checkpoint with a warning, and an explicit path or a
folder with no usable checkpoint fails with a :class:`CheckpointError` naming the file. Registered objects (EMA,
discriminator) are unpickled with ``weights_only=True``. Weights holding NaN/Inf are refused before anything is
written, so a diverged run never replaces the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from accelerate import Accelerator

from .divergence import check_finite_weights

__all__ = [
    "MANIFEST_FILE",
    "CheckpointError",
    "TrainingState",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
MANIFEST_FILE = "manifest.json"
_HASH_CHUNK = 8 << 20


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupted; the message names the folder and the file."""


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
    """``"latest"`` -> newest checkpoint in ``output_dir`` that passes :func:`verify_checkpoint` (falling back to
    older ones with a warning; ``None`` to start fresh when there is none at all); a path -> that checkpoint, which
    must verify. Raises :class:`CheckpointError` naming the bad file when nothing usable is found."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        candidates = find_checkpoints(output_dir)
        problems = []
        for _, path in reversed(candidates):
            try:
                verify_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
                warnings.warn(f"skipping checkpoint {path.name}: {err}", stacklevel=2)
                logger.warning("skipping checkpoint %s: %s", path, err)
                continue
            if problems:
                warnings.warn(f"resuming from the older checkpoint {path} instead.", stacklevel=2)
            return path
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {output_dir}; every one failed verification:\n  "
                + "\n  ".join(problems)
                + "\nDelete the broken checkpoint folders to start afresh, or restore them from a backup."
            )
        return None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        path = Path(output_dir) / resume_from_checkpoint
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {resume_from_checkpoint!r} not found (looked in the working directory and in "
            f"{output_dir}); use --resume_from_checkpoint latest or a checkpoint-N folder."
        )
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE_FILE}); it was probably cut short.")
    verify_checkpoint(path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    """Record size and SHA-256 of every file in ``folder``; written atomically, last."""
    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel in (MANIFEST_FILE, MANIFEST_FILE + ".tmp"):
            continue
        files[rel] = {"size": file.stat().st_size, "sha256": _sha256(file)}
    tmp = folder / (MANIFEST_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST_FILE)


def _read_json_file(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder}: {path.name} is unreadable or not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder}: {path.name} does not hold a JSON object.")
    return data


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check that a checkpoint folder is whole before loading it; raise :class:`CheckpointError` naming the file.

    Checks ``training_state.json``, then every file listed in ``manifest.json`` (present, same size, same SHA-256)
    and the headers of the safetensors files. A checkpoint written before manifests existed is checked for its
    state file and headers only, with a warning.
    """
    folder = Path(path)
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{folder}: {STATE_FILE} is missing; the checkpoint was probably cut short.")
    manifest_path = folder / MANIFEST_FILE
    if manifest_path.is_file():
        listed = _read_json_file(manifest_path, folder).get("files")
        if not isinstance(listed, dict) or not listed:
            raise CheckpointError(f"{folder}: {MANIFEST_FILE} lists no files.")
        for rel, meta in listed.items():
            file = folder / rel
            if not file.is_file():
                raise CheckpointError(f"{folder}: {rel} is missing (listed in {MANIFEST_FILE}).")
            size = file.stat().st_size
            if size != meta.get("size"):
                raise CheckpointError(
                    f"{folder}: {rel} has {size} bytes, {meta.get('size')} were written (truncated or replaced)."
                )
            if _sha256(file) != meta.get("sha256"):
                raise CheckpointError(f"{folder}: {rel} does not match its checksum in {MANIFEST_FILE} (corrupted).")
    else:
        warnings.warn(
            f"{folder} has no {MANIFEST_FILE} (written by an older ifsq-hf): only its state file and headers are "
            "checked.",
            stacklevel=2,
        )
    raw = _read_json_file(state_path, folder)
    unknown = set(raw) - {f.name for f in fields(TrainingState)}
    if unknown or not isinstance(raw.get("global_step"), int):
        raise CheckpointError(f"{folder}: {STATE_FILE} is not a training state (keys {sorted(raw)}).")
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{folder}: {file.relative_to(folder)} is not a readable safetensors file ({err})."
            ) from err


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
    # Weights are identical on every process, so all raise together; nothing is written for a diverged run.
    check_finite_weights(_checkpointed_modules(accelerator), state.global_step, "the weights to checkpoint")
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
        _write_manifest(tmp)  # last: a checkpoint with a manifest is complete
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


def _checkpointed_modules(accelerator: Accelerator) -> list[torch.nn.Module]:
    """The prepared models and the registered objects that are (or hold, like the EMA) modules."""
    modules = list(accelerator._models)
    for obj in accelerator._custom_objects:
        if isinstance(obj, torch.nn.Module):
            modules.append(obj)
        elif isinstance(getattr(obj, "model", None), torch.nn.Module):
            modules.append(obj.model)
    return modules


def _load_custom_state_weights_only(obj, path, index: int = 0) -> None:
    """accelerate's ``load_custom_state`` without arbitrary unpickling: registered objects store tensors, numbers
    and strings only (``state_dict``), which ``weights_only=True`` loads."""
    file = Path(path) / f"custom_checkpoint_{index}.pkl"
    obj.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> TrainingState:
    """Restore the accelerate state (models, optimizers, schedulers, RNGs, registered objects) and return the
    saved :class:`TrainingState`. Registered objects are loaded with ``weights_only=True``."""
    import accelerate.accelerator as accelerate_module

    path = Path(path)
    raw = _read_json_file(path / STATE_FILE, path)
    original = accelerate_module.load_custom_state
    accelerate_module.load_custom_state = _load_custom_state_weights_only
    try:
        accelerator.load_state(str(path))
    except Exception as err:
        raise CheckpointError(f"could not load checkpoint {path}: {type(err).__name__}: {err}") from err
    finally:
        accelerate_module.load_custom_state = original
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
