"""The page's handler in-process with stand-in morphers: out-of-memory, deadline, several models, login.

The stand-ins follow `pipelines.morph.Morpher`'s interface (frames / manifest / model)
and draw flat colours, so these tests need no model and take a few seconds.
"""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402
from gradio_client import Client  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines.morph import MorphCancelled, RenderedFrame, StepProgress  # noqa: E402
from service.app import build_demo  # noqa: E402
from service.limits import Limits  # noqa: E402
from service.testing import free_port  # noqa: E402

# Gradio's queue summarises its events with pandas, which warns about its own options
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


class StandInMorpher:
    """Flat-colour frames, one `step_s` sleep per step; honours should_stop like the engine."""

    def __init__(self, name: str, step_s: float = 0.0, failures: list[BaseException] | None = None) -> None:
        self.model = SimpleNamespace(name=name, device=torch.device("cpu"))
        self.step_s = step_s
        self.failures = list(failures or [])
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def frames(self, request, on_step=None, should_stop=None, timings=None):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.failures:
                raise self.failures.pop(0)
            for index in range(request.frames):
                for step in range(1, request.steps + 1):
                    time.sleep(self.step_s)
                    if should_stop is not None and should_stop():
                        raise MorphCancelled("morph cancelled")
                    if on_step is not None:
                        on_step(StepProgress(index, request.frames, step, request.steps))
                shade = int(255 * index / max(1, request.frames - 1))
                image = Image.new("RGB", (request.width, request.height), (shade, 0, 255 - shade))
                yield RenderedFrame(index, index / max(1, request.frames - 1), 0, image)
        finally:
            with self._lock:
                self.active -= 1

    def manifest(self, request, frames, timings):
        return {"prompts": list(request.prompts), "model": self.model.name, "t": [f.t for f in frames], "timings": timings}


@pytest.fixture
def serve():
    """serve(morphers, limits, **launch) -> url; every demo is closed afterwards."""
    demos = []

    def start(morphers, limits=Limits(), **launch):
        demo = build_demo(morphers, limits, examples=[])
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=False, **launch)
        demos.append(demo)
        return f"http://127.0.0.1:{port}/"

    yield start
    for demo in demos:
        demo.close()


def call(client: Client, **overrides):
    values = {"prompt_a": "a red circle", "prompt_b": "a blue square", "frames": 3, "steps": 2}
    values.update(overrides)
    return client.predict(**values, api_name="/morph")


def test_out_of_memory_gives_a_clear_error_and_the_next_job_succeeds(serve) -> None:
    stand_in = StandInMorpher("m", failures=[torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")])
    client = Client(serve({"m": stand_in}), verbose=False)
    with pytest.raises(Exception, match="Out of memory|out of memory") as caught:
        call(client)
    assert "Memory was freed" in str(caught.value)
    gif, strip, mp4, manifest, frames = call(client)
    assert len(frames) == 3 and os.path.getsize(gif) > 0


def test_deadline_stops_a_long_job_with_a_message_naming_it(serve) -> None:
    stand_in = StandInMorpher("m", step_s=0.05)
    client = Client(serve({"m": stand_in}, Limits(deadline_s=0.5, max_steps=500)), verbose=False)
    began = time.monotonic()
    with pytest.raises(Exception, match=r"0\.5 s limit per job"):
        call(client, frames=10, steps=400)
    assert time.monotonic() - began < 10
    assert len(call(client)[4]) == 3  # and the model is free again


def test_unexpected_errors_do_not_leak_details(serve) -> None:
    stand_in = StandInMorpher("m", failures=[KeyError("/secret/path/on/server")])
    client = Client(serve({"m": stand_in}), verbose=False)
    with pytest.raises(Exception) as caught:
        call(client)
    assert "failed on the server" in str(caught.value)
    assert "/secret/path" not in str(caught.value)


def test_one_job_at_a_time_per_model_while_models_run_side_by_side(serve) -> None:
    first, second = StandInMorpher("first", step_s=0.03), StandInMorpher("second", step_s=0.03)
    url = serve({"first": first, "second": second})
    client = Client(url, verbose=False)
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/morph"]
    model = next(parameter for parameter in info["parameters"] if parameter["parameter_name"] == "model")
    assert set(model["python_type"]["type"].replace("'", "").strip("Literal[]").split(", ")) == {"first", "second"}
    jobs = [
        Client(url, verbose=False).submit(
            "a red circle", "a blue square", frames=3, steps=4, model=name, api_name="/morph"
        )
        for name in ("first", "first", "second", "second")
    ]
    for job in jobs:
        assert len(job.result(timeout=60)[4]) == 3
    assert first.most_active == 1 and second.most_active == 1
    with pytest.raises(Exception, match="model must be one of first, second"):
        call(client, model="third")


def test_login_from_the_environment_protects_page_and_api(serve) -> None:
    url = serve({"m": StandInMorpher("m")}, auth=("ann", "s3cret"))
    with pytest.raises(Exception):
        Client(url, verbose=False)
    client = Client(url, auth=("ann", "s3cret"), verbose=False)
    assert len(call(client)[4]) == 3


def test_a_model_that_will_not_load_exits_with_code_2(tmp_path, capsys) -> None:
    from service.__main__ import main

    assert main(["--model", str(tmp_path / "no-such-model")]) == 2
    assert "not found" in capsys.readouterr().err
