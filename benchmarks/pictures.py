"""Keyframe pictures for the inversion benchmark and the README, drawn here so nothing of unknown licence ships.

    python -m benchmarks.pictures                        # the shapes64 set into docs/pictures/
    python -m benchmarks.pictures --set scenes --out /tmp/p
    python -m benchmarks.pictures --enlarge 3 docs/m.gif docs/m.png     # README copies of 64 px frames

Each picture is drawn with PIL and numpy at twice its size and downscaled (Lanczos), with
what a photograph has and the training drawings lack: shading, a soft shadow, a
gradient, grain, JPEG artefacts, an alpha edge. Sizes and aspects are odd on purpose
(300x200, 180x240, ...), so the keyframe reader's centre crop and resize are exercised.
Every picture shows something its model can draw, and carries a prompt describing it in
the model's own words and a target prompt for a picture -> prompt morph. Deterministic:
the same files (pixel for pixel) on every run.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "pictures"


@dataclass(frozen=True)
class Drawing:
    """One keyframe picture: how to draw it and what it shows."""

    file: str  # the suffix decides the format (PNG, JPEG, WebP)
    size: tuple[int, int]  # width, height as saved
    draw: Callable[[tuple[int, int]], Image.Image]  # -> RGB or RGBA at `size`
    prompt: str  # describes the picture in the model's words
    target: str  # a prompt for a picture -> prompt morph
    note: str  # what is photo-like about it


# ---------------------------------------------------------------- drawing helpers


def _vertical_gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> np.ndarray:
    """A float (H, W, 3) image going from `top` to `bottom`."""
    width, height = size
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    column = (1 - ramp) * np.array(top, float) + ramp * np.array(bottom, float)
    return np.repeat(column, width, axis=1)


def _grain(array: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Add seeded Gaussian grain (sensor noise) to a float image."""
    return array + np.random.default_rng(seed).normal(0.0, sigma, array.shape)


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8), "RGB")


def _mask(size: tuple[int, int], paint: Callable[[ImageDraw.ImageDraw], None], blur: float = 0.0) -> np.ndarray:
    """A float (H, W, 1) coverage mask in [0, 1] painted by `paint`, optionally blurred."""
    layer = Image.new("L", size, 0)
    paint(ImageDraw.Draw(layer))
    if blur:
        layer = layer.filter(ImageFilter.GaussianBlur(blur))
    return (np.asarray(layer, dtype=np.float64) / 255.0)[:, :, None]


def _star(cx: float, cy: float, r: float, inner: float = 0.45) -> list[tuple[float, float]]:
    """An upright five-pointed star (the shapes model's proportions)."""
    return [(cx + (r if k % 2 == 0 else r * inner) * math.cos(-math.pi / 2 + k * math.pi / 5),
             cy + (r if k % 2 == 0 else r * inner) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]


def _downscaled(draw: Callable[[tuple[int, int]], Image.Image]) -> Callable[[tuple[int, int]], Image.Image]:
    """Draw at 2x, then Lanczos down to the asked size (anti-aliased edges)."""

    def at(size: tuple[int, int]) -> Image.Image:
        return draw((size[0] * 2, size[1] * 2)).resize(size, Image.LANCZOS)

    return at


# ---------------------------------------------------------------- the shapes64 set


@_downscaled
def red_disc_on_gradient(size: tuple[int, int]) -> Image.Image:
    """A shaded red ball on a grey studio gradient, with grain: a product photo of a circle."""
    width, height = size
    background = _vertical_gradient(size, (150, 150, 152), (104, 104, 106))
    cx, cy, r = width / 2, height / 2, 0.33 * height
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    # Lambert-ish shading: light from the upper left, darker towards the rim
    light = np.clip(1.0 - 0.55 * np.hypot(xx - (cx - 0.35 * r), yy - (cy - 0.35 * r)) / (1.6 * r), 0.45, 1.0)
    ball = np.array((225, 35, 30), float) * (0.72 + 0.38 * light[:, :, None])
    shadow = _mask(size, lambda d: d.ellipse((cx - r, cy + 0.75 * r, cx + r * 1.1, cy + 1.1 * r), fill=90), blur=r / 6)
    background = background * (1 - shadow)
    disc = _mask(size, lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255))
    return _to_image(_grain(background * (1 - disc) + ball * disc, 5.0, seed=1))


