"""Run the library's own example training scripts from a study: in-process, so one ``accelerate launch`` of the
study drives every run on all processes, and with ``latest`` resume so an interrupted study continues where it
stopped.

The scripts live in the repository's ``examples/`` folder (they are the documented, user-facing training entry
points). A study loads ``examples/NAME.py`` as a module and calls its ``main(argv)``; nothing is re-implemented.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

__all__ = ["EXAMPLES_ENV", "examples_dir", "load_example", "run_is_complete", "train_with_example"]

EXAMPLES_ENV = "IFSQ_HF_EXAMPLES"
_LOADED: dict[Path, ModuleType] = {}


def examples_dir(path: str | os.PathLike | None = None) -> Path:
    """The ``examples/`` folder: ``path``, else ``$IFSQ_HF_EXAMPLES``, else the one beside ``src/`` of a clone."""
    candidates = [path, os.environ.get(EXAMPLES_ENV), Path(__file__).resolve().parents[3] / "examples"]
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / "train_ifsq_autoencoder.py").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "the benchmark runs the training scripts of the repository's examples/ folder, which was not found "
        f"(looked at {[str(c) for c in candidates if c is not None]}). Run from a clone of ifsq-hf, pass "
        f"--examples_dir, or set {EXAMPLES_ENV}=/path/to/ifsq-hf/examples."
    )


def load_example(name: str, directory: str | os.PathLike | None = None) -> ModuleType:
    """Import ``examples/NAME.py`` as a module (once per process)."""
    path = (examples_dir(directory) / f"{name}.py").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no example script {path}.")
    if path not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"ifsq_hf_examples_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]


def run_is_complete(output_dir: str | os.PathLike) -> bool:
    """True once a tokenizer run saved its final model (the scripts save ``config.json`` only at the very end)."""
    return (Path(output_dir) / "config.json").is_file()


def train_with_example(
    name: str, argv: list[str], output_dir: str | os.PathLike, directory: str | os.PathLike | None = None
) -> bool:
    """Train with ``examples/NAME.py`` unless ``output_dir`` already holds a finished run; resumes from ``latest``.

    Returns whether training ran. ``argv`` must not contain ``--output_dir`` or ``--resume_from_checkpoint``.
    """
    for flag in ("--output_dir", "--resume_from_checkpoint"):
        if flag in argv:
            raise ValueError(f"{flag} is set by the study; remove it from the run arguments.")
    if run_is_complete(output_dir):
        return False
    module = load_example(name, directory)
    with _keep_process_group():
        module.main([*argv, "--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"])
    return True


@contextlib.contextmanager
def _keep_process_group():
    """A script ends with ``accelerator.end_training()``, which destroys the distributed process group; a study runs
    several scripts in one launch, so the group must outlive each of them (it is released when the launch ends)."""
    from accelerate.state import AcceleratorState, PartialState

    saved = {cls: cls.__dict__["destroy_process_group"] for cls in (PartialState, AcceleratorState)}
    try:
        for cls in saved:
            cls.destroy_process_group = lambda self, group=None: None
        yield
    finally:
        for cls, method in saved.items():
            cls.destroy_process_group = method
