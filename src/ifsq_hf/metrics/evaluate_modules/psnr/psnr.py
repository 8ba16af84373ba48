"""`evaluate` module: PSNR (dB) of images in [-1, 1] (see ifsq_hf.metrics.psnr)."""

import evaluate

from ifsq_hf.metrics.evaluate_modules import image_features, images_to_tensor
from ifsq_hf.metrics.psnr import psnr

_DESCRIPTION = "Mean per-image PSNR in dB of (C, H, W) images in [-1, 1], computed on (x + 1) / 2 with peak 1."
_INPUTS = """
Args:
    predictions: reconstructed images, (C, H, W) floats in [-1, 1].
    references: original images, same shapes.
    clamp (bool, default True): clip predictions to [-1, 1] first.
Returns:
    psnr: mean over images of the per-image PSNR (dB).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Psnr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=image_features()
        )

    def _compute(self, predictions, references, clamp=True):
        pred = images_to_tensor(predictions, "psnr")
        ref = images_to_tensor(references, "psnr")
        return {"psnr": float(psnr(pred, ref, clamp=clamp).mean())}
