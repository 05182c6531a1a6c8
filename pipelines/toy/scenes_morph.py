"""The sunset -> sunrise morph's check: render it with the engine, time it, and judge its
middle frames (t = 1/3 .. 2/3) against MORPH_CRITERIA with `pipelines.toy.scenes_measure`'s
readings. Part of `python -m pipelines.toy.scenes_evaluate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from pipelines.toy.scenes_data import WATER
from pipelines.toy.scenes_measure import LandscapeReading, profile_distance, read_landscape, references

# The evaluation's render settings, for the single renders and the morph alike.
STEPS, GUIDANCE, SIDE = 20, 5.0, 128
MORPH_PROMPTS = ("a sunset over the ocean", "a sunrise over mountains")
MORPH_FRAMES, MORPH_SEED = 16, 0
MIDDLE = range(5, 11)  # frames 5..10 of 16: t = 1/3 .. 2/3

# What the morph's middle frames must show (each a share of the middle frames that must pass):
MORPH_CRITERIA = {
    # a picture, not noise: drawings change by at most 8 units between neighbouring pixels, noise by ~85
    "picture": "every middle frame: roughness <= 20 and layered >= 0.3",
    # warm light: the sky reads as a low sun's, sunset or sunrise, and is red over blue somewhere
    # (warmest row: drawings at dawn 36-86, at sunset 159-193; through the VAE 40-78 and 161-184)
    "warm": "every middle frame's sky reads as sunset or dawn, warmth >= 30",
    # higher ground: land rises above the open sea's flat horizon. A lake counts: in the drawings it
    # is water under a far wooded shore, and that is what the morph shows mid-way (hills rising
    # behind water that still mirrors the sun). "land" (no water at all) is reported beside it.
    "ground": "at least half of the middle frames read as ground above the sea's horizon (not open ocean)",
    # something between: about as near to each end as the ends are to each other, or nearer
    # (golden hour over hills: up to 1.0x; noon over hills: 1.6x; noise, blurred grey, can sit
    # between: "picture" rejects it)
    "between": "every middle frame's profile is within 1.2x the ends' distance of both ends",
}
ROUGHNESS_MAX, LAYERED_MIN, WARMTH_MIN, BETWEEN_MAX = 20.0, 0.3, 30.0, 1.2


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


@dataclass
class MorphCheck:
    prompts: tuple[str, str]
    seconds: float  # the 16-frame, 20-step morph, after a warm-up
    threads: int
    readings: list[LandscapeReading]
    distances: list[tuple[float, float]]  # each frame's profile distance to the first and the last
    ends_distance: float
    criteria: dict[str, float]  # criterion -> share of the middle frames that pass
    passed: dict[str, bool]
    images: list[Image.Image] = field(repr=False)

    def summary(self) -> dict:
        return {
            "prompts": list(self.prompts), "frames": len(self.readings), "steps": STEPS,
            "seconds": round(self.seconds, 2), "threads": self.threads,
            "middle_frames": list(MIDDLE), "criteria": self.criteria, "passed": self.passed,
            "ends_distance": round(self.ends_distance, 3),
            "frames_read": [
                {"time": r.time, "terrain": r.terrain, "warmth": round(r.warmth, 1), "layered": round(r.layered, 3),
                 "roughness": round(r.roughness, 2), "to_first": round(a, 3), "to_last": round(b, 3)}
                for r, (a, b) in zip(self.readings, self.distances)
            ],
        }


def judge_morph(images: list[Image.Image]) -> tuple[list, list, float, dict[str, float], dict[str, bool]]:
    """Read a morph's frames and score its middle frames against MORPH_CRITERIA."""
    refs = references()
    readings = [read_landscape(image, refs) for image in images]
    first, last = images[0], images[-1]
    distances = [(profile_distance(image, first, refs), profile_distance(image, last, refs)) for image in images]
    ends = profile_distance(first, last, refs)
    middle = [i for i in MIDDLE if i < len(images)]
    share = lambda test: _mean(test(i) for i in middle)  # noqa: E731
    criteria = {
        "picture": share(lambda i: readings[i].roughness <= ROUGHNESS_MAX and readings[i].layered >= LAYERED_MIN),
        "warm": share(lambda i: readings[i].warm and readings[i].warmth >= WARMTH_MIN),
        "ground": share(lambda i: readings[i].terrain != "ocean"),
        "land": share(lambda i: readings[i].terrain not in WATER),  # reported, not a criterion
        "between": share(lambda i: max(distances[i]) <= BETWEEN_MAX * ends),
    }
    passed = {"picture": criteria["picture"] == 1.0, "warm": criteria["warm"] == 1.0,
              "ground": criteria["ground"] >= 0.5, "between": criteria["between"] == 1.0}
    return readings, distances, ends, criteria, passed


def check_morph(model, prompts: tuple[str, str] = MORPH_PROMPTS, seed: int = MORPH_SEED,
                frames: int = MORPH_FRAMES) -> MorphCheck:
    """Render the morph with the engine (after a 2-frame warm-up), time it, and judge it."""
    from pipelines.engine import Morpher
    from pipelines.request import MorphRequest

    morpher = Morpher(model)
    morpher.render(MorphRequest(prompts=prompts, seeds=(seed,), frames=2, steps=2))  # warm-up
    request = MorphRequest(prompts=prompts, seeds=(seed,), frames=frames, steps=STEPS, guidance=GUIDANCE)
    started = time.perf_counter()
    result = morpher.render(request)
    seconds = time.perf_counter() - started
    images = [frame.image for frame in result.frames]
    readings, distances, ends, criteria, passed = judge_morph(images)
    return MorphCheck(prompts, seconds, torch.get_num_threads(), readings, distances, ends, criteria, passed, images)
