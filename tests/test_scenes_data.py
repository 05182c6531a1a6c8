"""The procedural landscapes behind the `scenes` model: captions, held-out pairs, and pictures
whose colours follow the words (checked on the drawings themselves, where the truth is known).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.toy.scenes_data import (
    HELD_OUT,
    TERRAINS,
    TIMES,
    WEATHERS,
    Scene,
    caption,
    image_batch,
    sample_scene,
    vocabulary,
)
from pipelines.toy.scenes_draw import render_scene

DEMO_CAPTIONS = ("a sunset over the ocean", "a sunrise over mountains", "golden hour over hills")


@pytest.fixture(scope="module")
def sampled() -> list[Scene]:
    rng = random.Random(0)
    return [sample_scene(rng) for _ in range(4000)]


def _scene(time: str, terrain: str, weather: str = "clear", seed: int = 0) -> Scene:
    return Scene(time, terrain, weather, "calm" if terrain in ("ocean", "lake") else "", seed)


def _pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render_scene(scene), dtype=np.float32)


def test_held_out_pairs_are_never_drawn_and_everything_else_is(sampled) -> None:
    pairs = {(scene.time, scene.terrain) for scene in sampled}
    assert not pairs & HELD_OUT
    assert pairs == {(t, g) for t in TIMES for g in TERRAINS} - HELD_OUT
    assert {scene.weather for scene in sampled} == set(WEATHERS)
    # The demo's morph is made of trained pairs.
    assert not {("sunset", "ocean"), ("dawn", "mountains"), ("sunset", "hills")} & HELD_OUT


def test_captions_use_the_declared_vocabulary_and_the_demo_phrasings(sampled) -> None:
    rng = random.Random(1)
    words, captions = vocabulary(), set()
    for scene in sampled:
        text = caption(scene, rng)
        assert set(text.split()) <= words, text
        assert len(text.split()) <= 15  # far below CLIP's 77 tokens
        captions.add(text)
    assert len(captions) > 1500  # many phrasings, not one per scene kind
    examples = {("sunset", "ocean"): ("a sunset over the ocean", "the ocean at sunset"),
                ("dawn", "mountains"): ("a sunrise over mountains",),
                ("sunset", "hills"): ("golden hour over hills", "hills at golden hour"),
                ("night", "mountains"): ("mountains at night",)}
    for (time, terrain), texts in examples.items():
        phrasings = {caption(_scene(time, terrain), rng) for _ in range(3000)}
        assert set(texts) <= phrasings, texts


def test_stormy_seas_only_under_clouds_or_rain(sampled) -> None:
    for scene in sampled:
        assert (scene.sea != "") == (scene.terrain in ("ocean", "lake"))
        if scene.sea == "stormy":
            assert scene.weather in ("cloudy", "rainy")


def test_images_are_128_px_and_deterministic(sampled) -> None:
    batch = image_batch(sampled[:6])
    assert batch.shape == (6, 128, 128, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch, image_batch(sampled[:6]))


@pytest.mark.parametrize("terrain", ["ocean", "hills", "city"])
def test_sky_follows_the_time_of_day(terrain: str) -> None:
    def sky(time: str) -> np.ndarray:
        return np.mean([_pixels(_scene(time, terrain, seed=s))[:24].reshape(-1, 3).mean(0) for s in range(3)], 0)

    night, noon, sunset, dawn = sky("night"), sky("noon"), sky("sunset"), sky("dawn")
    assert night.mean() < 40 < 120 < noon.mean()
    assert noon[2] > noon[0] + 60  # blue
    low = np.mean([_pixels(_scene("sunset", terrain, seed=s))[40:60].reshape(-1, 3).mean(0) for s in range(3)], 0)
    assert low[0] > low[2] + 60  # warm near the horizon
    assert sunset.mean() > night.mean() and dawn.mean() > night.mean()


def test_the_ground_follows_the_terrain() -> None:
    def ground(terrain: str) -> np.ndarray:
        return np.mean([_pixels(_scene("noon", terrain, seed=s))[-20:].reshape(-1, 3).mean(0) for s in range(3)], 0)

    water, sand, hills = ground("ocean"), ground("desert"), ground("hills")
    assert water[2] > water[0] + 40
    assert sand[0] > sand[2] + 50 and sand.mean() > 120
    assert hills[1] > hills[0] and hills[1] > hills[2]
    peaks = _pixels(_scene("noon", "snowy mountains"))[30:80]
    assert (peaks.min(axis=2) > 200).mean() > 0.05  # white snow on the peaks


def test_water_shows_a_glitter_path_under_the_sun() -> None:
    image = _pixels(_scene("sunset", "ocean", seed=3))
    water = image[90:]
    brightest = water[..., 0].max(axis=0)  # red, per column: the orange path is a few columns wide
    assert brightest.max() > 220 and np.median(brightest) < 170
