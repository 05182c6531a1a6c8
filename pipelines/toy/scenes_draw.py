"""Draw one procedural landscape (`scenes_data.Scene`) with numpy, at 2x, then downscale.

Order of drawing: sky gradient and sun glow, stars, sun or moon, clouds, terrain layers
from far to near (far layers fade towards the horizon's colour: aerial perspective), water
(a mirror of what is above the horizon, with a glitter path under the sun or moon), then
fog or rain over everything. A `Light` per time of day sets every colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Light:
    """Colours and sun of one time of day."""

    top: RGB  # sky at the zenith
    mid: RGB  # sky half-way down
    horizon: RGB  # sky at the horizon
    sun: RGB  # sun (or moon) colour, also its glow and glitter
    sun_height: float  # above the horizon, fraction of the sky's height; < 0: set
    sun_radius: float  # fraction of the image side
    glow: float  # strength of the glow around the sun
    land: tuple[float, float, float]  # multiplies the terrain's daylight colours
    stars: int  # number of stars


LIGHTS: dict[str, Light] = {
    "dawn": Light((60, 75, 145), (185, 140, 185), (255, 190, 160), (255, 225, 175), 0.06, 0.055, 0.6, (0.75, 0.66, 0.72), 0),
    "morning": Light((95, 160, 225), (150, 195, 235), (210, 228, 240), (255, 250, 220), 0.45, 0.045, 0.35, (0.95, 0.95, 0.92), 0),
    "noon": Light((35, 105, 210), (80, 150, 225), (150, 200, 240), (255, 255, 245), 0.85, 0.04, 0.25, (1.05, 1.05, 1.0), 0),
    "sunset": Light((55, 55, 125), (215, 105, 90), (255, 165, 60), (255, 120, 35), 0.05, 0.07, 0.85, (0.85, 0.58, 0.42), 0),
    "dusk": Light((18, 22, 65), (65, 55, 115), (185, 105, 110), (255, 120, 80), -0.2, 0.0, 0.3, (0.36, 0.3, 0.45), 40),
    "night": Light((4, 6, 20), (10, 15, 40), (28, 36, 70), (235, 235, 215), 0.6, 0.035, 0.12, (0.17, 0.19, 0.3), 160),
}
# Daylight colours of the terrains, far layer first.
GREENS = ((120, 165, 120), (80, 145, 65), (50, 115, 40))
ROCK = ((130, 125, 150), (105, 95, 105), (75, 70, 72))
SAND = ((225, 195, 140), (220, 175, 110), (200, 150, 85))
TREES = ((85, 120, 100), (40, 90, 50), (20, 60, 30))
FIELDS = ((95, 155, 60), (205, 185, 85), (70, 130, 45), (170, 160, 70))
CITY = ((140, 145, 165), (70, 72, 85))
WATER_COLOUR = (30, 75, 125)
SNOW = (240, 245, 252)
# Skyline height (fraction of the side) per terrain: low suns sit on it, partly hidden.
HORIZON = {"ocean": 0.56, "lake": 0.58, "mountains": 0.74, "snowy mountains": 0.74, "hills": 0.66,
           "desert": 0.66, "forest": 0.68, "fields": 0.6, "city": 0.74}
SKYLINE = {"mountains": 0.45, "snowy mountains": 0.45, "hills": 0.55, "desert": 0.6, "forest": 0.55,
           "city": 0.5, "lake": 0.53}


def _noise(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """Smooth random curve in [-1, 1] sampled at `size` points (piecewise linear)."""
    return np.interp(np.arange(size), np.linspace(0, size - 1, knots), rng.uniform(-1, 1, knots))


def _fill_below(canvas: np.ndarray, ridge: np.ndarray, colour, shade: float = 0.25) -> np.ndarray:
    """Paint everything below the ridge line, darker further down; returns the mask."""
    size = canvas.shape[0]
    rows = np.arange(size, dtype=np.float32)[:, None]
    below = rows - ridge[None, :].astype(np.float32)
    mask = below >= 0
    painted = np.asarray(colour, np.float32)[None, None, :] * (1 - (shade / size) * below)[..., None]
    np.copyto(canvas, painted, where=mask[..., None])  # much faster than boolean indexing
    return mask


def _peaks(rng: np.random.Generator, size: int, base: float, height: float, n: int, slope: float):
    """A ridge of triangular peaks plus jagged noise; returns the ridge and its shaded side."""
    xs = np.arange(size, dtype=np.float32)
    centres = rng.uniform(-0.1, 1.1, n) * size
    tops = rng.uniform(0.35, 1.0, n) * height
    slopes = rng.uniform(0.6, 1.4, n) * slope
    heights = tops[:, None] - np.abs(xs[None, :] - centres[:, None]) * slopes[:, None]
    which = heights.argmax(0)
    top = heights.max(0) + 0.03 * height * (_noise(rng, size, 24) + 0.5 * _noise(rng, size, 64))
    return base - np.maximum(top, 0), xs > centres[which]


def _lit(colour, light: Light, haze: float) -> np.ndarray:
    """Daylight colour under this light, faded towards the horizon's colour by `haze`."""
    lit = np.asarray(colour, np.float32) * np.asarray(light.land, np.float32)
    return (1 - haze) * lit + haze * np.asarray(light.horizon, np.float32)


