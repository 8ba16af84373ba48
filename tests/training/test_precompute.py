"""Streaming precompute: bounded memory, shards + manifest, tokens-only output, refusal to mix settings."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ifsq_hf.data import BundledPhotoDataset
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.training.precompute import PrecomputedLatentDataset, encode_image_dataset

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow  # about 10 s of CPU in a fresh process
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssAnon from /proc (Linux)")
def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    # A fresh process encodes 250 (warm-up), 500 and 2,000 64-px images (12 KB of latents + indices per image with
    # flips) and samples its anonymous RSS every 5 ms (file-backed pages of the memory-mapped shards are not
    # counted: the OS drops them at will). Keeping rows in Python lists (the previous implementation) grew this
    # peak by 95 MB from 500 to 2,000 images; streaming shards keeps it flat (+-10 MB allocator noise).
    code = textwrap.dedent(
        f"""
        import threading, time, torch
        torch.set_num_threads(1)
        from ifsq_hf.data import BundledPhotoDataset
        from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
        from ifsq_hf.training.precompute import encode_image_dataset

        def anon_kb():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon:"))

        tok = iFSQAutoencoder.from_preset("test_f4_d4")
        for n in (250, 500, 2000):
            ds = BundledPhotoDataset(resolution=64, split="all", num_samples=n, crops="random", flip=False)
            peak, done = [anon_kb()], threading.Event()
            def watch():
                while not done.wait(0.005):
                    peak.append(anon_kb())
            watcher = threading.Thread(target=watch)
            watcher.start()
            data = encode_image_dataset(tok, ds, {str(tmp_path)!r} + f"/{{n}}", batch_size=50, shard_size=250)
            done.set()
            watcher.join()
            assert len(data) == n
            print(n, max(peak + [anon_kb()]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = dict(line.split() for line in proc.stdout.splitlines() if line.split()[0] in ("500", "2000"))
    growth_mb = (int(peaks["2000"]) - int(peaks["500"])) / 1024
    assert growth_mb < 24, f"peak anonymous RSS grew by {growth_mb:.1f} MB from 500 to 2,000 images"
    assert len(list((tmp_path / "2000").glob("shard-*.arrow"))) == 8


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return iFSQAutoencoder.from_preset("test_f4_d4")


def test_shards_manifest_and_training_items(tokenizer, tmp_path):
    ds = BundledPhotoDataset(resolution=16, split="all", num_samples=10, crops="random")
    encode_image_dataset(tokenizer, ds, tmp_path / "lat", batch_size=4, shard_size=4, id2label=ds.id2label)
    meta = json.loads((tmp_path / "lat" / "ifsq_precomputed.json").read_text())
    assert [s["num_images"] for s in meta["shards"]] == [4, 4, 2] and meta["num_images"] == 10
    assert meta["latent_shape"] == [4, 4, 4] and meta["columns"] == "latents"
    latents = PrecomputedLatentDataset(tmp_path / "lat", kind="latents", random_flip=False)
    tokens = PrecomputedLatentDataset(tmp_path / "lat", kind="image_tokens", random_flip=False)
    x = torch.stack([ds[i]["pixel_values"] for i in range(10)])
    enc = tokenizer.encode(x)
    assert torch.allclose(torch.stack([latents[i]["latents"] for i in range(10)]), enc.latent, atol=1e-6)
    assert torch.equal(torch.stack([tokens[i]["image_tokens"] for i in range(10)]), enc.indices)
    assert tokens[3]["labels"].item() == ds[3]["labels"]

    encode_image_dataset(tokenizer, ds, tmp_path / "tok", columns="tokens", batch_size=4, shard_size=4)
    only = PrecomputedLatentDataset(tmp_path / "tok", kind="image_tokens", random_flip=False)
    assert "latent" not in only.data.column_names and torch.equal(only[9]["image_tokens"], enc.indices[9])
    with pytest.raises(ValueError, match=r"extract_latents\.py"):
        PrecomputedLatentDataset(tmp_path / "tok", kind="latents")
    with pytest.raises(ValueError, match="other settings"):
        encode_image_dataset(tokenizer, ds, tmp_path / "tok", columns="tokens", batch_size=4, shard_size=5)
    np.testing.assert_array_equal(only.data[:2]["indices"].numpy(), enc.indices[:2].numpy())
