"""Frames -> GIF / WebP / MP4 / strip PNG / grid PNG / JSON manifest: one registry. I/O lives here, at the edge.

MP4 is H.264 in yuv420p (what browsers and phones play) through the ffmpeg binary
that the `imageio-ffmpeg` wheel ships, so no system ffmpeg is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from PIL import Image

@dataclass(frozen=True)
class Film:
    """What the writers need: the frames in output order, how to play them, where tiles sit."""

    images: list[Image.Image]
    fps: float = 8.0
    loop: bool = True
    tiles: list[tuple[int, int]] | None = None  # (row, column) of each frame, for the grid mosaic
    manifest: dict | None = None


@dataclass(frozen=True)
class Format:
    """One output format: its name, its file suffix and its writer."""

    name: str
    suffix: str
    write: Callable[[Film, Path], None]
    animated: bool = False
    label: str = ""  # what the page's download button says


def _animation(write_frames: Callable[..., None]) -> Callable[[Film, Path], None]:
    def write(film: Film, path: Path) -> None:
        if not (math.isfinite(film.fps) and film.fps > 0):
            raise ValueError(f"fps must be a positive number, got {film.fps}")
        write_frames([image.convert("RGB") for image in film.images], path, fps=film.fps, loop=film.loop)

    return write


def _write_strip(film: Film, path: Path) -> None:
    write_strip([image.convert("RGB") for image in film.images], path)


def _write_grid(film: Film, path: Path) -> None:
    if film.tiles is None:
        raise ValueError("a grid mosaic needs each frame's (row, column): only the grid walk has them")
    mosaic(film.images, film.tiles).save(path, format="PNG")


def _write_plot(film: Film, path: Path) -> None:
    if film.manifest is None or not film.manifest.get("path"):
        raise ValueError("the path inspector needs the manifest's path record")
    from pipelines.plot import draw_path

    draw_path(film.manifest, film.images, path, film.tiles)


def _write_manifest(film: Film, path: Path) -> None:
    if film.manifest is None:
        raise ValueError("no manifest to write")
    write_manifest(film.manifest, path)


# The one registry of output formats: the CLI's --out and the service's files both read it.
FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        Format("gif", ".gif", lambda film, path: _animation(write_gif)(film, path), True, "GIF"),
        Format("webp", ".webp", lambda film, path: _animation(write_webp)(film, path), True, "WebP"),
        Format("mp4", ".mp4", lambda film, path: _animation(write_mp4)(film, path), True, "Video MP4"),
        Format("strip", ".png", _write_strip, label="Strip PNG"),
        Format("grid", ".png", _write_grid, label="Grid PNG"),
        Format("manifest", ".json", _write_manifest, label="Manifest JSON"),
        Format("plot", ".png", _write_plot, label="Path plot PNG"),
    )
}
SUPPORTED_SUFFIXES = (".gif", ".mp4", ".webp", ".png")  # what --out takes (the manifest has --manifest)


def format_for(path: Path | str, still: str = "strip") -> Format:
    """The format a path's suffix names; `.png` is the walk's still picture (`strip` or `grid`)."""
    suffix = check_suffix(path)
    if suffix == ".png":
        return FORMATS[still]
    return next(fmt for fmt in FORMATS.values() if fmt.suffix == suffix and fmt.name not in ("strip", "grid", "plot"))


def check_suffix(path: Path | str) -> str:
    """The lower-case suffix of an output path, or ValueError naming the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"unknown output format {str(path)!r}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix


def write(film: Film, path: Path | str, fmt: Format | str | None = None) -> Path:
    """Write `film` to `path` in `fmt` (a Format, a registry name, or None: from the suffix)."""
    path = Path(path)
    if not film.images and (fmt != "manifest"):
        raise ValueError("no frames to write")
    chosen = FORMATS[fmt] if isinstance(fmt, str) else fmt or format_for(path, "grid" if film.tiles else "strip")
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen.write(film, path)
    return path


def write_media(images: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> Path:
    """Write frames to `path` in the format its suffix names (`.png`: the lossless strip); returns the path."""
    return write(Film(list(images), fps=fps, loop=loop), path)


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


def mosaic(frames: list[Image.Image], tiles: list[tuple[int, int]]) -> Image.Image:
    """Tiles placed at (row, column), no gaps, each at its own size (all must share one size)."""
    width, height = frames[0].size
    if any(frame.size != (width, height) for frame in frames):
        raise ValueError("all tiles of a grid must have the same size")
    rows = 1 + max(row for row, _ in tiles)
    columns = 1 + max(column for _, column in tiles)
    canvas = Image.new("RGB", (width * columns, height * rows))
    for frame, (row, column) in zip(frames, tiles):
        canvas.paste(frame.convert("RGB"), (column * width, row * height))
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
