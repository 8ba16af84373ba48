"""benchmarks/bench_quantizer.py runs, checks agreement with vector-quantize-pytorch and reports ratios."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("vector_quantize_pytorch")

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_quantizer", ROOT / "benchmarks" / "bench_quantizer.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_quantizer_smoke(capsys):
    bench = _load_bench()
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--sizes", "64K", "--levels", "17,17,17,17", "8,5,5,5", "--rounds", "1"])
    finally:
        torch.set_num_threads(threads)
    impls = {(r["levels"], r["impl"]) for r in rows}
    assert impls == {
        ("17,17,17,17", "ours (ifsq)"),
        ("17,17,17,17", "ours (tanh)"),
        ("17,17,17,17", "vqp FSQ"),
        ("8,5,5,5", "ours (tanh)"),
        ("8,5,5,5", "vqp FSQ"),
    }
    assert all(r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)
    assert all(r["fwd_speedup_vs_vqp"] == 1.0 for r in rows if r["impl"] == "vqp FSQ")
    assert "copy floor" in capsys.readouterr().out
