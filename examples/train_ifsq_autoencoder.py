#!/usr/bin/env python
"""Train an iFSQ (or vanilla FSQ) image tokenizer with Accelerate.

    accelerate launch examples/train_ifsq_autoencoder.py --output_dir runs/ifsq --preset tiny_f8_d4 \\
        --resolution 64 --train_batch_size 8 --max_train_steps 2000

Recipe (official iFSQ, ``ifsq/configs/ifsq_f16_d4_4bit/run.sh``): L1 + LPIPS(VGG) reconstruction loss, a PatchGAN
discriminator with hinge loss and an adaptive weight from ``--disc_start`` on, AdamW (0.9, 0.999) for both networks,
gradient clipping 1.0, EMA 0.999 of the generator. After ``disc_start`` every batch takes one generator step and one
discriminator step (the official code alternates them, giving each half the batches). Without
``--dataset_name``/``--train_data_dir`` it trains on the real photos bundled with the install. Validation writes
PSNR/SSIM/LPIPS/code usage to TensorBoard and a reconstruction grid to ``output_dir/validation``; the EMA model is
saved with ``save_pretrained`` together with its model card, and ``--push_to_hub`` uploads the folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from ifsq_hf.evaluation import evaluate_tokenizer, reconstruction_grid
from ifsq_hf.hub import finish_run
from ifsq_hf.metrics import LPIPS
from ifsq_hf.models.autoencoder_ifsq import PRESETS, iFSQAutoencoder
from ifsq_hf.quantization import levels_from_bits, utilization_stats
from ifsq_hf.training.accelerator import create_accelerator, init_trackers, log_image_grid, resume_if_requested
from ifsq_hf.training.arguments import add_common_training_args, add_image_dataset_args, validate_common_args
from ifsq_hf.training.data_sources import validation_dataset_from_args
from ifsq_hf.training.divergence import check_finite_weights
from ifsq_hf.training.ema import ExponentialMovingAverage
from ifsq_hf.training.image_data import build_image_dataset, make_dataloader_from_args
from ifsq_hf.training.loop import batch_stream, batches_per_epoch, on_optimizer_step, progress_bar
from ifsq_hf.training.losses import TokenizerLoss
from ifsq_hf.training.optimization import apply_gradients, create_lr_scheduler, learning_rate

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("model")
    g.add_argument(
        "--preset", default="tiny_f8_d4", help="iFSQAutoencoder preset (ifsq_f16_d4_4bit, tiny_f8_d4, ...)."
    )
    g.add_argument("--model_config", default=None, help="JSON file of iFSQAutoencoder config (overrides --preset).")
    g.add_argument("--pretrained_model_name_or_path", default=None, help="Start from a saved tokenizer.")
    g.add_argument("--quantizer_bound", default=None, choices=["ifsq", "tanh"], help="'ifsq' or vanilla FSQ 'tanh'.")
    g.add_argument("--quantizer_alpha", type=float, default=None, help="Sigmoid slope of the iFSQ bound (1.6).")
    g.add_argument("--bits_per_dim", type=int, default=None, help="Levels = 2**bits + 1 on every latent channel.")
    g.add_argument(
        "--pre_quant_norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Normalise each latent channel to unit variance (running statistics) before the bound. Default: the "
        "preset's / --model_config's value.",
    )

    g = parser.add_argument_group("loss")
    g.add_argument("--l1_weight", type=float, default=1.0)
    g.add_argument("--perceptual_weight", type=float, default=1.0, help="LPIPS (VGG16) weight; 0 disables it.")
    g.add_argument("--disc_start", type=int, default=50_000, help="Step at which the GAN loss starts.")
    g.add_argument("--disc_weight", type=float, default=0.5)
    g.add_argument("--disc_learning_rate", type=float, default=None, help="Default: --learning_rate.")
    g.add_argument("--disc_num_layers", type=int, default=4, help="PatchGAN depth (official 4; 2-3 for tiny crops).")
    g.add_argument("--disc_ndf", type=int, default=64, help="PatchGAN width.")
    g.add_argument("--perceptual_net", default="vgg", choices=["vgg", "alex"], help="LPIPS backbone of the loss.")
    g.add_argument(
        "--lpips_net", default="alex", choices=["alex", "vgg", "none"], help="LPIPS backbone of the validation metric."
    )
    g.add_argument("--num_validation_images", type=int, default=64, help="Held-out images per validation.")
    add_common_training_args(
        parser, learning_rate=1e-4, train_batch_size=16, ema_decay=0.999, max_train_steps=10_000, max_grad_norm=1.0
    )
    add_image_dataset_args(parser, resolution=256)
    args = parser.parse_args(argv)
    validate_common_args(args)
    if args.disc_start < 0:
        parser.error(f"--disc_start must be >= 0, got {args.disc_start}.")
    return args


def build_model(args: argparse.Namespace) -> iFSQAutoencoder:
    overrides = {}
    if args.quantizer_bound is not None:
        overrides["quantizer_bound"] = args.quantizer_bound
    if args.quantizer_alpha is not None:
        overrides["quantizer_alpha"] = args.quantizer_alpha
    if args.pre_quant_norm is not None:
        # A silent override would train another model than the config file (or the saved tokenizer) describes.
        if args.model_config:
            base, source = json.loads(Path(args.model_config).read_text()), f"--model_config {args.model_config}"
        elif args.pretrained_model_name_or_path:
            base = dict(iFSQAutoencoder.load_config(args.pretrained_model_name_or_path))
            source = f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path}"
        else:
            base, source = {}, None
        if source is not None and bool(base.get("pre_quant_norm", False)) != args.pre_quant_norm:
            flag = "--pre_quant_norm" if args.pre_quant_norm else "--no-pre_quant_norm"
            raise ValueError(
                f"{flag} conflicts with {source}, which has pre_quant_norm={bool(base.get('pre_quant_norm', False))}; "
                "drop the flag or change the config."
            )
        overrides["pre_quant_norm"] = args.pre_quant_norm
    if args.bits_per_dim is not None:
        if args.model_config:
            base = json.loads(Path(args.model_config).read_text())
        elif args.pretrained_model_name_or_path:
            base = dict(iFSQAutoencoder.load_config(args.pretrained_model_name_or_path))
        else:
            base = PRESETS[args.preset]
        channels = base.get("latent_channels", 4)
        overrides["levels"] = levels_from_bits(args.bits_per_dim, channels)
    if args.pretrained_model_name_or_path:
        # Overriding the quantizer of a trained tokenizer here is a deliberate fine-tune at another setting.
        return iFSQAutoencoder.from_pretrained(
            args.pretrained_model_name_or_path, allow_quantizer_change=True, **overrides
        )
    if args.model_config:
        config = json.loads(Path(args.model_config).read_text())
        config.update(overrides)
        return iFSQAutoencoder.from_config(config)
    return iFSQAutoencoder.from_preset(args.preset, **overrides)


def validate(accelerator, model, ema, val_loader, lpips_model, args, step: int) -> dict[str, float]:
    """Evaluate the EMA weights (what gets saved) on held-out images; log metrics and a reconstruction grid."""
    eval_model = ema.model if ema is not None else accelerator.unwrap_model(model)
    result = evaluate_tokenizer(
        eval_model,
        val_loader,
        lpips_model=lpips_model,
        max_batches=math.ceil(args.num_validation_images / args.train_batch_size),
        device=accelerator.device,
        show_progress=False,
    )
    metrics = {f"val/{k}": v for k, v in result.metrics.items()}
    accelerator.log(metrics, step=step)
    grid = reconstruction_grid(result)
    out = Path(args.output_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    grid.save(out / f"reconstructions-{step:06d}.png")
    log_image_grid(accelerator, "val/reconstructions", grid, step)
    logger.info("step %d validation: %s", step, {k: round(v, 4) for k, v in result.metrics.items()})
    return result.metrics


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = create_accelerator(args)
    model = build_model(args)
    if args.resolution % model.downsample_factor:
        raise ValueError(
            f"--resolution {args.resolution} is not divisible by the tokenizer's downsampling factor "
            f"{model.downsample_factor}; use a multiple such as {max(1, args.resolution // model.downsample_factor) * model.downsample_factor}."
        )
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    loss_fn = TokenizerLoss(
        l1_weight=args.l1_weight,
        perceptual_weight=args.perceptual_weight,
        disc_weight=args.disc_weight,
        disc_start=args.disc_start,
        perceptual_net=args.perceptual_net,
        disc_ndf=args.disc_ndf,
        disc_num_layers=args.disc_num_layers,
    )
    logger.info("tokenizer: %s parameters, codebook %d", f"{model.num_parameters():,}", model.codebook_size)

    lr = learning_rate(args, accelerator)
    betas = (args.adam_beta1, args.adam_beta2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=args.adam_weight_decay)
    disc_optimizer = torch.optim.AdamW(
        loss_fn.discriminator.parameters(),
        lr=args.disc_learning_rate or lr,
        betas=betas,
        weight_decay=args.adam_weight_decay,
    )
    lr_scheduler = create_lr_scheduler(args, optimizer, accelerator)

    train_loader = make_dataloader_from_args(build_image_dataset(args, "train"), args, shuffle=True)
    val_dataset = validation_dataset_from_args(args)  # None: --validation_steps 0, or no held-out split
    val_loader = make_dataloader_from_args(val_dataset, args, shuffle=False) if val_dataset is not None else None
    # The discriminator is prepared like the model (DDP averages its gradients, accelerate checkpoints it); the
    # generator loss scores reconstructions with the unwrapped, frozen copy inside loss_fn.
    model, discriminator, optimizer, disc_optimizer, train_loader, lr_scheduler = accelerator.prepare(
        model, loss_fn.discriminator, optimizer, disc_optimizer, train_loader, lr_scheduler
    )
    loss_fn.to(accelerator.device)
    ema = None
    if args.use_ema:
        ema = ExponentialMovingAverage(accelerator.unwrap_model(model), decay=args.ema_decay)
        accelerator.register_for_checkpointing(ema)
    lpips_model = None
    if val_loader is not None and args.lpips_net != "none":
        lpips_model = LPIPS(net=args.lpips_net).to(accelerator.device)
        if args.resolution < lpips_model.min_size:
            raise ValueError(
                f"validation LPIPS needs images of at least {lpips_model.min_size} px, got --resolution "
                f"{args.resolution}; raise the resolution or pass --lpips_net none."
            )

    state = resume_if_requested(accelerator, args)
    init_trackers(accelerator, args, "train_ifsq_autoencoder")
    unwrapped = accelerator.unwrap_model(model)
    progress = progress_bar(accelerator, args, state)
    num_batches = batches_per_epoch(train_loader)
    logs: dict[str, float] = {}
    for epoch, batch_index, batch in batch_stream(accelerator, train_loader, state, args.gradient_accumulation_steps):
        if state.global_step >= args.max_train_steps:
            break
        x = batch["pixel_values"]
        model.train()
        with accelerator.accumulate(model, discriminator):
            out = model(x)
            g_loss, logs = loss_fn.generator_loss(
                x, out.sample, state.global_step, last_layer=unwrapped.get_last_layer()
            )
            apply_gradients(accelerator, g_loss, model.parameters(), optimizer, lr_scheduler, args.max_grad_norm)

            if state.global_step >= args.disc_start:
                d_loss, d_logs = loss_fn.discriminator_loss(
                    x, out.sample.detach(), state.global_step, discriminator=discriminator
                )
                apply_gradients(
                    accelerator, d_loss, discriminator.parameters(), disc_optimizer, None, args.max_grad_norm
                )
                logs.update(d_logs)

        if not accelerator.sync_gradients:
            continue
        state.advance(epoch, batch_index, args.gradient_accumulation_steps, num_batches)
        if ema is not None:
            ema.step(unwrapped)

        def step_logs(logs=logs, indices=out.indices.detach()) -> dict:  # utilization only on logging steps
            scalars = {k: float(v) for k, v in logs.items()}
            scalars.update(utilization_stats(unwrapped.quantizer, indices).as_log_dict("train/quantizer/"))
            scalars["train/lr"] = lr_scheduler.get_last_lr()[0]
            return scalars

        on_optimizer_step(
            accelerator,
            args,
            state,
            progress,
            g_loss,
            step_logs,
            (lambda step: validate(accelerator, model, ema, val_loader, lpips_model, args, step))
            if val_loader
            else None,
        )
    progress.close()

    accelerator.wait_for_everyone()
    final_metrics: dict = {}
    if accelerator.is_main_process:
        if val_loader is not None:
            final_metrics = validate(accelerator, model, ema, val_loader, lpips_model, args, state.global_step)
        final = ema.model if ema is not None else unwrapped
        check_finite_weights(final, state.global_step, "the final weights")
        final.save_pretrained(args.output_dir)
        finish_run(args.output_dir, args, final_metrics)
    accelerator.end_training()
    return {"global_step": state.global_step, "metrics": final_metrics}


if __name__ == "__main__":
    main()