def _sky(light: Light, horizon: float, size: int) -> np.ndarray:
    t = np.clip(np.arange(size) / horizon, 0, 1)
    stops = np.asarray([light.top, light.mid, light.horizon], np.float32)
    rows = np.stack([np.interp(t, [0, 0.55, 1], stops[:, c]) for c in range(3)], 1)
    return np.repeat(rows[:, None, :], size, axis=1).astype(np.float32)


def _disc(canvas: np.ndarray, cx: float, cy: float, radius: float, colour, alpha: float = 1.0,
          stretch: float = 1.0) -> None:
    """A disc (or an ellipse `stretch` times wider than tall), blended with `alpha`."""
    size, wide = canvas.shape[0], radius * stretch
    y0, y1 = int(max(0, cy - radius - 1)), int(min(size, cy + radius + 2))
    x0, x1 = int(max(0, cx - wide - 1)), int(min(size, cx + wide + 2))
    if y0 >= y1 or x0 >= x1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    mask = ((xs - cx) / stretch) ** 2 + (ys - cy) ** 2 <= radius**2
    window = canvas[y0:y1, x0:x1]
    window[mask] = (1 - alpha) * window[mask] + alpha * np.asarray(colour, np.float32)


def _clouds(canvas, rng, light: Light, horizon: float, count: int, dark: float) -> None:
    """Clusters of ellipses, lit on top and shaded underneath."""
    size = canvas.shape[0]
    lit = np.asarray([250, 250, 250], np.float32) * 0.5 + 0.5 * np.asarray(light.horizon, np.float32)
    lit = lit * (0.35 + 0.65 * max(light.land) / 1.05) * (1 - dark)
    shade = lit * 0.72
    for _ in range(count):
        cx, cy = rng.uniform(0, size), rng.uniform(0.06, 0.8) * horizon
        width = rng.uniform(0.1, 0.25) * size
        blobs = [(cx + rng.uniform(-1, 1) * width, cy + rng.uniform(-0.3, 0.1) * width * 0.25,
                  rng.uniform(0.12, 0.25) * width) for _ in range(rng.integers(3, 7))]
        for bx, by, r in blobs:
            _disc(canvas, bx, by + 0.3 * r, r * 0.8, shade, 0.9, 2.4)
        for bx, by, r in blobs:
            _disc(canvas, bx, by - 0.1 * r, r * 0.65, lit, 0.9, 2.4)


