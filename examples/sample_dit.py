#!/usr/bin/env python
"""Sample N images per class from an iFSQDiTPipeline into PNGs and samples.npz (FID at scale).

    accelerate launch --num_processes 8 examples/sample_dit.py --pipeline runs/dit --output_dir samples/dit \\
        --num_images_per_class 50 --guidance_scale 4.0 --num_inference_steps 250

Each process samples its own share with seed ``seed * world_size + rank`` (no duplicated samples across GPUs).
"""

import argparse

import torch
from accelerate import PartialState

from ifsq_hf.pipelines.pipeline_ifsq_dit import iFSQDiTPipeline
from ifsq_hf.training.sampling import add_sampling_args, resolve_class_ids, run_sampling


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="Saved iFSQDiTPipeline folder or Hub id.")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument(
        "--guidance_interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="Apply guidance only for data-time t in [LOW, HIGH] (t=0 noise, t=1 data).",
    )
    parser.add_argument(
        "--timestep_shift",
        type=float,
        default=1.0,
        help="Official shift s (1 = none; < 1 spends more steps near noise).",
    )
    args = add_sampling_args(parser).parse_args(argv)
    state = PartialState()
    pipe = iFSQDiTPipeline.from_pretrained(args.pipeline).to(state.device)
    pipe.set_progress_bar_config(disable=True)
    num_classes = pipe.transformer.config.num_classes
    class_ids = resolve_class_ids(args.classes, pipe.config.id2label, num_classes)

    def generate(labels: list[int], generator: torch.Generator):
        return pipe(
            class_labels=labels,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
            timestep_shift=args.timestep_shift,
            guidance_interval=tuple(args.guidance_interval) if args.guidance_interval else (0.0, 1.0),
            generator=generator,
        ).images

    run_sampling(generate, class_ids, args)


if __name__ == "__main__":
    main()
