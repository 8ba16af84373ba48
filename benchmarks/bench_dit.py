"""Throughput of LightningDiTTransformer2DModel vs the official iFSQ/LightningDiT model and diffusers'
DiTTransformer2DModel, eager and under ``torch.compile``, and the cost of REPA.

Both models get the same width, depth, heads, patch size and token count; ours also runs its LightningDiT extras
(QK-RMSNorm, SwiGLU, 2-D RoPE, RMSNorm), which is the point of the comparison. Timings alternate between the
models (median of ``--repeats``) so that load from other processes hits both alike. Prints ratios ours / peer
(> 1 = ours slower).

    python benchmarks/bench_dit.py --preset S --patch 1 --latent 16 --batch 8 --official-src /path/to/iFSQ

``--official-src`` points at a checkout of Tencent-Hunyuan/iFSQ (loaded as in ``parity_official_dit.py``: timm
stand-ins, its ``@torch.compile`` decorators disabled so that "eager" is eager); the official model gets the same
weights as ours. ``--compile`` adds a row per model with the whole model under ``torch.compile`` (inductor).

With ``--clock cpu`` the figures are process CPU seconds (img/s per CPU-second), which keeps the comparison
meaningful on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from diffusers import DiTTransformer2DModel

from ifsq_hf.convert.dit import convert_official_dit_state_dict
from ifsq_hf.models.transformer_dit import DIT_PRESETS, LightningDiTTransformer2DModel
from ifsq_hf.training.flow_matching import flow_matching_loss, prepare_flow_matching_inputs
from ifsq_hf.training.repa import load_repa_encoder, repa_projection_loss

CLOCK = time.perf_counter


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        out.append(CLOCK() - start)
    return out


def load_official(src: str, preset: str, patch: int, latent: int, ours: LightningDiTTransformer2DModel):
    """The official ``dit/models/dit.py`` DiT at our config, holding our weights (no projector)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from parity_official_dit import load_official_dit

    real_compile = torch.compile
    try:
        official_dit = load_official_dit(src)  # replaces torch.compile by a no-op while the module imports
    finally:
        torch.compile = real_compile
    cfg = DIT_PRESETS[preset]
    off = official_dit(
        input_size=latent,
        patch_size=patch,
        in_channels=4,
        hidden_size=cfg["hidden_size"],
        depth=cfg["num_layers"],
        num_heads=cfg["num_attention_heads"],
        num_classes=1000,
        use_qknorm=True,
        use_swiglu=True,
        use_rope=True,
        use_rmsnorm=True,
        z_dims=None,
    )  # fmt: skip  (z_dims=None: no projector, like ours without repa_feature_dim)
    missing, unexpected = off.load_state_dict(convert_official_dit_state_dict(ours.state_dict()), strict=False)
    extra = [k for k in missing if k != "pos_embed" and not k.startswith("feat_rope.")]
    if extra or unexpected:
        raise RuntimeError(f"official model does not take our weights: missing {extra}, unexpected {unexpected}")
    return off