def _land(canvas, scene, light: Light, rng, horizon: float, haze: float) -> None:
    """Terrain layers from far to near."""
    size, terrain = canvas.shape[0], scene.terrain
    if terrain in ("mountains", "snowy mountains"):
        rows = np.arange(size, dtype=np.float32)[:, None]
        for layer, (base, height) in enumerate(((0.0, 0.32), (0.06, 0.22), (0.14, 0.12))):
            ridge, shaded = _peaks(rng, size, horizon + base * size, height * size, 5 - layer, 1.1)
            colour = _lit(ROCK[layer], light, haze * (1 - layer / 2.5))
            mask = _fill_below(canvas, ridge, colour, 0.15)
            dark = mask & shaded[None, :] & (rows < ridge[None, :] + 0.12 * size)
            canvas[dark] *= 0.8
            snowline = ridge.min() + (0.6 if terrain == "snowy mountains" else 0.22) * (horizon + base * size - ridge.min())
            snow = mask & (rows < snowline + 0.03 * size * _noise(rng, size, 30)[None, :])
            snow_colour = _lit(SNOW, light, haze * (1 - layer / 2.5))
            canvas[snow & ~dark] = snow_colour
            canvas[snow & dark] = snow_colour * np.asarray([0.78, 0.82, 0.92], np.float32)
        _fill_below(canvas, np.full(size, horizon + 0.2 * size), _lit(GREENS[2], light, 0.0) * 0.8, 0.2)
    elif terrain in ("hills", "desert"):
        palette = GREENS if terrain == "hills" else SAND
        for layer, base in enumerate((-0.06, 0.04, 0.15)):
            amp = (0.06 - 0.01 * layer) * size
            ridge = horizon + base * size - amp * (1 + _noise(rng, size, 4 + layer))
            _fill_below(canvas, ridge, _lit(palette[layer], light, haze * (1 - layer / 2.5)), 0.3)
    elif terrain == "forest":
        _fill_below(canvas, horizon - 0.08 * size * (1 + _noise(rng, size, 5)), _lit(GREENS[0], light, haze), 0.2)
        for layer, (base, height, spacing) in enumerate(((0.0, 0.1, 0.035), (0.12, 0.2, 0.06))):
            n = int(1.2 / spacing)
            ridge, _ = _peaks(rng, size, horizon + base * size, height * size, n, 3.0)
            _fill_below(canvas, ridge, _lit(TREES[layer + 1], light, haze * (1 - layer)), 0.2)
    elif terrain == "fields":
        _fill_below(canvas, horizon - 0.03 * size * (1 + _noise(rng, size, 8)), _lit(TREES[0], light, haze), 0.0)
        rows = np.arange(size, dtype=np.float32)[:, None]
        cols = np.arange(size, dtype=np.float32)[None, :]
        tilt = rng.uniform(-0.15, 0.15)
        depth = np.clip((rows - horizon + tilt * (cols - size / 2)) / (size - horizon), 0, 1)
        band = np.minimum((depth ** 0.55 * 7).astype(int), 6)
        colours = np.stack([_lit(FIELDS[(k + rng.integers(4)) % 4], light, haze * (1 - k / 7)) for k in range(7)])
        mask = rows + 0 * cols >= horizon
        canvas[mask] = colours[band][mask]
    elif terrain == "city":
        night = light.stars > 0
        for layer, (base, height) in enumerate(((0.0, 0.28), (0.04, 0.2))):
            ridge = np.zeros(size, np.float32)
            x = 0
            while x < size:
                width = int(rng.uniform(0.04, 0.1) * size)
                ridge[x:x + width] = horizon + base * size - rng.uniform(0.2, 1.0) * height * size
                x += width
            mask = _fill_below(canvas, ridge, _lit(CITY[layer], light, haze * (1 - layer)), 0.0)
            cells = rng.random((size // 6 + 1, size // 8 + 1)) < (0.45 if night else 0.7)
            ys, xs = np.mgrid[0:size, 0:size]
            windows = mask & (xs % 6 < 3) & (ys % 8 < 4) & cells[xs // 6, ys // 8] & (ys > ridge[None, :] + 3)
            colour = (255, 205, 110) if night else _lit((185, 200, 215), light, haze * (1 - layer))
            canvas[windows] = np.asarray(colour, np.float32) * (0.75 + 0.25 * layer)
        _fill_below(canvas, np.full(size, horizon + 0.04 * size), _lit((60, 60, 66), light, 0.0), 0.3)


def _water(canvas, scene, light: Light, rng, horizon: float, sun_x: float | None) -> None:
    """Mirror what is above the horizon, blend with the water's own colour, add glitter."""
    size = canvas.shape[0]
    top = int(horizon)
    rows = np.arange(top, size)
    depth = ((rows - top) / (size - top))[:, None, None]
    source = np.clip(top - (rows - top) * 0.7 - 1, 0, size - 1).astype(int)
    stormy = scene.sea == "stormy"
    mirror = 0.3 if stormy else 0.6
    own = np.asarray(WATER_COLOUR, np.float32) * np.asarray(light.land, np.float32)
    water = (mirror * canvas[source] + (1 - mirror) * own) * (1 - 0.3 * depth)
    ripple = rng.random((len(rows), size // 6 + 1)).repeat(6, axis=1)[:, :size]
    water *= (1 + (0.16 if stormy else 0.07) * (ripple[..., None] - 0.5))
    if sun_x is not None and not stormy:
        width = size * (0.015 + 0.08 * depth[:, 0, 0])
        chance = 0.55 * np.exp(-((np.arange(size)[None, :] - sun_x) ** 2) / (2 * width[:, None] ** 2))
        glitter = rng.random((len(rows), size)) < chance
        glitter |= np.roll(glitter, 2, axis=1) | np.roll(glitter, -2, axis=1)
        water[glitter] = 0.2 * water[glitter] + 0.8 * np.asarray(light.sun, np.float32)
    if stormy:
        caps = rng.random((len(rows), size)) < 0.012
        caps |= np.roll(caps, 2, axis=1) | np.roll(caps, 3, axis=1)
        water[caps] = 0.4 * water[caps] + 0.6 * 230 * max(light.land) / 1.05
    canvas[top:] = water
    if scene.terrain == "lake":  # near shore
        _fill_below(canvas, size * 0.93 - 0.03 * size * (1 + _noise(rng, size, 6)), _lit(GREENS[2], light, 0.0) * 0.7, 0.2)


def render_scene(scene, side: int = 128) -> Image.Image:
    """Draw the scene at 2x and downscale (anti-aliased); deterministic given `scene.seed`."""
    rng = np.random.default_rng(scene.seed)
    size = 2 * side
    light = LIGHTS[scene.time]
    horizon = (HORIZON[scene.terrain] + rng.uniform(-0.03, 0.03)) * size
    canvas = _sky(light, horizon, size)
    overcast = {"clear": 0.0, "cloudy": 0.25, "foggy": 0.3, "rainy": 0.65}[scene.weather]
    grey = np.asarray([125, 128, 138], np.float32) * (0.3 + 0.7 * max(light.land) / 1.05)
    canvas = (1 - overcast) * canvas + overcast * grey
    # Sun (or moon): low suns sit on the terrain's skyline, partly hidden behind it.
    sun_x = rng.uniform(0.2, 0.8) * size
    if light.sun_height < 0.15:
        sun_y = SKYLINE.get(scene.terrain, 0.56) * size - rng.uniform(-0.02, 0.06) * size
        sun_y = min(sun_y, horizon) - light.sun_height * size * 0.0
    else:
        sun_y = horizon * (1 - light.sun_height) + rng.uniform(-0.05, 0.05) * size
    if light.sun_height < 0:
        sun_y = horizon + 0.1 * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    glow = np.exp(-((xs - sun_x) ** 2 + (ys - sun_y) ** 2) / (2 * (0.22 * size) ** 2))
    strength = light.glow * (1 - overcast)
    canvas += (strength * glow)[..., None] * (np.asarray(light.sun, np.float32) - canvas)
    stars = int(light.stars * (1 - 2 * overcast))
    if stars > 0:
        sy, sx = rng.integers(0, int(horizon * 0.8), stars), rng.integers(0, size - 1, stars)
        bright = rng.uniform(120, 255, (stars, 1))
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            canvas[sy + dy, sx + dx] = np.maximum(canvas[sy + dy, sx + dx], bright)
    visible = light.sun_height >= 0 and scene.weather in ("clear", "cloudy", "foggy")
    if visible:  # the disc is brighter than its glow, so it reads against an orange sky
        disc = np.minimum(255, np.asarray(light.sun, np.float32) + 90)
        _disc(canvas, sun_x, sun_y, light.sun_radius * size, disc, 0.55 if scene.weather == "foggy" else 1.0)
    if scene.weather in ("cloudy", "rainy"):
        _clouds(canvas, rng, light, horizon, int(rng.integers(5, 10)) * (2 if scene.weather == "rainy" else 1),
                0.35 if scene.weather == "rainy" else 0.0)
    haze = 0.75 if scene.weather == "foggy" else 0.45
    if scene.terrain == "lake":
        _fill_below(canvas, horizon - 0.05 * size * (1 + _noise(rng, size, 7)), _lit(TREES[0], light, haze), 0.0)
    if scene.terrain in ("ocean", "lake"):
        _water(canvas, scene, light, rng, horizon, sun_x if visible and scene.weather != "cloudy" else None)
    else:
        _land(canvas, scene, light, rng, horizon, haze)
    if scene.weather == "foggy":
        fog = 0.5 * np.asarray(light.horizon, np.float32) + 0.5 * grey * 1.5
        amount = 0.3 + 0.35 * np.exp(-(((ys - horizon) / (0.22 * size)) ** 2))
        canvas = (1 - amount[..., None]) * canvas + amount[..., None] * fog
    elif scene.weather == "rainy":
        drops = rng.random((size, size)) < 0.004
        streaks = np.zeros_like(drops)
        for k in range(9):
            streaks |= np.roll(np.roll(drops, 2 * k, axis=0), k, axis=1)
        canvas[streaks] = 0.5 * canvas[streaks] + 0.5 * grey * 1.6
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return image.resize((side, side), Image.LANCZOS)
