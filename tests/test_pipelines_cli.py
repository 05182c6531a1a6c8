"""`python -m pipelines`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--size", "32x32"]


@pytest.mark.parametrize(
    "args,words",
    [(["a", "--frames", "4"], "prompts"), (["a", "b", "--frames", "1"], "frames"),
     (["a", "b", "--size", "30x30"], "multiple of 8"), (["a", "b", "--size", "big"], "64x64"),
     (["a", "b", "--steps", "0"], "steps"), (["a", "b", "--out", "m.avi"], "unknown output format"),
     (["a", "b", "--seed", "1", "2", "3"], "seeds"), (["a", "b", "--interp", "cubic"], "interp"),
     (["a", "b", "--walk", "spiral"], "walk"), (["a", "b", "c", "--walk", "grid"], "exactly 4 prompts"),
     (["a", "b", "c", "d", "--walk", "grid", "--grid", "1x3"], "grid"),
     (["a", "b", "c", "d", "--walk", "grid", "--grid", "big"], "3x3"),
     (["a", "b", "c", "d", "--walk", "grid", "--spacing", "even"], "even"),
     (["a", "b", "--walk", "direction"], "exactly 3 prompts"),
     (["a", "b", "c", "--walk", "direction", "--scale", "1"], "scale"),
     (["a", "b", "c", "--walk", "direction", "--scale", "1", "1"], "scale")],
)
def test_bad_input_exits_2_with_one_line(args: list[str], words: str, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no model loaded


def exit_code(argv: list[str]) -> int:
    """main's exit code, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


def test_missing_model_and_offline_hub_id_exit_2(capsys, tmp_path) -> None:
    for model in (str(tmp_path / "nowhere"), "made-up-owner/no-such-model-2718"):
        assert exit_code(["a", "b", "--model", model, "--out", str(tmp_path / "m.gif")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and model in err
    assert not (tmp_path / "m.gif").exists()


def test_several_outputs_render_once(tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from pipelines.engine import Morpher

    calls = []
    original = Morpher.render

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Morpher, "render", counting)
    outs = [tmp_path / name for name in ("m.gif", "m.png", "m.webp", "m.mp4")]
    argv = ["a red circle", "a blue square", "--frames", "3", *FAST, "--model", str(tiny_model_dir)]
    for out in outs:
        argv += ["--out", str(out)]
    assert main(argv + ["--manifest", str(tmp_path / "m.json")]) == 0
    assert calls == [1]
    assert all(out.stat().st_size > 0 for out in outs)
    printed = capsys.readouterr().out.split()
    assert printed == [str(out) for out in outs] + [str(tmp_path / "m.json")]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["outputs"] == [str(out) for out in outs] and len(manifest["t"]) == 3


def test_end_to_end_in_a_fresh_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pipelines", "A", "B", "--frames", "4", *FAST, "--seed", "3", "4",
               "--model", str(tiny_model_dir), "--out", "m.gif", "--out", "m.png", "--manifest", "m.json"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "morph" in done.stderr  # the progress bar is on stderr
    with Image.open(tmp_path / "m.png") as png:
        assert png.size == (4 * 32, 32)
        strip = np.asarray(png.convert("RGB"))
    with Image.open(tmp_path / "m.gif") as gif:
        assert gif.n_frames == 4
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["prompts"] == ["A", "B"] and manifest["seeds"] == [3, 4] and manifest["model"] == "tiny"
    assert manifest["steps"] == 2 and manifest["size"] == [32, 32] and len(manifest["metrics"]["gaps"]) == 3
    assert strip.std() > 0


def test_grid_writes_a_mosaic_of_its_tiles(tiny_model_dir: Path, tiny_model, plain_render, tmp_path: Path) -> None:
    from pipelines.metrics import psnr
    from pipelines.request import MorphRequest

    out, manifest_path = tmp_path / "x.png", tmp_path / "x.json"
    argv = ["a red circle", "a blue square", "a green star", "a yellow triangle", "--walk", "grid", "--grid", "2x2",
            *FAST, "--seed", "1", "2", "3", "4", "--model", str(tiny_model_dir), "--out", str(out), "--out",
            str(tmp_path / "x.gif"), "--manifest", str(manifest_path)]
    assert main(argv) == 0
    with Image.open(out) as png:
        assert png.size == (2 * 32, 2 * 32)
        mosaic = np.asarray(png.convert("RGB"))
    with Image.open(tmp_path / "x.gif") as gif:
        assert gif.n_frames == 4  # the animation plays the tiles in serpentine order
    manifest = json.loads(manifest_path.read_text())
    assert manifest["walk"] == "grid" and manifest["grid"]["order"] == "serpentine"
    assert [(tile["row"], tile["column"]) for tile in manifest["frames"]] == [(0, 0), (0, 1), (1, 1), (1, 0)]
    tiles = [mosaic[row * 32 : (row + 1) * 32, column * 32 : (column + 1) * 32] for row in (0, 1) for column in (0, 1)]
    assert all(tile.std() > 0 for tile in tiles)  # every tile painted, no gap left black
    assert len({tile.tobytes() for tile in tiles}) == 4
    request = MorphRequest(prompts=("a", "b"), steps=2, size=(32, 32))
    # A at the top left, D at the bottom right
    for tile, prompt, seed in ((tiles[0], "a red circle", 1), (tiles[3], "a yellow triangle", 4)):
        assert psnr(tile, np.asarray(plain_render(tiny_model.pipe, prompt, seed, request))) >= 40


def test_direction_sweeps_the_scale(tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest_path = tmp_path / "sweep.json"
    argv = ["a red circle", "a red square", "a blue square", "--walk", "direction", "--scale", "0", "1",
            "--frames", "3", *FAST, "--model", str(tiny_model_dir), "--out", str(tmp_path / "sweep.gif"),
            "--manifest", str(manifest_path)]
    assert main(argv) == 0
    with Image.open(tmp_path / "sweep.gif") as gif:
        assert gif.n_frames == 3
    manifest = json.loads(manifest_path.read_text())
    assert manifest["walk"] == "direction" and [frame["s"] for frame in manifest["frames"]] == [0.0, 0.5, 1.0]
    assert len(manifest["path"]["embed_norm"]) == 3
