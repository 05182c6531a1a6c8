"""`--spacing even`: frames at equal pixel steps, within the render budget, chains shared by length."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import metrics
from pipelines.engine import Morpher
from pipelines.request import MorphRequest
from pipelines.spacing import EVEN_BUDGET, even_targets, refine_count
from pipelines.timing import monotone_cubic, retime_even, select_even, share_frames

RNG = np.random.default_rng(0)
# What keyframes 0, 1, 2 "look like"; a tuple, so no test can change it for the tests after it.
PICTURES = tuple(RNG.random((16, 16, 3)) for _ in range(3))


def sigmoid(x: float, centre: float, width: float) -> float:
    return 1.0 / (1.0 + math.exp(-(x - centre) / width))


def sharp(position: float) -> float:
    """Share of the way from one picture to the next: almost all of it near t = 0.4."""
    t = position - math.floor(position) if position < 2 else 1.0
    return 0.05 * t + 0.95 * (sigmoid(t, 0.4, 0.02) - sigmoid(0, 0.4, 0.02)) / (
        sigmoid(1, 0.4, 0.02) - sigmoid(0, 0.4, 0.02)
    )


class FakeRenders:
    """Stands in for `Morpher._denoise`: frame = blend of two pictures by `profile(t)`; counts frames drawn."""

    def __init__(self, profile, scale=(1.0, 1.0), pictures=PICTURES) -> None:
        self.profile = profile
        self.scale = scale  # how different each segment's end picture is from its start
        self.pictures = pictures
        self.drawn: list[tuple[int, float]] = []

    def __call__(self, points, job) -> tuple[list[Image.Image], list[bool]]:
        images = []
        for point in points:
            segment, t = int(point["segment"]), float(point["t"])
            start, end = segment, (segment + 1) % len(job.request.prompts)
            weight = self.profile(t) * self.scale[segment]
            if t == 1.0:
                weight = 1.0
            picture = (1 - weight) * self.pictures[start] + weight * self.pictures[end]
            if t == 0.0:
                picture = self.pictures[start]
            images.append(Image.fromarray(np.uint8(np.round(255 * picture))))
            self.drawn.append((segment, t))
        job.progress.frames_done += len(points)  # as the real denoise counts them
        return images, [False] * len(points)


@pytest.fixture
def fake_morpher(tiny_model, monkeypatch):
    def make(profile=sharp, scale=(1.0, 1.0), pictures=PICTURES, cache=None) -> tuple[Morpher, FakeRenders]:
        morpher, fake = Morpher(tiny_model, cache=cache), FakeRenders(profile, scale, pictures)
        monkeypatch.setattr(morpher, "_denoise", fake)  # the engine's render seam, this Morpher only
        return morpher, fake

    return make


SHARP = MorphRequest(prompts=("a red circle", "a blue square"), frames=12, steps=1, size=(16, 16))


# ---- the pure pieces ----------------------------------------------------------------------


def test_share_frames_follows_lengths_and_gives_every_segment_one() -> None:
    assert share_frames([1.0, 1.0], 10) == [5, 5]
    assert share_frames([3.0, 1.0], 8) == [6, 2]
    assert share_frames([100.0, 0.0, 1.0], 9) == [7, 1, 1]
    assert share_frames([0.0, 0.0], 5) in ([3, 2], [2, 3])
    assert sum(share_frames([0.2, 0.5, 0.31], 17)) == 17
    with pytest.raises(ValueError, match="cannot cover"):
        share_frames([1.0, 1.0, 1.0], 2)


def test_monotone_cubic_goes_through_the_points_without_overshoot() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    y = torch.tensor([0.0, 0.02, 0.9, 0.95, 1.0], dtype=torch.float64)
    torch.testing.assert_close(monotone_cubic(x, y, x), y)
    dense = monotone_cubic(x, y, torch.linspace(0, 1, 401, dtype=torch.float64))
    assert (dense.diff() >= -1e-12).all() and dense.min() >= 0 and dense.max() <= 1


@pytest.mark.parametrize("smooth", [False, True])
def test_retime_even_gives_any_count_and_keeps_the_ends(smooth: bool) -> None:
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    gaps = torch.tensor([0.1, 3.0, 0.1, 0.1])
    new = retime_even(t, gaps, 9, smooth=smooth)
    assert len(new) == 9 and new[0] == 0 and new[-1] == 1 and (new.diff() > 0).all()
    assert ((new > 0.25) & (new < 0.5)).sum() >= 6  # most frames go where the change is
    torch.testing.assert_close(retime_even(t, torch.zeros(4), 3), torch.tensor([0, 0.5, 1], dtype=torch.float64))


def test_select_even_picks_equal_steps_and_keeps_forced_samples() -> None:
    positions = [0, 1, 2, 3, 3.5, 4, 4.5, 5, 6, 8, 10, 12]
    picks = select_even(lambda i, j: positions[j] - positions[i], len(positions), 7, forced={5})
    assert picks[0] == 0 and picks[-1] == len(positions) - 1 and 5 in picks
    steps = np.diff([positions[i] for i in picks])
    assert steps.max() <= 2 + 1e-9
    with pytest.raises(ValueError, match="cannot pick 5 of 4"):
        select_even(lambda i, j: 1.0, 4, 5, forced=set())


def test_refinement_rounds_are_a_small_share_of_the_frames_within_the_budget() -> None:
    assert refine_count(room=16, frames=16) == 2
    assert refine_count(room=48, frames=48) == 6
    assert refine_count(room=1, frames=16) == 1  # never past the budget


def test_even_targets_skip_frames_near_a_sample() -> None:
    samples = [(0, 0.0), (0, 0.5), (0, 1.0)]
    distances = {(0, 1): 1.0, (1, 2): 1.0}
    assert even_targets(samples, lambda i, j: distances[(i, j)], 1, 2) == []  # t = 0.5 is already there
    wanted = even_targets(samples, lambda i, j: distances[(i, j)], 1, 4)
    assert sorted(t for _, t in wanted) == pytest.approx([0.25, 0.75], abs=0.02)


# ---- the morph ----------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [8, 16])
def test_even_evens_out_a_sharp_morph_within_the_budget(fake_morpher, frames: int) -> None:
    morpher, fake = fake_morpher()
    request = replace(SHARP, frames=frames)
    linear = morpher.render(request).manifest["metrics"]
    fake.drawn.clear()
    even = morpher.render(replace(request, spacing="even"))
    figures = even.manifest["metrics"]
    assert linear["jump_ratio"] > 4
    assert figures["jump_ratio"] < 1.5 and figures["jump_ratio"] <= linear["jump_ratio"] / 2
    assert len(fake.drawn) == len(set(fake.drawn)) <= EVEN_BUDGET * frames  # nothing drawn twice
    record = even.manifest["render"]
    assert record["frames_rendered"] == len(fake.drawn) and record["budget"] == EVEN_BUDGET * frames
    assert record["cost_vs_plain"] <= EVEN_BUDGET
    # refinement comes in small rounds, each planned on what the rounds before measured
    added = np.diff([entry["samples"] for entry in record["rounds"]])
    assert len(added) >= 2 and added.max() <= refine_count(frames, frames)
    assert [frame.index for frame in even.frames] == list(range(frames))
    t = [frame.t for frame in even.frames]
    assert t[0] == 0.0 and t[-1] == 1.0 and t == sorted(t)


def test_even_gives_the_longer_segment_of_a_chain_more_frames(fake_morpher) -> None:
    # Segment 0 barely changes (10% of the way to the next picture), segment 1 changes fully.
    close = (PICTURES[0], 0.9 * PICTURES[0] + 0.1 * PICTURES[2], PICTURES[2])
    morpher, _ = fake_morpher(profile=lambda t: t, scale=(1.0, 1.0), pictures=close)
    request = replace(SHARP, prompts=("a red circle", "a green star", "a blue square"), frames=13)
    linear = morpher.render(request).frames
    even = morpher.render(replace(request, spacing="even"))
    assert sum(frame.segment == 0 for frame in linear) == 6
    in_first = sum(frame.segment == 0 for frame in even.frames)
    assert in_first <= 3  # the short segment keeps its keyframe and little else
    assert even.manifest["metrics"]["jump_ratio"] < 1.5
    keyframes = [frame for frame in even.frames if frame.t in (0.0, 1.0)]
    assert [(frame.segment, frame.t) for frame in keyframes] == [(0, 0.0), (1, 0.0), (1, 1.0)]


def test_even_loops_back_without_repeating_the_first_frame(fake_morpher) -> None:
    morpher, _ = fake_morpher()
    result = morpher.render(replace(SHARP, frames=10, loop=True, spacing="even"))
    assert len(result.frames) == 10 and result.frames[-1].segment == 1 and result.frames[-1].t < 1.0
    assert len(result.manifest["metrics"]["gaps"]) == 10  # the wrap-around gap counts in a loop
    assert result.manifest["metrics"]["jump_ratio"] < 2


def test_even_on_the_tiny_model_keeps_keyframes_and_reports_cost(morpher) -> None:
    request = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 9), frames=6, steps=2, size=(32, 32))
    linear = morpher.render(request)
    steps: list = []
    even = morpher.render(replace(request, spacing="even"), on_step=steps.append)
    first = np.asarray(linear.frames[0].image)
    assert np.array_equal(np.asarray(even.frames[0].image), first)
    assert np.array_equal(np.asarray(even.frames[-1].image), np.asarray(linear.frames[-1].image))
    assert even.manifest["metrics"]["jump_ratio"] <= linear.manifest["metrics"]["jump_ratio"] + 1e-9
    record = even.manifest["render"]
    assert record["frames_rendered"] <= EVEN_BUDGET * 6 and record["rounds"][0]["samples"] == 6
    assert steps[-1].frames_total == record["frames_rendered"]
    assert even.manifest["keyframes"][0]["sha256_16"] == metrics.pixel_digest(linear.frames[0].image)


def test_select_even_judges_picks_by_their_own_gaps_not_by_the_path() -> None:
    # A walk along a line with a detour: samples 3-5 step off the line and come back.
    points = np.array([[0, 0], [1, 0], [2, 0], [2.5, 3], [2.6, 4], [2.7, 3], [3, 0], [4, 0], [5, 0], [6, 0]])
    picks = select_even(lambda i, j: float(np.linalg.norm(points[j] - points[i])), len(points), 7, forced=set())
    assert not {3, 4, 5} & set(picks)  # through the detour the steps could not be even
    steps = [np.linalg.norm(points[j] - points[i]) for i, j in zip(picks, picks[1:])]
    assert metrics.jump_ratio(steps) == pytest.approx(1.0)


def test_even_retimes_a_direction_walk_too(fake_morpher) -> None:
    morpher, fake = fake_morpher()
    request = replace(SHARP, prompts=("a red circle", "a red square", "a blue square"), walk="direction",
                      scale=(0.0, 2.0), frames=10)
    linear = morpher.render(request).manifest["metrics"]
    even = morpher.render(replace(request, spacing="even"))
    assert linear["jump_ratio"] > 4 and even.manifest["metrics"]["jump_ratio"] < 1.5
    s = [frame.point["s"] for frame in even.frames]
    assert s[0] == 0.0 and s[-1] == 2.0 and s == sorted(s) and len(set(s)) == 10
    assert s == pytest.approx([2 * frame.t for frame in even.frames])  # s follows the re-timed t
    assert even.manifest["render"]["frames_rendered"] <= EVEN_BUDGET * 10
