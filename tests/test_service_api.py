"""The real service in a subprocess, called through `gradio_client` as any API user would.

One server (tiny model, queue of 2) serves every test in this module but the upload
limit's (its own server, `--max-file-size 2kb`); each job is a few frames of 64x64 at
2-8 steps (the README's call takes 20), so the module runs in a minute or two.
Endpoints: `/morph` (a chain, unchanged for existing clients), `/grid` and `/direction`;
each takes a picture per shown key (`image_a`, ...) through `gradio_client.handle_file`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402
from PIL import Image  # noqa: E402

from service.testing import ServerProcess  # noqa: E402

QUICK = {"frames": 4, "steps": 2}
GRID_PROMPTS = {"prompt_a": "a red circle", "prompt_b": "a blue circle", "prompt_c": "a red square",
                "prompt_d": "a blue square"}
DIRECTION_PROMPTS = {"prompt_a": "a red circle", "prompt_b": "a red square", "prompt_c": "a blue square"}
WAIT_S = 60.0  # generous: only ever waited on for something that must happen
# long enough to be sure it is still running when it is stopped (minutes if it were not)
LONG = {"frames": 48, "steps": 200}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    # tiny_model_dir points LATENT_MORPH_CACHE at this session's folder: the server's model
    # and its frame cache are this session's own, never a cache left by an earlier run.
    log_path = tmp_path_factory.mktemp("service") / "server.log"
    args = ["--model", "tiny", "--device", "cpu", "--queue-size", "2", "--max-steps", "200", "--max-frames", "48"]
    with ServerProcess(args, log_path) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Client:
    return Client(server.url, verbose=False)


def morph(client: Client, **overrides):
    values = {"prompt_a": "a red circle", "prompt_b": "a blue square", **QUICK}
    values.update(overrides)
    return client.predict(**values, api_name="/morph")


def grid(client: Client, **overrides):
    return client.predict(**{**GRID_PROMPTS, "grid": "2x2", "steps": 2, **overrides}, api_name="/grid")


def direction(client: Client, **overrides):
    return client.predict(**{**DIRECTION_PROMPTS, **QUICK, **overrides}, api_name="/direction")


def jobs_logged(server: ServerProcess, mark: int) -> list[str]:
    """The server's "job <outcome> after <t> s" lines since character `mark` (one per job that ran)."""
    return [line for line in server.log()[mark:].splitlines() if " job " in line and " after " in line]


def test_the_readme_morph_call_works_unchanged(client: Client) -> None:
    # exactly the call the README shows (existing clients must keep working)
    gif, strip, mp4, manifest, frames = client.predict(
        prompt_a="a red circle",
        prompt_b="a blue square",
        more_prompts="a green star",
        negative_prompt="",
        seeds="1 2 3",
        frames=9,
        steps=20,
        guidance=5.0,
        size="64x64",
        interp="slerp",
        spacing="linear",
        fps=8,
        loop=False,
        api_name="/morph",
    )
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 9 and image.size == (64, 64)
    with Image.open(strip) as image:
        assert image.format == "PNG" and image.size == (9 * 64, 64)
    assert Path(mp4).stat().st_size > 0 and Path(mp4).read_bytes()[4:8] == b"ftyp"
    record = json.loads(Path(manifest).read_text())
    assert record["walk"] == "chain"
    assert record["prompts"] == ["a red circle", "a blue square", "a green star"]
    assert record["seeds"] == [1, 2, 3] and record["steps"] == 20 and record["fps"] == 8
    assert len(record["t"]) == 9 and record["model"] == "tiny"
    assert [(frame["from"], frame["to"]) for frame in record["frames"]][::4] == [(0, 1), (1, 2), (1, 2)]
    assert [Path(frame["image"]).suffix for frame in frames] == [".png"] * 9
    with Image.open(frames[0]["image"]) as first, Image.open(strip) as whole:
        assert first.convert("RGB").tobytes() == whole.convert("RGB").crop((0, 0, 64, 64)).tobytes()
    assert record["timings"]["encode_s"] >= 0 and record["timings"]["render_s"] > 0


