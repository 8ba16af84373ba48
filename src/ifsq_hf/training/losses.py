"""Tokenizer losses: L1 + LPIPS reconstruction, and a PatchGAN discriminator with hinge loss.

Follows the official iFSQ recipe (``LPIPSWithDiscriminator2D``, ``ifsq/configs/ifsq_f16_d4_4bit/run.sh``): ``nll = l1 + perceptual``; after
``disc_start`` the generator also gets ``-mean(D(x_hat))`` scaled by an adaptive weight, the ratio of the
gradient norms of the two terms at the decoder's last layer. There is no commitment or entropy term: FSQ has
no codebook to pull towards. How the generator and discriminator steps are scheduled is described in
``docs/tokenizer_losses.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..metrics.lpips import LPIPS

__all__ = ["NLayerDiscriminator", "TokenizerLoss", "adaptive_generator_weight", "hinge_d_loss", "vanilla_d_loss"]


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}.")


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator: ``forward(images (B, C, H, W)) -> (B, 1, h, w)`` real/fake logits per patch.

    ``num_layers`` stride-2 4x4 convolutions (64, 128, 256, 512, ... channels, capped at 8x ``ndf``), one
    stride-1 conv and a 1-channel stride-1 head; LeakyReLU(0.2). The official tokenizer uses ``ndf=64``,
    ``num_layers=4`` and BatchNorm; ``norm="group"`` suits small or per-device batches. Weights start from
    N(0, 0.02) (norm scales from N(1, 0.02)). Inputs must be at least ``min_input_size`` pixels per side.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, num_layers: int = 4, norm: str = "batch"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
        use_bias = norm == "none"  # a norm layer right after makes a conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for n in range(1, num_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=use_bias), _norm_layer(norm, out)]
            layers.append(nn.LeakyReLU(0.2, True))
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.num_layers = num_layers
        # Each stride-2 conv halves the size (floor), the two stride-1 4x4 convs (padding 1) remove a pixel each.
        self.min_input_size = 3 * 2**num_layers
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"discriminator expects (B, C, H, W) images, got shape {tuple(images.shape)}.")
        if min(images.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} px are too small for a {self.num_layers}-layer PatchGAN "
                f"(needs >= {self.min_input_size} px); use fewer disc layers or larger crops."
            )
        return self.main(images)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating BCE: ``0.5 * (mean softplus(-D(x)) + mean softplus(D(x_hat)))``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adaptive_generator_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e6
) -> torch.Tensor:
    """``clamp(||d nll / d W|| / (||d g / d W|| + 1e-6), 0, max_weight)`` at ``W = last_layer`` (detached).

    Balances the GAN term so its gradient at the decoder output is as large as the reconstruction gradient,
    whatever the scale of either loss (Esser et al., taming-transformers).
    """
    if not last_layer.requires_grad:
        raise ValueError("last_layer must require grad (pass model.get_last_layer() of a model in training).")
    try:
        nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    except RuntimeError as err:
        raise ValueError(
            "could not differentiate the losses w.r.t. last_layer; it must be the weight that produced the "
            f"reconstructions (model.get_last_layer()) and grad mode must be on ({err})."
        ) from err
    weight = nll_grad.norm() / (g_grad.norm() + 1e-6)
    return weight.clamp(0.0, max_weight).detach()


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Keep gradients of the generator objective out of the discriminator's parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _drop_perceptual_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "perceptual_loss.")]:
        del state_dict[key]


def _ignore_missing_perceptual_keys(module: nn.Module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    for key in [k for k in missing if "perceptual_loss." in k]:
        missing.remove(key)


class TokenizerLoss(nn.Module):
    """Reconstruction + adversarial objective of the iFSQ tokenizer, with its own discriminator.

    Args:
        l1_weight: weight of the pixel L1 term.
        perceptual_weight: weight of LPIPS (0 disables it and skips loading the network).
        disc_weight: scale of the adaptive GAN weight (official 0.5).
        disc_start: first global step with a GAN term and discriminator updates (official 50000).
        disc_factor: extra factor on both GAN losses once active (official 1.0).
        perceptual_net: LPIPS backbone, "vgg" (official training loss) or "alex".
        perceptual_loss: a ready module ``(x, y) -> (B,)`` used instead of building LPIPS (e.g. in tests).
        disc_in_channels / disc_ndf / disc_num_layers / disc_norm: :class:`NLayerDiscriminator` arguments.
        disc_loss: "hinge" (official) or "vanilla".
        max_adaptive_weight: clamp of the gradient-norm ratio (official 1e6).

    ``generator_loss`` and ``discriminator_loss`` are called once each per batch; see
    ``docs/tokenizer_losses.md`` for the step schedule and optimizers.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        disc_weight: float = 0.5,
        disc_start: int = 50000,
        disc_factor: float = 1.0,
        perceptual_net: str = "vgg",
        perceptual_loss: nn.Module | None = None,
        disc_in_channels: int = 3,
        disc_ndf: int = 64,
        disc_num_layers: int = 4,
        disc_norm: str = "batch",
        disc_loss: str = "hinge",
        max_adaptive_weight: float = 1e6,
        lpips_weights_path: str | None = None,
    ):
        super().__init__()
        if disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {disc_loss!r}.")
        if min(l1_weight, perceptual_weight, disc_weight, disc_factor) < 0 or disc_start < 0:
            raise ValueError("loss weights and disc_start must be non-negative.")
        self.l1_weight = l1_weight
        self.perceptual_weight = perceptual_weight
        self.disc_weight = disc_weight
        self.disc_start = disc_start
        self.disc_factor = disc_factor
        self.max_adaptive_weight = max_adaptive_weight
        self.disc_loss_fn = hinge_d_loss if disc_loss == "hinge" else vanilla_d_loss
        if perceptual_loss is None and perceptual_weight > 0:
            perceptual_loss = LPIPS(perceptual_net, weights_path=lpips_weights_path)
        self.perceptual_loss = perceptual_loss
        self.discriminator = NLayerDiscriminator(disc_in_channels, disc_ndf, disc_num_layers, disc_norm)
        # The frozen LPIPS network is rebuilt from its package, so checkpoints carry only the discriminator.
        self._register_state_dict_hook(_drop_perceptual_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_perceptual_keys)

    def discriminator_active(self, global_step: int) -> bool:
        """Whether the GAN terms are on at ``global_step`` (``>= disc_start`` and a non-zero factor)."""
        return global_step >= self.disc_start and self.disc_factor > 0

    def reconstruction_loss(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``l1_weight * mean|x - x_hat| + perceptual_weight * mean LPIPS(x, x_hat)`` and its parts."""
        if inputs.shape != reconstructions.shape:
            raise ValueError(
                f"inputs and reconstructions shapes differ: {tuple(inputs.shape)} vs {tuple(reconstructions.shape)}."
            )
        l1 = (inputs - reconstructions).abs().mean()
        nll = self.l1_weight * l1
        parts = {"l1": l1.detach()}
        if self.perceptual_weight > 0 and self.perceptual_loss is not None:
            p = self.perceptual_loss(inputs.contiguous(), reconstructions.contiguous()).mean()
            nll = nll + self.perceptual_weight * p
            parts["perceptual"] = p.detach()
        return nll, parts

    def generator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for the autoencoder update and a dict of floats to log.

        ``last_layer`` (``model.get_last_layer()``) enables the adaptive GAN weight; without it, or when grad
        mode is off (evaluation), the weight is ``disc_weight`` itself. The discriminator's parameters receive
        no gradient from this loss.
        """
        nll, parts = self.reconstruction_loss(inputs, reconstructions)
        logs = {f"loss/{k}": float(v) for k, v in parts.items()}
        logs["loss/nll"] = float(nll.detach())
        loss = nll
        if self.discriminator_active(global_step) and self.disc_weight > 0:
            with _frozen(self.discriminator):
                g_loss = -self.discriminator(reconstructions.contiguous()).mean()
            if last_layer is not None and torch.is_grad_enabled() and g_loss.requires_grad:
                weight = (
                    adaptive_generator_weight(nll, g_loss, last_layer, self.max_adaptive_weight) * self.disc_weight
                )
            else:
                weight = torch.tensor(self.disc_weight, device=nll.device)
            loss = nll + weight * self.disc_factor * g_loss
            logs["loss/g"] = float(g_loss.detach())
            logs["disc/adaptive_weight"] = float(weight)
        else:
            logs["loss/g"] = 0.0
            logs["disc/adaptive_weight"] = 0.0
        logs["loss/total"] = float(loss.detach())
        return loss, logs

    def discriminator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: int,
        discriminator: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for the discriminator update (inputs and reconstructions are detached here).

        ``discriminator``: the module to score with, e.g. the wrapper ``accelerator.prepare(loss.discriminator)``
        returns, so that DDP averages its gradients (default: ``self.discriminator``). Before ``disc_start`` it is
        a zero that is still connected to the discriminator, so an unconditional ``backward()`` / optimizer step in
        a training loop is a harmless no-op.
        """
        discriminator = self.discriminator if discriminator is None else discriminator
        if not self.discriminator_active(global_step):
            zero = sum(p.sum() for p in discriminator.parameters()) * 0.0
            return zero, {"disc/loss": 0.0, "disc/logits_real": 0.0, "disc/logits_fake": 0.0}
        logits_real = discriminator(inputs.detach().contiguous())
        logits_fake = discriminator(reconstructions.detach().contiguous())
        loss = self.disc_factor * self.disc_loss_fn(logits_real, logits_fake)
        logs = {
            "disc/loss": float(loss.detach()),
            "disc/logits_real": float(logits_real.detach().mean()),
            "disc/logits_fake": float(logits_fake.detach().mean()),
        }
        return loss, logs
