"""CodebookUsageTracker accumulates exactly across batches."""

import pytest
import torch

from ifsq_hf.metrics import CodebookUsageTracker
from ifsq_hf.quantization import FiniteScalarQuantizer, per_dim_bin_histogram, utilization_stats


def test_uniform_usage_of_half_the_codebook():
    tracker = CodebookUsageTracker(8)
    tracker.update(torch.tensor([[0, 1], [2, 3]]))
    tracker.update(torch.tensor([3, 2, 1, 0]))
    out = tracker.compute()
    assert out["usage"] == 0.5 and out["num_tokens"] == 8
    assert out["entropy"] == pytest.approx(2.0) and out["perplexity"] == pytest.approx(4.0)
    assert out["entropy_efficiency"] == pytest.approx(2 / 3)


def test_skewed_histogram_entropy():
    tracker = CodebookUsageTracker(4)
    tracker.update(torch.tensor([0, 0, 0, 1]))
    p = torch.tensor([0.75, 0.25])
    assert tracker.compute()["entropy"] == pytest.approx(float(-(p * p.log2()).sum()))
    tracker.reset()
    with pytest.raises(ValueError, match="before any update"):
        tracker.compute()


def test_errors():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        CodebookUsageTracker(4).update(torch.tensor([4]))
    with pytest.raises(ValueError, match="integer"):
        CodebookUsageTracker(4).update(torch.tensor([0.5]))
    with pytest.raises(ValueError, match=">= 1"):
        CodebookUsageTracker(0)
    with pytest.raises(ValueError, match=r"integer >= 1, got 4\.5"):
        CodebookUsageTracker(4.5)
    with pytest.raises(ValueError, match="integer"):
        CodebookUsageTracker(4).update(torch.tensor([True]))


def test_bin_statistics_from_levels_match_the_quantizer():
    q = FiniteScalarQuantizer([5, 3, 7])
    indices = q(torch.randn(500, 3) * 1.5).indices
    tracker = CodebookUsageTracker(q.codebook_size, levels=q.levels)
    tracker.update(indices[:200])
    tracker.update(indices[200:])
    out = tracker.compute()
    ref = utilization_stats(q, indices)  # the same statistics, computed from the digits instead of marginals
    assert [c.tolist() for c in tracker.bin_counts()] == [c.tolist() for c in per_dim_bin_histogram(q, indices)]
    assert out["usage"] == ref.code_usage and out["perplexity"] == pytest.approx(ref.code_perplexity)
    assert out["bin_usage"] == pytest.approx(sum(ref.bin_usage) / 3)
    assert out["bin_entropy_efficiency"] == pytest.approx(sum(ref.bin_entropy_efficiency) / 3)
    with pytest.raises(ValueError, match="must equal codebook_size"):
        CodebookUsageTracker(100, levels=[5, 5])
    with pytest.raises(ValueError, match="levels"):
        CodebookUsageTracker(4).bin_counts()
