"""The attention benchmark's measurements: one morph in each configuration, its smoothness and cost.

Used by `benchmarks.attention_bench` (the run) and `benchmarks.attention_tune` (the knob sweep).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.morph_bench import PAIRS, plain_render
from pipelines import metrics
from pipelines.cache import FrameCache
from pipelines.engine import Morpher
from pipelines.loading import LoadedModel
from pipelines.request import MorphRequest

# Held-out pairs: never rendered while the knobs were tuned (tuning used TUNING_PAIRS only).
HELD_OUT_PAIRS = [
    ("a green circle", "a yellow square"),
    ("a small red star", "a large blue triangle on a white background"),
    ("a white square on a purple background", "a black star on a yellow background"),
    ("a large orange triangle on a checkered background", "a small green circle"),
]
# The pairs the knobs were tuned on: the first half of the smoothness benchmark's pairs.
TUNING_PAIRS = PAIRS[:4]
# The landscape model speaks another caption language (pipelines/toy/scenes_data.py); its
# pairs avoid the time x terrain pairs held out of its training. Nothing was tuned on them.
SCENES_PAIRS = [
    ("a sunset over the ocean", "mountains at night"),
    ("a foggy forest at dawn", "the desert at noon"),
    ("green hills at noon", "a city skyline at night"),
    ("a lake in the morning", "snowy mountains at dusk"),
    ("a sunrise over fields", "the ocean at night"),
    ("a rainy city at dusk", "sand dunes at sunset"),
    ("mountains in the morning", "a forest at sunset"),
    ("the ocean at noon", "hills at dusk"),
]
SCENES_HELD_OUT_PAIRS = [
    ("a sunset over a lake", "a forest at night"),
    ("the desert at dawn", "snowy mountains at noon"),
    ("the city at sunset", "hills in the morning"),
    ("a foggy lake at dawn", "mountains at sunset"),
]


def pair_sets(spec: str | None) -> tuple[list, list]:
    """(benchmark pairs, held-out pairs) in the caption language of the model `spec` names."""
    if spec and "scenes" in spec:
        return SCENES_PAIRS, SCENES_HELD_OUT_PAIRS
    return PAIRS, HELD_OUT_PAIRS


CONFIGS = [("plain", "linear"), ("interpolate", "linear"), ("plain", "even"), ("interpolate", "even")]
# A gap this many times the morph's median gap is a cut (the definition).
CUT_FACTOR = 3.0


def gini(values: list[float]) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, near 1 when one holds everything."""
    array = np.sort(np.asarray(values, dtype=np.float64))
    if array.size == 0 or array.sum() <= 0:
        return math.nan
    ranks = np.arange(1, array.size + 1)
    return float((2 * ranks - array.size - 1).dot(array) / (array.size * array.sum()))


def cuts(gaps: list[float]) -> int:
    """Gaps over CUT_FACTOR x the median gap."""
    middle = float(np.median(gaps))
    return int(sum(gap > CUT_FACTOR * middle for gap in gaps)) if middle > 0 else 0


class RowCounter:
    """Rows through the UNet (frames and anchors, both guidance halves), by a forward pre-hook."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.rows = 0
        self.calls = 0

    def __enter__(self) -> "RowCounter":
        def count(_module, args, kwargs) -> None:
            sample = kwargs.get("sample", args[0] if args else None)
            self.rows += int(sample.shape[0])
            self.calls += 1

        self.handle = self.unet.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *_) -> None:
        self.handle.remove()


def measure(model: LoadedModel, request: MorphRequest, references: list[Image.Image]) -> dict:
    """One morph from an empty frame cache: smoothness figures, cost and the frames."""
    morpher = Morpher(model, cache=FrameCache())
    with RowCounter(model.pipe.unet) as counter:
        began = time.perf_counter()
        result = morpher.render(request)
        seconds = time.perf_counter() - began
    gaps = result.manifest["metrics"]["gaps"]
    record = result.manifest["render"]
    halves = 2 if request.guidance > 1 else 1
    ends = [result.frames[0].image, result.frames[-1].image]
    return {
        "jump_ratio": metrics.jump_ratio(gaps),
        "cuts": cuts(gaps),
        "directness": result.manifest["metrics"]["directness"],
        "smoothness": 1.0 - gini(gaps),
        "gaps": gaps,
        "t": [frame.t for frame in result.frames],
        "seconds": seconds,
        "frames_out": len(result.frames),
        "frames_rendered": record["frames_rendered"],
        "frames_denoised": counter.rows / (halves * request.steps),  # anchors included
        "pipeline_calls": record["pipeline_calls"],
        "endpoint_psnr": min(metrics.psnr(a, b) for a, b in zip(ends, references)),
        "images": [frame.image for frame in result.frames],
    }


def references_for(model: LoadedModel, request: MorphRequest) -> list[Image.Image]:
    return [plain_render(model.pipe, prompt, seed, request) for prompt, seed in zip(request.prompts, request.seeds)]


def morph_row(model: LoadedModel, base: MorphRequest, prompts, seeds, configs, held_out: bool) -> dict:
    """Every configuration of one morph, side by side."""
    request = replace(base, prompts=tuple(prompts), seeds=tuple(seeds))
    references = references_for(model, request)
    row: dict[str, Any] = {"prompts": list(prompts), "seeds": list(seeds), "held_out": held_out}
    for mode, spacing in configs:
        row[f"{mode}+{spacing}"] = measure(model, replace(request, attention=mode, spacing=spacing), references)
    return row


def beta_times(frames: int, a: float) -> list[float]:
    """AID's prior: t_i = F^-1(i / (frames - 1)) for the Beta(a, a) distribution (a > 1: more frames mid-way)."""
    from scipy.stats import beta

    return [0.0, *[float(beta.ppf(i / (frames - 1), a, a)) for i in range(1, frames - 1)], 1.0]


def measure_at(model: LoadedModel, request: MorphRequest, times: list[float]) -> dict:
    """J and cuts of a two-key morph rendered at the given t (a spacing the engine does not offer)."""
    from pipelines.walks import get_walk

    morpher = Morpher(model)
    walk = get_walk("chain")
    job = morpher.start_job(morpher.resolve(request), walk)
    frames = list(morpher.render_points([walk.at(request, 0, t) for t in times], job))
    gaps = metrics.frame_gaps([frame.image for frame in frames])
    return {"jump_ratio": metrics.jump_ratio(gaps), "cuts": cuts(gaps), "smoothness": 1.0 - gini(gaps),
            "directness": metrics.directness(gaps, metrics.rmse(frames[0].image, frames[-1].image)),
            "gaps": gaps, "t": times}


CONFIGS_NAMED = [(f"{mode}+{spacing}", (mode, spacing)) for mode, spacing in CONFIGS]
