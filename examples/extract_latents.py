#!/usr/bin/env python
"""Encode an image dataset once with a frozen iFSQ tokenizer: continuous latents (z_q) for examples/train_dit.py --latents_dataset.

    python examples/extract_latents.py --tokenizer runs/ifsq --output_dir data/latents --resolution 256 \\
        --train_data_dir /path/to/imagenet/train --repa_encoder facebook/dinov2-base

Every image is stored as is and flipped; with --repa_encoder the encoder's patch features are stored too, so REPA
trains without touching pixels. The same Arrow dataset holds latents and indices, so either script's output feeds
both trainers.
"""

import argparse

from ifsq_hf.training.precompute import add_extraction_args, run_extraction


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_extraction_args(parser).parse_args(argv)
    dataset = run_extraction(args)
    print(f"wrote {len(dataset)} images to {args.output_dir}")


if __name__ == "__main__":
    main()
