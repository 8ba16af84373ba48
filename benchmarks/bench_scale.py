#!/usr/bin/env python
"""Per-stage costs of the ImageNet recipe (docs/scale.md), measured on CPU with CPU-time clocks.

    python benchmarks/bench_scale.py [--threads 1]

Prints: bytes per image of every precomputed column at the ImageNet configuration (official f16 tokenizer at 256 px,
flips, REPA features of DINOv2-B shape in float32 and float16), the tokenizer's encode throughput, the FID
InceptionV3 throughput (ADM convention), and the k-NN precision/recall cost. Weights are random (sizes and speeds do
not depend on them); the REPA encoder is a DINOv2-B-shaped random ViT (86 M parameters).
"""

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from ifsq_hf.data import BundledPhotoDataset
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.training.precompute import encode_image_dataset


def column_bytes(folder: Path) -> dict[str, float]:
    """Arrow buffer bytes per image of each column, summed over shards."""
    totals, rows = {}, 0
    for shard in sorted(folder.glob("shard-*.arrow")):
        with pa.memory_map(str(shard)) as source:
            table = pa.ipc.open_stream(source).read_all()
        rows += table.num_rows
        for name in table.column_names:
            totals[name] = totals.get(name, 0) + table.column(name).nbytes
    return {name: total / rows for name, total in totals.items()}


def cpu_time(fn, repeats: int = 1) -> float:
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = iFSQAutoencoder.from_preset("ifsq_f16_d4_4bit").eval()
    images = BundledPhotoDataset(resolution=256, split="all", num_samples=args.images, crops="random")

    from transformers import Dinov2Config, Dinov2Model

    from ifsq_hf.training.repa import TransformersVisionEncoder

    with tempfile.TemporaryDirectory() as tmp:
        Dinov2Model(Dinov2Config(image_size=224, patch_size=14)).save_pretrained(f"{tmp}/dinov2-b")
        repa = TransformersVisionEncoder.from_pretrained(f"{tmp}/dinov2-b").eval()
        for dtype in ("float32", "float16"):
            out = Path(tmp) / f"lat-{dtype}"
            encode_image_dataset(tokenizer, images, out, batch_size=4, shard_size=4, repa_encoder=repa,
                                 repa_features_dtype=dtype)  # fmt: skip
            sizes = column_bytes(out)
            disk = sum(p.stat().st_size for p in out.glob("shard-*.arrow")) / args.images
            print(f"columns, REPA {dtype}: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items()))
            print(f"  file bytes per image (with flips): {disk / 1024:.1f} KiB; x 1,281,167 ImageNet images = "
                  f"{disk * 1_281_167 / 1024**3:.0f} GiB")  # fmt: skip
        out = Path(tmp) / "tok"
        encode_image_dataset(tokenizer, images, out, columns="tokens", batch_size=4, shard_size=4)
        disk = sum(p.stat().st_size for p in out.glob("shard-*.arrow")) / args.images
        print(f"tokens only, no REPA: {disk / 1024:.2f} KiB per image = {disk * 1_281_167 / 1024**3:.1f} GiB")

        x = torch.stack([images[i]["pixel_values"] for i in range(4)])
        with torch.no_grad():
            t = cpu_time(lambda: tokenizer.encode(x))
            print(f"f16 tokenizer encode, 256 px: {t / 4 * 1000:.0f} ms CPU per image ({args.threads} thread(s))")
            t = cpu_time(lambda: repa(x))
            print(f"DINOv2-B-shaped REPA encoder, 224 px: {t / 4 * 1000:.0f} ms CPU per image")

    from ifsq_hf.metrics.fid import InceptionV3FeatureExtractor, precision_recall

    inception = InceptionV3FeatureExtractor()
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    t = cpu_time(lambda: inception(u8))
    print(f"FID InceptionV3 (ADM convention), 256 -> 299 px: {t / 4 * 1000:.0f} ms CPU per image")
    feats = torch.randn(5000, 2048)
    t = cpu_time(lambda: precision_recall(feats, feats + 0.1))
    print(f"precision/recall, 5k x 5k, 2048-d: {t:.1f} s CPU (quadratic: 50k x 50k ~ {t * 100 / 60:.0f} min CPU)")


if __name__ == "__main__":
    main()
