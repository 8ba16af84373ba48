"""Quantizer speed: ``ifsq_hf.FiniteScalarQuantizer`` vs vector-quantize-pytorch's ``FSQ`` vs a plain copy.

Both quantizers get the same channel-first fp32 input ``(B, 4, H, W)`` and the same levels, and both return codes
and int64-able indices. Rows:

* ``ours (ifsq)`` — the iFSQ bound ``2 * sigmoid(1.6 z) - 1`` (odd levels only);
* ``ours (tanh)`` — the vanilla FSQ bound, bit-compatible with vector-quantize-pytorch's ``FSQ.bound``;
* ``vqp FSQ`` — ``vector_quantize_pytorch.FSQ(levels)`` (tanh bound, the reference implementation);
* ``copy floor`` — ``x.clone()`` for forward (allocate, read and write the input's bytes once, as any quantizer
  must for its output) and two such copies for forward+backward: the least any elementwise quantizer can cost.
  The ratio columns ``/ floor`` divide by it;
* ``copy_ (prealloc.)`` — ``out.copy_(x)`` into a reused buffer: the bare memory traffic without the allocation
  (fresh large buffers cost page faults that a reused one does not), shown for reference;
* ``ours (ifsq, compiled)``, ``ours (tanh, compiled)`` with ``--compile`` — ``torch.compile(quantizer)`` (one fused
  kernel; the first call compiles).

Forward runs under ``torch.no_grad()`` (tokenization); forward+backward runs ``codes.backward(grad)`` with a fixed
upstream gradient. Every callable of one size (all implementations and the copy) is warmed up, then timed in
interleaved rounds, and the best round is reported. By default the clock is the CPU time of the calling thread
with one intra-op thread (``--threads 1 --clock cpu``): on a shared machine, time spent descheduled while other
processes run is not counted. Use ``--threads N --clock wall`` on a quiet machine for elapsed time. Before
timing, the script checks that ours (tanh) and vqp FSQ give the same codes and indices on the benchmark input.

    python benchmarks/bench_quantizer.py                   # sizes 64K .. 64M elements
    python benchmarks/bench_quantizer.py --sizes 1M 16M --compile
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ifsq_hf.quantization import FiniteScalarQuantizer

SIZE_SHAPES = {  # elements -> (B, C, H, W), C = 4 as in the iFSQ tokenizer
    "64K": (4, 4, 64, 64),
    "1M": (16, 4, 128, 128),
    "4M": (16, 4, 256, 256),
    "16M": (64, 4, 256, 256),
    "64M": (64, 4, 512, 512),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZE_SHAPES), choices=list(SIZE_SHAPES))
    p.add_argument("--levels", nargs="+", default=["17,17,17,17", "8,5,5,5"], help="comma-separated level lists")
    p.add_argument("--compile", action="store_true", help="add a torch.compile-d row of our quantizer")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (the best round is reported)")
    p.add_argument("--max_seconds", type=float, default=60.0, help="stop adding rounds (after 3) past this time")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: CPU time of the calling thread (needs --threads 1; immune to other processes taking the cores); "
        "wall: elapsed time",
    )
    return p.parse_args(argv)


def time_interleaved(fns: dict, rounds: int, max_seconds: float, clock=time.perf_counter) -> dict[str, float]:
    """Best time of each callable over ``rounds`` interleaved rounds (after one warm-up call each).

    Interleaving and taking the minimum keep the comparison fair on a shared machine: a burst of load from other
    processes hits one round of every implementation rather than all rounds of one.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            best[name] = min(best[name], clock() - t0)
        if r >= 2 and time.perf_counter() - start > max_seconds:
            break
    return best


def make_vqp(levels):
    from vector_quantize_pytorch import FSQ

    return FSQ(levels=levels)


def check_agreement(ours: FiniteScalarQuantizer, vqp, x: torch.Tensor) -> tuple[float, float]:
    """Max code difference and index agreement between ours (tanh) and vqp FSQ on ``x``."""
    with torch.no_grad():
        a = ours(x)
        codes, indices = vqp(x)
    return float((a.codes - codes).abs().max()), float((a.indices == indices.long()).double().mean())


