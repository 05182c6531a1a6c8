"""The landscape readings (`pipelines.toy.scenes_measure`) on the generator's own drawings,
where the truth is known: they must read those right before they score the `scenes` model
(`tests/test_scenes_model.py`). Also the morph judge and the evaluation's plumbing, with the
generator standing in for the model. About 30-60 s (some 300 drawings at 128 px, one core).
"""

from __future__ import annotations

import random
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.toy import scenes_evaluate as evaluate
from pipelines.toy import scenes_morph
from pipelines.toy.scenes_data import HELD_OUT, TERRAINS, TIMES, sample_scene
from pipelines.toy.scenes_draw import render_scene
from pipelines.toy.scenes_measure import KINDS, read_landscape, reference_scene, references

# Required on the drawings (measured when written: time 100%, terrain 97-99%, kind 98-100%).
TIME_TARGET, TERRAIN_TARGET, KIND_TARGET = 0.95, 0.95, 0.95


@pytest.fixture(scope="module")
def drawn():
    """100 random clear-sky scenes (the training's sampler, other seeds) and 2 of each held-out pair."""
    rng = random.Random(2024)
    scenes = [reference_scene(s.time, s.terrain, s.seed) for s in (sample_scene(rng) for _ in range(100))]
    scenes += [reference_scene(t, g, 500 + k) for t, g in sorted(HELD_OUT) for k in range(2)]
    refs = references()
    return [(scene, read_landscape(render_scene(scene), refs)) for scene in scenes]


def test_time_of_day_is_read_from_the_sky(drawn):
    rate = np.mean([r.time == s.time for s, r in drawn])
    per_time = defaultdict(list)
    for s, r in drawn:
        per_time[s.time].append(r.time == s.time)
    print(f"time read right on {len(drawn)} drawings: {rate:.1%};", {t: f"{np.mean(v):.0%}" for t, v in per_time.items()})
    assert rate >= TIME_TARGET
    assert set(per_time) == set(TIMES) and min(np.mean(v) for v in per_time.values()) >= 0.8


def test_terrain_is_read_from_the_lower_part(drawn):
    rate = np.mean([r.terrain == s.terrain for s, r in drawn])
    kind = np.mean([r.kind == KINDS[s.terrain] for s, r in drawn])
    per_terrain = defaultdict(list)
    for s, r in drawn:
        per_terrain[s.terrain].append(r.terrain == s.terrain)
    misses = [(s.time, s.terrain, r.terrain) for s, r in drawn if r.terrain != s.terrain]
    print(f"terrain read right on {len(drawn)} drawings: {rate:.1%} (kind {kind:.1%}); misses {misses}")
    assert rate >= TERRAIN_TARGET and kind >= KIND_TARGET
    assert set(per_terrain) == set(TERRAINS)
    assert min(np.mean(v) for v in per_terrain.values()) >= 0.6, {t: np.mean(v) for t, v in per_terrain.items()}


def test_held_out_pairs_are_read_too(drawn):
    """The generator draws the held-out pairs (only training never sees them): they read right."""
    held = [(s, r) for s, r in drawn if (s.time, s.terrain) in HELD_OUT]
    assert len(held) == 2 * len(HELD_OUT)
    assert all(r.time == s.time for s, r in held)
    assert np.mean([r.terrain == s.terrain for s, r in held]) >= 0.75


def test_the_issue_words_hold_on_the_drawings():
    """Night dark, noon blue and bright, sunset warm: the thresholds the model's renders are held to."""
    refs = references()
    for time in ("night", "noon", "sunset"):
        for terrain in TERRAINS:
            scene = reference_scene(time, terrain, 321)
            trial = evaluate.Trial(time, terrain, 0, "", read_landscape(render_scene(scene), refs), None)
            assert trial.words_ok, (time, terrain, trial.reading)


