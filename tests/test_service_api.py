"""The real service in a subprocess, called through `gradio_client` as any API user would.

One server (tiny model, queue of 2) serves every test in this module; each job is a
few frames of 64x64 at 2-8 steps, so the whole module runs in well under a minute.
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

from gradio_client import Client  # noqa: E402
from PIL import Image  # noqa: E402

from service.testing import ServerProcess  # noqa: E402

QUICK = {"frames": 4, "steps": 2}
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


def test_morph_end_to_end(client: Client) -> None:
    gif, strip, mp4, manifest, frames = morph(
        client, more_prompts="a green star", seeds="1 2 3", frames=5, fps=10, loop=False
    )
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 5 and image.size == (64, 64)
    with Image.open(strip) as image:
        assert image.format == "PNG" and image.size == (5 * 64, 64)
    assert Path(mp4).stat().st_size > 0 and Path(mp4).read_bytes()[4:8] == b"ftyp"
    record = json.loads(Path(manifest).read_text())
    assert record["prompts"] == ["a red circle", "a blue square", "a green star"]
    assert record["seeds"] == [1, 2, 3] and record["steps"] == 2 and record["fps"] == 10
    assert len(record["t"]) == 5 and record["model"] == "tiny"
    assert [Path(frame["image"]).suffix for frame in frames] == [".png"] * 5
    with Image.open(frames[0]["image"]) as first, Image.open(strip) as whole:
        assert first.convert("RGB").tobytes() == whole.convert("RGB").crop((0, 0, 64, 64)).tobytes()
    assert record["timings"]["encode_s"] >= 0 and record["timings"]["render_s"] > 0


def test_a_repeated_request_comes_from_the_frame_cache(client: Client) -> None:
    first = json.loads(Path(morph(client, seeds="31", frames=6)[3]).read_text())
    again = json.loads(Path(morph(client, seeds="31", frames=6)[3]).read_text())
    assert first["render"]["frames_rendered"] == 6 and first["render"]["cache_hits"] == 0
    assert again["render"]["frames_rendered"] == 0 and again["render"]["cache_hits"] == 6
    assert [key["sha256_16"] for key in again["keyframes"]] == [key["sha256_16"] for key in first["keyframes"]]
    # more frames of the same morph: the keyframes (t = 0 and 1) are reused, the rest is new
    more = json.loads(Path(morph(client, seeds="31", frames=7)[3]).read_text())
    assert more["render"]["cache_hits"] == 2 and more["render"]["frames_rendered"] == 5


def test_view_api_documents_the_morph_endpoint(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    assert list(info["named_endpoints"]) == ["/morph"]
    endpoint = info["named_endpoints"]["/morph"]
    names = [parameter["parameter_name"] for parameter in endpoint["parameters"]]
    assert names == [
        "prompt_a", "prompt_b", "more_prompts", "negative_prompt", "seeds", "frames", "steps",
        "guidance", "size", "interp", "spacing", "fps", "loop", "model",
    ]
    assert len(endpoint["returns"]) == 5
    assert not info["unnamed_endpoints"]


BAD_INPUTS = [
    ({"prompt_a": "   "}, "prompt A is empty"),
    ({"prompt_b": "x" * 301}, "the limit is 300 characters (--max-prompt-chars)"),
    ({"more_prompts": "c\nd\ne\nf\ng"}, "at most 6 prompts (--max-prompts); got 7"),
    ({"frames": 49}, "frames must be between 2 and 48 (--max-frames); got 49"),
    ({"steps": 201}, "steps must be between 1 and 200 (--max-steps); got 201"),
    ({"size": "60x64"}, "width must be a positive multiple of 8; got 60"),
    ({"size": "1024x1024"}, "the limit is 262144 pixels per frame (--max-pixels)"),
    ({"size": "/etc/passwd"}, "size must look like 64x64"),
    ({"seeds": "-1"}, "seed must be between 0 and 4294967295; got -1"),
    ({"seeds": "99999999999999999999999"}, "seed must be between 0 and 4294967295"),
    ({"seeds": "1 2 3"}, "one seed for all prompts or one per prompt (2); got 3"),
    ({"guidance": 1e9}, "guidance must be between 0 and 30 (--max-guidance)"),
    ({"interp": "cubic"}, "interp must be one of slerp, lerp"),
    ({"model": "../../weights.safetensors"}, "model must be one of tiny"),
]


def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(client: Client) -> None:
    for overrides, needle in BAD_INPUTS:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            morph(client, **overrides)
        assert needle in str(caught.value), (overrides, str(caught.value))
        assert time.monotonic() - started < 10, f"{overrides} was not refused before any work"
    gif, *_ = morph(client)
    assert Path(gif).stat().st_size > 0


def test_the_run_route_that_would_skip_the_queue_is_refused(server: ServerProcess) -> None:
    body = json.dumps({"data": ["a red circle", "a blue square"]}).encode()
    request = urllib.request.Request(
        server.url + "gradio_api/run/morph", data=body, headers={"Content-Type": "application/json"}
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
        except Exception as error:  # noqa: BLE001
            assert "Queue is full" in str(error), str(error)
            refused.append(index)
    assert refused and completed
    # the refusals come at once, not after the accepted jobs have run
    slowest_refusal = max(finished_at[index] for index in refused)
    assert slowest_refusal < 5.0
    assert slowest_refusal < max(finished_at[index] for index in completed)


def _wait_until_rendering(job, timeout_s: float = 60) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        progress = job.status().progress_data
        if progress and any("step" in (unit.desc or "") for unit in progress):
            return
        time.sleep(0.05)
    raise AssertionError("the job never started rendering")


def test_cancel_stops_the_job_at_the_next_step(server: ServerProcess, client: Client) -> None:
    mark = len(server.log())
    job = client.submit("a red circle", "a blue square", seeds="101", **LONG, api_name="/morph")
    _wait_until_rendering(job)
    job.cancel()
    stopped_after = server.wait_for_log("job JobCancelled", timeout_s=15, start=mark)
    assert stopped_after is not None, server.log()[mark:]
    assert stopped_after < 5
    # the model is free again: a new job runs straight away
    began = time.monotonic()
    gif, *_ = morph(client)
    assert Path(gif).stat().st_size > 0
    assert time.monotonic() - began < 30


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
    stopped_after = server.wait_for_log("job JobCancelled", timeout_s=20, start=mark)
    assert stopped_after is not None, server.log()[mark:]
    assert stopped_after < 10
