#!/usr/bin/env python
"""Train LlamaGen-REPA (class-conditional autoregressive transformer) on iFSQ tokens with Accelerate.

    accelerate launch examples/train_llamagen_repa.py --output_dir runs/llamagen --tokenizer runs/ifsq \\
        --preset L --resolution 256 --train_batch_size 32 --mixed_precision bf16 --max_train_steps 500000

Recipe (official iFSQ LlamaGen, ``llamagen/train.py`` and its configs): next-token cross-entropy over the
tokenizer's indices (raster order, one class token in front), REPA on the hidden state after layer ``repa_depth``
(the state predicting token n aligned with encoder patch n) with coefficient 2.0, AdamW (0.9, 0.95) lr 1e-4 with
weight decay 0.05 on matrices only (upstream LlamaGen's rule), gradient clipping 1.0, EMA 0.9999. Tokens come from
the frozen tokenizer online (quantization in fp32, so indices are exact) or from ``--tokens_dataset`` written by
``examples/extract_tokens.py``. ``--factorized_groups 2`` trains the factorized head (K sub-indices per position).
The tokenizer is saved in the output folder's ``tokenizer/`` subfolder, so the result samples images on its own.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ifsq_hf.hub import finish_run
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration
from ifsq_hf.quantization import FiniteScalarQuantizer
from ifsq_hf.training.accelerator import create_accelerator, init_trackers, resume_if_requested
from ifsq_hf.training.arguments import add_common_training_args, add_image_dataset_args, validate_common_args
from ifsq_hf.training.ema import ExponentialMovingAverage
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
from ifsq_hf.training.optimization import (
    apply_gradients,
    create_lr_scheduler,
    learning_rate,
    weight_decay_param_groups,
)

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("tokenizer and tokens")
    g.add_argument("--tokenizer", required=True, help="Saved iFSQAutoencoder folder or Hub id.")
    g.add_argument("--tokenizer_subfolder", default=None)
    g.add_argument("--factorized_groups", type=int, default=1, help="Sub-indices per position (1 = one codebook).")
    g.add_argument("--validation_top_k", type=int, default=0, help="0 keeps the full distribution.")
    add_generator_args(
        parser,
        default_preset="B",
        presets="tiny, B, L, XL, XXL, 3B",
        precomputed_flag="--tokens_dataset",
        precomputed_script="extract_tokens.py",
        repa_coefficient=2.0,
        repa_depth_help="Layer whose output is aligned (default depth // 3).",
        guidance_scale=2.0,
    )
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
    sizes = splitter.group_sizes if groups > 1 else None
    return {"vocab_size": splitter.codebook_size, "factorized_vocab_sizes": sizes}, splitter


def build_model(args, vocabulary: dict, grid_size: int, id2label: dict, repa_dim: int | None):
    data = {
        **vocabulary,
        "num_classes": len(id2label),
        "image_token_size": grid_size,
        "repa_feature_dim": repa_dim,
        "id2label": {int(k): str(v) for k, v in id2label.items()},
    }
    config = preset_config(args, data)
    config = LlamaGenConfig(**config) if args.model_config else LlamaGenConfig.from_preset(args.preset, **config)
    return LlamaGenForImageGeneration(config)


def image_tokens(splitter: FiniteScalarQuantizer, indices: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` tokenizer indices -> raster-order tokens ``(B, N)``, or ``(B, N, K)`` sub-indices."""
    if splitter.num_groups == 1:
        return indices.flatten(1)
    return splitter.global_to_group_indices(indices).flatten(1, 2)


@torch.no_grad()
def log_validation(accelerator, model, tokenizer, id2label, args, step: int):
    def generate(labels, generator):
        return model.generate_images(
            class_labels=torch.tensor(labels, device=accelerator.device),
            tokenizer=tokenizer,
            guidance_scale=args.validation_guidance_scale,
            top_k=args.validation_top_k or None,
            generator=generator,
            output_type="pil",
        )

    return save_sample_grid(accelerator, generate, id2label, args, step)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = create_accelerator(args)
    tokenizer = iFSQAutoencoder.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    tokenizer.requires_grad_(False).eval().to(accelerator.device)
    data = load_generator_data(args, args.tokens_dataset, "image_tokens", tokenizer, accelerator.device)
    id2label, repa_encoder, use_repa = data.id2label, data.repa_encoder, data.repa_dim is not None
    vocabulary, splitter = token_vocabulary(tokenizer, args.factorized_groups)
    model = build_model(args, vocabulary, data.grid_size, id2label, data.repa_dim)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    logger.info("LlamaGen: %s parameters", f"{model.num_parameters():,}")

    optimizer = torch.optim.AdamW(
        weight_decay_param_groups(model, args.adam_weight_decay),
        lr=learning_rate(args, accelerator),
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    lr_scheduler = create_lr_scheduler(args, optimizer, accelerator)
    train_loader = make_dataloader_from_args(data.dataset, args, shuffle=True)
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    ema = None
    if args.use_ema:
        ema = ExponentialMovingAverage(unwrapped, decay=args.ema_decay)
        accelerator.register_for_checkpointing(ema)
    state = resume_if_requested(accelerator, args)
    init_trackers(accelerator, args, "train_llamagen_repa")

    def validate(step: int):
        return log_validation(accelerator, ema.model if ema else unwrapped, tokenizer, id2label, args, step)

    num_batches = batches_per_epoch(train_loader)
    progress = progress_bar(accelerator, args, state)
    for epoch, batch_index, batch in batch_stream(accelerator, train_loader, state, args.gradient_accumulation_steps):
        if state.global_step >= args.max_train_steps:
            break
        model.train()
        with accelerator.accumulate(model):
            with torch.no_grad():
                if "image_tokens" in batch:
                    indices, features = batch["image_tokens"], batch.get("repa_features")
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
                loss = add_repa_loss(loss, logs, out.repa_features, features, args.repa_coefficient)
            apply_gradients(accelerator, loss, model.parameters(), optimizer, lr_scheduler, args.max_grad_norm)

        if not accelerator.sync_gradients:
            continue
        state.advance(epoch, batch_index, args.gradient_accumulation_steps, num_batches)
        on_optimizer_step(
            accelerator, args, state, progress, loss, logs, validate, ema=ema, ema_source=unwrapped,
            lr_scheduler=lr_scheduler,
        )  # fmt: skip
    progress.close()

    def save(final: LlamaGenForImageGeneration) -> None:
        final.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(Path(args.output_dir) / "tokenizer")

    if save_final_generator(accelerator, args, state.global_step, ema.model if ema else unwrapped, save, validate):
        finish_run(args.output_dir, args, None)
    accelerator.end_training()
    return {"global_step": state.global_step}


if __name__ == "__main__":
    main()