def test_noise_is_no_picture_and_drawings_are():
    refs = references()
    rng = np.random.default_rng(0)
    for noise in (rng.uniform(0, 255, (128, 128, 3)), np.clip(rng.normal(128, 40, (128, 128, 3)), 0, 255)):
        reading = read_landscape(noise, refs)
        assert reading.roughness > 2 * scenes_morph.ROUGHNESS_MAX and reading.layered < scenes_morph.LAYERED_MIN
    for time in ("dawn", "sunset", "noon", "dusk"):
        for terrain in ("ocean", "mountains", "hills", "city"):
            reading = read_landscape(render_scene(reference_scene(time, terrain, 5)), refs)
            assert reading.roughness <= scenes_morph.ROUGHNESS_MAX and reading.layered >= scenes_morph.LAYERED_MIN


def _frames(middle: list) -> list:
    start = render_scene(reference_scene("sunset", "ocean", 1))
    end = render_scene(reference_scene("dawn", "mountains", 2))
    return [start] * 5 + middle + [end] * 5


def test_the_morph_judge_passes_golden_hour_over_hills_and_fails_what_is_not_between():
    draw = lambda t, g, seed: render_scene(reference_scene(t, g, seed))  # noqa: E731
    between = [draw(t, g, 10 + i) for i, (t, g) in enumerate(
        [("sunset", "hills"), ("sunset", "hills"), ("sunset", "desert"), ("dawn", "hills"), ("dawn", "hills"),
         ("dawn", "mountains")])]
    *_, passed = scenes_morph.judge_morph(_frames(between))
    assert all(passed.values()), passed
    # A cross-fade of the two ends is no picture of anything, but it is warm, between and not noise.
    ends = _frames([])
    fade = [Image.blend(ends[0], ends[-1], i / 15) for i in range(16)]
    *_, passed = scenes_morph.judge_morph(fade)
    assert passed["picture"] and passed["warm"] and passed["between"]
    rng = np.random.default_rng(1)
    noise = [Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(6)]
    *_, passed = scenes_morph.judge_morph(_frames(noise))
    assert not passed["picture"]
    *_, passed = scenes_morph.judge_morph(_frames([draw("noon", "hills", i) for i in range(6)]))
    assert not passed["warm"] and not passed["between"]
    *_, passed = scenes_morph.judge_morph(_frames([draw("sunset", "ocean", 20 + i) for i in range(6)]))
    assert not passed["ground"]


class _GeneratorAsModel:
    """Stands in for a pipeline: draws what each evaluation prompt asks for (and a VAE that
    returns its input), so the evaluation's plumbing can be checked without weights."""

    def __init__(self):
        self.asked = {evaluate.prompt(t, g, seed): (t, g) for t in TIMES for g in TERRAINS for seed in range(3)}
        identity = SimpleNamespace(mode=lambda: self._latents)
        self.vae = SimpleNamespace(
            device=torch.device("cpu"), dtype=torch.float32,
            encode=lambda x: SimpleNamespace(latent_dist=self._keep(x, identity)),
            decode=lambda z: SimpleNamespace(sample=z),
        )

    def _keep(self, x, dist):
        self._latents = x
        return dist

    def __call__(self, prompts, generator, **_):
        images = [render_scene(reference_scene(*self.asked[text], 40 + g.initial_seed()))
                  for text, g in zip(prompts, generator)]
        return SimpleNamespace(images=images)


def test_the_evaluation_scores_the_generator_itself_near_perfectly():
    pairs = evaluate.quick_pairs()
    assert {t for t, _ in pairs} == set(TIMES) and {g for _, g in pairs} == set(TERRAINS)
    assert not set(pairs) & HELD_OUT and len(pairs) == 25
    assert {"a sunset over the ocean", "hills at sunset"} <= {evaluate.prompt(t, g) for t, g in pairs}
    fake = _GeneratorAsModel()
    trained = evaluate.rates(evaluate.run_trials(fake, pairs, [0]))
    held = evaluate.rates(evaluate.run_trials(fake, sorted(HELD_OUT), [0]))
    print("generator as model:", trained, held)
    assert trained["time"] == 1.0 and trained["terrain"] >= 0.9 and trained["words"] == 1.0
    assert held["time"] == 1.0
    round_trip = evaluate.rates(evaluate.vae_round_trips(fake, pairs, [0]))
    assert round_trip["time"] == 1.0 and round_trip["terrain"] >= 0.9
