"""Bootstrap intervals and paired comparisons (llmdefinitions.stats)."""
import math

import numpy as np
import pytest

from llmdefinitions.stats import bootstrap_mean, format_decimal, paired_comparison


def test_interval_width_matches_the_normal_approximation():
    values = np.random.default_rng(0).normal(50.0, 30.0, size=400)
    interval = bootstrap_mean(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert interval.low < values.mean() < interval.high
    assert (interval.high - interval.low) / 2 == pytest.approx(half, rel=0.1)


def test_constant_values_give_a_zero_width_interval():
    interval = bootstrap_mean([7, 7, 7])
    assert (interval.estimate, interval.low, interval.high, interval.n) == (7, 7, 7, 3)


def test_same_seed_same_interval_and_pt_br_text():
    values = [0, 100, 55, 80, 90, 10, 100, 100]
    assert bootstrap_mean(values) == bootstrap_mean(values)
    assert "IC 95%" in str(bootstrap_mean(values)) and "," in str(bootstrap_mean(values))
    assert format_decimal(49.449) == "49,45"


def test_paired_comparison_finds_a_real_shift_and_not_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(50, 30, size=110)
    shifted = paired_comparison(base + 5 + rng.normal(0, 2, size=110), base)
    assert shifted.significant and shifted.p_value < 0.001
    assert shifted.difference.estimate == pytest.approx(5, abs=1)
    noise = paired_comparison(base + rng.normal(0, 2, size=110), base)
    assert noise.p_value > 0.01


def test_identical_lists_have_p_value_one():
    comparison = paired_comparison([1, 2, 3], [1, 2, 3])
    assert comparison.p_value == 1.0 and not comparison.significant


@pytest.mark.parametrize("a, b", [([1, 2], [1]), ([], []), ([1, float("nan")], [1, 2])])
def test_bad_input_is_refused_in_portuguese(a, b):
    with pytest.raises(ValueError, match="valor|notas|ausentes"):
        paired_comparison(a, b)
