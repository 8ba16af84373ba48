"""`evaluate` module: SSIM of images in [-1, 1] (see ifsq_hf.metrics.ssim)."""

import evaluate

from ifsq_hf.metrics.evaluate_modules import image_features, images_to_tensor
from ifsq_hf.metrics.ssim import ssim

_DESCRIPTION = "Mean per-image SSIM (11x11 Gaussian window, sigma 1.5) of (C, H, W) images in [-1, 1]."
_INPUTS = """
Args:
    predictions: reconstructed images, (C, H, W) floats in [-1, 1].
    references: original images, same shapes.
    window ("gaussian" or "uniform", default "gaussian"): "uniform" reproduces skimage's 7x7 default.
Returns:
    ssim: mean over images.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Ssim(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=image_features()
        )

    def _compute(self, predictions, references, window="gaussian"):
        pred = images_to_tensor(predictions, "ssim")
        ref = images_to_tensor(references, "ssim")
        return {"ssim": float(ssim(pred, ref, window=window).mean())}
