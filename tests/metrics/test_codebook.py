"""CodebookUsageTracker accumulates exactly across batches."""

import pytest
import torch

from ifsq_hf.metrics import CodebookUsageTracker


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
