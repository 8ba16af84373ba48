"""What the `ifsq-hf benchmark STUDY` tests share: the tiny-preset command, running a study twice into fresh folders
(identical numbers, reuse), and one study under `accelerate launch` on 2 CPU processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ifsq_hf.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_args(study: str) -> list[str]:
    """The CLI arguments of a study at its tiny preset, seeds 0 and 1, one thread."""
    return ["benchmark", study, "--preset", "tiny", "--seeds", "0", "1", "--num_threads", "1"]


def run_twice(tmp_path_factory, args: list[str], name: str) -> list[Path]:
    """Run the study twice into two fresh folders (``first``, ``second``); both must exit 0."""
    out = [tmp_path_factory.mktemp(name) / run for run in ("first", "second")]
    for path in out:
        assert main([*args, "--output_dir", str(path)]) == 0
    return out


def results_subset(path: Path, keys: tuple[str, ...]) -> dict:
    """The numbers of ``results.json`` that must not change between runs with the same seeds (no timings)."""
    results = json.loads((path / "results.json").read_text())
    return {key: results[key] for key in keys}


def launch_two_processes(cli_args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    """``accelerate launch --num_processes 2 -m ifsq_hf.cli CLI_ARGS`` on CPU; asserts success, DDP on CPU and that
    only the main process wrote the report."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "ifsq_hf.cli", *cli_args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DistributedType.MULTI_CPU" in proc.stderr and proc.stdout.count("wrote") == 1
    return proc
