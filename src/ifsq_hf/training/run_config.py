"""What a run may write about itself: its arguments without secrets or machine-specific paths.

Everything in an output folder can end up public (``--push_to_hub`` uploads the folder, and repos are public by
default), so the trackers, ``training_config.json`` and the model card all go through :func:`sanitize_run_config`:
secrets are dropped, absolute local paths become relative to the output folder or their base name, and Hub ids stay
as they are. :func:`neutral_event_file_names` removes the host name that TensorBoard puts in its file names.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "REDACTED",
    "ExplicitValue",
    "explicitly_set",
    "is_secret_key",
    "neutral_event_file_names",
    "sanitize_run_config",
    "tracker_config",
]

REDACTED = "<redacted>"
# Argument names that hold credentials. `tokenizer`, `tokenizer_subfolder` and `tokens_dataset` are not secrets.
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_key|apikey|access_key|credentials?)$", re.I)
# Hugging Face user/org tokens and the common API-key shapes, wherever they appear in a value.
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9_]{6,}|api_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,})\b")
_EXPLICIT_ATTR = "_explicitly_set"


def is_secret_key(name: str) -> bool:
    """Whether an argument name holds a credential (``hub_token``, ``wandb_api_key``; not ``tokenizer``)."""
    return bool(_SECRET_KEY.search(str(name)))


def _known_secrets() -> list[str]:
    return [v for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY") if len(v := os.environ.get(k, "")) >= 4]


def _clean_string(value: str, output_dir: Path | None, secrets: list[str]) -> str:
    for secret in secrets:
        value = value.replace(secret, REDACTED)
    value = _SECRET_VALUE.sub(REDACTED, value)
    if not value or "\n" in value:
        return value
    expanded = os.path.expanduser(value)
    is_local = os.path.isabs(expanded) or ((os.sep in value or "/" in value) and os.path.exists(expanded))
    if not is_local:
        return value  # a Hub id ("user/name"), a plain name or a relative file name
    path = Path(os.path.abspath(expanded))
    if output_dir is not None:
        try:
            relative = path.relative_to(output_dir)
            return relative.as_posix() if str(relative) != "." else "."
        except ValueError:
            pass
    return path.name or value


def _clean(value: Any, output_dir: Path | None, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _clean_string(value, output_dir, secrets)
    if isinstance(value, os.PathLike):
        return _clean_string(os.fspath(value), output_dir, secrets)
    if isinstance(value, Mapping):
        return {str(k): _clean(v, output_dir, secrets) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, (list, tuple)):
        return [_clean(v, output_dir, secrets) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _clean_string(str(value), output_dir, secrets)


def sanitize_run_config(
    config: argparse.Namespace | Mapping[str, Any], output_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """A JSON-friendly copy of a run's arguments that is safe to publish.

    * keys naming a credential (``hub_token``, ``*_api_key``, ...) and private keys (``_...``) are dropped;
    * values holding a token (``hf_...``, or the ``HF_TOKEN`` in the environment) are redacted;
    * absolute local paths (and existing relative ones) become relative to ``output_dir`` when inside it, else
      their base name; Hub ids such as ``facebook/dinov2-base`` are kept.
    """
    items = vars(config) if isinstance(config, argparse.Namespace) else dict(config)
    if output_dir is None:
        output_dir = items.get("output_dir")
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(output_dir)))) if output_dir else None
    secrets = _known_secrets()
    for key, value in items.items():
        if is_secret_key(key) and isinstance(value, str) and len(value) >= 4:
            secrets.append(value)
    clean = {}
    for key, value in items.items():
        if str(key).startswith("_") or is_secret_key(str(key)):
            continue
        clean[str(key)] = _clean(value, root, secrets)
    if root is not None and "output_dir" in clean:
        clean["output_dir"] = root.name
    return clean


def tracker_config(args: argparse.Namespace) -> dict[str, int | float | str | bool]:
    """:func:`sanitize_run_config` flattened to the scalar values trackers accept as hyper-parameters."""
    clean = sanitize_run_config(args)
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in clean.items()}


def neutral_event_file_names(folder: str | os.PathLike, host: str | None = None) -> list[Path]:
    """Rename TensorBoard event files under ``folder`` so their names do not carry the host name.

    TensorBoard names files ``events.out.tfevents.<time>.<host>.<pid>.<n>``; ``<host>`` becomes ``host``. An
    open writer keeps writing to the renamed file (POSIX). Returns the new paths.
    """
    host = host or socket.gethostname()
    renamed = []
    if not host or not Path(folder).is_dir():
        return renamed
    for path in Path(folder).rglob("events.out.tfevents.*"):
        if f".{host}." not in path.name:
            continue
        target = path.with_name(path.name.replace(f".{host}.", ".host.", 1))
        try:
            path.rename(target)
        except OSError:  # e.g. a file held open on Windows; it then keeps its name
            continue
        renamed.append(target)
    return renamed


class ExplicitValue(argparse.Action):
    """``store`` that also records that the user gave the option, so a value read from data can tell a default
    (which it may replace) from an explicit choice (which must agree with the data)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        explicit = set(getattr(namespace, _EXPLICIT_ATTR, set()))
        explicit.add(self.dest)
        setattr(namespace, _EXPLICIT_ATTR, explicit)


def explicitly_set(args: argparse.Namespace, name: str) -> bool:
    """Whether ``--name`` was given on the command line (only for options declared with :class:`ExplicitValue`)."""
    return name in getattr(args, _EXPLICIT_ATTR, set())