def test_grid_returns_the_mosaic_and_the_tiles_in_serpentine_order(client: Client) -> None:
    mosaic, gif, mp4, manifest, frames = grid(client, grid="2x3", seeds="5")
    with Image.open(mosaic) as image:
        assert image.format == "PNG" and image.size == (3 * 64, 2 * 64)  # columns * W x rows * H
        whole = image.convert("RGB")
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 6 and image.size == (64, 64)
    assert Path(mp4).read_bytes()[4:8] == b"ftyp"
    record = json.loads(Path(manifest).read_text())
    assert record["walk"] == "grid" and record["grid"] == {"rows": 2, "columns": 3, "order": "serpentine"}
    assert record["prompts"] == list(GRID_PROMPTS.values()) and record["seeds"] == [5, 5, 5, 5]
    tiles = [(frame["row"], frame["column"]) for frame in record["frames"]]
    assert tiles == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert [(frame["u"], frame["v"]) for frame in record["frames"]][:3] == [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0)]
    assert sorted(key["key"] for key in record["keyframes"]) == [0, 1, 2, 3]  # the corners are the plain prompts
    assert len(frames) == 6
    # each frame sits in the mosaic at its own tile
    for frame, (row, column) in zip(frames, tiles):
        with Image.open(frame["image"]) as tile:
            box = (column * 64, row * 64, column * 64 + 64, row * 64 + 64)
            assert tile.convert("RGB").tobytes() == whole.crop(box).tobytes()


def test_the_readme_grid_call(client: Client) -> None:
    mosaic, gif, mp4, manifest, tiles = client.predict(
        prompt_a="a red circle",      # top left
        prompt_b="a blue circle",     # top right
        prompt_c="a red square",      # bottom left
        prompt_d="a blue square",     # bottom right
        grid="3x3",                   # rows x columns, each 2 to 8 (--max-grid-side)
        seeds="0",
        api_name="/grid",
    )
    with Image.open(mosaic) as image:
        assert image.format == "PNG" and image.size == (3 * 64, 3 * 64)
    with Image.open(gif) as image:
        assert image.n_frames == 9
    record = json.loads(Path(manifest).read_text())
    assert record["walk"] == "grid" and record["steps"] == 20 and record["seeds"] == [0, 0, 0, 0]
    assert [tile["caption"].split(" · ")[1] for tile in tiles][:4] == ["r0 c0", "r0 c1", "r0 c2", "r1 c2"]


