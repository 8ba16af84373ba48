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


def test_huge_codebook_is_tracked_sparsely_with_the_dense_answer(monkeypatch):
    """4 channels x 257 levels (8 bits/dim) is 4.4e9 codes: one counter per code would be 35 GB. The sparse path
    keeps only the codes seen and gives exactly the statistics of the dense one."""
    import ifsq_hf.metrics.codebook as codebook

    levels = [257, 257, 257, 257]
    huge = CodebookUsageTracker(257**4, levels=levels)
    assert not huge.dense
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 257**4, (3, 5), generator=g) for _ in range(3)]
    batches.append(batches[0][:2])  # repeated codes accumulate
    for b in batches:
        huge.update(b)
    assert huge.codes.numel() <= 45 and huge.compute()["num_tokens"] == 55

    small_levels = [7, 5, 3]
    monkeypatch.setattr(codebook, "DENSE_LIMIT", 10)
    sparse = CodebookUsageTracker(105, levels=small_levels)
    monkeypatch.setattr(codebook, "DENSE_LIMIT", 2**22)
    dense = CodebookUsageTracker(105, levels=small_levels)
    assert not sparse.dense and dense.dense
    for _ in range(4):
        idx = torch.randint(0, 105, (17,), generator=g)
        sparse.update(idx)
        dense.update(idx)
    assert sparse.compute() == pytest.approx(dense.compute(), rel=1e-12)
    for a, b in zip(sparse.bin_counts(), dense.bin_counts()):
        assert torch.equal(a, b)
    sparse.reset()
    assert sparse.codes.numel() == 0
