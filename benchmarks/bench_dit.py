"""Throughput of LightningDiTTransformer2DModel vs diffusers' DiTTransformer2DModel, and the cost of REPA.

Both models get the same width, depth, heads, patch size and token count; ours also runs its LightningDiT extras
(QK-RMSNorm, SwiGLU, 2-D RoPE, RMSNorm), which is the point of the comparison. Timings alternate between the
models (median of ``--repeats``) so that load from other processes hits both alike. Prints ratios ours / peer
(> 1 = ours slower).

    python benchmarks/bench_dit.py --preset S --patch 1 --latent 16 --batch 8

With ``--clock cpu`` the figures are process CPU seconds (img/s per CPU-second), which keeps the comparison
meaningful on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from diffusers import DiTTransformer2DModel

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="S", choices=[k for k in DIT_PRESETS if k != "tiny"])
    parser.add_argument("--patch", type=int, default=1)
    parser.add_argument("--latent", type=int, default=16, help="latent side (16 = 256 px through an f16 tokenizer)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
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
    ).to(dev)
    peer = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=4,
        out_channels=4,
        num_layers=depth,
        sample_size=args.latent,
        patch_size=args.patch,
        num_embeds_ada_norm=1000,
    ).to(dev)
    n_ours = sum(p.numel() for p in ours.parameters()) / 1e6
    n_peer = sum(p.numel() for p in peer.parameters()) / 1e6

    b = args.batch
    x = torch.randn(b, 4, args.latent, args.latent, device=dev)
    y = torch.randint(0, 1000, (b,), device=dev)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_ours():
        x_t, t, target = prepare_flow_matching_inputs(x)
        loss = flow_matching_loss(ours(x_t, t, y).sample, target).loss
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        sync()

    def train_peer():
        x_t, t, target = prepare_flow_matching_inputs(x)
        loss = flow_matching_loss(peer(x_t, timestep=t * 1000, class_labels=y).sample, target).loss
        loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)
        sync()

    @torch.no_grad()
    def sample_ours():
        ours.eval()(x, torch.full((b,), 0.5, device=dev), y)
        sync()

    @torch.no_grad()
    def sample_peer():
        peer.eval()(x, timestep=torch.full((b,), 500.0, device=dev), class_labels=y)
        sync()

    results: dict[str, list[float]] = {k: [] for k in ("train_ours", "train_peer", "sample_ours", "sample_peer")}
    for _ in range(args.repeats):  # alternate so background load affects both sides alike
        ours.train(), peer.train()
        results["train_ours"] += timed(train_ours, args.warmup if not results["train_ours"] else 0, 1)
        results["train_peer"] += timed(train_peer, args.warmup if not results["train_peer"] else 0, 1)
        results["sample_ours"] += timed(sample_ours, args.warmup if not results["sample_ours"] else 0, 1)
        results["sample_peer"] += timed(sample_peer, args.warmup if not results["sample_peer"] else 0, 1)
    med = {k: statistics.median(v) for k, v in results.items()}

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

    tokens = (args.latent // args.patch) ** 2
    print(
        f"machine: {platform.processor() or platform.machine()}, {args.device}, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    print(
        f"config: DiT-{args.preset}/{args.patch} (width {width}, depth {depth}, heads {heads}), {tokens} tokens, "
        f"batch {b}; params ours {n_ours:.2f} M, diffusers DiT {n_peer:.2f} M"
    )
    print(
        f"train step (fwd+bwd+AdamW): ours {b / med['train_ours']:.2f} img/s, diffusers DiT "
        f"{b / med['train_peer']:.2f} img/s, time ratio ours/peer {med['train_ours'] / med['train_peer']:.2f}"
    )
    print(
        f"sampling forward (no grad): ours {b / med['sample_ours']:.2f} img/s, diffusers DiT "
        f"{b / med['sample_peer']:.2f} img/s, time ratio ours/peer {med['sample_ours'] / med['sample_peer']:.2f}"
    )
    print(
        f"REPA ({encoder.name}, {args.latent * 16}px images): train step {med_repa:.3f} s vs {med_plain:.3f} s "
        f"without, overhead ratio {med_repa / med_plain:.2f}"
    )


if __name__ == "__main__":
    main()