def test_the_readme_direction_call_sweeps_the_scale_on_prompt_as_seed(client: Client) -> None:
    gif, strip, mp4, manifest, frames = client.predict(
        prompt_a="a red circle",      # where the sweep starts
        prompt_b="a red square",      # direction from ...
        prompt_c="a blue square",     # ... to: frames render A + s * (C - B)
        scale="0 1.5",                # s from start to end, each within +-4 (--max-scale)
        frames=7,
        seeds="3",
        api_name="/direction",
    )
    with Image.open(gif) as image:
        assert image.n_frames == 7
    with Image.open(strip) as image:
        assert image.size == (7 * 64, 64)
    assert Path(mp4).read_bytes()[4:8] == b"ftyp"
    record = json.loads(Path(manifest).read_text())
    assert record["walk"] == "direction" and record["prompts"] == list(DIRECTION_PROMPTS.values())
    assert record["seeds"] == [3, 3, 3]
    assert [frame["s"] for frame in record["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert [key["key"] for key in record["keyframes"]] == [0]  # s = 0 is prompt A itself
    assert len(record["path"]["embed_norm"]) == 7
    assert frames[3]["caption"].endswith("s=0.750")


def test_a_repeated_request_comes_from_the_frame_cache(client: Client) -> None:
    first = json.loads(Path(morph(client, seeds="31", frames=6)[3]).read_text())
    again = json.loads(Path(morph(client, seeds="31", frames=6)[3]).read_text())
    assert first["render"]["frames_rendered"] == 6 and first["render"]["cache_hits"] == 0
    assert again["render"]["frames_rendered"] == 0 and again["render"]["cache_hits"] == 6
    assert [key["sha256_16"] for key in again["keyframes"]] == [key["sha256_16"] for key in first["keyframes"]]
    # more frames of the same morph: the keyframes (t = 0 and 1) are reused, the rest is new
    more = json.loads(Path(morph(client, seeds="31", frames=7)[3]).read_text())
    assert more["render"]["cache_hits"] == 2 and more["render"]["frames_rendered"] == 5


def test_view_api_documents_the_three_endpoints(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    # the three walks' endpoints first (then the path inspector's /inspect, not a walk)
    assert list(info["named_endpoints"])[:3] == ["/morph", "/grid", "/direction"]
    assert not info["unnamed_endpoints"]

    def names(endpoint: str) -> list[str]:
        return [parameter["parameter_name"] for parameter in info["named_endpoints"][endpoint]["parameters"]]

    # the first release's parameters come first, in their order: positional callers keep working
    assert names("/morph")[:14] == [
        "prompt_a", "prompt_b", "more_prompts", "negative_prompt", "seeds", "frames", "steps",
        "guidance", "size", "interp", "spacing", "fps", "loop", "model",
    ]
    assert names("/grid")[:13] == [
        "prompt_a", "prompt_b", "prompt_c", "prompt_d", "negative_prompt", "seeds", "grid", "steps",
        "guidance", "size", "interp", "fps", "model",
    ]
    assert names("/direction")[:13] == [
        "prompt_a", "prompt_b", "prompt_c", "negative_prompt", "seeds", "frames", "scale", "steps",
        "guidance", "size", "spacing", "fps", "model",
    ]
    # then a picture per shown key, last, optional (a direction's B and C steer by their prompts only)
    assert names("/morph")[-2:] == ["image_a", "image_b"]
    assert names("/grid")[-4:] == ["image_a", "image_b", "image_c", "image_d"]
    assert names("/direction")[-1] == "image_a" and "image_b" not in names("/direction")
    for endpoint in ("/morph", "/grid", "/direction"):
        for parameter in info["named_endpoints"][endpoint]["parameters"]:
            if parameter["parameter_name"].startswith("image_"):
                assert parameter["parameter_has_default"] and parameter["parameter_default"] is None
                assert parameter["component"] == "Image"
    returns = {endpoint: [item["label"] for item in info["named_endpoints"][endpoint]["returns"]]
               for endpoint in ("/morph", "/grid", "/direction")}
    assert returns == {
        "/morph": ["GIF", "Strip PNG", "Video MP4", "Manifest JSON", "Frames"],
        "/grid": ["Grid PNG", "GIF", "Video MP4", "Manifest JSON", "Frames"],
        "/direction": ["GIF", "Strip PNG", "Video MP4", "Manifest JSON", "Frames"],
    }


BAD_INPUTS = [
    (morph, {"prompt_a": "   "}, "prompt A is empty"),
    (morph, {"prompt_b": "x" * 301}, "the limit is 300 characters (--max-prompt-chars)"),
    (morph, {"more_prompts": "c\nd\ne\nf\ng"}, "at most 6 prompts (--max-prompts); got 7"),
    (morph, {"frames": 49}, "frames must be between 2 and 48 (--max-frames); got 49"),
    (morph, {"steps": 201}, "steps must be between 1 and 200 (--max-steps); got 201"),
    (morph, {"size": "60x64"}, "width must be a positive multiple of 8; got 60"),
    (morph, {"size": "1024x1024"}, "the limit is 65536 pixels per frame (--max-pixels)"),  # a CPU's default
    (morph, {"size": "/etc/passwd"}, "size must look like 64x64"),
    (morph, {"seeds": "-1"}, "seed must be between 0 and 4294967295; got -1"),
    (morph, {"seeds": "99999999999999999999999"}, "seed must be between 0 and 4294967295"),
    (morph, {"seeds": "1 2 3"}, "one seed for all prompts or one per prompt (2); got 3"),
    (morph, {"guidance": 1e9}, "guidance must be between 0 and 30 (--max-guidance)"),
    (morph, {"interp": "cubic"}, "interp must be one of slerp, lerp"),
    (morph, {"model": "../../weights.safetensors"}, "model must be one of tiny"),
    (grid, {"grid": "9x3"}, "grid rows must be between 2 and 8 (--max-grid-side); got 9"),
    (grid, {"grid": "3x1"}, "grid columns must be between 2 and 8 (--max-grid-side); got 1"),
    (grid, {"prompt_d": ""}, "prompt D is empty"),
    (grid, {"seeds": "1 2"}, "one seed for all prompts or one per prompt (4); got 2"),
    (direction, {"scale": "0 5"}, "scale must be between -4 and 4 (--max-scale); got 5"),
    (direction, {"scale": "-4.5 0"}, "scale must be between -4 and 4 (--max-scale); got -4.5"),
    (direction, {"scale": "1 1"}, "scale start and end must differ"),
    (direction, {"prompt_c": " "}, "prompt C is empty"),
]


def test_bad_inputs_get_clear_errors_before_any_work(server: ServerProcess, client: Client) -> None:
    mark = len(server.log())
    for endpoint, overrides, needle in BAD_INPUTS:
        with pytest.raises(AppError) as caught:
            endpoint(client, **overrides)
        assert needle in str(caught.value), (overrides, str(caught.value))
    assert jobs_logged(server, mark) == [], "a refused request started a job"
    # and the server keeps serving
    gif, *_ = morph(client)
    assert Path(gif).stat().st_size > 0


@pytest.mark.parametrize("endpoint", ["morph", "grid", "direction"])
def test_the_run_route_that_would_skip_the_queue_is_refused(server: ServerProcess, endpoint: str) -> None:
    body = json.dumps({"data": ["a red circle", "a blue square", "a red square", "a blue square"]}).encode()
    request = urllib.request.Request(
        server.url + "gradio_api/run/" + endpoint, data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404


def test_a_full_queue_refuses_at_once(client: Client) -> None:
    started = time.monotonic()
    # distinct seeds: no job can be answered from the frame cache
    jobs = [
        client.submit("a red circle", "a blue square", seeds=str(40 + index), frames=4, steps=8, api_name="/morph")
        for index in range(6)
    ]
    finished_at: dict[int, float] = {}
    while len(finished_at) < len(jobs) and time.monotonic() - started < 120:
        for index, job in enumerate(jobs):
            if index not in finished_at and job.done():
                finished_at[index] = time.monotonic() - started
        time.sleep(0.02)
    assert len(finished_at) == len(jobs), "a job hung"
    refused, completed = [], []
    for index, job in enumerate(jobs):
        try:
            gif, *_ = job.result(timeout=1)
            assert Path(gif).stat().st_size > 0
            completed.append(index)
        except QueueError as error:
            assert "Queue is full" in str(error), str(error)
            refused.append(index)
    assert refused and completed
    # the refusals come at once: before any accepted job has finished, not after the queue drained
    assert max(finished_at[index] for index in refused) < min(finished_at[index] for index in completed)


def _wait_until_rendering(job, timeout_s: float = WAIT_S) -> str:
    """The first progress line that reports a denoising step (the job is rendering)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        progress = job.status().progress_data
        steps = [unit.desc for unit in progress or [] if "step" in (unit.desc or "")]
        if steps:
            return steps[0]
        time.sleep(0.05)
    raise AssertionError("the job never started rendering")


def _cancel_and_check(server: ServerProcess, job, mark: int) -> None:
    """Cancel a rendering job: the server logs it as cancelled (not done), and the model is free."""
    job.cancel()
    assert server.wait_for_log("job JobCancelled", timeout_s=WAIT_S, start=mark) is not None, server.log()[mark:]
    assert [line.split(" job ")[1].split()[0] for line in jobs_logged(server, mark)] == ["JobCancelled"]


def test_cancel_stops_a_morph_and_frees_the_model(server: ServerProcess, client: Client) -> None:
    mark = len(server.log())
    job = client.submit("a red circle", "a blue square", seeds="101", **LONG, api_name="/morph")
    assert _wait_until_rendering(job).startswith("0/48 frames done, step")
    _cancel_and_check(server, job, mark)
    gif, *_ = morph(client)  # the model is free again: a new job runs to its end
    assert Path(gif).stat().st_size > 0


def test_grid_reports_progress_and_can_be_cancelled(server: ServerProcess, client: Client) -> None:
    mark = len(server.log())
    job = client.submit(**GRID_PROMPTS, grid="8x8", steps=200, seeds="102", api_name="/grid")
    assert _wait_until_rendering(job).startswith("0/64 frames done, step")
    _cancel_and_check(server, job, mark)
    mosaic, *_ = grid(client)
    with Image.open(mosaic) as image:
        assert image.size == (2 * 64, 2 * 64)


def test_direction_reports_progress_and_can_be_cancelled(server: ServerProcess, client: Client) -> None:
    mark = len(server.log())
    job = client.submit(**DIRECTION_PROMPTS, seeds="103", scale="-1 2", **LONG, api_name="/direction")
    assert _wait_until_rendering(job).startswith("0/48 frames done, step")
    _cancel_and_check(server, job, mark)
    gif, *_ = direction(client)
    assert Path(gif).stat().st_size > 0


def test_a_client_that_disconnects_stops_its_job(server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "walk_away.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            from gradio_client import Client
            job = Client({server.url!r}, verbose=False).submit(
                "a red circle", "a blue square", seeds="202", frames={LONG['frames']}, steps={LONG['steps']},
                api_name="/morph",
            )
            while not any("step" in (unit.desc or "") for unit in job.status().progress_data or []):
                time.sleep(0.05)
            print("rendering", flush=True)
            time.sleep(600)
            """
        )
    )
    mark = len(server.log())
    walker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert walker.stdout is not None and walker.stdout.readline().strip() == "rendering"
    finally:
        walker.send_signal(signal.SIGKILL)
        walker.wait(timeout=10)
    assert server.wait_for_log("job JobCancelled", timeout_s=WAIT_S, start=mark) is not None, server.log()[mark:]
    assert [line.split(" job ")[1].split()[0] for line in jobs_logged(server, mark)] == ["JobCancelled"]


# ---------------------------------------------------------------- pictures as keyframes

def noisy_png(path: Path, size: tuple[int, int] = (96, 96)) -> Path:
    """A PNG of random pixels: it compresses badly, so it is bigger than its few pixels suggest."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_picture_keyframe_through_the_api(client: Client, tmp_path: Path) -> None:
    from gradio_client import handle_file

    from test_service_limits import disc

    picture = disc(tmp_path / "disc.png", size=(80, 64))
    gif, strip, mp4, manifest, frames = client.predict(
        prompt_a="", prompt_b="a blue square", image_a=handle_file(str(picture)), frames=3, steps=3, api_name="/morph",
    )
    with Image.open(gif) as image:
        assert image.n_frames == 3
    assert len(frames) == 3
    record = json.loads(Path(manifest).read_text())
    key = record["keys"][0]
    assert key["kind"] == "image" and key["file"] == "disc.png" and key["prompt"] == ""
    assert key["crop"] == [8, 0, 72, 64] and key["original_size"] == [80, 64]  # centre-cropped to the square
    assert len(key["sha256_16"]) == 16
    figures = key["reconstruction"]
    assert set(figures) == {"psnr_vs_input_db", "psnr_vs_vae_round_trip_db", "vae_round_trip_psnr_db",
                            "within_tolerance"}
    assert isinstance(figures["within_tolerance"], bool) and figures["psnr_vs_input_db"] > 0
    assert record["keys"][1]["kind"] == "prompt"
    # a prompt beside the picture describes it; the picture is the same key (same pixels)
    described = json.loads(Path(morph(client, prompt_a="a red circle", image_a=handle_file(str(picture)),
                                      frames=3, steps=3)[3]).read_text())
    assert described["keys"][0]["prompt"] == "a red circle"
    assert described["keys"][0]["sha256_16"] == key["sha256_16"]


def test_a_file_that_is_not_a_picture_is_refused_naming_it(server: ServerProcess, client: Client,
                                                           tmp_path: Path) -> None:
    from gradio_client import handle_file

    mark = len(server.log())
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a picture")
    with pytest.raises(AppError) as caught:
        morph(client, image_a=handle_file(str(notes)))
    assert "picture A: image 'notes.txt' is not a picture PIL can read" in str(caught.value), str(caught.value)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(AppError, match="picture B: image 'fake.png'"):
        morph(client, image_b=handle_file(str(fake)))
    with pytest.raises(AppError, match="prompt A: pictures are uploaded, not typed as image:PATH"):
        morph(client, prompt_a=f"image:{notes}")
    assert jobs_logged(server, mark) == [], "a refused picture started a job"


def test_an_upload_over_the_size_limit_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    """--max-file-size reaches Gradio: a bigger upload is refused at once, and the server keeps serving."""
    from gradio_client import handle_file

    from test_service_limits import disc

    big = noisy_png(tmp_path / "big.png")
    assert big.stat().st_size > 4 * 1024
    small = disc(tmp_path / "small.png", size=(32, 32))
    assert small.stat().st_size < 2 * 1024
    args = ["--model", "tiny", "--device", "cpu", "--max-file-size", "2kb"]
    with ServerProcess(args, tmp_path / "server.log") as server:
        small_client = Client(server.url, verbose=False)
        # gradio_client reads the limit from the server's config and refuses before sending ...
        with pytest.raises(ValueError, match="exceeds the maximum file size of 2048 bytes"):
            small_client.predict(prompt_a="", prompt_b="a blue square", image_a=handle_file(str(big)), frames=2,
                                 steps=2, api_name="/morph")
        # ... and the server refuses a client that sends it anyway
        with big.open("rb") as handle:
            answer = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.png", handle, "image/png")})
        assert answer.status_code == 413 and "maximum allowed size of 2048 bytes" in answer.text, answer.text
        assert jobs_logged(server, 0) == []
        # a picture within the limit goes through
        gif, *_ = small_client.predict(prompt_a="", prompt_b="a blue square", image_a=handle_file(str(small)),
                                       frames=2, steps=2, api_name="/morph")
        assert Path(gif).stat().st_size > 0
