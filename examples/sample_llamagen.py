#!/usr/bin/env python
"""Sample N images per class from a LlamaGen model into PNGs and samples.npz (FID at scale).

    accelerate launch --num_processes 8 examples/sample_llamagen.py --model runs/llamagen --output_dir samples/ar \\
        --num_images_per_class 50 --guidance_scale 2.0 --top_k 0

The tokenizer defaults to the model folder's ``tokenizer/`` subfolder (where the training script saves it). Each
process samples its own share with seed ``seed * world_size + rank`` (the official sampler reuses one seed on every
GPU and duplicates samples).
"""

import argparse
import math

import torch
from accelerate import PartialState

from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.llamagen import LlamaGenForImageGeneration
from ifsq_hf.training.sampling import add_sampling_args, resolve_class_ids, run_sampling


def check_generation_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fail before loading anything on settings generate() would reject (or, for top_p > 1, ignore)."""
    if not math.isfinite(args.temperature) or args.temperature < 0:
        parser.error(f"--temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}.")
    if args.top_k < 0:
        parser.error(f"--top_k must be >= 0 (0 keeps every token), got {args.top_k}.")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top_p must be in (0, 1] (1.0 keeps every token), got {args.top_p}.")
    if not math.isfinite(args.guidance_scale):
        parser.error(f"--guidance_scale must be a finite number (1.0 = no guidance), got {args.guidance_scale}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Saved LlamaGen folder or Hub id.")
    parser.add_argument("--tokenizer", default=None, help="iFSQAutoencoder folder/id (default: <model>/tokenizer).")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="0 keeps every token.")
    parser.add_argument("--top_p", type=float, default=1.0)
    args = add_sampling_args(parser).parse_args(argv)
    check_generation_args(parser, args)
    state = PartialState()
    model = LlamaGenForImageGeneration.from_pretrained(args.model).to(state.device).eval()
    if args.tokenizer is None:
        tokenizer = iFSQAutoencoder.from_pretrained(args.model, subfolder="tokenizer")
    else:
        tokenizer = iFSQAutoencoder.from_pretrained(args.tokenizer)
    tokenizer = tokenizer.to(state.device).eval()
    class_ids = resolve_class_ids(args.classes, model.config.id2label, model.config.num_classes)

    def generate(labels: list[int], generator: torch.Generator):
        return model.generate_images(
            class_labels=torch.tensor(labels, device=state.device),
            tokenizer=tokenizer,
            guidance_scale=args.guidance_scale,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=generator,
            output_type="pil",
        )

    run_sampling(generate, class_ids, args)


if __name__ == "__main__":
    main()
