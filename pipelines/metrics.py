"""Distances between frames and smoothness figures for a morph (pure, numpy only).

Frames x0..xN, gaps d_i = D(x_{i-1}, x_i) with D the pixel RMSE in [0, 1]:
- jump ratio J = max d_i / mean d_i: 1 is perfectly even, N is a hard cut;
- CV = std d_i / mean d_i, the spread of the gaps;
- directness R = sum d_i / D(x0, xN): near 1 when the morph takes no detour.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image



def to_unit_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An image as a float64 array in [0, 1] (uint8 arrays and PIL images are divided by 255)."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64)


def rmse(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """Root-mean-square pixel difference of two same-sized images, in [0, 1]."""
    x, y = to_unit_array(a), to_unit_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    return float(np.sqrt(np.mean((x - y) ** 2)))


def frame_gaps(frames: Sequence[Image.Image | np.ndarray]) -> list[float]:
    """Pixel RMSE between each pair of consecutive frames (len(frames) - 1 values)."""
    arrays = [to_unit_array(frame) for frame in frames]
    return [rmse(before, after) for before, after in zip(arrays, arrays[1:])]


def jump_ratio(gaps: Sequence[float]) -> float:
    """max / mean of the gaps (nan when there are none or all are zero)."""
    mean = float(np.mean(gaps)) if len(gaps) else 0.0
    return float(np.max(gaps)) / mean if mean > 0 else math.nan


def coefficient_of_variation(gaps: Sequence[float]) -> float:
    """Population std / mean of the gaps (nan when there are none or all are zero)."""
    mean = float(np.mean(gaps)) if len(gaps) else 0.0
    return float(np.std(gaps)) / mean if mean > 0 else math.nan


def directness(gaps: Sequence[float], end_to_end: float) -> float:
    """Path length / straight distance between the first and last frame (nan if that is 0)."""
    return float(np.sum(gaps)) / end_to_end if end_to_end > 0 else math.nan


def smoothness(frames: Sequence[Image.Image | np.ndarray]) -> dict:
    """Gaps, J, CV and R of a sequence of frames, as a JSON-ready dict (nan -> None)."""
    gaps = frame_gaps(frames)
    end_to_end = rmse(frames[0], frames[-1]) if len(frames) >= 2 else 0.0
    figures = {
        "jump_ratio": jump_ratio(gaps),
        "cv": coefficient_of_variation(gaps),
        "directness": directness(gaps, end_to_end),
        "end_to_end": end_to_end,
    }
    return {
        "distance": "pixel_rmse",
        "gaps": [round(gap, 6) for gap in gaps],
        **{name: (None if math.isnan(value) else round(value, 6)) for name, value in figures.items()},
    }
