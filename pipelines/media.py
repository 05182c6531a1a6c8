"""Frames -> GIF / WebP / MP4 / strip PNG / grid PNG / JSON manifest: one registry. I/O lives here, at the edge.

MP4 is H.264 in yuv420p (what browsers and phones play) through the ffmpeg binary
that the `imageio-ffmpeg` wheel ships, so no system ffmpeg is needed. Every file is
written to a temporary name beside it and renamed once complete (`write_all`), so a
failure never leaves a partial output behind.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.request import shown


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
PATH_CHARS = 200  # of a path, a message shows this much


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
        raise ValueError(f"unknown output format {shown_path(path)}: use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix


def shown_path(path: Path | str) -> str:
    """A path as messages echo it: whole unless absurdly long (a message stays one short line)."""
    return shown(str(path), PATH_CHARS)


def check_output_path(path: Path | str) -> Path:
    """`path` if a file can be written there (its folder exists and is writable, it is no folder); else ValueError.

    Cheap and side-effect free, so a caller checks every output before any work.
    """
    path = Path(path)
    folder = path.parent  # Path("m.gif").parent is Path(".")
    try:
        if path.is_dir():
            raise ValueError(f"output {shown_path(path)} is a folder; give a file name")
        if not folder.is_dir():
            missing = "is not a folder" if folder.exists() else "does not exist"
            raise ValueError(f"output {shown_path(path)}: the folder {shown_path(folder)} {missing}")
    except OSError as error:  # a name too long for the file system, a loop of links, ...
        raise ValueError(f"output {shown_path(path)}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"output {shown_path(path)}: the folder {shown_path(folder)} is not writable")
    return path


def write(film: Film, path: Path | str, fmt: Format | str | None = None) -> Path:
    """Write `film` to `path` in `fmt` (a Format, a registry name, or None: from the suffix)."""
    return write_all(film, [(path, fmt)])[0]


def write_all(film: Film, targets: Sequence[tuple[Path | str, Format | str | None]]) -> list[Path]:
    """Write `film` to every (path, format) target; returns the paths.

    Each file is written to a temporary name in its own folder (so the rename is atomic)
    and the renames come last: when any writer fails, every temporary file is removed and
    no output of this call is left, complete or partial.
    """
    planned = [(Path(path), _chosen(film, Path(path), fmt)) for path, fmt in targets]
    temporaries: list[Path] = []
    try:
        for path, chosen in planned:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries.append(_reserve_beside(path))
            chosen.write(film, temporaries[-1])
        for (path, _), temporary in zip(planned, temporaries):
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise
    return [path for path, _ in planned]


def _chosen(film: Film, path: Path, fmt: Format | str | None) -> Format:
    chosen = FORMATS[fmt] if isinstance(fmt, str) else fmt or format_for(path, "grid" if film.tiles else "strip")
    if not film.images and chosen.name != "manifest":
        raise ValueError("no frames to write")
    return chosen


def _reserve_beside(path: Path) -> Path:
    """A new empty file next to `path`, named after it, keeping its suffix (ffmpeg and matplotlib read it)."""
    temporary = path.with_name(f".{path.stem[:64]}.{secrets.token_hex(4)}.partial{path.suffix}")
    # created here, with the usual permissions (umask), so no other writer can take the name
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return temporary


def write_media(images: list[Image.Image], path: Path, fps: float = 8.0, loop: bool = True) -> Path:
    """Write frames to `path` in the format its suffix names (`.png`: the lossless strip); returns the path."""
    return write(Film(list(images), fps=fps, loop=loop), path)


def _frame_ms(fps: float) -> int:
    """Frame duration in milliseconds (GIF stores hundredths of a second, so round to 10 ms)."""
    return max(10, round(100.0 / fps) * 10)


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
        duration=round(1000.0 / fps),
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
