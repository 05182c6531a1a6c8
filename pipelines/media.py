"""Frames -> GIF / MP4 / WebP / strip PNG, and the JSON manifest. I/O lives here, at the edge.

MP4 is H.264 in yuv420p (what browsers and phones play) through the ffmpeg binary
that the `imageio-ffmpeg` wheel ships, so no system ffmpeg is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

SUPPORTED_SUFFIXES = (".gif", ".mp4", ".webp", ".png")


def check_suffix(path: Path | str) -> str:
    """The lower-case suffix of an output path, or ValueError naming the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unknown output format {str(path)!r}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix


def write_media(images: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> Path:
    """Write frames to `path` in the format its suffix names; returns the path.

    `.gif` and `.webp` are animations (looping forever when `loop`), `.mp4` a video,
    `.png` a lossless horizontal strip with frames left to right.
    """
    path = Path(path)
    suffix = check_suffix(path)
    if not images:
        raise ValueError("no frames to write")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [image.convert("RGB") for image in images]
    if suffix == ".png":
        write_strip(frames, path)
    else:
        animate = {".gif": write_gif, ".webp": write_webp, ".mp4": write_mp4}[suffix]
        animate(frames, path, fps=fps, loop=loop)
    return path


def _frame_ms(fps: float) -> int:
    """Frame duration in milliseconds (GIF stores hundredths of a second, so round to 10 ms)."""
    return max(10, int(round(100.0 / fps)) * 10)


def write_gif(frames: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> None:
    """Animated GIF; `loop=0` in the file means forever, no loop key means play once."""
    extra = {"loop": 0} if loop else {}
    frames[0].save(
        path, format="GIF", save_all=True, append_images=frames[1:], duration=_frame_ms(fps), disposal=1, **extra
    )


def write_webp(frames: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> None:
    """Animated WebP (lossy, quality 90: a fraction of the GIF's size without its banding)."""
    frames[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=int(round(1000.0 / fps)),
        loop=0 if loop else 1,
        quality=90,
    )


def pad_even(frame: np.ndarray) -> np.ndarray:
    """Pad an HxWx3 array to even sides by repeating the last row/column (yuv420p halves chroma)."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_mp4(frames: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> None:
    """H.264 MP4 in yuv420p via imageio-ffmpeg's bundled ffmpeg (`loop` does not apply to video)."""
    import imageio_ffmpeg

    arrays = [pad_even(np.asarray(frame, dtype=np.uint8)) for frame in frames]
    height, width = arrays[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,  # sizes are already even; never let it rescale frames
        quality=None,
        output_params=["-crf", "18", "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start the generator
    try:
        for array in arrays:
            writer.send(np.ascontiguousarray(array))
    finally:
        writer.close()


def strip(frames: Iterable[Image.Image]) -> Image.Image:
    """Frames side by side, left to right, each exactly its own width (all must share one size)."""
    frames = list(frames)
    width, height = frames[0].size
    if any(frame.size != (width, height) for frame in frames):
        raise ValueError("all frames of a strip must have the same size")
    canvas = Image.new("RGB", (width * len(frames), height))
    for position, frame in enumerate(frames):
        canvas.paste(frame, (position * width, 0))
    return canvas


def write_strip(frames: list[Image.Image], path: Path) -> None:
    """Lossless PNG strip of all frames."""
    strip(frames).save(path, format="PNG")


def write_manifest(manifest: dict, path: Path) -> Path:
    """The manifest as indented UTF-8 JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
