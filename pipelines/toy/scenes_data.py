"""Procedural landscapes with captions: the whole world of the `scenes` model (128 px).

A `Scene` names a time of day, a terrain, a weather and a sea state, plus a seed for its
geometry; `scenes_draw.render_scene` draws it. Its caption is phrased afresh on each call
("a sunset over the ocean", "the ocean at sunset", "mountains at night", "green hills under a
clear sky at noon", "a foggy forest at dawn", ...), so one image is seen under many phrasings.
Clear is the default weather: a caption that names no weather always shows a clear sky.
Some time x terrain pairs are never drawn (`HELD_OUT`): rendering them shows composition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from pipelines.toy.scenes_draw import render_scene

TIMES = ("dawn", "morning", "noon", "sunset", "dusk", "night")
TERRAINS = ("ocean", "lake", "mountains", "snowy mountains", "hills", "desert", "forest", "fields", "city")
WEATHERS = ("clear", "cloudy", "foggy", "rainy")
WATER = ("ocean", "lake")

# Time x terrain pairs never shown in training. Not among them: the demo's sunset over the
# ocean, sunrise over mountains and golden hour over hills.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("night", "desert"), ("sunset", "snowy mountains"), ("noon", "lake"), ("dusk", "fields")}
)

# How a time is named before "over ..." ("a sunset over the ocean") and after a terrain
# ("the ocean at sunset"). Synonyms share one look.
TIME_NOUNS: dict[str, tuple[str, ...]] = {
    "dawn": ("a sunrise", "sunrise", "dawn", "daybreak"),
    "morning": ("morning", "a bright morning", "the morning sun"),
    "noon": ("noon", "midday", "the midday sun"),
    "sunset": ("a sunset", "sunset", "golden hour", "the setting sun"),
    "dusk": ("dusk", "twilight", "nightfall"),
    "night": ("night", "a starry night", "moonlight"),
}
TIME_SUFFIXES: dict[str, tuple[str, ...]] = {
    "dawn": ("at dawn", "at sunrise", "at daybreak"),
    "morning": ("in the morning", "in the morning light", "on a sunny morning"),
    "noon": ("at noon", "at midday", "in the midday sun"),
    "sunset": ("at sunset", "at golden hour", "at sundown", "in the evening sun"),
    "dusk": ("at dusk", "at twilight", "at nightfall"),
    "night": ("at night", "under the stars", "by moonlight", "at midnight"),
}
TERRAIN_PHRASES: dict[str, tuple[str, ...]] = {
    "ocean": ("the ocean", "the sea", "an ocean", "the open sea"),
    "lake": ("a lake", "the lake", "a lakeside"),
    "mountains": ("mountains", "the mountains", "a mountain range", "rocky peaks"),
    "snowy mountains": ("snowy mountains", "snow-capped mountains", "snowy peaks", "the snowy mountains"),
    "hills": ("hills", "green hills", "rolling hills", "the green hills"),
    "desert": ("the desert", "a desert", "sand dunes", "desert dunes"),
    "forest": ("a forest", "the forest", "a pine forest", "the woods"),
    "fields": ("fields", "farm fields", "farmland", "the countryside"),
    "city": ("a city skyline", "the city", "a city", "the skyline"),
}
WEATHER_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "cloudy": ("cloudy", "overcast"),
    "foggy": ("foggy", "misty", "hazy"),
    "rainy": ("rainy", "wet"),
}
WEATHER_PHRASES: dict[str, tuple[str, ...]] = {
    "clear": ("under a clear sky", "under clear skies"),
    "cloudy": ("under a cloudy sky", "under grey clouds", "with clouds"),
    "foggy": ("in the fog", "in thick fog", "in the mist"),
    "rainy": ("in the rain", "under heavy rain"),
}
SEA_STATES = ("calm", "stormy")  # for the ocean and the lake; stormy only under clouds or rain


@dataclass(frozen=True)
class Scene:
    """What one training image shows; `seed` fixes its geometry (ridges, clouds, stars)."""

    time: str
    terrain: str
    weather: str
    sea: str  # "calm" or "stormy" on water, "" elsewhere
    seed: int


def sample_scene(rng: random.Random) -> Scene:
    """A random scene; held-out time x terrain pairs are never drawn."""
    while True:
        time, terrain = rng.choice(TIMES), rng.choice(TERRAINS)
        if (time, terrain) not in HELD_OUT:
            break
    weather = rng.choices(WEATHERS, weights=(0.55, 0.2, 0.15, 0.1))[0]
    sea = ""
    if terrain in WATER:
        sea = "stormy" if weather in ("cloudy", "rainy") and rng.random() < 0.5 else "calm"
    return Scene(time, terrain, weather, sea, rng.randrange(2**31))


def _with_adjective(phrase: str, adjective: str) -> str:
    """Put an adjective after the article: ("the ocean", "stormy") -> "the stormy ocean"."""
    first, _, rest = phrase.partition(" ")
    if first in ("a", "an", "the") and rest:
        article = first if first == "the" else ("an" if adjective[0] in "aeiou" else "a")
        return f"{article} {adjective} {rest}"
    return f"{adjective} {phrase}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A natural caption; clear weather and a calm sea are named only sometimes."""
    terrain = rng.choice(TERRAIN_PHRASES[scene.terrain])
    if scene.sea == "stormy" or (scene.sea == "calm" and rng.random() < 0.3):
        terrain = _with_adjective(terrain, scene.sea)
    named_weather = scene.weather != "clear" or rng.random() < 0.3
    roll = rng.random()
    if named_weather and scene.weather != "clear" and roll < 0.3:
        # "a foggy forest at dawn"
        adjective = rng.choice(WEATHER_ADJECTIVES[scene.weather])
        text = f"{_with_adjective(terrain, adjective)} {rng.choice(TIME_SUFFIXES[scene.time])}"
    elif roll < 0.6:
        # "a sunset over the ocean", "a sunrise over mountains in the fog"
        text = f"{rng.choice(TIME_NOUNS[scene.time])} over {terrain}"
        if named_weather:
            text += f" {rng.choice(WEATHER_PHRASES[scene.weather])}"
    elif roll < 0.95:
        # "the ocean at sunset", "green hills under a clear sky at noon"
        weather = f" {rng.choice(WEATHER_PHRASES[scene.weather])}" if named_weather else ""
        text = f"{terrain}{weather} {rng.choice(TIME_SUFFIXES[scene.time])}"
    else:
        # No time named: the model learns what a terrain looks like at any hour.
        text = terrain
        if named_weather:
            text += f" {rng.choice(WEATHER_PHRASES[scene.weather])}"
    return text[0].lower() + text[1:]


def vocabulary() -> set[str]:
    """Every word a caption can use (what the model card lists)."""
    tables = [TIME_NOUNS, TIME_SUFFIXES, TERRAIN_PHRASES, WEATHER_ADJECTIVES, WEATHER_PHRASES]
    words = {"over", "a", "an", *SEA_STATES}
    for table in tables:
        for phrases in table.values():
            for phrase in phrases:
                words.update(phrase.split())
    return words


def image_batch(scenes: list[Scene], side: int = 128) -> np.ndarray:
    """Scenes as a uint8 array of shape (N, side, side, 3)."""
    return np.stack([render_scene(scene, side) for scene in scenes])
