"""GIF, WebP, MP4, strip PNG, grid mosaic and the manifest, through one registry of formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.media import (
    FORMATS,
    SUPPORTED_SUFFIXES,
    Film,
    format_for,
    mosaic,
    pad_even,
    strip,
    write,
    write_manifest,
    write_media,
)


def _frames(count: int = 4, width: int = 24, height: int = 16) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def test_gif_loops_forever_at_the_given_fps(tmp_path: Path) -> None:
    path = write_media(_frames(), tmp_path / "m.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.info["loop"] == 0 and gif.info["duration"] == 100
    with Image.open(write_media(_frames(), tmp_path / "once.gif", loop=False)) as gif:
        assert "loop" not in gif.info


def test_webp_is_an_animation(tmp_path: Path) -> None:
    with Image.open(write_media(_frames(), tmp_path / "m.webp", fps=4)) as webp:
        assert webp.n_frames == 4 and webp.info["loop"] == 0


@pytest.mark.parametrize("width,height", [(24, 16), (25, 17)])
def test_mp4_is_h264_yuv420p_with_every_frame(tmp_path: Path, width: int, height: int) -> None:
    import subprocess

    import imageio_ffmpeg

    path = write_media(_frames(5, width, height), tmp_path / "m.mp4", fps=5)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == 5 and seconds == pytest.approx(1.0, abs=0.01)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe
    assert f"{width + width % 2}x{height + height % 2}" in probe


def test_pad_even_repeats_the_edge() -> None:
    array = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = pad_even(array)
    assert padded.shape == (4, 6, 3)
    assert np.array_equal(padded[:3, :5], array) and np.array_equal(padded[3, :5], array[2])


def test_strip_png_is_lossless_and_frames_are_exactly_w_wide(tmp_path: Path) -> None:
    frames = _frames(3, 24, 16)
    with Image.open(write_media(frames, tmp_path / "m.png")) as png:
        assert png.size == (72, 16)
        array = np.asarray(png.convert("RGB"))
    for index, frame in enumerate(frames):
        assert np.array_equal(array[:, index * 24 : (index + 1) * 24], np.asarray(frame))
    with pytest.raises(ValueError, match="same size"):
        strip([Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))])


def test_unknown_suffix_and_bad_input_are_refused(tmp_path: Path) -> None:
    assert SUPPORTED_SUFFIXES == (".gif", ".mp4", ".webp", ".png")
    with pytest.raises(ValueError, match="unknown output format"):
        write_media(_frames(), tmp_path / "m.avi")
    with pytest.raises(ValueError, match="no frames"):
        write_media([], tmp_path / "m.gif")
    with pytest.raises(ValueError, match="fps"):
        write_media(_frames(), tmp_path / "m.gif", fps=0)
    assert write_media(_frames(), tmp_path / "UPPER.GIF").exists()


def test_manifest_round_trips(tmp_path: Path) -> None:
    manifest = {"prompts": ["a", "b"], "t": [0.0, 1.0], "note": "café"}
    path = write_manifest(manifest, tmp_path / "sub" / "m.json")
    assert json.loads(path.read_text(encoding="utf-8")) == manifest


SERPENTINE_2X3 = [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]


def test_grid_mosaic_places_tiles_at_row_and_column_without_gaps(tmp_path: Path) -> None:
    frames = _frames(6, 24, 16)
    path = write(Film(frames, tiles=SERPENTINE_2X3), tmp_path / "grid.png")  # .png of a film with tiles: the mosaic
    with Image.open(path) as png:
        assert png.size == (3 * 24, 2 * 16)
        array = np.asarray(png.convert("RGB"))
    for frame, (row, column) in zip(frames, SERPENTINE_2X3):
        assert np.array_equal(array[row * 16 : (row + 1) * 16, column * 24 : (column + 1) * 24], np.asarray(frame))
    with pytest.raises(ValueError, match="same size"):
        mosaic([Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))], [(0, 0), (0, 1)])


def test_the_registry_maps_suffixes_to_writers(tmp_path: Path) -> None:
    assert {"gif", "webp", "mp4", "strip", "grid", "manifest"} <= set(FORMATS)
    assert format_for("m.gif").name == "gif" and format_for("M.MP4").name == "mp4"
    assert format_for("m.webp").animated and not format_for("m.png").animated
    assert format_for("m.png").name == "strip" and format_for("m.png", "grid").name == "grid"
    for name in ("m.avi", "m", "m.json"):  # the manifest is written by name, not chosen by --out
        with pytest.raises(ValueError, match="unknown output format"):
            format_for(name)
    with pytest.raises(ValueError, match="row, column"):
        write(Film(_frames()), tmp_path / "grid.png", "grid")  # a chain has no tiles
    film = Film(_frames(2), manifest={"walk": "chain"})
    assert json.loads(write(film, tmp_path / "m.json", "manifest").read_text()) == {"walk": "chain"}
    with pytest.raises(ValueError, match="manifest"):
        write(Film(_frames(2)), tmp_path / "none.json", "manifest")


def test_animations_play_a_grid_in_its_output_order(tmp_path: Path) -> None:
    levels = [0, 50, 100, 150, 200, 250]
    frames = [Image.new("RGB", (24, 16), (level, level, level)) for level in levels]
    with Image.open(write(Film(frames, fps=5, tiles=SERPENTINE_2X3), tmp_path / "grid.gif")) as gif:
        assert gif.n_frames == 6
        for index, level in enumerate(levels):
            gif.seek(index)
            assert gif.convert("RGB").getpixel((3, 3)) == (level, level, level)
