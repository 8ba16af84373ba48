#!/usr/bin/env python
"""Encode an image dataset once with a frozen iFSQ tokenizer: continuous latents (z_q) and token indices, for
examples/train_dit.py --latents_dataset (and train_llamagen_repa.py --tokens_dataset).

    accelerate launch --num_processes 8 examples/extract_latents.py --tokenizer runs/ifsq --output_dir data/latents \\
        --resolution 256 --center_crop --train_data_dir /path/to/imagenet/train --repa_encoder facebook/dinov2-base

Shards of --shard_size images are written as they are encoded (memory stays at one batch), dealt to the processes
by index, and skipped when re-running after a kill; the manifest is written last. Every image is stored as is and
flipped; with --repa_encoder the encoder's patch features are stored too, so REPA trains without touching pixels.
For LlamaGen alone, examples/extract_tokens.py stores the indices only (a third of the bytes per image at f16).
"""

import argparse

from ifsq_hf.training.precompute import add_extraction_args, run_extraction


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_extraction_args(parser).parse_args(argv)
    dataset = run_extraction(args, columns="latents")
    print(f"{args.output_dir}: {len(dataset)} images (latents + indices)")


if __name__ == "__main__":
    main()
