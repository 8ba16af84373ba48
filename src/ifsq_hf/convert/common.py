"""What the checkpoint converters share: safe loading, key selection and prefix stripping, strict key checking,
reading the official config files (JSON, or YAML for the DiT/LlamaGen runs) and writing the result.

Official iFSQ/LlamaGen checkpoints are pickles. They are opened with ``torch.load(weights_only=True)``, which
refuses arbitrary code; a file that needs more than tensors, dicts, lists and numbers is rejected rather than
executed. Every converter maps names explicitly and then checks the result against the target model: an unknown
key, a missing key or a shape mismatch stops the conversion with the offending names listed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ConversionError",
    "check_state_dict",
    "load_checked",
    "load_checkpoint_file",
    "read_checkpoint",
    "read_config",
    "save_converted",
    "select_state_dict",
    "strip_prefixes",
]

_MAX_LISTED = 20
# Key prefixes that DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add to every name.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ConversionError(ValueError):
    """A checkpoint that does not match the target architecture (keys or shapes)."""


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """Load a ``.safetensors`` file or a pickle (``.ckpt``/``.pt``/``.pth``/``.bin``) with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; pass the official .ckpt/.pt/.safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError subclasses and RuntimeError for non-tensor payloads
        raise ValueError(
            f"{path} could not be loaded with weights_only=True ({type(err).__name__}: {str(err)[:300]}). "
            "ifsq-hf never unpickles arbitrary objects; re-save the checkpoint's state dict with torch.save or as "
            "safetensors in a trusted environment."
        ) from err


def select_state_dict(checkpoint: dict, candidates: Iterable[str], what: str) -> dict[str, torch.Tensor]:
    """Return the first nested state dict found under ``candidates`` ("a/b" walks nested keys), or the checkpoint
    itself when it already maps names to tensors."""
    tried = []
    for candidate in candidates:
        node = checkpoint
        for part in candidate.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        tried.append(candidate)
        if isinstance(node, dict) and node and all(isinstance(v, torch.Tensor) for v in node.values()):
            return dict(node)
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise ConversionError(
        f"no {what} state dict in the checkpoint: looked for {tried} and a flat name->tensor dict; top-level keys "
        f"are {sorted(checkpoint)[:_MAX_LISTED]}."
    )


def read_checkpoint(
    path: str | os.PathLike, candidates: Iterable[str], what: str
) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(checkpoint, state_dict)``: the loaded file and its state dict under the first of ``candidates`` (see
    :func:`select_state_dict`), with the DDP / ``torch.compile`` prefixes stripped."""
    checkpoint = load_checkpoint_file(path)
    return checkpoint, strip_prefixes(select_state_dict(checkpoint, candidates, what))


def strip_prefixes(
    state_dict: dict[str, torch.Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES
) -> dict[str, torch.Tensor]:
    """Remove any leading ``prefixes`` (repeatedly, e.g. ``module._orig_mod.``) from every key."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def check_state_dict(converted: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> None:
    """Raise :class:`ConversionError` unless ``converted`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    unknown = sorted(set(converted) - set(expected))
    missing = sorted(set(expected) - set(converted))
    mismatched = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(converted) & set(expected))
        if converted[k].shape != expected[k].shape
    ]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unexpected keys: {unknown[:_MAX_LISTED]}")
    if missing:
        problems.append(f"{len(missing)} missing keys: {missing[:_MAX_LISTED]}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {mismatched[:_MAX_LISTED]}")
    if problems:
        raise ConversionError(
            f"{source} does not match the target architecture ("
            + "; ".join(problems)
            + "). Check the config/preset passed to the converter; nothing was written."
        )


def read_config(config: str | os.PathLike | dict | None) -> dict[str, Any] | None:
    """Return ``config`` as a dict: a dict is copied, a ``.yaml``/``.yml`` file is parsed with PyYAML, any other
    file as JSON. ``None`` stays ``None``."""
    if config is None:
        return None
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist; pass the official config.json / run.yaml / config.yaml.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:  # pragma: no cover - PyYAML ships with the training extras
            raise ValueError(
                f"reading {path} needs PyYAML (pip install pyyaml); or convert the file to JSON and pass that."
            ) from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); YAML files need a .yaml or .yml suffix.") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(data).__name__}.")
    return data


def load_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Strict-check ``state_dict`` against ``model`` (raises :class:`ConversionError`), then load it.

    A checkpoint stored entirely in one reduced floating dtype (e.g. a bf16 EMA) keeps that dtype.
    """
    check_state_dict(state_dict, model, source)
    dtypes = {v.dtype for v in state_dict.values() if v.is_floating_point()}
    current = next((p.dtype for p in model.parameters()), torch.float32)
    if len(dtypes) == 1 and current not in dtypes:
        torch.nn.Module.to(model, next(iter(dtypes)))  # plain cast: no module here needs to stay in fp32
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def save_converted(model: Any, output_dir: str | os.PathLike) -> Path:
    """``save_pretrained`` (safetensors) into ``output_dir``; refuses a path that is an existing file."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is an existing file; pass a folder path.")
    model.save_pretrained(str(out))  # both diffusers and transformers write safetensors by default
    return out
