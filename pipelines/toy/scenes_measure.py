"""Read a rendered landscape: the time of day from its sky, the terrain from its lower part.

Written for the colours of the procedural generator (`scenes_draw`), and checked on its own
drawings, where the truth is known, before they score the `scenes` model's renders
(`tests/test_scenes_measure.py`). Plain numpy, no outside models:

- **Profile**: the image (128 px), softened by a 3 px Gaussian blur, cut into 16 horizontal
  bands of 8 rows; per band its mean colour, how much it changes from pixel to pixel along a
  row (ridges, tree lines, skylines) and from row to row (layer edges, field bands).
  Landscapes are horizontal layers, so this reads them wherever the sun or a peak stands;
  the blur keeps it to what a slightly blurry render still shows (a VAE round trip loses
  window grids, ripples and stars: through the `scenes` VAE as trained, 61% of round-tripped
  drawings kept their terrain when read sharp, 71-74% softened; 97-99% either way on the
  drawings themselves).
- **References**: the generator draws every time x terrain pair (held-out pairs too: only
  training never sees them) in clear weather for six fixed seeds; their mean profiles are
  the references, computed once per process (324 drawings, 15-30 s on one busy core; three
  seeds read fields, whose band colours are random, less well: 93-97% overall).
- **Time of day**: the nearest of the six reference skies, from the mean colours of the top 5
  bands (the top 31%, sky in every terrain: the highest peaks reach 37% of the height), i.e.
  the sky's colour and brightness: night near-black blue, dusk dim blue and purple, dawn
  lavender over pink, morning pale blue, noon deep bright blue, sunset orange under purple.
- **Terrain**: the nearest of the 54 time x terrain references over the whole profile, each
  feature scaled by its spread between seeds of one pair; the terrain of that reference is
  the reading (so a desert at night is matched with the generator's own desert at night: the
  light tints every terrain). Mountains against snowy mountains is then settled by the share
  of snow-coloured pixels, snow and rock being the generator's own colours under that light.
  `KINDS` groups the terrains as the issue names them (water blue, desert sandy, hills,
  forest and fields green, mountains, city) for a coarser score.
- **Structure** (a picture, not noise): how much of the image's variance the row means
  explain (0.4-1 for day and twilight drawings, 0.06-0.35 at night, about 0 for noise) and
  the mean change between neighbouring pixels (1-8 for drawings, about 85 for noise).

Clear weather only: the references and the `scenes` quality prompts name no weather, which
the training captions tie to a clear sky.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from pipelines.toy.scenes_data import TERRAINS, TIMES, WATER, Scene
from pipelines.toy.scenes_draw import GREENS, LIGHTS, ROCK, SNOW, _lit, render_scene

SIDE = 128  # images are read at this size (the model's and the generator's)
BANDS = 16  # horizontal bands of SIDE / BANDS rows
BLUR = 3.0  # px of Gaussian blur before the profile is taken
SKY_BANDS = 5  # the top 5 of 16 bands (31%): sky in every terrain
REFERENCE_SEEDS = tuple(range(900_001, 900_007))  # geometry seeds of the reference drawings (6 a pair)
SNOW_ROWS = (0.25, 0.9)  # where mountains and their snow are drawn
WARM_TIMES = ("dawn", "sunset")  # a low sun: the sky reads warm (orange, or pink at dawn)
LAND = tuple(terrain for terrain in TERRAINS if terrain not in WATER)
KINDS = {"ocean": "water", "lake": "water", "mountains": "mountains", "snowy mountains": "mountains",
         "hills": "green", "forest": "green", "fields": "green", "desert": "desert", "city": "city"}


@dataclass(frozen=True)
class LandscapeReading:
    time: str  # nearest reference sky
    terrain: str  # terrain of the nearest reference profile
    match: tuple[str, str]  # that reference's (time, terrain)
    sky_rgb: tuple[float, float, float]  # mean colour of the sky bands (top 31%)
    brightness: float  # mean of the sky's RGB (0-255)
    warmth: float  # red minus blue of the warmest row in the top 60% (drawings: sunset 160-195, dawn 40-80)
    snow: float  # share of snow-coloured pixels in the mountain rows, under the matched light
    layered: float  # share of the image's variance explained by its row means (noise ~ 0)
    roughness: float  # mean absolute change between neighbouring pixels (noise: tens)

    @property
    def warm(self) -> bool:
        """The sky reads as a low sun's (sunset or sunrise)."""
        return self.time in WARM_TIMES

    @property
    def kind(self) -> str:
        """The terrain's kind: water, mountains, green, desert or city."""
        return KINDS[self.terrain]

    @property
    def land(self) -> bool:
        """The ground reads as land, not water."""
        return self.terrain in LAND


