#!/usr/bin/env python
"""Encode an image dataset once with a frozen iFSQ tokenizer: token indices only, for
examples/train_llamagen_repa.py --tokens_dataset.

    accelerate launch --num_processes 8 examples/extract_tokens.py --tokenizer runs/ifsq --output_dir data/tokens \\
        --resolution 256 --center_crop --train_data_dir /path/to/imagenet/train --repa_encoder facebook/dinov2-base

Unlike extract_latents.py it does not store the continuous latents, which LlamaGen never reads: int32 indices are
the smaller part of each row (see docs/scale.md for bytes per image). Same shards, resume and multi-process rules.
"""

import argparse

from ifsq_hf.training.precompute import add_extraction_args, run_extraction


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_extraction_args(parser).parse_args(argv)
    dataset = run_extraction(args, columns="tokens")
    print(f"{args.output_dir}: {len(dataset)} images (token indices)")


if __name__ == "__main__":
    main()
