"""Distances between frames and smoothness figures for a morph (pure, numpy only).

Frames x0..xN, gaps d_i = D(x_{i-1}, x_i) with D the pixel RMSE in [0, 1]
(and 1 - SSIM as a second, structure-aware distance):
- jump ratio J = max d_i / mean d_i: 1 is perfectly even, N is a hard cut;
- CV = std d_i / mean d_i, the spread of the gaps;
- directness R = sum d_i / D(x0, xN): near 1 when the morph takes no detour
  (for a chain, the same ratio per segment, keyframe to keyframe);
- endpoint fidelity: PSNR of a keyframe against the plain pipeline's render of
  its prompt and seed (infinite when bit-equal; >= 40 dB is the bar).
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
from PIL import Image

ImageLike = Image.Image | np.ndarray


def to_unit_array(image: ImageLike) -> np.ndarray:
    """An image as a float64 array in [0, 1] (uint8 arrays and PIL images are divided by 255)."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64)


def rmse(a: ImageLike, b: ImageLike) -> float:
    """Root-mean-square pixel difference of two same-sized images, in [0, 1]."""
    x, y = to_unit_array(a), to_unit_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    return float(np.sqrt(np.mean((x - y) ** 2)))


def ssim_distance(a: ImageLike, b: ImageLike) -> float:
    """1 - SSIM (Wang et al., IEEE TIP 2004) of two same-sized images, in [0, 2]; 0 when equal.

    scikit-image's SSIM with a 7-pixel window (smaller for tiny images), colour
    channels averaged.
    """
    from skimage.metrics import structural_similarity

    x, y = to_unit_array(a), to_unit_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    side = min(x.shape[0], x.shape[1])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return rmse(x, y)  # no room for a window: fall back to pixels
    channel_axis = 2 if x.ndim == 3 else None
    score = structural_similarity(x, y, win_size=window, data_range=1.0, channel_axis=channel_axis)
    return float(1.0 - score)


DISTANCES = {"pixel_rmse": rmse, "1-ssim": ssim_distance}


def frame_gaps(frames: Sequence[ImageLike], distance: str = "pixel_rmse") -> list[float]:
    """Distance between each pair of consecutive frames (len(frames) - 1 values)."""
    measure = DISTANCES[distance]
    arrays = [to_unit_array(frame) for frame in frames]
    return [measure(before, after) for before, after in zip(arrays, arrays[1:])]


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


def psnr(a: ImageLike, b: ImageLike) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf when they are equal)."""
    error = rmse(a, b)
    return math.inf if error == 0 else 20.0 * math.log10(1.0 / error)


def pixel_digest(image: ImageLike) -> str:
    """A short SHA-256 of an image's RGB bytes: compare a keyframe with a plain render without storing it."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _clean(value: float) -> float | None:
    """Round for JSON; nan and inf become None (JSON has neither)."""
    return None if not math.isfinite(value) else round(value, 6)


def gap_figures(gaps: Sequence[float]) -> dict:
    """J and CV of a list of gaps, JSON-ready."""
    return {"jump_ratio": _clean(jump_ratio(gaps)), "cv": _clean(coefficient_of_variation(gaps))}


def smoothness(
    frames: Sequence[ImageLike],
    keyframes: Sequence[int] | None = None,
    loop: bool = False,
    ssim: bool = True,
) -> dict:
    """Gaps, J, CV and R of a sequence of frames, as a JSON-ready dict (nan -> None).

    `keyframes` are the indices of the keyframes in `frames` (default: the first
    and the last); directness is reported per segment between them. With `loop`
    the wrap-around gap (last frame back to the first) counts too, as the looping
    animation shows it, and the last segment ends at frame 0.
    """
    arrays = [to_unit_array(frame) for frame in frames]
    sequence = arrays + [arrays[0]] if loop and len(arrays) > 1 else arrays
    gaps = [rmse(before, after) for before, after in zip(sequence, sequence[1:])]
    end_to_end = rmse(arrays[0], arrays[-1]) if len(arrays) >= 2 else 0.0
    if keyframes is None:
        keyframes = [0, len(arrays) - 1] if not loop else [0]
    bounds = list(keyframes) + ([len(arrays)] if loop else [])  # index len(arrays) is frame 0 again
    segments, straights = [], []
    for start, end in zip(bounds, bounds[1:]):
        straight = rmse(sequence[start], sequence[end])
        straights.append(straight)
        path = float(np.sum(gaps[start:end]))
        segments.append(
            {"frames": end - start, "path": _clean(path), "straight": _clean(straight),
             "directness": _clean(directness(gaps[start:end], straight))}
        )
    result = {
        "distance": "pixel_rmse",
        "gaps": [round(gap, 6) for gap in gaps],
        **gap_figures(gaps),
        # R of a chain: total path over the summed keyframe-to-keyframe distances (DESIGN's R for 2 prompts)
        "directness": _clean(directness(gaps, sum(straights))),
        "end_to_end": _clean(end_to_end),
        "segments": segments,
    }
    if ssim and len(sequence) >= 2:
        structural = [ssim_distance(before, after) for before, after in zip(sequence, sequence[1:])]
        result["ssim_gaps"] = [round(gap, 6) for gap in structural]
        result["ssim"] = gap_figures(structural)
    return result