def pixels_of(image) -> np.ndarray:
    """An image (PIL or array) as float32 RGB at SIDE x SIDE."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def softened(pixels: np.ndarray) -> np.ndarray:
    """The image under a Gaussian blur of BLUR px: the profile reads only what a slightly
    blurry render keeps (no window grids, ripples or single stars)."""
    if not BLUR:
        return pixels
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(BLUR)), dtype=np.float32)


def profile(pixels: np.ndarray) -> np.ndarray:
    """Per band of the softened image: mean RGB (48 values), change along rows (16), change
    from row to row (16)."""
    pixels = softened(pixels)
    rows = SIDE // BANDS
    means = pixels.reshape(BANDS, rows, SIDE, 3).mean(axis=(1, 2)).ravel()
    along = np.abs(np.diff(pixels, axis=1)).mean(axis=2)  # (SIDE, SIDE - 1)
    along = along.reshape(BANDS, rows, SIDE - 1).mean(axis=(1, 2))
    down = np.abs(np.diff(pixels.mean(axis=1), axis=0)).sum(axis=1)  # (SIDE - 1,) per row step
    down = np.add.reduceat(down, np.arange(0, SIDE - 1, rows))
    return np.concatenate([means, along, down]).astype(np.float32)


def sky_features(pixels: np.ndarray) -> np.ndarray:
    """Mean RGB of the top SKY_BANDS bands (15 values)."""
    rows = SIDE // BANDS
    return pixels[: SKY_BANDS * rows].reshape(SKY_BANDS, rows, SIDE, 3).mean(axis=(1, 2)).ravel()


@lru_cache(maxsize=None)
def _palette(time: str) -> tuple[np.ndarray, np.ndarray]:
    """The generator's snow colours under `time`'s light, and what else the mountain rows hold
    (rock, the green foreground, the lower sky): as `scenes_draw._land` paints them."""
    light = LIGHTS[time]
    snow, other = [], []
    for layer in range(3):
        haze = 0.45 * (1 - layer / 2.5)
        white = _lit(SNOW, light, haze)
        snow += [white, white * np.asarray([0.78, 0.82, 0.92], np.float32)]
        rock = _lit(ROCK[layer], light, haze)
        other += [rock, rock * 0.8]
    other.append(_lit(GREENS[2], light, 0.0) * 0.8)
    mid, horizon = np.asarray(light.mid, np.float32), np.asarray(light.horizon, np.float32)
    other += [(1 - a) * mid + a * horizon for a in np.linspace(0, 1, 6)]
    return np.asarray(snow, np.float32), np.asarray(other, np.float32)


def _nearest_distance(pixels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    squared = (pixels**2).sum(1)[:, None] - 2 * pixels @ colours.T + (colours**2).sum(1)[None, :]
    return squared.min(axis=1)


def snow_share(pixels: np.ndarray, time: str) -> float:
    """Share of the mountain rows' pixels nearer to a snow colour than to rock or sky (under `time`)."""
    top, bottom = int(SNOW_ROWS[0] * SIDE), int(SNOW_ROWS[1] * SIDE)
    region = pixels[top:bottom].reshape(-1, 3)
    snow, other = _palette(time)
    return float(np.mean(_nearest_distance(region, snow) < _nearest_distance(region, other)))


def structure(pixels: np.ndarray) -> tuple[float, float]:
    """(layered, roughness): share of variance explained by the row means; mean neighbour change."""
    grey = pixels.mean(axis=2)
    total = grey.var()
    layered = float(grey.mean(axis=1).var() / total) if total > 1e-6 else 1.0
    roughness = float((np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean()) / 2)
    return layered, roughness


