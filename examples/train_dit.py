#!/usr/bin/env python
"""Train a class-conditional LightningDiT on iFSQ latents with flow matching and REPA, using Accelerate.

    accelerate launch examples/train_dit.py --output_dir runs/dit --vae_model_name_or_path runs/ifsq \\
        --preset B --resolution 256 --train_batch_size 32 --max_train_steps 100000

Recipe (official iFSQ DiT, spec §3.2): linear path with a velocity target and logit-normal timesteps, loss
``mse + cosine + 0.5 * REPA``, AdamW (0.9, 0.95) lr 2e-4 without weight decay, EMA 0.9999. Latents are the
tokenizer's continuous ``z_q``, scaled by the tokenizer's ``scaling_factor``; they are encoded online by the frozen
tokenizer, or read from ``--latents_dataset`` written by ``examples/extract_latents.py`` (which also stores the REPA
encoder features). The REPA encoder is ``facebook/dinov2-base`` by default (online users); ``efficientnet-lite0``
works offline and is not DINOv2; ``none`` trains without REPA. Classes are the dataset's labels (for the bundled
photos: which photo a crop comes from). Validation saves sample grids of the EMA model; the end result is an
``iFSQDiTPipeline`` folder with its model card.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from ifsq_hf.hub import finish_run
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel
from ifsq_hf.pipelines.pipeline_ifsq_dit import iFSQDiTPipeline
from ifsq_hf.training.checkpointing import save_checkpoint
from ifsq_hf.training.common import (
    add_common_training_args,
    add_image_dataset_args,
    batch_stream,
    batches_per_epoch,
    build_image_dataset,
    count_parameters,
    create_accelerator,
    init_trackers,
    make_dataloader_from_args,
    resume_if_requested,
    validate_common_args,
    validation_class_labels,
)
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.flow_matching import flow_matching_loss, prepare_flow_matching_inputs
from ifsq_hf.training.images import log_image_grid, make_image_grid
from ifsq_hf.training.precompute import PrecomputedLatentDataset
from ifsq_hf.training.repa import load_repa_encoder, repa_projection_loss

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("model")
    g.add_argument("--vae_model_name_or_path", required=True, help="Saved iFSQAutoencoder folder or Hub id.")
    g.add_argument("--vae_subfolder", default=None)
    g.add_argument("--preset", default="B", help="Transformer preset: tiny, S, B, L, XL.")
    g.add_argument("--model_config", default=None, help="JSON file of transformer config (overrides --preset).")
    g.add_argument(
        "--preset_overrides",
        type=json.loads,
        default={},
        help='JSON dict of config values changed on top of --preset, e.g. \'{"hidden_size": 128, "num_layers": 4}\'.',
    )
    g.add_argument("--patch_size", type=int, default=None, help="Override the preset's patch size (1 or 2).")
    g.add_argument("--latents_dataset", default=None, help="Folder written by examples/extract_latents.py.")

    g = parser.add_argument_group("loss")
    g.add_argument("--cosine_loss_weight", type=float, default=1.0, help="Weight of the velocity cosine term.")
    g.add_argument("--logit_normal_mean", type=float, default=0.0)
    g.add_argument("--logit_normal_std", type=float, default=1.0)
    g.add_argument("--repa_encoder", default="facebook/dinov2-base", help="Hub id/path, efficientnet-lite0, none.")
    g.add_argument("--repa_coefficient", type=float, default=0.5)
    g.add_argument("--repa_depth", type=int, default=None, help="Block whose output is aligned (preset default).")

    g = parser.add_argument_group("validation")
    g.add_argument("--num_validation_classes", type=int, default=8)
    g.add_argument("--num_validation_images_per_class", type=int, default=4)
    g.add_argument("--validation_inference_steps", type=int, default=50)
    g.add_argument("--validation_guidance_scale", type=float, default=4.0)
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


def load_data(args: argparse.Namespace):
    """(dataset, id2label, repa feature source): precomputed latents or images encoded online."""
    if args.latents_dataset:
        dataset = PrecomputedLatentDataset(args.latents_dataset, kind="latents", random_flip=True, seed=args.seed)
        return dataset, dataset.id2label
    dataset = build_image_dataset(args, "train")
    id2label = getattr(dataset, "id2label", None)
    if not id2label:
        raise ValueError(
            "the training data has no class labels (id2label); use an image folder with one sub-folder per class, "
            "a Hub dataset with a ClassLabel column (--label_column), or the bundled photos."
        )
    return dataset, id2label


def build_transformer(args, vae, latent_size: int, num_classes: int, repa_dim: int | None):
    overrides = {
        "sample_size": latent_size,
        "in_channels": vae.config.latent_channels,
        "num_classes": num_classes,
        "repa_feature_dim": repa_dim,
    }
    overrides = {**args.preset_overrides, **overrides}
    if args.repa_depth is not None:
        overrides["repa_depth"] = args.repa_depth
    if args.patch_size is not None:
        overrides["patch_size"] = args.patch_size
    if args.model_config:
        config = json.loads(Path(args.model_config).read_text())
        config.update(overrides)
        return LightningDiTTransformer2DModel.from_config(config)
    return LightningDiTTransformer2DModel.from_preset(args.preset, **overrides)


@torch.no_grad()
def log_validation(accelerator, transformer, vae, id2label, args, step: int):
    pipe = iFSQDiTPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), id2label=id2label
    )
    pipe.set_progress_bar_config(disable=True)
    classes = validation_class_labels(id2label, args.num_validation_classes)
    labels = [c for c in classes for _ in range(args.num_validation_images_per_class)]
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = pipe(
        class_labels=labels,
        num_inference_steps=args.validation_inference_steps,
        guidance_scale=args.validation_guidance_scale,
        generator=generator,
        output_type="pil",
    ).images
    grid = make_image_grid(
        images, nrow=args.num_validation_images_per_class, row_labels=[str(id2label[c]) for c in classes]
    )
    out = Path(args.output_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    grid.save(out / f"samples-{step:06d}.png")
    log_image_grid(accelerator, "val/samples", grid, step)
    return grid


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = create_accelerator(args)
    vae = iFSQAutoencoder.from_pretrained(args.vae_model_name_or_path, subfolder=args.vae_subfolder)
    vae.requires_grad_(False).eval().to(accelerator.device)
    dataset, id2label = load_data(args)

    repa_encoder, repa_dim = None, None
    use_repa = args.repa_encoder.lower() != "none" and args.repa_coefficient > 0
    if use_repa and isinstance(dataset, PrecomputedLatentDataset):
        if not dataset.has_repa_features:
            raise ValueError(
                f"{args.latents_dataset} holds no REPA features; re-run extract_latents.py with --repa_encoder, "
                "or train with --repa_encoder none."
            )
        repa_dim = dataset.metadata["repa_feature_dim"]
    elif use_repa:
        repa_encoder = load_repa_encoder(args.repa_encoder).to(accelerator.device).eval().requires_grad_(False)
        repa_dim = repa_encoder.feature_dim

    if isinstance(dataset, PrecomputedLatentDataset):
        latent_size = dataset.metadata["latent_shape"][-1]
    else:
        if args.resolution % vae.downsample_factor:
            raise ValueError(
                f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
                f"{vae.downsample_factor}."
            )
        latent_size = args.resolution // vae.downsample_factor
    transformer = build_transformer(args, vae, latent_size, len(id2label), repa_dim)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    logger.info("transformer: %s parameters", f"{count_parameters(transformer):,}")

    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    optimizer = torch.optim.AdamW(
        transformer.parameters(),
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    train_loader = make_dataloader_from_args(dataset, args, shuffle=True)
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

    loss = None
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    num_batches = batches_per_epoch(train_loader)
    progress = tqdm(
        total=args.max_train_steps,
        initial=state.global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    for epoch, batch_index, batch in batch_stream(accelerator, train_loader, state, args.gradient_accumulation_steps):
        if state.global_step >= args.max_train_steps:
            break
        transformer.train()
        with accelerator.accumulate(transformer):
            with torch.no_grad():
                if "latents" in batch:
                    latents = batch["latents"]
                    features = batch.get("repa_features")
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
                repa = repa_projection_loss(out.repa_features, features)
                loss = loss + args.repa_coefficient * repa
                logs["train/repa"] = float(repa.detach())
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(transformer.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)

        if not accelerator.sync_gradients:
            continue
        state.advance(epoch, batch_index, args.gradient_accumulation_steps, num_batches)
        if ema is not None:
            ema.step(unwrapped)
        progress.update(1)
        if state.global_step % args.logging_steps == 0 or state.global_step == 1:
            logs.update({"train/loss": float(loss.detach()), "train/lr": lr_scheduler.get_last_lr()[0]})
            accelerator.log(logs, step=state.global_step)
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if state.global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args.output_dir, state, args.checkpoints_total_limit)
        if args.validation_steps and state.global_step % args.validation_steps == 0 and accelerator.is_main_process:
            log_validation(accelerator, ema.model if ema else unwrapped, vae, id2label, args, state.global_step)
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = ema.model if ema is not None else unwrapped
        pipeline = iFSQDiTPipeline(
            transformer=final, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), id2label=id2label
        )
        pipeline.save_pretrained(args.output_dir)
        if args.validation_steps:
            log_validation(accelerator, final, vae, id2label, args, state.global_step)
        finish_run(args.output_dir, args, None)
    accelerator.end_training()
    return {"global_step": state.global_step}


if __name__ == "__main__":
    main()
