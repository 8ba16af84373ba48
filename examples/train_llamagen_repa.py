#!/usr/bin/env python
"""Train LlamaGen-REPA (class-conditional autoregressive transformer) on iFSQ tokens with Accelerate.

    accelerate launch examples/train_llamagen_repa.py --output_dir runs/llamagen --tokenizer runs/ifsq \\
        --preset L --resolution 256 --train_batch_size 32 --mixed_precision bf16 --max_train_steps 500000

Recipe (official iFSQ LlamaGen, spec §4.3-4.4): next-token cross-entropy over the tokenizer's indices (raster
order, one class token in front), REPA on the hidden state after layer ``repa_depth`` (the state predicting token n
aligned with encoder patch n) with coefficient 2.0, AdamW (0.9, 0.95) lr 1e-4 with weight decay 0.05 on matrices
only (upstream LlamaGen's rule), gradient clipping 1.0, EMA 0.9999. Tokens come from the frozen tokenizer online
(quantization in fp32, so indices are exact) or from ``--tokens_dataset`` written by ``examples/extract_tokens.py``.
``--factorized_groups 2`` trains the factorized head (K sub-indices per position). The tokenizer is saved in the
output folder's ``tokenizer/`` subfolder, so the result samples images on its own.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from ifsq_hf.hub import finish_run
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration
from ifsq_hf.quantization import FiniteScalarQuantizer
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
    weight_decay_param_groups,
)
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.images import log_image_grid, make_image_grid
from ifsq_hf.training.precompute import PrecomputedLatentDataset
from ifsq_hf.training.repa import load_repa_encoder, repa_projection_loss

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("model")
    g.add_argument("--tokenizer", required=True, help="Saved iFSQAutoencoder folder or Hub id.")
    g.add_argument("--tokenizer_subfolder", default=None)
    g.add_argument("--preset", default="B", help="LlamaGen preset: tiny, B, L, XL, XXL, 3B.")
    g.add_argument("--config", default=None, help="LlamaGen config.json (overrides --preset).")
    g.add_argument(
        "--preset_overrides",
        type=json.loads,
        default={},
        help="JSON dict of config values changed on top of --preset, e.g. '{\"hidden_size\": 128}'.",
    )
    g.add_argument("--factorized_groups", type=int, default=1, help="Sub-indices per position (1 = one codebook).")
    g.add_argument("--tokens_dataset", default=None, help="Folder written by examples/extract_tokens.py.")

    g = parser.add_argument_group("loss")
    g.add_argument("--repa_encoder", default="facebook/dinov2-base", help="Hub id/path, efficientnet-lite0, none.")
    g.add_argument("--repa_coefficient", type=float, default=2.0)
    g.add_argument("--repa_depth", type=int, default=None, help="Layer whose output is aligned (default depth/3).")

    g = parser.add_argument_group("validation")
    g.add_argument("--num_validation_classes", type=int, default=8)
    g.add_argument("--num_validation_images_per_class", type=int, default=4)
    g.add_argument("--validation_guidance_scale", type=float, default=2.0)
    g.add_argument("--validation_top_k", type=int, default=0, help="0 keeps the full distribution.")
    add_common_training_args(
        parser,
        learning_rate=1e-4,
        train_batch_size=32,
        ema_decay=0.9999,
        max_train_steps=500_000,
        adam_beta2=0.95,
        weight_decay=0.05,
        max_grad_norm=1.0,
        validation_steps=25_000,
    )
    add_image_dataset_args(parser, resolution=256)
    args = parser.parse_args(argv)
    validate_common_args(args)
    if args.factorized_groups < 1:
        parser.error(f"--factorized_groups must be >= 1, got {args.factorized_groups}.")
    return args


def load_data(args: argparse.Namespace):
    if args.tokens_dataset:
        dataset = PrecomputedLatentDataset(args.tokens_dataset, kind="image_tokens", random_flip=True, seed=args.seed)
        return dataset, dataset.id2label
    dataset = build_image_dataset(args, "train")
    id2label = getattr(dataset, "id2label", None)
    if not id2label:
        raise ValueError(
            "the training data has no class labels (id2label); use an image folder with one sub-folder per class, "
            "a Hub dataset with a ClassLabel column (--label_column), or the bundled photos."
        )
    return dataset, id2label


def token_vocabulary(tokenizer, groups: int) -> tuple[dict, FiniteScalarQuantizer]:
    """LlamaGen vocabulary for the tokenizer, and the quantizer that splits its indices into ``groups`` sub-indices
    (the official ``factorized_bits``: 4 channels x 17 levels in 2 groups -> two 289-code sub-vocabularies)."""
    source = tokenizer.quantizer
    levels = list(source.levels)
    if len(levels) % groups:
        raise ValueError(
            f"--factorized_groups {groups} must divide the tokenizer's {len(levels)} latent channels "
            f"(levels {levels})."
        )
    splitter = FiniteScalarQuantizer(
        levels, bound=source.bound, alpha=source.alpha, factorized_dims=[len(levels) // groups] * groups
    )
    if groups == 1:
        return {"vocab_size": splitter.codebook_size, "factorized_vocab_sizes": None}, splitter
    return {"vocab_size": splitter.codebook_size, "factorized_vocab_sizes": splitter.group_sizes}, splitter


def build_model(args, vocabulary: dict, grid_size: int, id2label: dict, repa_dim: int | None):
    overrides = {
        **args.preset_overrides,
        **vocabulary,
        "num_classes": len(id2label),
        "image_token_size": grid_size,
        "repa_feature_dim": repa_dim,
        "id2label": {int(k): str(v) for k, v in id2label.items()},
    }
    if args.repa_depth is not None:
        overrides["repa_depth"] = args.repa_depth
    if args.config:
        config = LlamaGenConfig.from_json_file(args.config)
        for key, value in overrides.items():
            setattr(config, key, value)
    else:
        config = LlamaGenConfig.from_preset(args.preset, **overrides)
    return LlamaGenForImageGeneration(config)


def image_tokens(splitter: FiniteScalarQuantizer, indices: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` tokenizer indices -> raster-order tokens ``(B, N)``, or ``(B, N, K)`` sub-indices."""
    if splitter.num_groups == 1:
        return indices.flatten(1)
    return splitter.global_to_group_indices(indices).flatten(1, 2)