def warmth(pixels: np.ndarray) -> float:
    """Red minus blue of the warmest row in the top 60% (where a low sun's glow lies)."""
    rows = pixels[: int(0.6 * SIDE)].mean(axis=1)
    return float((rows[:, 0] - rows[:, 2]).max())


def reference_scene(time: str, terrain: str, seed: int) -> Scene:
    """A clear-sky scene, calm on water, as the references and the validation draw them."""
    return Scene(time, terrain, "clear", "calm" if terrain in WATER else "", seed)


@dataclass(frozen=True)
class References:
    keys: list[tuple[str, str]]  # (time, terrain), every pair
    profiles: np.ndarray  # (pairs, features): mean profile of each pair
    scale: np.ndarray  # (features,): pooled spread of each feature between seeds of one pair
    skies: np.ndarray  # (times, 15): mean sky features of each time, over every terrain
    snow_cut: dict[str, float]  # per time: snow share half-way between mountains and snowy mountains


@lru_cache(maxsize=None)
def references(seeds: tuple[int, ...] = REFERENCE_SEEDS) -> References:
    """The generator's drawings of every time x terrain pair, len(seeds) each (20-100 ms a drawing)."""
    keys = [(time, terrain) for time in TIMES for terrain in TERRAINS]
    profiles, skies, snow = [], {time: [] for time in TIMES}, {}
    for time, terrain in keys:
        drawn = [pixels_of(render_scene(reference_scene(time, terrain, seed), SIDE)) for seed in seeds]
        profiles.append(np.stack([profile(p) for p in drawn]))
        skies[time] += [sky_features(p) for p in drawn]
        if terrain in ("mountains", "snowy mountains"):
            snow[time, terrain] = np.mean([snow_share(p, time) for p in drawn])
    stacked = np.stack(profiles)  # (pairs, seeds, features)
    spread = stacked - stacked.mean(axis=1, keepdims=True)
    dof = max(1, stacked.shape[0] * (stacked.shape[1] - 1))
    scale = np.sqrt((spread**2).sum(axis=(0, 1)) / dof) + 1.0  # + 1: no feature weighs infinitely
    return References(
        keys=keys,
        profiles=stacked.mean(axis=1),
        scale=scale.astype(np.float32),
        skies=np.stack([np.mean(skies[time], axis=0) for time in TIMES]),
        snow_cut={time: (snow[time, "mountains"] + snow[time, "snowy mountains"]) / 2 for time in TIMES},
    )


def read_time(pixels: np.ndarray, refs: References | None = None) -> str:
    """The time whose reference sky is nearest (sky bands only)."""
    refs = refs or references()
    distances = np.linalg.norm(refs.skies - sky_features(pixels)[None, :], axis=1)
    return TIMES[int(np.argmin(distances))]


def read_match(pixels: np.ndarray, refs: References | None = None) -> tuple[str, str]:
    """The (time, terrain) reference nearest to the whole profile, snow settling the mountains."""
    refs = refs or references()
    distances = (((profile(pixels)[None, :] - refs.profiles) / refs.scale) ** 2).sum(axis=1)
    time, terrain = refs.keys[int(np.argmin(distances))]
    if terrain in ("mountains", "snowy mountains"):
        snowy = snow_share(pixels, time) > refs.snow_cut[time]
        terrain = "snowy mountains" if snowy else "mountains"
    return time, terrain


def profile_distance(a, b, refs: References | None = None) -> float:
    """Distance between two images' profiles, in the references' scaled units (per feature)."""
    refs = refs or references()
    difference = (profile(pixels_of(a)) - profile(pixels_of(b))) / refs.scale
    return float(np.sqrt((difference**2).mean()))


def read_landscape(image, refs: References | None = None) -> LandscapeReading:
    """Measure one render (PIL image or array)."""
    refs = refs or references()
    pixels = pixels_of(image)
    match = read_match(pixels, refs)
    sky = pixels[: SKY_BANDS * SIDE // BANDS].reshape(-1, 3).mean(axis=0)
    layered, roughness = structure(pixels)
    return LandscapeReading(
        time=read_time(pixels, refs),
        terrain=match[1],
        match=match,
        sky_rgb=tuple(float(v) for v in sky),
        brightness=float(sky.mean()),
        warmth=warmth(pixels),
        snow=snow_share(pixels, match[0]),
        layered=layered,
        roughness=roughness,
    )
