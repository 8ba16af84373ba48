"""Seed statistics of the benchmark: mean ± std and paired t intervals, checked against values computed by hand."""

import math

import pytest

from ifsq_hf.benchmark.statistics import paired_difference, summarize, t_quantile


def test_t_quantile_matches_tables():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-5)
    with pytest.raises(ValueError, match="at least 1 degree"):
        t_quantile(0.975, 0)


def test_summarize_uses_the_sample_std():
    s = summarize([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert summarize([3.0]).std is None and summarize([3.0]).format() == "3.000 (n=1)"
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


def test_paired_difference_interval_by_hand():
    a, b = [20.0, 21.0, 19.5], [19.0, 20.5, 19.6]
    d = [1.0, 0.5, -0.1]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    p = paired_difference(a, b)
    assert p.mean == pytest.approx(mean) and p.std == pytest.approx(sd)
    assert p.low == pytest.approx(mean - half, abs=1e-5) and p.high == pytest.approx(mean + half, abs=1e-5)
    assert p.includes_zero is True
    clear = paired_difference([2.0, 2.1, 2.2], [1.0, 1.0, 1.05])
    assert clear.includes_zero is False and clear.low > 0


def test_paired_difference_edge_cases():
    one = paired_difference([1.0], [0.5])
    assert one.low is None and one.includes_zero is None and "no interval" in one.format()
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [1.0, 1.0], confidence=1.5)
