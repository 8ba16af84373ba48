"""`evaluate` module: codebook usage, perplexity and entropy of token indices (see CodebookUsageTracker)."""

import datasets
import evaluate

from ifsq_hf.metrics.codebook import CodebookUsageTracker

_DESCRIPTION = "Fraction of codebook entries used, perplexity and entropy (bits) of the token-index histogram."
_INPUTS = """
Args:
    predictions: token indices of each image, flattened to a list of ints.
    codebook_size (int, required): number of codes (model.codebook_size).
Returns:
    usage, perplexity, entropy, entropy_efficiency, num_tokens.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class CodeUtilization(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, codebook_size=None):
        if codebook_size is None:
            raise ValueError(
                "code_utilization needs codebook_size=, e.g. compute(..., codebook_size=model.codebook_size)."
            )
        import torch

        tracker = CodebookUsageTracker(codebook_size)
        for indices in predictions:
            tracker.update(torch.as_tensor(indices, dtype=torch.int64))
        return tracker.compute()
