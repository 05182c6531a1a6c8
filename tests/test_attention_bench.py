"""The attention benchmark's measures: 1 - Gini of the gaps and the cut count."""

from __future__ import annotations

import math

import pytest

from benchmarks.attention_measure import CUT_FACTOR, beta_times, cuts, gini


def test_gini_is_zero_for_even_gaps_and_grows_as_one_gap_takes_the_change() -> None:
    assert gini([2.0, 2.0, 2.0, 2.0]) == pytest.approx(0.0)
    assert gini([0.0, 0.0, 0.0, 8.0]) == pytest.approx(0.75)  # (n - 1) / n when one gap holds everything
    assert 0.0 < gini([1.0, 2.0, 3.0]) < gini([1.0, 1.0, 9.0])
    assert math.isnan(gini([]))


def test_a_cut_is_a_gap_over_the_factor_times_the_median_gap() -> None:
    assert cuts([1.0, 1.0, 1.0, 1.0]) == 0
    assert cuts([1.0, 1.0, CUT_FACTOR * 1.01, 1.0]) == 1
    assert cuts([1.0, 1.0, CUT_FACTOR * 0.99, 1.0]) == 0
    assert cuts([1.0, 5.0, 1.0, 6.0, 1.0]) == 2


def test_beta_times_keep_the_ends_and_put_more_frames_mid_way() -> None:
    times = beta_times(9, 1.5)
    assert times[0] == 0.0 and times[-1] == 1.0 and times == sorted(times)
    assert times[4] == pytest.approx(0.5)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[len(gaps) // 2] < gaps[0]  # denser in the middle than at the ends
