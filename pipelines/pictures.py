"""Pictures a user brings as keyframes: read safely, normalised to RGB, fitted to the render size.

Everything is checked before any model work and every refusal is one sentence that
names the file and the limit: a missing file, a file over the size limit, something
that is not a picture, a truncated one, or one whose header claims more pixels than
`MAX_PICTURE_PIXELS` (a decompression bomb, refused before it is decoded).

Normalisation: EXIF orientation applied; 16-bit and palette pictures converted;
transparency composited on `BACKGROUND`; the picture centre-cropped to the render's
aspect ratio and resized with Lanczos. What was done is returned for the manifest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PICTURE_BYTES = 20 * 2**20  # a keyframe picture file, at most
MAX_PICTURE_PIXELS = 40_000_000  # width x height in the file's header, at most (a 20000 x 20000 bomb is 400 M)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
FORMATS = ("PNG", "JPEG", "WEBP")
EXIF_ORIENTATION = 0x0112


class PictureError(ValueError):
    """A keyframe picture that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class Picture:
    """A keyframe picture, ready for the VAE."""

    image: Image.Image  # RGB at the render size
    digest: str  # sha256 of the fitted pixels: the key's identity (not the file's name)
    record: dict  # what was done to it, for the manifest


def pixel_sha256(image: Image.Image) -> str:
    """sha256 of an RGB picture's size and pixels."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


def read_picture(path: Path | str, size: tuple[int, int], max_bytes: int = MAX_PICTURE_BYTES) -> Picture:
    """Open, check and fit a picture to `size` (width, height); PictureError on anything wrong."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise PictureError(f"image {name!r}: no such file")
    length = path.stat().st_size
    if length > max_bytes:
        raise PictureError(f"image {name!r} is {length / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB")
    try:
        with Image.open(path) as opened:
            if opened.format not in FORMATS:
                raise PictureError(f"image {name!r} is {opened.format}; use PNG, JPEG or WebP")
            width, height = opened.size
            if width * height > MAX_PICTURE_PIXELS:
                raise PictureError(f"image {name!r} is {width}x{height} pixels; the limit is "
                                   f"{MAX_PICTURE_PIXELS} pixels")
            opened.load()  # decodes now: a truncated file fails here
            original = (opened.format, opened.mode, width, height)
            rotated = opened.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
            upright = ImageOps.exif_transpose(opened)
    except PictureError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own guard fired first, in the header
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        amount = f"{claimed.group(1)} pixels" if claimed else "too many pixels"
        raise PictureError(f"image {name!r} is {amount}; the limit is {MAX_PICTURE_PIXELS} pixels") from None
    except UnidentifiedImageError:
        raise PictureError(f"image {name!r} is not a picture PIL can read (PNG, JPEG or WebP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise PictureError(f"image {name!r} could not be decoded ({_first_line(error)}); is it truncated?") from None
    rgb, alpha = to_rgb(upright)
    fitted, crop = fit(rgb, size)
    record = {
        "file": name, "format": original[0], "mode": original[1], "original_size": [original[2], original[3]],
        "exif_rotated": rotated,
        "alpha_composited_on": list(BACKGROUND) if alpha else None,
        "crop": crop, "size": list(size),
    }
    digest = pixel_sha256(fitted)
    return Picture(fitted, digest, {**record, "sha256_16": digest[:16]})


def to_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """8-bit RGB, transparency composited on BACKGROUND; (picture, had transparency)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB"), True
    return image.convert("RGB"), False


def fit(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, list[int]]:
    """Centre-crop to the aspect of `size`, then resize to it; (picture, crop box [left, top, right, bottom])."""
    width, height = image.size
    target = size[0] / size[1]
    if width / height > target:  # too wide: crop the sides
        keep = round(height * target)
        box = [(width - keep) // 2, 0, (width - keep) // 2 + keep, height]
    else:  # too tall: crop top and bottom
        keep = round(width / target)
        box = [0, (height - keep) // 2, width, (height - keep) // 2 + keep]
    cropped = image.crop(tuple(box))
    if cropped.size != tuple(size):
        cropped = cropped.resize(size, Image.LANCZOS)
    return cropped, box


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
