#!/usr/bin/env python
"""Train a class-conditional LightningDiT on iFSQ latents with flow matching and REPA, using Accelerate.

    accelerate launch examples/train_dit.py --output_dir runs/dit --vae_model_name_or_path runs/ifsq \\
        --preset B --resolution 256 --train_batch_size 32 --max_train_steps 100000

Recipe (official iFSQ DiT, ``dit/train.py`` and ``dit/transport``): linear path with a velocity target and
logit-normal timesteps, loss ``mse + cosine + 0.5 * REPA``, AdamW (0.9, 0.95) lr 2e-4 without weight decay, EMA
0.9999. Latents are the tokenizer's continuous ``z_q``, scaled by the tokenizer's ``scaling_factor``; they are
encoded online by the frozen tokenizer, or read from ``--latents_dataset`` written by
``examples/extract_latents.py`` (which also stores the REPA encoder features). The REPA encoder is
``facebook/dinov2-base`` by default (online users); ``efficientnet-lite0`` works offline and is not DINOv2; ``none``
trains without REPA. Classes are the dataset's labels (for the bundled photos: which photo a crop comes from).
Validation saves sample grids of the EMA model; the end result is an ``iFSQDiTPipeline`` folder with its model card.
"""

from __future__ import annotations

import argparse
import logging

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ifsq_hf.hub import finish_run
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel
from ifsq_hf.pipelines.pipeline_ifsq_dit import iFSQDiTPipeline
from ifsq_hf.training.accelerator import create_accelerator, init_trackers, resume_if_requested
from ifsq_hf.training.arguments import add_common_training_args, add_image_dataset_args, validate_common_args
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.flow_matching import flow_matching_loss, prepare_flow_matching_inputs
from ifsq_hf.training.generators import (
    add_generator_args,
    add_repa_loss,
    load_generator_data,
    preset_config,
    save_final_generator,
    save_sample_grid,
)
from ifsq_hf.training.image_data import make_dataloader_from_args
from ifsq_hf.training.loop import batch_stream, batches_per_epoch, on_optimizer_step, progress_bar
from ifsq_hf.training.optimization import apply_gradients, create_lr_scheduler, learning_rate

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("tokenizer and flow matching")
    g.add_argument("--vae_model_name_or_path", required=True, help="Saved iFSQAutoencoder folder or Hub id.")
    g.add_argument("--vae_subfolder", default=None)
    g.add_argument("--patch_size", type=int, default=None, help="Override the preset's patch size (1 or 2).")
    g.add_argument("--cosine_loss_weight", type=float, default=1.0, help="Weight of the velocity cosine term.")
    g.add_argument("--logit_normal_mean", type=float, default=0.0)
    g.add_argument("--logit_normal_std", type=float, default=1.0)
    g.add_argument("--validation_inference_steps", type=int, default=50)
    add_generator_args(
        parser,
        default_preset="B",
        presets="tiny, S, B, L, XL",
        precomputed_flag="--latents_dataset",
        precomputed_script="extract_latents.py",
        repa_coefficient=0.5,
        repa_depth_help="Block whose output is aligned (preset default).",
        guidance_scale=4.0,
    )
    add_common_training_args(
        parser,
        learning_rate=2e-4,
        train_batch_size=32,
        ema_decay=0.9999,
        max_train_steps=100_000,
        adam_beta2=0.95,
        max_grad_norm=0.0,
        validation_steps=5000,
    )
    add_image_dataset_args(parser, resolution=256)
    args = parser.parse_args(argv)
    validate_common_args(args)
    return args


def build_transformer(args, vae, latent_size: int, num_classes: int, repa_dim: int | None):
    data = {
        "sample_size": latent_size,
        "in_channels": vae.config.latent_channels,
        "num_classes": num_classes,
        "repa_feature_dim": repa_dim,
    }
    if args.patch_size is not None:
        data["patch_size"] = args.patch_size
    config = preset_config(args, data)
    if args.model_config:
        return LightningDiTTransformer2DModel.from_config(config)
    return LightningDiTTransformer2DModel.from_preset(args.preset, **config)


def make_pipeline(transformer, vae, id2label) -> iFSQDiTPipeline:
    return iFSQDiTPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), id2label=id2label
    )


