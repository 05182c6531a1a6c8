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
from test_cli_outputs import no_model  # noqa: F401  (a fixture: these tests fail if a model loads)

from pipelines.__main__ import build_parser, checked_inputs, main
from pipelines.limits import Limits, request_limits
from pipelines.request import SEED_MAX, options

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
     (["a", "b", "c", "--walk", "direction", "--scale", "1", "1"], "scale"),
     (["a", "b", "--compile", "fast"], "--compile must be one of auto, on, off"),
     (["a", "b", "--speed", "turbo"], "choose from exact, deepcache-2, deepcache-3")],
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


# ---- limits: the service's, from the same declaration, checked before the model loads ---------------------------

FOUR = ["a red circle", "a blue circle", "a red square", "a blue square"]


@pytest.mark.parametrize(
    "args,words",
    [(["--fps", "0"], "fps must be between 1 and 30 (--max-fps); got 0."),
     (["--fps", "nan"], "fps must be a number between 1 and 30 (--max-fps)"),
     (["--fps", "-1"], "fps must be between 1 and 30 (--max-fps); got -1."),
     (["--fps", "31"], "(--max-fps); got 31."),
     (["--frames", "1000000000", "--device", "cpu"], "frames must be between 2 and 32 (--max-frames); got 1000000000."),
     (["--steps", "1000000000"], "steps must be between 1 and 50 (--max-steps); got 1000000000."),
     (["--guidance", "31"], "guidance must be between 0 and 30 (--max-guidance); got 31."),
     (["--size", "1024x1024", "--device", "cpu"], "the limit is 65536 pixels per frame (--max-pixels)"),
     (["--size", "9" * 5000 + "x64", "--device", "cpu"], "is over the limit of 65536 pixels per frame (--max-pixels)"),
     (["--seed", str(SEED_MAX + 1)], f"seed must be between 0 and {SEED_MAX}; got {SEED_MAX + 1}."),
     (["--seed", str(2**63 - 1)], f"seed must be between 0 and {SEED_MAX}"),
     (["--negative", "y" * 301], "301 characters long; the limit is 300 characters (--max-prompt-chars)"),
     (["c", "d", "e", "f", "g"], "A chain has at most 6 prompts (--max-prompts); got 7."),
     (["c", "d", "--walk", "grid", "--grid", "9x2"], "grid rows must be between 2 and 8 (--max-grid-side); got 9."),
     (["c", "--walk", "direction", "--scale", "0", "5"], "scale must be between -4 and 4 (--max-scale); got 5."),
     (["--frames", "60", "--max-frames", "50"], "frames must be between 2 and 50 (--max-frames); got 60."),
     (["--max-frames", "1"], "max_frames must be at least 2")],
)
@pytest.mark.usefixtures("no_model")
def test_options_over_the_service_limits_exit_2_before_the_model_loads(
    args: list[str], words: str, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert exit_code(["a red circle", "a blue square", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert list(tmp_path.iterdir()) == []


def _probes(name: str, limits: Limits) -> list[str]:
    """Values at, over and under an option's limit, in their CLI text form."""
    spec = options()[name]
    cap = getattr(limits, spec.limit) if spec.limit else SEED_MAX
    if spec.kind == "int":
        return [str(cap), str(cap + 1), "0", "2.5", "9" * 5000]
    if spec.kind == "float":
        return [f"{cap:g}", f"{cap + 1:g}", "0.5", "-1", "nan"]
    if spec.kind == "size":
        side = int(cap**0.5) // 8 * 8
        return [f"{side}x{side}", f"{side + 8}x{side + 8}", "9" * 5000 + "x64", "60x64"]
    if spec.kind == "grid":
        return [f"{cap}x2", f"{cap + 1}x2", "1x3", "2x" + "9" * 5000]
    if spec.kind == "scale":
        return [f"0 {cap:g}", f"0 {cap + 1:g}", "1 1"]
    if spec.kind == "seeds":
        return [str(SEED_MAX), str(SEED_MAX + 1), "-1", "1e400"]
    return ["y" * cap, "y" * (cap + 1)]  # text


@pytest.mark.parametrize("name", [name for name, spec in options().items()
                                  if spec.api and (spec.limit or spec.kind == "seeds")])
def test_the_cli_and_the_service_refuse_the_same_values_with_the_same_words(name: str, tmp_path: Path) -> None:
    from service.form import check_form
    from service.limits import LimitError

    limits = Limits(max_pixels=128 * 128, max_frames=24, max_grid_side=5, max_scale=3.0, max_prompt_chars=50)
    walk = "grid" if name == "grid" else "direction" if name == "scale" else "chain"
    prompts = {"chain": FOUR[:2], "grid": FOUR, "direction": FOUR[:3]}[walk]
    flags = [f"--{item.name.replace('_', '-')}={getattr(limits, item.name):g}" for item in request_limits()]
    for text in _probes(name, limits):
        argv = [*prompts, "--walk", walk, *flags, "--out", str(tmp_path / "m.gif"),
                options()[name].flag or "--" + name.replace("_", "-"), *text.split()]
        try:
            checked_inputs(build_parser().parse_args(argv))
            cli = None
        except ValueError as error:
            cli = str(error)
        try:
            check_form(limits, ["tiny"], walk, **dict(zip(("prompt_a", "prompt_b", "prompt_c", "prompt_d"), prompts)),
                       **{name: text})
            service = None
        except LimitError as error:
            service = str(error)
        assert cli == service, (name, text[:20])
        assert service is None or len(service) < 200  # a long value is echoed as a short prefix


@pytest.mark.usefixtures("no_model")
def test_a_limit_flag_raises_the_limit(tmp_path: Path) -> None:
    argv = ["a", "b", "--frames", "60", "--max-frames", "100", "--size", "1024x1024", "--max-pixels", "1048576",
            "--out", str(tmp_path / "m.gif")]
    request, limits, _ = checked_inputs(build_parser().parse_args(argv))
    assert (request.frames, request.size, limits.max_frames, limits.max_pixels) == (60, (1024, 1024), 100, 1048576)
    assert limits.max_steps == Limits().max_steps  # the others keep the service's defaults


def test_the_models_own_size_is_checked_before_rendering(tiny_model_dir: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    from pipelines.engine import Morpher

    def refuse(*args, **kwargs):
        raise AssertionError("rendered a size over the limit")

    monkeypatch.setattr(Morpher, "render", refuse)
    argv = ["a", "b", "--max-pixels", "64", "--model", str(tiny_model_dir), "--out", str(tmp_path / "m.gif")]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pixels; the limit is 64 pixels per frame (--max-pixels)" in err
    assert list(tmp_path.iterdir()) == []


HUGE = "y" * 100_000


@pytest.mark.parametrize(
    "args",
    [["--interp", HUGE], ["--size", HUGE], ["--seed", HUGE], ["--frames", HUGE], ["--scale", HUGE, "1"],
     ["--walk", HUGE], ["--batch-size", HUGE], ["--out", HUGE + ".gif"], ["--out", HUGE], ["--device", HUGE],
     ["--unknown-flag", HUGE], ["--max-frames", HUGE], [HUGE]],
)
@pytest.mark.usefixtures("no_model")
def test_a_huge_value_is_echoed_as_a_short_prefix(args: list[str], capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert exit_code(["a red circle", "a blue square", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 400 and "100" in err and "characters" in err


def test_the_cli_takes_a_thread_count_and_refuses_a_bad_one() -> None:
    from pipelines.__main__ import build_parser

    assert build_parser().parse_args(["a", "b", "--threads", "2"]).threads == 2
    assert build_parser().parse_args(["a", "b"]).threads is None  # auto, unless LATENT_MORPH_THREADS says
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["a", "b", "--threads", "none"])
    assert exited.value.code == 2


def test_the_cli_renders_an_approximate_speed_and_says_so_in_the_manifest(tiny_model_dir: Path, tmp_path: Path,
                                                                         capsys) -> None:
    manifest = tmp_path / "m.json"
    argv = ["a red circle", "a blue square", "--model", str(tiny_model_dir), "--frames", "3", *FAST,
            "--speed", "deepcache-2", "--compile", "off", "--out", str(tmp_path / "m.png"), "--manifest", str(manifest)]
    assert exit_code(argv) == 0
    record = json.loads(manifest.read_text())
    assert record["speed"] == "deepcache-2" and record["request"]["speed"] == "deepcache-2"
    assert "compiled" not in capsys.readouterr().err  # --compile off: the eager UNet, and the summary says nothing of it
