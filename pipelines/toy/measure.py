"""Simple measurements of a rendered shape scene: what colour and which shape is in front.

They are deliberately plain (border median for the background, a colour-distance mask,
bounding-box fill and convex-hull solidity) so that a test reading them is easy to trust.
They are checked on the procedural scenes themselves, where the truth is known, before
they are used to score the model's renders.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from pipelines.toy.dataset import COLOURS

_BORDER = 3  # pixels of the frame edge that show only background
_MASK_DISTANCE = 60.0  # RGB distance from the background that counts as foreground


@dataclass(frozen=True)
class ShapeReading:
    colour: str  # nearest palette colour of the foreground
    rgb: tuple[float, float, float]  # median foreground colour
    shape: str  # circle | square | triangle | star | none
    fill: float  # foreground area / bounding-box area
    solidity: float  # foreground area / convex-hull area
    area: float  # fraction of the image covered


def background_colour(pixels: np.ndarray) -> np.ndarray:
    """Median colour of the image border."""
    b = _BORDER
    ring = np.concatenate(
        [pixels[:b].reshape(-1, 3), pixels[-b:].reshape(-1, 3),
         pixels[:, :b].reshape(-1, 3), pixels[:, -b:].reshape(-1, 3)]
    )
    return np.median(ring, axis=0)


def foreground_mask(pixels: np.ndarray) -> np.ndarray:
    """The largest connected region that differs clearly from the background."""
    distance = np.linalg.norm(pixels - background_colour(pixels), axis=-1)
    mask = distance > _MASK_DISTANCE
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def nearest_colour(rgb: np.ndarray) -> str:
    """Name of the palette colour closest to `rgb`."""
    names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixel squares."""
    rows, cols = np.nonzero(mask)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(np.float64)
    try:
        return float(ConvexHull(corners).volume)  # in 2-D, "volume" is the area
    except QhullError:
        return float(mask.sum())


def classify_shape(fill: float, solidity: float) -> str:
    """Stars are the only concave shape; the convex ones differ in how they fill their box
    (square 1.0, circle pi/4 = 0.79, triangle 0.5)."""
    if solidity < 0.73:
        return "star"
    if fill > 0.85:
        return "square"
    if fill > 0.66:
        return "circle"
    return "triangle"


def read_scene(image: Image.Image) -> ShapeReading:
    """Measure the foreground of one render."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    mask = foreground_mask(pixels)
    area = float(mask.sum())
    if area < 4:
        return ShapeReading("none", (0.0, 0.0, 0.0), "none", 0.0, 0.0, 0.0)
    # The eroded core avoids anti-aliased edges when reading the colour.
    core = ndimage.binary_erosion(mask) if ndimage.binary_erosion(mask).sum() >= 4 else mask
    rgb = np.median(pixels[core], axis=0)
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill, solidity = area / box, area / hull_area(mask)
    return ShapeReading(nearest_colour(rgb), tuple(float(v) for v in rgb),
                        classify_shape(fill, solidity), fill, solidity, area / mask.size)


def hue_degrees(rgb: tuple[float, float, float]) -> float:
    """Hue of an RGB colour (0-255 channels) in degrees."""
    hue, _, _ = colorsys.rgb_to_hsv(*(channel / 255.0 for channel in rgb))
    return hue * 360.0


def hue_progress(rgb: tuple[float, float, float], start_rgb, end_rgb) -> float:
    """Where a hue lies on the shorter arc from `start_rgb`'s hue to `end_rgb`'s: 0 at the start,
    1 at the end (angular distance from the start over the arc's length)."""
    start, end, hue = hue_degrees(start_rgb), hue_degrees(end_rgb), hue_degrees(rgb)
    arc = abs((end - start + 180) % 360 - 180)
    return abs((hue - start + 180) % 360 - 180) / arc
