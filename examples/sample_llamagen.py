#!/usr/bin/env python
"""Sample N images per class from a LlamaGen model into PNGs and samples.npz (FID at scale).

    accelerate launch --num_processes 8 examples/sample_llamagen.py --model runs/llamagen --output_dir samples/ar \\
        --num_images_per_class 50 --guidance_scale 2.0 --top_k 0

The tokenizer defaults to the model folder's ``tokenizer/`` subfolder (where the training script saves it). Batch k
is drawn with a seed made from (--seed, k) and batches are dealt round-robin to the processes, so N processes write
exactly what one would (the official sampler reuses one seed on every GPU and duplicates samples). Re-running into
the same folder resumes. For FID in the same go use `ifsq-hf fid` (docs/scale.md).
"""

import argparse
import math

from ifsq_hf.training.sampling import (
    add_sampling_args,
    load_generator,
    resolve_class_ids,
    run_sampling,
    sampling_state,
)


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
    parser.add_argument("--model", required=True, help="Saved LlamaGen folder.")
    parser.add_argument("--tokenizer", default=None, help="iFSQAutoencoder folder/id (default: <model>/tokenizer).")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="0 keeps every token.")
    parser.add_argument("--top_p", type=float, default=1.0)
    args = add_sampling_args(parser).parse_args(argv)
    check_generation_args(parser, args)
    state = sampling_state()  # first: it sets up the process group accelerate launched
    options = {
        "guidance_scale": args.guidance_scale,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }
    model = load_generator(args.model, device=state.device, tokenizer=args.tokenizer, **options)
    if model.kind != "llamagen":
        raise ValueError(f"{args.model} is a saved iFSQDiTPipeline; use examples/sample_dit.py.")
    class_ids = resolve_class_ids(args.classes, model.id2label, model.num_classes)
    run_sampling(model.generate, class_ids, args, generator_device=model.generator_device, settings=options)


if __name__ == "__main__":
    main()