def paired(args, models: dict, dev: torch.device) -> None:
    """Eager forward + backward of ours and the official model, alternating, on identical perturbed weights."""
    ours, off = models["ours"], models["official"]
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    off.load_state_dict(convert_official_dit_state_dict(ours.state_dict()), strict=False)
    b = args.batch
    x, t = torch.randn(b, 4, args.latent, args.latent, device=dev), torch.rand(b, device=dev)
    y = torch.randint(0, 1000, (b,), device=dev)
    with torch.no_grad():
        diff = (ours.eval()(x, t, y).sample - off.eval()(x, t, y)[0]).abs().max().item()

    def step(name):
        module = ours if name == "ours" else off
        module.train()
        out = module(x, t, y)
        (out.sample if name == "ours" else out[0]).pow(2).mean().backward()
        module.zero_grad(set_to_none=True)

    times = {"ours": [], "official": []}
    for name in times:
        timed(lambda n=name: step(n), args.warmup, 0)
    for _ in range(args.repeats):
        for name in times:
            times[name] += timed(lambda n=name: step(n), 0, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"paired eager fwd+bwd, DiT-{args.preset}/{args.patch}, batch {b}, {args.clock} clock, median of "
        f"{args.repeats}: ours {med['ours']:.3f} s, official {med['official']:.3f} s, speed ours/official "
        f"{med['official'] / med['ours']:.2f}x; max |output difference| {diff:.3g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="S", choices=[k for k in DIT_PRESETS if k != "tiny"])
    parser.add_argument("--patch", type=int, default=1)
    parser.add_argument("--latent", type=int, default=16, help="latent side (16 = 256 px through an f16 tokenizer)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--official-src", default=None, help="checkout of Tencent-Hunyuan/iFSQ (adds 'official')")
    parser.add_argument("--no-diffusers", action="store_true", help="skip diffusers' DiTTransformer2DModel")
    parser.add_argument("--compile", action="store_true", help="also time each model under torch.compile")
    parser.add_argument("--no-repa", action="store_true", help="skip the REPA overhead measurement")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="only a paired eager A/B of ours vs official: forward + backward, weights perturbed (non-zero adaLN)",
    )
    parser.add_argument("--repa-encoder", default="efficientnet-lite0-s16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="'cpu' = process CPU time (less sensitive to other processes on a shared CPU machine)",
    )
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.device != "cpu":
            raise ValueError("--clock cpu only makes sense with --device cpu.")
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)

    cfg = DIT_PRESETS[args.preset]
    heads, width, depth = cfg["num_attention_heads"], cfg["hidden_size"], cfg["num_layers"]
    ours = LightningDiTTransformer2DModel.from_preset(
        args.preset, patch_size=args.patch, sample_size=args.latent, repa_feature_dim=None
    )
    models: dict[str, torch.nn.Module] = {"ours": ours}
    if args.official_src:
        models["official"] = load_official(args.official_src, args.preset, args.patch, args.latent, ours)
    if not args.no_diffusers:
        models["diffusers DiT"] = DiTTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=width // heads,
            in_channels=4,
            out_channels=4,
            num_layers=depth,
            sample_size=args.latent,
            patch_size=args.patch,
            num_embeds_ada_norm=1000,
        )
    models = {k: m.to(dev) for k, m in models.items()}
    if args.paired:
        return paired(args, models, dev)
    params = {k: sum(p.numel() for p in m.parameters() if p.requires_grad) / 1e6 for k, m in models.items()}

    b = args.batch
    x = torch.randn(b, 4, args.latent, args.latent, device=dev)
    y = torch.randint(0, 1000, (b,), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def call(name, module, x_t, t):
        if name == "diffusers DiT":
            return module(x_t, timestep=t * 1000, class_labels=y).sample
        if name == "official":
            return module(x_t, t, y)[0]
        return module(x_t, t, y).sample

    def make_steps(name, module):
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

        def train():
            module.train()
            x_t, t, target = prepare_flow_matching_inputs(x)
            flow_matching_loss(call(name, module, x_t, t), target).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()

        @torch.no_grad()
        def sample():
            module.eval()
            call(name, module, x, torch.full((b,), 0.5, device=dev))
            sync()

        return train, sample

    runs = {}
    for name, module in models.items():
        runs[(name, "eager")] = make_steps(name, module)
        if args.compile:
            runs[(name, "compiled")] = make_steps(name, torch.compile(module))
    results: dict = {(key, kind): [] for key in runs for kind in ("train", "sample")}
    compile_s = {}
    for key, (train, sample) in runs.items():  # warm-up (and compilation) first, outside the timed loop
        start = time.perf_counter()
        for _ in range(max(args.warmup, 1 if key[1] == "compiled" else 0)):
            train()
            sample()
        compile_s[key] = time.perf_counter() - start
    for _ in range(args.repeats):  # alternate so background load affects every model alike
        for key, (train, sample) in runs.items():
            results[(key, "train")] += timed(train, 0, 1)
            results[(key, "sample")] += timed(sample, 0, 1)
    med = {k: statistics.median(v) for k, v in results.items()}

    tokens = (args.latent // args.patch) ** 2
    unit = "CPU-s" if args.clock == "cpu" else "s"
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.device}, torch {torch.__version__}, "
        f"{args.threads} threads, clock {args.clock}, median of {args.repeats}"
    )
    print(
        f"config: DiT-{args.preset}/{args.patch} (width {width}, depth {depth}, heads {heads}), {tokens} tokens, "
        f"batch {b}; trainable params (M): " + ", ".join(f"{k} {v:.2f}" for k, v in params.items())
    )
    ref = ("official", "eager") if ("official", "eager") in runs else ("diffusers DiT", "eager")
    print(
        f"| model | mode | train step ({unit}) | img/{unit} | ratio {ref[0]} {ref[1]} / this | "
        f"sampling fwd ({unit}) | ratio | warm-up s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key in runs:
        tr, sa = med[(key, "train")], med[(key, "sample")]
        r_tr = med[(ref, "train")] / tr if (ref, "train") in med else float("nan")
        r_sa = med[(ref, "sample")] / sa if (ref, "sample") in med else float("nan")
        print(
            f"| {key[0]} | {key[1]} | {tr:.3f} | {b / tr:.2f} | {r_tr:.2f} | {sa:.3f} | {r_sa:.2f} | "
            f"{compile_s[key]:.0f} |"
        )
    if args.compile and args.official_src:
        for mode in ("eager", "compiled"):
            r = med[(("official", mode), "train")] / med[(("ours", mode), "train")]
            print(f"training step speed, ours vs official ({mode}): {r:.2f}x (>= 1 = ours as fast or faster)")

    if args.no_repa:
        return
    # REPA overhead: the same training step plus encoder forward on 16x-upsampled images, projector and loss.
    encoder = load_repa_encoder(args.repa_encoder).to(dev)
    repa_model = LightningDiTTransformer2DModel.from_preset(
        args.preset, patch_size=args.patch, sample_size=args.latent, repa_feature_dim=encoder.feature_dim
    ).to(dev)
    repa_model.train()
    plain_model = LightningDiTTransformer2DModel.from_preset(
        args.preset, patch_size=args.patch, sample_size=args.latent
    ).to(dev)
    plain_model.train()
    images = torch.rand(b, 3, args.latent * 16, args.latent * 16, device=dev) * 2 - 1
    opt_repa = torch.optim.AdamW(repa_model.parameters(), lr=1e-4)
    opt_plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-4)

    def train_plain():
        x_t, t, target = prepare_flow_matching_inputs(x)
        flow_matching_loss(plain_model(x_t, t, y).sample, target).loss.backward()
        opt_plain.step()
        opt_plain.zero_grad(set_to_none=True)
        sync()

    def train_repa():
        x_t, t, target = prepare_flow_matching_inputs(x)
        feats = encoder(images)
        out = repa_model(x_t, t, y, return_repa_features=True)
        loss = flow_matching_loss(out.sample, target).loss + 0.5 * repa_projection_loss(out.repa_features, feats)
        loss.backward()
        opt_repa.step()
        opt_repa.zero_grad(set_to_none=True)
        sync()

    plain_t, repa_t = [], []
    for i in range(args.repeats):
        plain_t += timed(train_plain, args.warmup if i == 0 else 0, 1)
        repa_t += timed(train_repa, args.warmup if i == 0 else 0, 1)
    med_plain, med_repa = statistics.median(plain_t), statistics.median(repa_t)
    print(
        f"REPA ({encoder.name}, {args.latent * 16}px images): train step {med_repa:.3f} s vs {med_plain:.3f} s "
        f"without, overhead ratio {med_repa / med_plain:.2f}"
    )


if __name__ == "__main__":
    main()
