"""Helpers shared by the converters: reading the official config files (JSON, or YAML for the DiT/LlamaGen runs),
loading a checked state dict into the target model and writing the result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .common import check_state_dict

__all__ = ["load_checked", "read_config", "save_converted"]


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
