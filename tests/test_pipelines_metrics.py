"""Frame distances and smoothness figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from pipelines.metrics import coefficient_of_variation, directness, frame_gaps, jump_ratio, rmse, smoothness


def _grey(level: float, size: int = 8) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), round(level * 255), dtype=np.uint8))


def test_rmse_is_zero_for_equal_and_one_for_black_white() -> None:
    assert rmse(_grey(0.5), _grey(0.5)) == 0.0
    assert rmse(_grey(0.0), _grey(1.0)) == pytest.approx(1.0)
    assert rmse(np.zeros((2, 2)), np.full((2, 2), 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rmse(_grey(0, 8), _grey(0, 4))


def test_an_even_fade_is_smooth_and_direct() -> None:
    frames = [_grey(level) for level in np.linspace(0, 1, 6)]
    figures = smoothness(frames)
    assert figures["jump_ratio"] == pytest.approx(1.0, abs=1e-2)
    assert figures["cv"] == pytest.approx(0.0, abs=1e-2)
    assert figures["directness"] == pytest.approx(1.0, abs=1e-2)
    assert len(figures["gaps"]) == 5
    json.dumps(figures)


def test_a_hard_cut_has_jump_ratio_n() -> None:
    frames = [_grey(0)] * 4 + [_grey(1)] * 4
    gaps = frame_gaps(frames)
    assert jump_ratio(gaps) == pytest.approx(len(gaps))
    assert coefficient_of_variation(gaps) > 2


def test_a_detour_has_directness_above_one() -> None:
    frames = [_grey(0.2), _grey(0.9), _grey(0.3)]
    gaps = frame_gaps(frames)
    assert directness(gaps, rmse(frames[0], frames[-1])) > 5


def test_degenerate_sequences_give_none_not_nan() -> None:
    figures = smoothness([_grey(0.5)] * 3)
    assert figures["jump_ratio"] is None and figures["cv"] is None and figures["directness"] is None
    assert math.isnan(jump_ratio([]))
    assert "NaN" not in json.dumps(figures)
