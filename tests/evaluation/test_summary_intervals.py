"""Interval helpers of the summary against scipy and published values."""

import math

import numpy as np
import pytest
import scipy.stats

from captum_robust.evaluation._summary import difference_interval
from captum_robust.evaluation._summary import proportion_difference_interval
from captum_robust.evaluation._summary import proportion_interval


@pytest.mark.parametrize("successes,total", [(0, 10), (7, 10), (10, 10), (45, 50)])
def test_wilson_interval_matches_scipy(successes, total):
    expected = scipy.stats.binomtest(successes, total).proportion_ci(
        confidence_level=0.9, method="wilson"
    )
    low, high = proportion_interval(successes, total, confidence=0.9)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_welch_interval_matches_scipy_on_the_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.1, 20), rng.normal(0.5, 0.3, 31)
    stats = [{"mean": x.mean(), "std": x.std(ddof=1), "count": len(x)} for x in (a, b)]
    difference, low, high = difference_interval(*stats)
    expected = scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-9)


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17, table II, example (a):
    # 56/70 vs 48/80, method 10: 0.0524 to 0.3339.
    difference, low, high = proportion_difference_interval(56, 70, 48, 80)
    assert difference == pytest.approx(0.2)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_degenerate_and_bad_inputs():
    assert all(math.isnan(v) for v in proportion_interval(0, 0))
    one = {"mean": 0.5, "std": math.nan, "count": 1}
    two = {"mean": 0.2, "std": 0.1, "count": 5}
    difference, low, high = difference_interval(one, two)
    assert difference == pytest.approx(0.3) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="`successes`"):
        proportion_interval(11, 10)
    with pytest.raises(TypeError, match="`total`"):
        proportion_interval(1, 10.0)
    with pytest.raises(ValueError, match="`confidence`"):
        proportion_interval(1, 10, confidence=1.0)
    with pytest.raises(ValueError, match=r"`first\['std'\]`"):
        difference_interval({"mean": 0.1, "count": 3}, two)
    with pytest.raises(TypeError, match="`second`"):
        difference_interval(two, [0.1])
