"""Outputs of `python -m pipelines`: checked before any work, written all together or not at all."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import media
from pipelines.__main__ import main
from pipelines.media import FORMATS, Film, check_output_path, write_all

FAST = ["--steps", "2", "--size", "32x32", "--frames", "3"]


def exit_code(argv: list[str]) -> int:
    """main's exit code, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a model fails the test: these checks come first."""
    import pipelines.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(pipelines.loading, "load_model", refuse)


def _frames(count: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("no_folder", "the folder '{tmp}/missing' does not exist"),
        ("file_as_folder", "the folder '{tmp}/notes.txt' is not a folder"),
        ("folder_as_output", "output '{tmp}/taken.gif' is a folder"),
        ("twice", "output '{tmp}/first.gif' is given twice"),  # the same file as first.gif
    ],
)
def test_an_output_that_cannot_be_written_exits_2_before_the_model_loads(
    layout: str, words: str, tmp_path: Path, no_model, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "taken.gif").mkdir()
    second = {
        "no_folder": tmp_path / "missing" / "second.png",
        "file_as_folder": tmp_path / "notes.txt" / "second.png",
        "folder_as_output": tmp_path / "taken.gif",
        "twice": tmp_path / "first.gif",
    }[layout]
    before = sorted(tmp_path.iterdir())
    assert exit_code(["a", "b", "--out", "first.gif", "--out", str(second)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words.format(tmp=tmp_path) in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_a_read_only_folder_is_refused_before_the_model_loads(
    tmp_path: Path, no_model, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_access = os.access
    if real_access(read_only, os.W_OK):  # root writes anywhere: stand in for the permission check
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    try:
        code = exit_code(["a", "b", "--out", str(tmp_path / "first.gif"), "--out", str(read_only / "second.png")])
    finally:
        read_only.chmod(stat.S_IRWXU)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"the folder '{read_only}' is not writable" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ro"] and list(read_only.iterdir()) == []


def test_check_output_path_takes_a_plain_file_in_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output_path("m.gif") == Path("m.gif")
    with pytest.raises(ValueError, match=r"…\(5004 characters\): File name too long"):
        check_output_path("z" * 5000 + ".gif")


def test_a_failing_writer_leaves_no_output_and_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    def broken(film: Film, path: Path) -> None:
        path.write_bytes(b"half a picture")
        raise OSError("disk full")

    monkeypatch.setitem(FORMATS, "strip", replace(FORMATS["strip"], write=broken))
    film = Film(_frames(), manifest={"fps": 8})
    targets = [(tmp_path / "first.gif", "gif"), (tmp_path / "second.png", "strip"), (tmp_path / "m.json", "manifest")]
    with pytest.raises(OSError, match="disk full"):
        write_all(film, targets)
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_renamed_into_place_with_the_usual_permissions(tmp_path: Path) -> None:
    (tmp_path / "first.gif").write_bytes(b"an older morph")
    paths = write_all(Film(_frames(), manifest={"fps": 8}), [(tmp_path / "first.gif", "gif"),
                                                            (tmp_path / "m.json", "manifest")])
    assert paths == [tmp_path / "first.gif", tmp_path / "m.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.gif", "m.json"]  # no temporary left
    with Image.open(tmp_path / "first.gif") as gif:
        assert gif.n_frames == 3
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~umask  # not a temp file's 0600


def test_a_failed_second_output_leaves_the_first_unwritten(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The hostile case: `--out first.gif --out second.png` where the second cannot be written."""
    written = []

    def broken(film: Film, path: Path) -> None:
        written.append(sorted(item.name for item in tmp_path.iterdir()))
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setitem(FORMATS, "strip", replace(FORMATS["strip"], write=broken))
    argv = ["a red circle", "a blue square", *FAST, "--model", str(tiny_model_dir), "--out",
            str(tmp_path / "first.gif"), "--out", str(tmp_path / "second.png"), "--manifest", str(tmp_path / "m.json")]
    assert exit_code(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "none was written" in err and "Permission denied" in err
    assert len(written) == 1 and any(name.startswith(".first.") for name in written[0])  # the GIF was done first
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_keeps_the_suffix_writers_read(tmp_path: Path, monkeypatch) -> None:
    seen = []
    original = media._reserve_beside

    def spying(path: Path) -> Path:
        seen.append(original(path))
        return seen[-1]

    monkeypatch.setattr(media, "_reserve_beside", spying)
    write_all(Film(_frames()), [(tmp_path / "m.mp4", "mp4")])
    assert len(seen) == 1 and seen[0].suffix == ".mp4" and seen[0].parent == tmp_path and not seen[0].exists()
    assert (tmp_path / "m.mp4").stat().st_size > 0
