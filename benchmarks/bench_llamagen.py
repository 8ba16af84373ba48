"""LlamaGen generation speed: a full 16x16-token image with CFG, no cache vs dynamic vs static KV cache.

Prints tokens/s (image tokens per second, CFG counted once), ms per decoding step and images/s per mode and batch
size, plus the speed-up over the no-cache reference and over the official loop. With `--official-src DIR` (a folder
holding the official iFSQ `llamagen/models/llamagen.py` and `generate.py`, e.g. from a clone of
Tencent-Hunyuan/iFSQ) the official gpt-fast-style loop runs on the same weights in the same process. `--compile`
adds a whole-decoding-step `torch.compile(fullgraph=True)` run (transformers' `compile_config`, static cache).
On CPU the clock is the process CPU time (`--clock cpu`, the default there), which is robust to other jobs.

    python benchmarks/bench_llamagen.py --preset cpu-small --batch-sizes 1 8
    python benchmarks/bench_llamagen.py --preset B --threads 1 --compile --official-src <iFSQ>/llamagen/models
    python benchmarks/bench_llamagen.py --preset B --device cuda --dtype bfloat16 --compile
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time

import torch
from transformers import CompileConfig

from ifsq_hf.convert.llamagen import convert_llamagen_state_dict
from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration

# A CPU-sized model on the real 16x16 token grid. Its vocabulary is 17^3 (a 3-channel iFSQ tokenizer): with the
# 4-bit 17^4 = 83,521 codebook the output head and the softmax/multinomial over 83k logits dominate every step on
# CPU and hide the cache effects being measured (use --vocab-size 83521 to see that).
CPU_SMALL = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "multiple_of": 64,
    "vocab_size": 4913,
}


def build(preset: str, device: str, dtype: torch.dtype, **overrides) -> LlamaGenForImageGeneration:
    if preset == "cpu-small":
        cfg = LlamaGenConfig(**{**CPU_SMALL, **overrides})
    else:
        cfg = LlamaGenConfig.from_preset(preset, **overrides)
    torch.manual_seed(0)
    model = LlamaGenForImageGeneration(cfg)
    torch.nn.init.normal_(model.lm_head.weight, std=0.02)  # zero-init heads would make sampling degenerate
    return model.to(device=device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, warmup: bool = True, clock=time.perf_counter) -> float:
    if warmup:  # allocation, kernels selection, compilation
        fn()
        sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync(device)
        best = min(best, clock() - t0)
    return best


def official_runner(src: str, model: LlamaGenForImageGeneration, device: str, dtype: torch.dtype):
    """Build the official Transformer with the same weights and return its generate loop (greedy-free sampling)."""
    sys.path.insert(0, src)
    official = importlib.import_module("llamagen")
    generate_mod = importlib.import_module("generate")
    c = model.config
    args = official.ModelArgs(
        dim=c.hidden_size,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        multiple_of=c.multiple_of,
        vocab_size=c.vocab_size,
        num_classes=c.num_classes,
        block_size=c.num_image_tokens,
    )
    ref = official.Transformer(args)
    ours = model.state_dict()
    mapping = convert_llamagen_state_dict({k: k for k in ref.state_dict()})  # ours -> official key names
    ref.load_state_dict({off: ours[new] for new, off in mapping.items()})
    ref = ref.to(device=device, dtype=dtype).eval()

    def run(labels, scale):
        with torch.no_grad():
            return generate_mod.generate(ref, labels, c.num_image_tokens, cfg_scale=scale, temperature=1.0, top_k=0)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-small", help="cpu-small, B, L, XL, XXL, 3B")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--modes", nargs="+", default=["no-cache", "dynamic", "static"])
    p.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocabulary")
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time a whole-decoding-step torch.compile(fullgraph=True) with the static cache",
    )
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto", help="auto = CPU time on CPU")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--no-cache-max-batch", type=int, default=1, help="skip the quadratic no-cache reference above this batch"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--official-src", default=None, help="folder with the official llamagen.py and generate.py")
    p.add_argument("--json", default=None, help="write the rows to this file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    use_cpu_clock = a.clock == "cpu" or (a.clock == "auto" and a.device == "cpu")
    clock = time.process_time if use_cpu_clock else time.perf_counter
    model = build(a.preset, a.device, dtype, **({"vocab_size": a.vocab_size} if a.vocab_size else {}))
    n_tok = model.config.num_image_tokens
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"# {a.preset}: {params:.1f}M params, vocab {model.config.vocab_size}, {n_tok} tokens/image, "
        f"CFG {a.guidance_scale}, {a.device} {a.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {'CPU' if use_cpu_clock else 'wall'} time"
    )
    modes = list(a.modes)
    if a.compile:
        modes.append("static+compile")
    runners = {}
    if a.official_src:
        runners["official"] = official_runner(a.official_src, model, a.device, dtype)
        modes.append("official")
    rows = []
    for bs in a.batch_sizes:
        labels = torch.arange(bs, device=a.device) % model.config.num_classes
        for mode in modes:
            if mode == "no-cache" and bs > a.no_cache_max_batch:
                continue
            if mode == "official":

                def fn(labels=labels):
                    runners["official"](labels, a.guidance_scale)
            else:
                kwargs = {"use_cache": mode != "no-cache"}
                if mode == "dynamic":
                    kwargs["cache_implementation"] = "dynamic"
                if mode.startswith("static"):
                    kwargs["cache_implementation"] = "static"
                if mode == "static+compile":
                    config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
                    config._compile_all_devices = True  # transformers auto-compiles on accelerators only
                    kwargs["compile_config"] = config

                def fn(labels=labels, kwargs=kwargs):
                    model.generate(class_labels=labels, guidance_scale=a.guidance_scale, seed=0, **kwargs)

            # The no-cache reference is slow and has nothing to warm up; compiled/static modes do.
            secs = timed(fn, a.device, a.repeats, warmup=mode != "no-cache", clock=clock)
            row = {
                "preset": a.preset,
                "batch": bs,
                "mode": mode,
                "seconds": round(secs, 3),
                "ms_per_step": round(1000 * secs / n_tok, 2),
                "tokens_per_s": round(bs * n_tok / secs, 1),
                "images_per_s": round(bs / secs, 3),
            }
            rows.append(row)
            print(
                f"batch {bs:2d} {mode:15s} {secs:8.3f} s  {row['ms_per_step']:7.2f} ms/step  {row['tokens_per_s']:9.1f} tok/s  "
                f"{row['images_per_s']:7.3f} img/s",
                flush=True,
            )
    for bs in a.batch_sizes:  # speed-ups against the no-cache reference, whatever order the modes ran in
        group = [r for r in rows if r["batch"] == bs]
        ref = next((r["seconds"] for r in group if r["mode"] == "no-cache"), None)
        for r in group:
            r["speedup_vs_no_cache"] = round(ref / r["seconds"], 2) if ref else None
        print(f"batch {bs}: " + ", ".join(f"{r['mode']} x{r['speedup_vs_no_cache']}" for r in group if ref))
        official = next((r["seconds"] for r in group if r["mode"] == "official"), None)
        for r in group:
            r["speedup_vs_official"] = round(official / r["seconds"], 2) if official else None
        if official:
            print(f"batch {bs} vs official: " + ", ".join(f"{r['mode']} x{r['speedup_vs_official']}" for r in group))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
