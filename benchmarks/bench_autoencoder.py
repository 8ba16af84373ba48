"""Peak CPU memory of iFSQAutoencoder vs the official ImageFSQVAEModel and diffusers' AutoencoderKL.

Each (model, mode) runs in a fresh subprocess. The figure is the growth of the process's peak resident set
(``VmHWM``, reset after building the model and the input) over its resident size then, so weights and the Python
runtime are excluded and what remains is activations, temporaries and (in training) gradients. glibc is told to
serve every allocation above 64 KiB with ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the
process at once and the resident size follows live memory instead of the allocator's free lists.

Modes: ``inference`` = encode + decode under ``torch.no_grad()``; ``train`` = forward + backward of the mean of
the reconstruction; ``train_ckpt`` = the same with gradient checkpointing (ours and diffusers'; the official model
has none). All models share the official f16 config (widths 128, 128, 256, 512, 512, two residual blocks per level,
no attention); diffusers' ``AutoencoderKL`` is built at the same widths with its mid-block attention off.

    python benchmarks/bench_autoencoder.py --official-src /path/to/iFSQ --resolution 256 --batch 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

MODELS = ("ours", "official", "diffusers AutoencoderKL")
MODES = ("inference", "train", "train_ckpt")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Reset the kernel's high-water mark of this process (``VmHWM``), so construction transients do not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(name: str, official_src: str | None) -> torch.nn.Module:
    if name == "ours":
        from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder

        return iFSQAutoencoder.from_preset("ifsq_f16_d4_4bit")
    if name == "official":
        sys.path.insert(0, os.path.join(official_src, "ifsq"))
        from src.model.fsqvae.modeling_imagefsqvae import ImageFSQVAEModel  # the official run.json config

        return ImageFSQVAEModel(
            hidden_size=128, hidden_size_mult=[1, 1, 2, 4, 4], attn_resolutions=[], z_channels=4, embed_dim=4,
            num_res_blocks=2, encoder_resnet_blocks=["ResnetBlock2D"] * 5,
            encoder_spatial_downsample=["Downsample"] * 4 + [""], decoder_resnet_blocks=["ResnetBlock2D"] * 5,
            decoder_spatial_upsample=[""] + ["Upsample"] * 4, levels=[17] * 4, do_simple_bound=True,
            act_fun="scale_sigmoid_16",
        )  # fmt: skip
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        mid_block_add_attention=False,
    )


def reconstruct(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if name == "ours":
        return model(x).sample
    if name == "official":
        return model.decode(model.encode(x).sample).sample
    return model.decode(model.encode(x).latent_dist.mode()).sample


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model, args.official_src)
    model.train(args.mode != "inference")
    if args.mode == "train_ckpt":
        if args.model == "official":
            print(json.dumps({"skipped": "the official model has no gradient checkpointing"}))
            return
        model.enable_gradient_checkpointing()
    x = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
    _reset_peak()
    base = _rss_mb()
    start = time.process_time()
    if args.mode == "inference":
        with torch.no_grad():
            out = reconstruct(args.model, model, x)
    else:
        out = reconstruct(args.model, model, x)
        out.mean().backward()
    seconds = time.process_time() - start
    assert out.shape == x.shape
    print(json.dumps({"delta_mb": _peak_mb() - base, "base_mb": base, "cpu_s": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", default=None, help="checkout of Tencent-Hunyuan/iFSQ (adds 'official')")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    models = [m for m in args.models if m != "official" or args.official_src]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    rows = {}
    for mode in args.modes:
        for name in models:
            cmd = [sys.executable, __file__, "--worker", "--model", name, "--mode", mode]
            cmd += ["--resolution", str(args.resolution), "--batch", str(args.batch), "--threads", str(args.threads)]
            if args.official_src:
                cmd += ["--official-src", args.official_src]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = (proc.stdout or "").strip().splitlines()
            if not lines:
                raise RuntimeError(f"{name} {mode} failed:\n{proc.stderr[-3000:]}")
            rows[(name, mode)] = json.loads(lines[-1])
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"{args.resolution} px, batch {args.batch}; peak RSS growth over the built model (MB), fresh process each"
    )
    print("| mode | " + " | ".join(models) + " | ours / official |")
    print("|---|" + "---|" * (len(models) + 1))
    for mode in args.modes:
        cells, ratio = [], ""
        for name in models:
            row = rows[(name, mode)]
            cells.append("n/a" if "skipped" in row else f"{row['delta_mb']:.0f} ({row['cpu_s']:.1f} CPU-s)")
        official = rows.get(("official", mode), {})
        if "delta_mb" in official and "delta_mb" in rows[("ours", mode)]:
            ratio = f"{rows[('ours', mode)]['delta_mb'] / official['delta_mb']:.2f}"
        print(f"| {mode} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
