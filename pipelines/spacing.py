"""Spacing: where a path walk's frames sit along t, and "even" re-timing from measured distances.

`linear` and `ease` are placed by the walk's plan (`timing.spaced`). `even`
renders the linear plan as a pilot, measures the pixel distance between neighbours
and moves frames so each step changes the picture about as much as the others,
refining in small rounds within a render budget. Its constants live here, together.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from pipelines import metrics
from pipelines.timing import retime_even, select_even, share_frames

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.render import Progress, RenderedFrame
    from pipelines.request import MorphRequest
    from pipelines.walks import PathWalk, Point

# Render budget: at most this many times the frames of a plain render are denoised.
EVEN_BUDGET = 2.0
# Stop refining once the chosen frames' jump ratio (largest gap / mean gap) is this low.
EVEN_GOAL = 1.15
# A wanted frame within this fraction of one step of a frame already rendered uses that frame.
EVEN_SNAP = 0.1
# Refinement renders a few frames per round and re-plans from what they measured: where
# the picture changes abruptly, each round's frames show where the next ones are needed.
# A round is 1/EVEN_ROUND_DIVISOR of the frames, at least EVEN_ROUND_MIN. Small rounds beat
# large ones clearly (benchmark median J 1.24 against 1.56 for rounds of half the budget
# left); the price is smaller pipeline calls, so on a CPU an even render takes about 2.5x
# the time of a linear one while denoising at most 2x the frames.
EVEN_ROUND_MIN = 2
EVEN_ROUND_DIVISOR = 8
# At most this many refinement rounds after the pilot (enough to spend the budget).
EVEN_ROUNDS = 10
# Invert the monotone cubic through the measured distances (else piecewise linear).
EVEN_SMOOTH = True
# Distances for planning are measured on frames scaled down to at most this many pixels a side.
EVEN_PLAN_SIDE = 128


@dataclass
class RenderStats:
    """What one morph cost: frames denoised, frames taken from the cache, and how "even" got there."""

    frames_out: int = 0  # frames in the result
    frames_rendered: int = 0  # frames denoised by the pipeline (cache misses)
    cache_hits: int = 0  # frames taken from the frame cache
    pipeline_calls: int = 0  # batches sent through the pipeline
    budget: int | None = None  # "even": most frames it may consider (EVEN_BUDGET x the frame count)
    rounds: list[dict] = field(default_factory=list)  # "even": samples and jump ratio after each pass

    def as_dict(self) -> dict:
        """JSON-ready, with the render cost relative to a plain render of the same frames."""
        considered = self.frames_rendered + self.cache_hits
        return {
            **asdict(self),
            "frames_considered": considered,
            "cost_vs_plain": round(considered / self.frames_out, 4) if self.frames_out else None,
        }


def refine_count(room: int, frames: int) -> int:
    """Frames to render in one refinement round of "even": a small share of the frames, within the budget left."""
    return max(1, min(room, max(EVEN_ROUND_MIN, math.ceil(frames / EVEN_ROUND_DIVISOR))))


def planning_array(image: "Image.Image") -> np.ndarray:
    """A frame as float32 in [0, 1], scaled down to at most EVEN_PLAN_SIDE a side (distances for planning)."""
    from PIL import Image

    image = image.convert("RGB")
    if max(image.size) > EVEN_PLAN_SIDE:
        scale = EVEN_PLAN_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX)
    return np.asarray(image, dtype=np.float32) / 255.0


class PairDistance:
    """Pixel RMSE between samples i and j of a list of planning arrays, remembered."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.memo: dict[tuple[int, int], float] = {}

    def __call__(self, i: int, j: int) -> float:
        if (i, j) not in self.memo:
            self.memo[(i, j)] = float(np.sqrt(np.mean((self.arrays[i] - self.arrays[j]) ** 2)))
        return self.memo[(i, j)]


