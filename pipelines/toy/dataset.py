"""Procedural coloured-shape scenes with captions: the toy model's whole world.

Every image is drawn with PIL at twice its size and downscaled, so edges are anti-aliased.
A scene is described by `Scene`; its caption is drawn afresh each time from the scene,
so the model sees many phrasings of one image ("a red circle", "a large red circle on a
grey background", ...). Grey is the default background: a caption that names no background
always shows a grey one, so "a yellow star" has one clear meaning.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 65, 225),
    "yellow": (245, 215, 30),
    "purple": (140, 45, 180),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
DEFAULT_BACKGROUND = "grey"
GREY = (128, 128, 128)
# Backgrounds beyond the plain colours: neutral patterns that never hide a shape.
PATTERNS = ("striped", "checkered")
BACKGROUNDS = (DEFAULT_BACKGROUND, *COLOURS, *PATTERNS)

# Colour-shape pairs never shown in training: rendering them shows composition.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("purple", "star"), ("orange", "circle"), ("blue", "triangle")}
)

# Radii as fractions of the image side (circumradius for polygons).
_RADIUS = {"small": (0.15, 0.19), "large": (0.30, 0.36)}
_JITTER = 0.05  # centre offset, fraction of the side
_STAR_INNER = 0.45  # inner/outer radius of the five-pointed star: fat enough to survive 64 px


@dataclass(frozen=True)
class Scene:
    """What one training image shows."""

    colour: str
    shape: str
    size: str
    background: str
    radius: float  # fraction of the image side
    centre: tuple[float, float]  # fractions of the image side


def sample_scene(rng: random.Random) -> Scene:
    """A random scene; held-out colour-shape pairs are never drawn."""
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if (colour, shape) not in HELD_OUT:
            break
    size = rng.choice(SIZES)
    roll = rng.random()
    if roll < 0.4:
        background = DEFAULT_BACKGROUND
    elif roll < 0.85:
        background = rng.choice([name for name in COLOURS if name != colour])
    else:
        background = rng.choice(PATTERNS)
    centre = (0.5 + rng.uniform(-_JITTER, _JITTER), 0.5 + rng.uniform(-_JITTER, _JITTER))
    return Scene(colour, shape, size, background, rng.uniform(*_RADIUS[size]), centre)


def caption(scene: Scene, rng: random.Random) -> str:
    """A natural caption; size and a grey background are named only sometimes."""
    words = []
    if rng.random() < 0.6:
        words.append(scene.size)
    words += [scene.colour, scene.shape]
    article = "an" if words[0][0] in "aeiou" else "a"
    text = f"{article} {' '.join(words)}"
    if scene.background != DEFAULT_BACKGROUND or rng.random() < 0.3:
        text += f" on a {scene.background} background"
    return text


def _draw_background(draw: ImageDraw.ImageDraw, name: str, side: int) -> None:
    if name == DEFAULT_BACKGROUND:
        draw.rectangle((0, 0, side, side), fill=GREY)
    elif name in COLOURS:
        draw.rectangle((0, 0, side, side), fill=COLOURS[name])
    elif name == "striped":
        band = side // 8
        for row in range(8):
            shade = (170, 170, 170) if row % 2 else (95, 95, 95)
            draw.rectangle((0, row * band, side, (row + 1) * band), fill=shade)
    elif name == "checkered":
        cell = side // 8
        for row in range(8):
            for col in range(8):
                shade = (170, 170, 170) if (row + col) % 2 else (95, 95, 95)
                draw.rectangle((col * cell, row * cell, (col + 1) * cell, (row + 1) * cell), fill=shade)
    else:
        raise ValueError(f"unknown background {name!r}")


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of an upright square, triangle or five-pointed star of circumradius r."""
    if shape == "square":
        # A little smaller than the circle (0.8 r) so squares and circles cover similar areas.
        half = 0.8 * r
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    if shape == "triangle":
        # Centred on its bounding box so it sits in the middle like the other shapes.
        top, base = cy - 0.75 * r, cy + 0.75 * r
        half = r * math.sqrt(3) / 2
        return [(cx, top), (cx + half, base), (cx - half, base)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * _STAR_INNER
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(f"unknown polygon shape {shape!r}")


def render_scene(scene: Scene, side: int = 64) -> Image.Image:
    """Draw the scene at 2x and downscale with a Lanczos filter."""
    big = side * 2
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, big)
    cx, cy, r = scene.centre[0] * big, scene.centre[1] * big, scene.radius * big
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(shape_polygon(scene.shape, cx, cy, r), fill=fill)
    return image.resize((side, side), Image.LANCZOS)


def image_batch(scenes: list[Scene], side: int = 64) -> np.ndarray:
    """Scenes as a uint8 array of shape (N, side, side, 3)."""
    return np.stack([np.asarray(render_scene(scene, side)) for scene in scenes])