@_downscaled
def blue_square_with_shadow(size: tuple[int, int]) -> Image.Image:
    """A blue tile casting a soft shadow on yellow card, lit unevenly."""
    width, height = size
    background = _vertical_gradient(size, (250, 222, 48), (228, 196, 24))
    cx, cy, half = width / 2, height / 2, 0.8 * 0.33 * width
    offset = 0.09 * half
    shadow = _mask(size, lambda d: d.rectangle((cx - half + offset, cy - half + 2 * offset,
                                                cx + half + 2 * offset, cy + half + 3 * offset), fill=150),
                   blur=half / 7)
    background = background * (1 - 0.8 * shadow)
    square = _mask(size, lambda d: d.rectangle((cx - half, cy - half, cx + half, cy + half), fill=255))
    face = _vertical_gradient(size, (50, 82, 235), (28, 55, 205))
    return _to_image(_grain(background * (1 - square) + face * square, 3.0, seed=2))


def yellow_star_on_stripes(size: tuple[int, int]) -> Image.Image:
    """A yellow star on grey stripes, saved as a JPEG (quality 80: blocks and ringing)."""
    big = (size[0] * 2, size[1] * 2)
    width, height = big
    image = Image.new("RGB", big)
    draw = ImageDraw.Draw(image)
    band = height / 8
    for row in range(8):
        shade = (170, 170, 170) if row % 2 else (95, 95, 95)
        draw.rectangle((0, round(row * band), width, round((row + 1) * band)), fill=shade)
    draw.polygon(_star(width / 2, height / 2, 0.36 * height), fill=(245, 215, 30))
    return image.resize(size, Image.LANCZOS)


@_downscaled
def green_triangle_cutout(size: tuple[int, int]) -> Image.Image:
    """A green triangle cut out on transparency (RGBA), soft-edged: composited on white when read."""
    width, height = size
    cx, cy, r = width / 2, height / 2, 0.34 * width
    top, base, half = cy - 0.75 * r, cy + 0.75 * r, r * math.sqrt(3) / 2
    corners = [(cx, top), (cx + half, base), (cx - half, base)]
    alpha = _mask(size, lambda d: d.polygon(corners, fill=255), blur=1.5)
    colour = _vertical_gradient(size, (45, 180, 65), (22, 135, 40))
    rgba = np.concatenate([colour, alpha * 255.0], axis=2)
    return Image.fromarray(np.clip(rgba + 0.5, 0, 255).astype(np.uint8), "RGBA")


SHAPES64 = [
    Drawing("red-disc-gradient.png", (300, 200), red_disc_on_gradient, "a large red circle",
            "a large blue square", "shading, a cast shadow, a gradient, grain; wide (cropped to the centre)"),
    Drawing("blue-square-shadow.png", (180, 240), blue_square_with_shadow, "a large blue square on a yellow background",
            "a small purple circle", "a soft shadow, uneven light, grain; tall (cropped to the centre)"),
    Drawing("yellow-star-stripes.jpg", (320, 256), yellow_star_on_stripes,
            "a large yellow star on a striped background",
            "a large white circle on a black background", "JPEG quality 80; 5:4 (cropped)"),
    Drawing("green-triangle-cutout.png", (220, 220), green_triangle_cutout,
            "a large green triangle on a white background",
            "a large red star", "RGBA with a soft alpha edge, composited on white"),
]


# ---------------------------------------------------------------- the scenes set (128 px landscapes)