@torch.no_grad()
def log_validation(accelerator, model, tokenizer, id2label, args, step: int):
    classes = validation_class_labels(id2label, args.num_validation_classes)
    labels = torch.tensor([c for c in classes for _ in range(args.num_validation_images_per_class)])
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    images = model.generate_images(
        class_labels=labels.to(accelerator.device),
        tokenizer=tokenizer,
        guidance_scale=args.validation_guidance_scale,
        top_k=args.validation_top_k or None,
        generator=generator,
        output_type="pil",
    )
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
    tokenizer = iFSQAutoencoder.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    tokenizer.requires_grad_(False).eval().to(accelerator.device)
    dataset, id2label = load_data(args)

    repa_encoder, repa_dim = None, None
    use_repa = args.repa_encoder.lower() != "none" and args.repa_coefficient > 0
    if use_repa and isinstance(dataset, PrecomputedLatentDataset):
        if not dataset.has_repa_features:
            raise ValueError(
                f"{args.tokens_dataset} holds no REPA features; re-run extract_tokens.py with --repa_encoder, "
                "or train with --repa_encoder none."
            )
        repa_dim = dataset.metadata["repa_feature_dim"]
    elif use_repa:
        repa_encoder = load_repa_encoder(args.repa_encoder).to(accelerator.device).eval().requires_grad_(False)
        repa_dim = repa_encoder.feature_dim

    if isinstance(dataset, PrecomputedLatentDataset):
        if dataset.metadata["codebook_size"] != tokenizer.codebook_size:
            raise ValueError(
                f"{args.tokens_dataset} was encoded with a codebook of {dataset.metadata['codebook_size']} codes but "
                f"--tokenizer has {tokenizer.codebook_size}; pass the tokenizer used by extract_tokens.py."
            )
        grid_size = dataset.metadata["latent_shape"][-1]
    else:
        if args.resolution % tokenizer.downsample_factor:
            raise ValueError(
                f"--resolution {args.resolution} is not a multiple of the tokenizer's downsampling factor "
                f"{tokenizer.downsample_factor}."
            )
        grid_size = args.resolution // tokenizer.downsample_factor
    vocabulary, splitter = token_vocabulary(tokenizer, args.factorized_groups)
    model = build_model(args, vocabulary, grid_size, id2label, repa_dim)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    logger.info("LlamaGen: %s parameters", f"{count_parameters(model):,}")

    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    optimizer = torch.optim.AdamW(
        weight_decay_param_groups(model, args.adam_weight_decay),
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    train_loader = make_dataloader_from_args(dataset, args, shuffle=True)
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    ema = None
    if args.use_ema:
        ema = ExponentialMovingAverage(unwrapped, decay=args.ema_decay)
        accelerator.register_for_checkpointing(ema)
    state = resume_if_requested(accelerator, args)
    init_trackers(accelerator, args, "train_llamagen_repa")

    loss = None
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
        model.train()
        with accelerator.accumulate(model):
            with torch.no_grad():
                if "image_tokens" in batch:
                    indices = batch["image_tokens"]
                    features = batch.get("repa_features")
                else:
                    pixels = batch["pixel_values"]
                    indices = tokenizer.encode(pixels.float()).indices
                    features = repa_encoder(pixels) if repa_encoder is not None else None
                tokens = image_tokens(splitter, indices)
            out = model(
                class_labels=batch["labels"], image_tokens=tokens, labels=tokens, output_repa_features=use_repa
            )
            loss = out.loss
            logs = {"train/ce": float(out.loss.detach())}
            if use_repa:
                repa = repa_projection_loss(out.repa_features, features)
                loss = loss + args.repa_coefficient * repa
                logs["train/repa"] = float(repa.detach())
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
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
            log_validation(accelerator, ema.model if ema else unwrapped, tokenizer, id2label, args, state.global_step)
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = ema.model if ema is not None else unwrapped
        final.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(Path(args.output_dir) / "tokenizer")
        if args.validation_steps:
            log_validation(accelerator, final, tokenizer, id2label, args, state.global_step)
        finish_run(args.output_dir, args, None)
    accelerator.end_training()
    return {"global_step": state.global_step}


if __name__ == "__main__":
    main()