def even_targets(
    samples: list[tuple[int, float]], distance: Callable[[int, int], float], segments: int, gaps: int
) -> list[tuple[int, float]]:
    """(segment, t) where frames should sit for equal steps, not yet near a sample; largest misses first.

    `samples` are the rendered (segment, t) in path order, ending with the path's end
    (or, for a closed path, its start again); `distance(i, i + 1)` is the gap between
    neighbours. Each segment's share of the `gaps` steps follows its length
    (`share_frames`); inside a segment the cumulative distance is inverted
    (`retime_even`). A target within EVEN_SNAP of a step from a sample is left out:
    that sample will do.
    """
    bounds = [i for i in range(len(samples) - 1) if samples[i][1] == 0.0] + [len(samples) - 1]
    if len(bounds) != segments + 1:
        raise ValueError(f"expected {segments + 1} keyframes among the samples, found {len(bounds)}")
    curves = []
    for first, last in zip(bounds, bounds[1:]):
        t = torch.tensor([samples[i][1] for i in range(first, last)] + [1.0], dtype=torch.float64)
        steps = torch.tensor([distance(i, i + 1) for i in range(first, last)], dtype=torch.float64)
        curves.append((t, steps))
    lengths = [float(steps.sum()) for _, steps in curves]
    step = sum(lengths) / gaps
    if step <= 0:
        return []
    wanted = []
    for segment, ((t, steps), share) in enumerate(zip(curves, share_frames(lengths, gaps))):
        if share < 2:
            continue
        placed = retime_even(t, steps, share + 1, smooth=EVEN_SMOOTH)[1:-1]
        reached = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])  # distance at each sample
        for k, new_t in enumerate(placed.tolist(), start=1):
            miss = float((reached - k * lengths[segment] / share).abs().min()) / step
            if miss > EVEN_SNAP and 0.0 < new_t < 1.0 and new_t not in t.tolist():
                wanted.append((miss, segment, new_t))
    wanted.sort(key=lambda item: -item[0])
    return [(segment, new_t) for _, segment, new_t in wanted]


def even_frames(
    render: Callable[[list["Point"]], Iterator["RenderedFrame"]],
    walk: "PathWalk",
    request: "MorphRequest",
    plan: list["Point"],
    stats: RenderStats,
    progress: "Progress",
) -> list["RenderedFrame"]:
    """The requested number of frames at (nearly) equal pixel distances, the path's ends fixed.

    1. Pilot: render the linear plan (often cached: it is the plain linear morph).
    2. Pick the output from all samples rendered so far (`select_even`: the picks
       with the lowest jump ratio, judged on their own gaps, so a walk that wanders
       and comes back is not mistaken for a long one). Stop when the jump ratio is
       at most EVEN_GOAL, the budget (EVEN_BUDGET x frames) is spent, or nothing
       new is worth rendering.
    3. Otherwise refine: each segment's share of the frames follows its length; the
       monotone cubic through the cumulative distance is inverted to find where the
       frames should sit; those not already close to a sample are rendered (the
       largest misses first), a few per round (`refine_count`), and back to 2.
    """
    budget = int(EVEN_BUDGET * len(plan))
    stats.budget = budget
    pool: dict[tuple[int, float], "RenderedFrame"] = {}
    arrays: dict[tuple[int, float], np.ndarray] = {}

    def add(points: list["Point"]) -> None:
        for frame in render(points):
            where = walk.where(frame.point)
            pool[where] = frame
            arrays[where] = planning_array(frame.image)

    add(plan)
    closed = walk.closed(request)
    segments = walk.segments(request)
    gaps_out = len(plan) if closed else len(plan) - 1
    picks: list[tuple[int, float]] = sorted(pool)
    for _ in range(EVEN_ROUNDS + 1):
        samples = sorted(pool)
        # A closed path's last segment ends where it began: the first sample again.
        ends = samples + [samples[0]] if closed else samples
        distance = PairDistance([arrays[sample] for sample in ends])
        chosen = select_even(
            distance, len(ends), gaps_out + 1,
            forced={i for i, sample in enumerate(samples) if sample[1] in (0.0, 1.0)},
            window=max(8, 3 * math.ceil(len(ends) / (gaps_out + 1)) + 2),
        )
        picks = [ends[i] for i in chosen[: len(plan)]]
        gaps = [distance(i, j) for i, j in zip(chosen, chosen[1:])]
        jump = metrics.jump_ratio(gaps)
        stats.rounds.append({"samples": len(pool), "jump_ratio": None if math.isnan(jump) else round(jump, 4)})
        room = budget - len(pool)
        if math.isnan(jump) or jump <= EVEN_GOAL or room <= 0 or len(stats.rounds) > EVEN_ROUNDS:
            break
        wanted = even_targets(ends, distance, segments, gaps_out)
        if not wanted:
            break
        take = sorted(wanted[: refine_count(room, len(plan))])
        progress.frames_total += len(take)
        add([walk.at(request, segment, t) for segment, t in take])
    return [replace(pool[sample], index=index) for index, sample in enumerate(picks)]