@_downscaled
def sunset_over_sea(size: tuple[int, int]) -> Image.Image:
    """A setting sun over a calm sea, with a glitter path: the scenes model's world, drawn freehand."""
    width, height = size
    horizon = int(0.6 * height)
    sky = _vertical_gradient((width, horizon), (60, 55, 125), (255, 160, 60))
    sea = _vertical_gradient((width, height - horizon), (70, 60, 95), (25, 25, 55))
    array = np.concatenate([sky, sea], axis=0)
    cx, cy, r = 0.5 * width, horizon - 0.06 * height, 0.07 * width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    glow = np.exp(-np.hypot(xx - cx, yy - cy) / (0.25 * width))[:, :, None] * (yy < horizon)[:, :, None]
    array = array + 0.6 * glow * (np.array((255, 120, 35), float) - array)
    sun = _mask(size, lambda d: d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)) * (yy < horizon)[:, :, None]
    array = array * (1 - sun) + np.array((255, 200, 120), float) * sun
    rng = np.random.default_rng(3)
    glitter = np.zeros((height, width))
    for _ in range(int(0.02 * width * height / 10)):
        y = int(rng.uniform(horizon + 2, height))
        spread = 0.05 * width + 0.25 * width * (y - horizon) / (height - horizon)
        x = int(rng.normal(cx, spread / 2))
        if 0 <= x < width:
            glitter[y, max(0, x - 3):x + 3] = 1.0
    array = array + 0.7 * glitter[:, :, None] * (np.array((255, 170, 80), float) - array)
    return _to_image(_grain(array, 3.0, seed=4))


@_downscaled
def green_hills_at_noon(size: tuple[int, int]) -> Image.Image:
    """Rolling green hills under a clear blue sky at noon, two layers, the far one hazier."""
    width, height = size
    array = _vertical_gradient(size, (35, 105, 210), (150, 200, 240))
    xs = np.arange(width, dtype=np.float64)
    yy = np.arange(height, dtype=np.float64)[:, None]
    for level, amplitude, colour, phase in ((0.55, 0.06, (110, 165, 110), 0.7), (0.68, 0.08, (55, 140, 45), 2.1)):
        ridge = height * (level + amplitude * np.sin(xs / width * 2.6 * math.pi + phase)
                          + 0.5 * amplitude * np.sin(xs / width * 5.3 * math.pi + 2 * phase))
        land = (yy >= ridge[None, :]).astype(np.float64)[:, :, None]
        array = array * (1 - land) + np.array(colour, float) * land
    return _to_image(_grain(array, 3.0, seed=5))


SCENES = [
    Drawing("sunset-sea.png", (320, 200), sunset_over_sea, "a sunset over the ocean", "snowy mountains at night",
            "glow, glitter, grain; wide (cropped)"),
    Drawing("green-hills.jpg", (240, 180), green_hills_at_noon, "green hills at noon", "a city at night",
            "JPEG, 4:3 (cropped)"),
]

SETS: dict[str, list[Drawing]] = {"shapes64": SHAPES64, "scenes": SCENES}


def draw_set(name: str, folder: Path) -> list[tuple[Drawing, Path]]:
    """Draw and save every picture of a set into `folder`; (drawing, path) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for drawing in SETS[name]:
        image = drawing.draw(drawing.size)
        path = folder / drawing.file
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.convert("RGB").save(path, quality=80)
        elif path.suffix.lower() == ".webp":
            image.save(path, quality=85)
        else:
            image.save(path, optimize=True)
        saved.append((drawing, path))
    return saved


def enlarge(path: Path, out: Path, factor: int) -> Path:
    """A GIF or PNG scaled up by `factor` with nearest neighbour (the real pixels, for the README)."""
    with Image.open(path) as image:
        if getattr(image, "n_frames", 1) > 1:
            frames, durations = [], []
            for index in range(image.n_frames):
                image.seek(index)
                frames.append(image.convert("RGB").resize((image.width * factor, image.height * factor), Image.NEAREST))
                durations.append(image.info.get("duration", 125))
            loop = image.info.get("loop", 0)
            frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=loop,
                           optimize=False, disposal=1)
        else:
            image.convert("RGB").resize((image.width * factor, image.height * factor), Image.NEAREST).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pictures", description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="shapes64", help="which model's pictures")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write them to")
    parser.add_argument("--enlarge", type=int, default=None, metavar="N",
                        help="instead: scale the given GIF/PNG files up N times (nearest), in place")
    parser.add_argument("files", nargs="*", type=Path, help="files for --enlarge")
    args = parser.parse_args(argv)
    if args.enlarge:
        for path in args.files:
            print(enlarge(path, path, args.enlarge))
        return 0
    for drawing, path in draw_set(args.set, args.out):
        print(f"{path}  {drawing.size[0]}x{drawing.size[1]}  {drawing.prompt!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