def cell_fns(quantize, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    """Forward (no grad) and forward+backward closures of one implementation."""

    def fwd():
        with torch.no_grad():
            quantize(x)

    xg = x.detach().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        quantize(xg).backward(grad)

    return fwd, fwd_bwd


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clock == "cpu" and args.threads != 1:
        raise ValueError("--clock cpu measures the calling thread only; use it with --threads 1 or use --clock wall.")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock, fp32, channel-first (B, 4, H, W)"
    )
    header = (
        f"| {'levels':<11} | {'elements':>8} | {'impl':<22} | {'fwd ms':>9} | {'fwd+bwd ms':>10} "
        f"| {'fwd vs vqp':>10} | {'f+b vs vqp':>10} | {'fwd / floor':>11} | {'f+b / floor':>11} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    results = []
    for levels_str in args.levels:
        levels = [int(v) for v in levels_str.split(",")]
        impls = {}
        if all(level % 2 for level in levels):
            ifsq = FiniteScalarQuantizer(levels, bound="ifsq")
            impls["ours (ifsq)"] = lambda z, q=ifsq: q(z).codes  # codes and indices, like vqp
        tanh = FiniteScalarQuantizer(levels, bound="tanh")
        impls["ours (tanh)"] = lambda z, q=tanh: q(z).codes
        if args.compile:
            if "ours (ifsq)" in impls:
                compiled_ifsq = torch.compile(FiniteScalarQuantizer(levels, bound="ifsq"), dynamic=True)
                impls["ours (ifsq, compiled)"] = lambda z, q=compiled_ifsq: q(z).codes
            compiled = torch.compile(FiniteScalarQuantizer(levels, bound="tanh"), dynamic=True)
            impls["ours (tanh, compiled)"] = lambda z, q=compiled: q(z).codes
        vqp = make_vqp(levels)
        impls["vqp FSQ"] = lambda z, q=vqp: q(z)[0]

        for size in args.sizes:
            shape = SIZE_SHAPES[size]
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=gen) * 1.5
            grad = torch.randn(shape, generator=gen)
            diff, agree = check_agreement(tanh, vqp, x)
            if diff > 1e-6 or agree < 1.0:
                raise RuntimeError(f"ours (tanh) and vqp FSQ disagree: max code diff {diff}, index agreement {agree}")

            out = torch.empty_like(x)
            fns = {"floor": lambda x=x: x.clone(), "prealloc": lambda out=out, x=x: out.copy_(x)}
            for name, fn in impls.items():
                fns[(name, "fwd")], fns[(name, "fwd_bwd")] = cell_fns(fn, x, grad)
            best = time_interleaved(fns, args.rounds, args.max_seconds, clock)
            floor_fwd = best["floor"]
            floor_fb = 2 * floor_fwd
            cells = {name: (best[(name, "fwd")], best[(name, "fwd_bwd")]) for name in impls}
            ref_fwd, ref_fb = cells["vqp FSQ"]
            for name, (fwd, fb) in cells.items():
                row = {
                    "levels": levels_str,
                    "elements": x.numel(),
                    "impl": name,
                    "fwd_ms": fwd * 1e3,
                    "fwd_bwd_ms": fb * 1e3,
                    "fwd_speedup_vs_vqp": ref_fwd / fwd,
                    "fwd_bwd_speedup_vs_vqp": ref_fb / fb,
                    "fwd_over_floor": fwd / floor_fwd,
                    "fwd_bwd_over_floor": fb / floor_fb,
                }
                results.append(row)
                print(
                    f"| {levels_str:<11} | {size:>8} | {name:<22} | {fwd * 1e3:9.2f} | {fb * 1e3:10.2f} "
                    f"| {ref_fwd / fwd:9.2f}x | {ref_fb / fb:9.2f}x | {fwd / floor_fwd:10.2f}x | {fb / floor_fb:10.2f}x |"
                )
            print(
                f"| {levels_str:<11} | {size:>8} | {'copy floor':<22} | {floor_fwd * 1e3:9.2f} | {floor_fb * 1e3:10.2f} "
                f"| {'':>10} | {'':>10} | {'1.00x':>11} | {'1.00x':>11} |"
            )
            pre = best["prealloc"]
            print(
                f"| {levels_str:<11} | {size:>8} | {'copy_ (prealloc.)':<22} | {pre * 1e3:9.2f} | {2 * pre * 1e3:10.2f} "
                f"| {'':>10} | {'':>10} | {pre / floor_fwd:10.2f}x | {pre / floor_fwd:10.2f}x |",
                flush=True,
            )
    return results


if __name__ == "__main__":
    main()
