"""Frame distances and smoothness figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from pipelines.metrics import (
    coefficient_of_variation,
    directness,
    frame_gaps,
    jump_ratio,
    pixel_digest,
    psnr,
    rmse,
    smoothness,
    ssim_distance,
)


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


@pytest.mark.parametrize("copies", [1, 3, 8])
def test_n_copies_of_a_then_b_has_jump_ratio_n(copies: int) -> None:
    figures = smoothness([_grey(0.2)] * copies + [_grey(0.8)])
    assert figures["jump_ratio"] == pytest.approx(copies)
    assert figures["ssim"]["jump_ratio"] == pytest.approx(copies)
    assert figures["directness"] == pytest.approx(1.0)


def test_a_cross_fade_between_pictures_is_even_in_both_distances() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16, 3)), rng.random((16, 16, 3))
    frames = [(1 - w) * a + w * b for w in np.linspace(0, 1, 9)]
    figures = smoothness(frames)
    assert figures["jump_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert figures["directness"] == pytest.approx(1.0, abs=1e-6)
    assert len(figures["ssim_gaps"]) == 8 and figures["ssim"]["jump_ratio"] < 1.5


def test_ssim_distance_and_psnr() -> None:
    assert ssim_distance(_grey(0.3), _grey(0.3)) == pytest.approx(0.0)
    assert ssim_distance(_grey(0.0, 16), _grey(1.0, 16)) > 0.9
    assert ssim_distance(_grey(0.0, 2), _grey(1.0, 2)) == pytest.approx(1.0)  # too small for a window: RMSE
    assert psnr(_grey(0.5), _grey(0.5)) == math.inf
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0)
    assert pixel_digest(_grey(0.5)) == pixel_digest(np.asarray(_grey(0.5))) != pixel_digest(_grey(0.6))


def test_chains_and_loops_report_directness_per_segment() -> None:
    frames = [_grey(level) for level in (0.0, 0.25, 0.5, 0.2, 0.8, 0.4)]  # keyframes at 0, 2 and 5
    figures = smoothness(frames, keyframes=[0, 2, 5])
    assert [segment["frames"] for segment in figures["segments"]] == [2, 3]
    assert figures["segments"][0]["directness"] == pytest.approx(1.0, abs=1e-2)
    assert figures["segments"][1]["directness"] > 2  # 0.5 -> 0.2 -> 0.8 -> 0.4 is a detour
    looped = smoothness(frames[:4], keyframes=[0, 2], loop=True)
    assert len(looped["gaps"]) == 4 and looped["gaps"][-1] == pytest.approx(0.2, abs=1e-2)
    assert looped["segments"][1]["straight"] == pytest.approx(0.5, abs=1e-2)  # back to frame 0
