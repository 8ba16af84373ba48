#!/usr/bin/env python
"""Sample N images per class from an iFSQDiTPipeline into PNGs and samples.npz (FID at scale).

    accelerate launch --num_processes 8 examples/sample_dit.py --pipeline runs/dit --output_dir samples/dit \\
        --num_images_per_class 50 --guidance_scale 4.0 --num_inference_steps 250

Batch k is drawn with a seed made from (--seed, k) and batches are dealt round-robin to the processes, so N processes
write exactly what one would. Re-running into the same folder resumes (finished batches are skipped). For FID in
the same go use `ifsq-hf fid` (docs/scale.md).
"""

import argparse

from ifsq_hf.training.sampling import (
    add_sampling_args,
    load_generator,
    resolve_class_ids,
    run_sampling,
    sampling_state,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="Saved iFSQDiTPipeline folder.")
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
    state = sampling_state()  # first: it sets up the process group accelerate launched
    options = {
        "guidance_scale": args.guidance_scale,
        "num_inference_steps": args.num_inference_steps,
        "timestep_shift": args.timestep_shift,
        "guidance_interval": args.guidance_interval,
    }
    model = load_generator(args.pipeline, device=state.device, **options)
    if model.kind != "dit":
        raise ValueError(f"{args.pipeline} is a LlamaGen folder; use examples/sample_llamagen.py.")
    class_ids = resolve_class_ids(args.classes, model.id2label, model.num_classes)
    run_sampling(model.generate, class_ids, args, generator_device=model.generator_device, settings=options)


if __name__ == "__main__":
    main()
