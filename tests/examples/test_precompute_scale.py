"""extract_latents.py as users run it at scale: SIGKILL mid-run then resume equals an uninterrupted run, and 2
processes under `accelerate launch` write the same shards as one."""

import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import EXAMPLES, accelerate_launch, run_example, script_env
from ifsq_hf.training.precompute import PrecomputedLatentDataset


def _args(assets, out):
    return ["--tokenizer", assets["tokenizer"], "--output_dir", out, "--resolution", 16, "--num_bundled_samples", 20,
            "--bundled_split", "all", "--batch_size", 3, "--shard_size", 5, "--seed", 3]  # fmt: skip


def _rows(folder):
    return PrecomputedLatentDataset(folder, random_flip=False).data[:]  # every column, stacked


def _killed_after_shards(args, shards: int) -> subprocess.CompletedProcess:
    """Run extract_latents.py and SIGKILL it as soon as its `shards`-th shard is complete."""
    wrapper = textwrap.dedent(
        f"""
        import os, runpy, signal, sys
        import ifsq_hf.training.precompute as precompute
        write, done = precompute._write_shard, []
        def write_then_maybe_die(*args, **kwargs):
            facts = write(*args, **kwargs)
            done.append(1)
            if len(done) == {shards}:
                os.kill(os.getpid(), signal.SIGKILL)
            return facts
        precompute._write_shard = write_then_maybe_die
        sys.argv = [{str(EXAMPLES / "extract_latents.py")!r}] + {list(map(str, args))!r}
        runpy.run_path(sys.argv[0], run_name="__main__")
        """
    )
    return subprocess.run([sys.executable, "-c", wrapper], env=script_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.slow
def test_extract_killed_then_resumed_equals_uninterrupted_and_two_processes_agree(tiny_assets, tmp_path):
    straight = tmp_path / "straight"
    run_example("extract_latents.py", _args(tiny_assets, straight))
    expected = _rows(straight)
    assert len(expected["label"]) == 20 and len(list(straight.glob("shard-*.arrow"))) == 4

    crashed = tmp_path / "crashed"
    proc = _killed_after_shards(_args(tiny_assets, crashed), shards=2)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert len(list(crashed.glob("shard-*.arrow"))) == 2 and not (crashed / "ifsq_precomputed.json").exists()
    with pytest.raises(ValueError, match="unfinished extraction"):
        PrecomputedLatentDataset(crashed)
    finished = {p.name: p.stat().st_mtime_ns for p in crashed.glob("shard-*.arrow")}
    resumed = run_example("extract_latents.py", _args(tiny_assets, crashed))
    assert "process 0 of 1: 2 of 4 shards to encode" in resumed.stdout
    assert all(crashed.joinpath(name).stat().st_mtime_ns == t for name, t in finished.items())  # not redone
    got = _rows(crashed)
    assert all(torch.equal(got[k], expected[k]) for k in expected)

    two = tmp_path / "two"
    proc = accelerate_launch("extract_latents.py", _args(tiny_assets, two))
    assert "process 1 of 2: 2 of 2 shards" in proc.stdout
    got = _rows(two)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
