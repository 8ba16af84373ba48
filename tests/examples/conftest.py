"""Shared pieces for running the example scripts as a user would: in fresh processes, on tiny configs."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def script_env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parent / "src"), env.get("PYTHONPATH", "")])
    return env


def run_example(
    name: str, args: list, *, timeout: int = 300, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(EXAMPLES / name), *map(str, args)]
    env = script_env() if env is None else {**env, "PYTHONPATH": script_env()["PYTHONPATH"]}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-5000:]}"
    return proc


def run_killed_after_first_checkpoint(name: str, args: list, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a script and SIGKILL the process right after its first checkpoint is complete (a crash, not a stop)."""
    wrapper = textwrap.dedent(
        f"""
        import os, runpy, signal, sys
        import ifsq_hf.training.checkpointing as checkpointing
        save = checkpointing.save_checkpoint
        def save_then_die(*args, **kwargs):
            path = save(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        checkpointing.save_checkpoint = save_then_die
        sys.argv = [{str(EXAMPLES / name)!r}] + {list(map(str, args))!r}
        sys.path.insert(0, {str(EXAMPLES)!r})
        runpy.run_path(sys.argv[0], run_name="__main__")
        """
    )
    return subprocess.run([sys.executable, "-c", wrapper], env=script_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def accelerate_launch(name: str, args: list, *, num_processes: int = 2, timeout: int = 400):
    """Multi-process on CPU: the launcher recipe that really gives world size 2 (hf-ecosystem.md §5)."""
    return accelerate_launch_module([str(EXAMPLES / name), *args], num_processes=num_processes, timeout=timeout)


def accelerate_launch_module(args: list, *, num_processes: int = 2, timeout: int = 400):
    """``accelerate launch`` of ``args`` (a script path and its arguments, or ``-m module ...``) on CPU processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        *map(str, args),
    ]  # fmt: skip
    env = {**script_env(), "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:2]} ({num_processes} processes) failed:\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny saved tokenizer and a tiny random DINOv2 (REPA encoder) that the scripts load like real ones."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder

    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(root / "tokenizer")
    dino = Dinov2Model(
        Dinov2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            patch_size=4,
            image_size=32,
        )
    )
    dino.save_pretrained(root / "dino")
    return {"tokenizer": root / "tokenizer", "dino": root / "dino"}
