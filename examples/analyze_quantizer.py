"""Reproduce the iFSQ activation study: how the bound's slope spreads activations over the quantization bins.

For a sweep of slopes ``alpha`` in ``2 * sigmoid(alpha * z) - 1`` (2.0 is FSQ's tanh, 1.6 is iFSQ) it measures, with
``ifsq_hf.analysis``:

* the KS distance and the relative density RMSE between the bounded values and ``U(-1, 1)``;
* usage and entropy of the ``L`` bins after quantization;

for Gaussian activations of several scales (closed form) and for real encoder activations: an iFSQ tokenizer's
``encode_pre_quant`` on the 12 photos bundled with scikit-image/scikit-learn/matplotlib. By default the tokenizer
is the *untrained* ``tiny_f8_d4`` preset (pass ``--tokenizer DIR`` for a trained one), so the "real" rows describe
a random encoder; they are reported both raw and standardised per channel.

    python examples/analyze_quantizer.py --output_dir runs/analysis

Writes ``alpha_sweep.png``, ``results.json`` and ``results.md`` to ``--output_dir``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ifsq_hf.analysis import alpha_sweep, best_alpha, bound, gaussian_bound_metrics
from ifsq_hf.data import bundled_photos
from ifsq_hf.models.autoencoder_ifsq import PRESETS, iFSQAutoencoder

IFSQ_ALPHA, TANH_ALPHA = 1.6, 2.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", type=str, required=True)
    p.add_argument("--alpha_min", type=float, default=0.5)
    p.add_argument("--alpha_max", type=float, default=3.0)
    p.add_argument("--alpha_step", type=float, default=0.05)
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="std of the Gaussian inputs")
    p.add_argument("--levels", type=int, default=17, help="bins per dimension (odd)")
    p.add_argument("--bins", type=int, default=100, help="histogram bins for the density RMSE")
    p.add_argument(
        "--tokenizer",
        type=str,
        default="tiny_f8_d4",
        help="a preset name (randomly initialised) or a directory saved with save_pretrained (trained)",
    )
    p.add_argument("--resolution", type=int, default=128, help="photos are centre-cropped and resized to this")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_tokenizer(name: str, seed: int) -> tuple[iFSQAutoencoder, bool]:
    if name in PRESETS:
        torch.manual_seed(seed)
        return iFSQAutoencoder.from_preset(name).eval(), False
    return iFSQAutoencoder.from_pretrained(name).eval(), True


def photo_batch(resolution: int) -> torch.Tensor:
    """All bundled photos, centre-cropped to a square and resized, as ``(N, 3, R, R)`` in ``[-1, 1]``."""
    out = []
    for img in bundled_photos().values():
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = Image.fromarray(img[top : top + s, left : left + s]).resize((resolution, resolution), Image.BICUBIC)
        out.append(torch.from_numpy(np.array(crop)).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1


def summarize(name: str, rows: list[dict]) -> dict:
    at = {round(r["alpha"], 4): r for r in rows}

    def pick(alpha):
        return at.get(round(alpha, 4)) or min(rows, key=lambda r: abs(r["alpha"] - alpha))

    ifsq, tanh = pick(IFSQ_ALPHA), pick(TANH_ALPHA)
    return {
        "input": name,
        "best_alpha_ks": best_alpha(rows, "ks_distance_to_uniform"),
        "best_alpha_density_rmse": best_alpha(rows, "density_rmse_to_uniform"),
        "best_alpha_bin_entropy": best_alpha(rows, "bin_entropy_efficiency"),
        "ks_ifsq": ifsq["ks_distance_to_uniform"],
        "ks_tanh": tanh["ks_distance_to_uniform"],
        "density_rmse_ifsq": ifsq["density_rmse_to_uniform"],
        "density_rmse_tanh": tanh["density_rmse_to_uniform"],
        "bin_efficiency_ifsq": ifsq["bin_entropy_efficiency"],
        "bin_efficiency_tanh": tanh["bin_entropy_efficiency"],
        "bin_usage_ifsq": ifsq["bin_usage"],
        "bin_usage_tanh": tanh["bin_usage"],
    }


def _fmt_alpha(alpha: float, alphas: list[float]) -> str:
    """Mark optima at the edge of the sweep: the true optimum may lie beyond it."""
    if alpha >= alphas[-1]:
        return f"≥{alpha:.2f}"
    if alpha <= alphas[0]:
        return f"≤{alpha:.2f}"
    return f"{alpha:.2f}"


def markdown_table(summaries: list[dict], alphas: list[float]) -> str:
    head = (
        "| input | best α (KS) | best α (density RMSE) | best α (bin entropy) | KS α=1.6 | KS α=2.0 (tanh) "
        "| RMSE α=1.6 | RMSE α=2.0 | bin entropy eff. α=1.6 | α=2.0 | bins used α=1.6 | α=2.0 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {s['input']} | {_fmt_alpha(s['best_alpha_ks'], alphas)} | "
        f"{_fmt_alpha(s['best_alpha_density_rmse'], alphas)} | {_fmt_alpha(s['best_alpha_bin_entropy'], alphas)} | "
        f"{s['ks_ifsq']:.4f} | {s['ks_tanh']:.4f} | "
        f"{s['density_rmse_ifsq']:.3f} | {s['density_rmse_tanh']:.3f} | {s['bin_efficiency_ifsq']:.3f} | "
        f"{s['bin_efficiency_tanh']:.3f} | {s['bin_usage_ifsq']:.2f} | {s['bin_usage_tanh']:.2f} |"
        for s in summaries
    ]
    return head + "\n".join(lines) + "\n"


def plot(path: Path, sweeps: dict[str, list[dict]], real_std: torch.Tensor, levels: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for name, rows in sweeps.items():
        alphas = [r["alpha"] for r in rows]
        axes[0, 0].plot(alphas, [r["ks_distance_to_uniform"] for r in rows], label=name)
        axes[0, 1].plot(alphas, [r["density_rmse_to_uniform"] for r in rows], label=name)
    continuous = ("continuous: KS distance to U(-1, 1)", "continuous: density RMSE (relative to uniform)")
    for ax, title in zip((axes[0, 0], axes[0, 1]), continuous):
        for a, style in ((IFSQ_ALPHA, "--"), (TANH_ALPHA, ":")):
            ax.axvline(a, color="k", linestyle=style, linewidth=1)
        ax.set_xlabel("alpha in 2·sigmoid(alpha·z) − 1   (-- iFSQ 1.6, ·· tanh 2.0)")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.legend(fontsize=8)

    # Bin frequencies for a unit Gaussian: iFSQ vs tanh.
    x = np.arange(levels)
    for offset, a in ((-0.2, IFSQ_ALPHA), (0.2, TANH_ALPHA)):
        freqs = gaussian_bound_metrics(a, 1.0, levels)["bin_frequencies"]
        axes[1, 0].bar(x + offset, freqs, width=0.4, label=f"alpha={a}")
    axes[1, 0].axhline(1 / levels, color="k", linewidth=1, label="uniform")
    axes[1, 0].set_title(f"discrete: bin frequencies, z ~ N(0, 1), L = {levels}")
    axes[1, 0].set_xlabel("bin")
    axes[1, 0].legend(fontsize=8)

    # Bounded values of the standardised real activations.
    for a in (IFSQ_ALPHA, TANH_ALPHA):
        axes[1, 1].hist(
            bound(real_std, a).numpy(), bins=50, range=(-1, 1), density=True, alpha=0.5, label=f"alpha={a}"
        )
    axes[1, 1].axhline(0.5, color="k", linewidth=1, label="uniform")
    axes[1, 1].set_title("bounded values, real activations (standardised per channel)")
    axes[1, 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.levels % 2 == 0:
        raise ValueError(f"--levels must be odd for the iFSQ bound, got {args.levels}.")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = round((args.alpha_max - args.alpha_min) / args.alpha_step) + 1
    alphas = sorted({round(args.alpha_min + i * args.alpha_step, 4) for i in range(n)} | {IFSQ_ALPHA, TANH_ALPHA})

    sweeps: dict[str, list[dict]] = {}
    for scale in args.scales:
        sweeps[f"N(0, {scale:g}²)"] = alpha_sweep(alphas, scale=scale, levels=args.levels, bins=args.bins)

    tokenizer, trained = load_tokenizer(args.tokenizer, args.seed)
    with torch.no_grad():
        pre = tokenizer.encode_pre_quant(photo_batch(args.resolution))
    channel_std = pre.std(dim=(0, 2, 3))
    channel_mean = pre.mean(dim=(0, 2, 3))
    standardised = (pre - channel_mean.view(1, -1, 1, 1)) / channel_std.view(1, -1, 1, 1)
    kind = "trained" if trained else "untrained"
    raw_name = f"real, {kind} {Path(args.tokenizer).name} (raw)"
    std_name = f"real, {kind} {Path(args.tokenizer).name} (standardised)"
    sweeps[raw_name] = alpha_sweep(alphas, pre_quant=pre, levels=args.levels, bins=args.bins)
    sweeps[std_name] = alpha_sweep(alphas, pre_quant=standardised, levels=args.levels, bins=args.bins)

    summaries = [summarize(name, rows) for name, rows in sweeps.items()]
    results = {
        "config": vars(args),
        "alphas": alphas,
        "tokenizer_trained": trained,
        "real_activations": {
            "count": pre.numel(),
            "channel_mean": channel_mean.tolist(),
            "channel_std": channel_std.tolist(),
        },
        "summary": summaries,
        "sweeps": {
            name: [{k: v for k, v in r.items() if k != "bin_frequencies"} for r in rows]
            for name, rows in sweeps.items()
        },
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    note = (
        f"Real activations: {pre.numel()} pre-quantization values of the {kind} `{args.tokenizer}` tokenizer on the "
        f"12 bundled photos at {args.resolution}px (per-channel std "
        f"{', '.join(f'{s:.3f}' for s in channel_std.tolist())}).\n"
    )
    (out_dir / "results.md").write_text(
        f"# iFSQ activation study (L = {args.levels}, alpha {alphas[0]}..{alphas[-1]})\n\n"
        + markdown_table(summaries, alphas)
        + "\n"
        + note
    )
    plot(out_dir / "alpha_sweep.png", sweeps, standardised.reshape(-1), args.levels)
    print(markdown_table(summaries, alphas))
    print(note)
    return results


if __name__ == "__main__":
    main()
