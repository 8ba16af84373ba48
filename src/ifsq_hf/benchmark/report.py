"""What every study writes: the environment (exact command, package versions, threads), ``results.json``,
``report.md`` and PNG plots (matplotlib with the non-interactive Agg backend, from the ``demo`` extra)."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..utils.import_utils import require

__all__ = ["environment", "markdown_table", "pyplot", "run_section", "write_results"]

PACKAGES = ("ifsq-hf", "torch", "diffusers", "transformers", "accelerate", "numpy", "scipy", "matplotlib")


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    """The command as typed, package versions, Python/platform and torch threads: what a rerun must match."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    argv = sys.argv if argv is None else argv
    return {
        "command": " ".join(shlex.quote(a) for a in argv),
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    matplotlib = require("matplotlib", "demo")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_section(
    results: dict,
    seeds_note: str,
    extra: list[str] = (),
    time_note: str = "sum over runs of training + evaluation, as measured when each run was trained",
) -> list[str]:
    """The report's ``## Run`` section: the exact command, preset, seeds, the study's own lines (``extra``), threads,
    platform, package versions and time -- everything a rerun has to match."""
    env, timing = results["environment"], results["timing"]
    return [
        "## Run",
        "",
        f"- command: `{env['command']}`",
        f"- preset: `{results['preset']}`",
        f"- seeds: {results['seeds']} ({seeds_note})",
        *extra,
        f"- torch threads: {env['torch_threads']}; python {env['python']}; {env['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- time: {timing['total_wall_s']:.0f} s wall, {timing['total_cpu_s']:.0f} s CPU ({time_note})",
        "",
    ]


def write_results(output_dir: str | Path, results: dict, report: str) -> tuple[Path, Path]:
    """Write ``results.json`` (sorted keys, stable across identical runs) and ``report.md``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    md_path = output_dir / "report.md"
    md_path.write_text(report)
    return json_path, md_path