@torch.no_grad()
def log_validation(accelerator, transformer, vae, id2label, args, step: int):
    pipe = make_pipeline(transformer, vae, id2label)
    pipe.set_progress_bar_config(disable=True)

    def generate(labels, generator):
        return pipe(
            class_labels=labels,
            num_inference_steps=args.validation_inference_steps,
            guidance_scale=args.validation_guidance_scale,
            generator=generator,
        ).images

    return save_sample_grid(accelerator, generate, id2label, args, step)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = create_accelerator(args)
    vae = iFSQAutoencoder.from_pretrained(args.vae_model_name_or_path, subfolder=args.vae_subfolder)
    vae.requires_grad_(False).eval().to(accelerator.device)
    data = load_generator_data(args, args.latents_dataset, "latents", vae, accelerator.device)
    id2label, repa_encoder, use_repa = data.id2label, data.repa_encoder, data.repa_dim is not None
    transformer = build_transformer(args, vae, data.grid_size, len(id2label), data.repa_dim)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    logger.info("transformer: %s parameters", f"{transformer.num_parameters():,}")

    optimizer = torch.optim.AdamW(
        transformer.parameters(),
        lr=learning_rate(args, accelerator),
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = create_lr_scheduler(args, optimizer, accelerator)
    train_loader = make_dataloader_from_args(data.dataset, args, shuffle=True)
    transformer, optimizer, train_loader, lr_scheduler = accelerator.prepare(
        transformer, optimizer, train_loader, lr_scheduler
    )
    unwrapped = accelerator.unwrap_model(transformer)
    ema = None
    if args.use_ema:
        ema = ExponentialMovingAverage(unwrapped, decay=args.ema_decay)
        accelerator.register_for_checkpointing(ema)
    state = resume_if_requested(accelerator, args)
    init_trackers(accelerator, args, "train_dit")

    def validate(step: int):
        return log_validation(accelerator, ema.model if ema else unwrapped, vae, id2label, args, step)

    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    num_batches = batches_per_epoch(train_loader)
    progress = progress_bar(accelerator, args, state)
    for epoch, batch_index, batch in batch_stream(accelerator, train_loader, state, args.gradient_accumulation_steps):
        if state.global_step >= args.max_train_steps:
            break
        transformer.train()
        with accelerator.accumulate(transformer):
            with torch.no_grad():
                if "latents" in batch:
                    latents, features = batch["latents"], batch.get("repa_features")
                else:
                    pixels = batch["pixel_values"]
                    latents = vae.encode(pixels.float()).latent
                    features = repa_encoder(pixels) if repa_encoder is not None else None
                latents = (latents.float() - shift) * scale
            noisy, timesteps, target = prepare_flow_matching_inputs(
                latents, logit_mean=args.logit_normal_mean, logit_std=args.logit_normal_std
            )
            out = transformer(noisy, timesteps, batch["labels"], return_repa_features=use_repa)
            losses = flow_matching_loss(out.sample, target, cosine_weight=args.cosine_loss_weight)
            loss = losses.loss
            logs = {"train/mse": float(losses.mse), "train/cosine": float(losses.cosine)}
            if use_repa:
                loss = add_repa_loss(loss, logs, out.repa_features, features, args.repa_coefficient)
            apply_gradients(accelerator, loss, transformer.parameters(), optimizer, lr_scheduler, args.max_grad_norm)

        if not accelerator.sync_gradients:
            continue
        state.advance(epoch, batch_index, args.gradient_accumulation_steps, num_batches)
        on_optimizer_step(
            accelerator, args, state, progress, loss, logs, validate, ema=ema, ema_source=unwrapped,
            lr_scheduler=lr_scheduler,
        )  # fmt: skip
    progress.close()

    def save(final: LightningDiTTransformer2DModel) -> None:
        make_pipeline(final, vae, id2label).save_pretrained(args.output_dir)

    if save_final_generator(accelerator, args, state.global_step, ema.model if ema else unwrapped, save, validate):
        finish_run(args.output_dir, args, None)
    accelerator.end_training()
    return {"global_step": state.global_step}


if __name__ == "__main__":
    main()
