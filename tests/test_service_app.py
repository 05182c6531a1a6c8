"""The Gradio edge in-process with stand-in morphers: errors as messages, several models, login, the page's handler.

The stand-in (`test_service_runner.StandInMorpher`) follows `pipelines.engine.Morpher`'s
interface, plans with the real walks and draws flat colours, so these tests need no
model and take a few seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import httpx  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError, AuthenticationError  # noqa: E402
from PIL import Image  # noqa: E402

from service.app import ENDPOINTS, api_handler, build_demo, guarded, page_handler  # noqa: E402
from service.form import inputs_for  # noqa: E402
from service.jobs import JobCancelled, JobDeadline, JobOutOfMemory  # noqa: E402
from service.limits import LimitError, Limits  # noqa: E402
from service.runner import Runner, Update  # noqa: E402
from service.testing import free_port, wait_for  # noqa: E402
from test_service_runner import MANY, PROMPTS, StandInMorpher, values  # noqa: E402

# Gradio's queue summarises its events with pandas, which warns about its own options
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
RESULT_S = 120.0  # generous: a wait for a result, never an assertion on time


@pytest.fixture
def serve():
    """serve(morphers, limits, **launch) -> url; every demo is closed afterwards."""
    demos = []

    def start(morphers, limits=Limits(), **launch):
        demo = build_demo(morphers, limits, examples={})
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    show_error=False, **launch)
        demos.append(demo)
        return f"http://127.0.0.1:{port}/"

    yield start
    for demo in demos:
        demo.close()



def call(client: Client, walk: str = "chain", **overrides):
    return client.predict(**values(walk, **overrides), api_name="/" + ENDPOINTS[walk])


# ---------------------------------------------------------------- through a live Gradio app

def test_out_of_memory_gives_a_clear_error_and_the_next_job_succeeds(serve) -> None:
    stand_in = StandInMorpher("m", failures=[torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")])
    client = Client(serve({"m": stand_in}), verbose=False)
    with pytest.raises(AppError, match="out of memory") as caught:
        call(client)
    assert "Memory was freed" in str(caught.value)
    gif, strip, mp4, manifest, frames = call(client)
    assert len(frames) == 3 and os.path.getsize(gif) > 0


def test_deadline_stops_a_long_job_with_a_message_naming_it(serve) -> None:
    gate = threading.Semaphore(0)
    stand_in = StandInMorpher("m", gate=gate)
    client = Client(serve({"m": stand_in}, Limits(deadline_s=0.5, max_steps=500)), verbose=False)
    job = client.submit(**values(frames=10, steps=400), api_name="/morph")
    # the stand-in waits at its first step; let it go on only once the deadline has passed
    assert wait_for(lambda: stand_in.calls == 1), "the job never started"
    time.sleep(0.6)
    gate.release(MANY)
    with pytest.raises(AppError, match=r"past the 0\.5 s limit per job and was stopped\. Try fewer frames"):
        job.result(timeout=RESULT_S)
    assert stand_in.outcome == "cancelled" and stand_in.steps_done == 0
    assert len(call(client)[4]) == 3  # and the model is free again


def test_unexpected_errors_do_not_leak_details(serve) -> None:
    stand_in = StandInMorpher("m", failures=[KeyError("/secret/path/on/server")])
    client = Client(serve({"m": stand_in}), verbose=False)
    with pytest.raises(AppError) as caught:
        call(client, "direction")
    assert "failed on the server" in str(caught.value)
    assert "/secret/path" not in str(caught.value)


def test_bad_values_are_refused_with_the_limits_message(serve) -> None:
    stand_in = StandInMorpher("m")
    client = Client(serve({"m": stand_in}, Limits(max_grid_side=4)), verbose=False)
    with pytest.raises(AppError, match=r"grid rows must be between 2 and 4 \(--max-grid-side\); got 5"):
        call(client, "grid", grid="5x2")
    with pytest.raises(AppError, match=r"scale must be between -4 and 4 \(--max-scale\); got -9"):
        call(client, "direction", scale="-9 1")
    assert stand_in.calls == 0


def test_one_job_at_a_time_per_model_while_models_run_side_by_side(serve) -> None:
    first, second = StandInMorpher("first"), StandInMorpher("second")
    url = serve({"first": first, "second": second})
    client = Client(url, verbose=False)
    for endpoint in ENDPOINTS.values():
        info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/" + endpoint]
        model = next(parameter for parameter in info["parameters"] if parameter["parameter_name"] == "model")
        assert set(model["python_type"]["type"].replace("'", "").strip("Literal[]").split(", ")) == {"first", "second"}
    jobs = [
        Client(url, verbose=False).submit(**values(walk, steps=4, model=name), api_name="/" + ENDPOINTS[walk])
        for walk, name in (("chain", "first"), ("grid", "first"), ("direction", "second"), ("chain", "second"))
    ]
    for job in jobs:
        assert len(job.result(timeout=RESULT_S)[4]) in (3, 6)
    assert (first.calls, second.calls) == (2, 2)
    assert first.most_active == 1 and second.most_active == 1
    with pytest.raises(AppError, match="model must be one of first, second"):
        call(client, model="third")


def test_login_from_the_environment_protects_page_and_api(serve) -> None:
    url = serve({"m": StandInMorpher("m")}, auth=("ann", "s3cret"))
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(url, verbose=False)
    client = Client(url, auth=("ann", "s3cret"), verbose=False)
    assert len(call(client)[4]) == 3


def test_a_model_that_will_not_load_exits_with_code_2(tmp_path, capsys) -> None:
    from service.__main__ import main

    assert main(["--model", str(tmp_path / "no-such-model")]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------- the adapters, without a server

def failing(error: BaseException):
    yield Update("clear")
    raise error


@pytest.mark.parametrize(
    ("error", "title", "needle"),
    [
        (LimitError("frames must be between 2 and 48 (--max-frames); got 49."), "Invalid input", "(--max-frames)"),
        (ValueError("spacing 'even' needs a 1-D walk\n  details"), "Invalid input", "needs a 1-D walk"),
        (JobDeadline("The job ran past the 5 s limit per job and was stopped."), "Time limit", "Try fewer frames"),
        (JobOutOfMemory("CUDA out of memory"), "Out of memory", "Memory was freed"),
        (KeyError("/secret/path"), "Error", "failed on the server"),
    ],
)
def test_runner_errors_become_messages_for_visitors(error: BaseException, title: str, needle: str) -> None:
    updates = guarded(failing(error))
    assert next(updates).kind == "clear"
    with pytest.raises(gr.Error) as caught:
        next(updates)
    assert caught.value.title == title and needle in caught.value.message
    assert "\n" not in caught.value.message and "/secret" not in caught.value.message


def test_a_cancelled_job_ends_quietly() -> None:
    assert [update.kind for update in guarded(failing(JobCancelled("The job was cancelled.")))] == ["clear"]


@pytest.mark.parametrize("walk", list(ENDPOINTS))
def test_api_parameters_are_the_walks_inputs(walk: str) -> None:
    runner = Runner({"m": StandInMorpher("m")}, Limits())
    inputs = inputs_for(walk, "64x64")
    handler = api_handler(runner, walk, [item.name for item in inputs], [item.default for item in inputs])
    parameters = inspect.signature(handler).parameters
    assert list(parameters) == [*(item.name for item in inputs), "progress"]
    assert handler.__name__ == ENDPOINTS[walk]
    assert [name for name in parameters if name.startswith("prompt_")] == list(PROMPTS[walk])


def test_the_page_handler_shows_the_mosaic_and_one_download_per_file() -> None:
    runner = Runner({"m": StandInMorpher("m")}, Limits())
    inputs = inputs_for("grid", "64x64")
    names = [item.name for item in inputs]
    form = {**{item.name: item.default for item in inputs}, **values("grid")}
    handler = page_handler(runner, "grid", names)(*(form[name] for name in names))
    first = next(handler)
    assert first[0] is None and first[1] == [] and "starting" in first[2]
    *hidden, plot, table = first[3:]  # then the inspector's path plot and nearest-prompts table
    assert len(hidden) == 4 and all(button.visible is False for button in hidden)
    assert plot is None and table is None
    for shown in handler:
        if isinstance(shown, tuple) and isinstance(shown[0], str):  # a tick is one gr.skip() for all outputs
            break
    main, gallery, status, *buttons, plot, table = shown
    assert main.endswith("grid.png") and len(gallery) == 6 and "6 frames in" in status
    assert plot.endswith(".png") and len(table) == 6  # one row of nearest prompts per tile
    with Image.open(main) as mosaic:  # still there: Gradio copies the files before it asks for more
        assert mosaic.size == (3 * 64, 2 * 64)
    assert [button.visible for button in buttons] == [True] * 4
    assert [button.value["orig_name"] for button in buttons] == ["grid.png", "morph.gif", "morph.mp4",
                                                                  "manifest.json"]
    assert list(handler) == []


def test_every_element_id_on_the_page_is_unique() -> None:
    """The browser test and any page script find widgets by id: one id, one element."""
    demo = build_demo({"m": StandInMorpher("m")}, Limits())
    ids = [block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)]
    assert len(ids) == len(set(ids)), sorted(name for name in ids if ids.count(name) > 1)
    for walk in ENDPOINTS:
        assert {f"{walk}-render", f"{walk}-cancel", f"{walk}-main", f"{walk}-gallery", f"{walk}-status",
                f"{walk}-prompt-a", f"tab-{walk}"} <= set(ids)
    assert "grid-prompt-d" in ids and "chain-more-prompts" in ids and "direction-scale" in ids
    # a picture upload beside each prompt whose key is shown: not beside a direction's B and C
    assert {"chain-image-a", "chain-image-b", "grid-image-a", "grid-image-d", "direction-image-a"} <= set(ids)
    assert "direction-image-b" not in ids and "direction-image-c" not in ids


def test_picture_widgets_take_uploads_only_and_hand_over_a_file_path() -> None:
    demo = build_demo({"m": StandInMorpher("m")}, Limits())
    pictures = {block.elem_id: block for block in demo.blocks.values()
                if str(getattr(block, "elem_id", "")).split("-image-")[-1] in ("a", "b", "c", "d")}
    assert set(pictures) == {"chain-image-a", "chain-image-b", "grid-image-a", "grid-image-b", "grid-image-c",
                             "grid-image-d", "direction-image-a"}
    for picture in pictures.values():
        assert isinstance(picture, gr.Image)
        assert picture.sources == ["upload"] and picture.type == "filepath"  # no webcam, no clipboard, no URL


def test_an_uploaded_picture_reaches_the_morph_as_an_image_key(serve, tmp_path) -> None:
    from gradio.utils import get_upload_folder
    from gradio_client import handle_file

    from test_service_limits import disc

    picture = disc(tmp_path / "disc.png", size=(50, 30))
    client = Client(serve({"m": StandInMorpher("m")}), verbose=False)
    manifest = call(client, prompt_a="", image_a=handle_file(str(picture)))[3]
    record = json.loads(Path(manifest).read_text())
    key, _, prompt = record["prompts"][0].partition("|")
    uploaded = Path(key.removeprefix("image:"))
    assert key.startswith("image:") and prompt == ""
    assert uploaded.is_relative_to(Path(get_upload_folder()).resolve()) and uploaded.name == "disc.png"
    assert uploaded.read_bytes() == picture.read_bytes()  # Gradio's copy, not the client's path
    assert record["prompts"][1] == PROMPTS["chain"]["prompt_b"]
    # a grid corner, with a prompt describing the picture
    manifest = call(client, "grid", prompt_d="a red disc", image_d=handle_file(str(picture)))[3]
    assert json.loads(Path(manifest).read_text())["prompts"][3].endswith("/disc.png|a red disc")


def raw_call(url: str, walk: str, **given) -> str:
    """One call through Gradio's HTTP API without gradio_client (which would upload a local file itself).

    Returns the stream's text: `event: complete` and the data, or `event: error`.
    """
    import urllib.request

    data = [given.get(item.name, item.default) for item in inputs_for(walk, "64x64")]
    endpoint = f"{url}gradio_api/call/{ENDPOINTS[walk]}"
    request = urllib.request.Request(endpoint, data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        event_id = json.loads(answer.read())["event_id"]
    with urllib.request.urlopen(f"{endpoint}/{event_id}", timeout=RESULT_S) as stream:
        return stream.read().decode()


def test_a_path_on_the_server_sent_as_a_picture_is_refused(serve, tmp_path) -> None:
    """A caller may put any path in a file payload: only Gradio's upload folder is ever read.

    Gradio refuses a file it did not receive before our handler runs (with its own
    generic message); `check_form` is the second lock (see test_service_limits).
    """
    from test_service_limits import disc

    stand_in = StandInMorpher("m")
    url = serve({"m": stand_in})
    secret = disc(tmp_path / "private" / "disc.png")
    prompts = values()
    for payload in (str(secret), {"path": str(secret), "meta": {"_type": "gradio.FileData"}}):
        answer = raw_call(url, "chain", **prompts, image_a=payload)
        assert "event: error" in answer and "event: complete" not in answer, answer
        assert str(secret) not in answer
    typed = raw_call(url, "chain", **{**prompts, "prompt_b": f"image:{secret}"})
    assert "prompt B: pictures are uploaded, not typed as image:PATH" in typed
    assert stand_in.calls == 0
    # the same file uploaded first, as the page does it, is accepted
    with secret.open("rb") as handle:
        uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("disc.png", handle, "image/png")}).json()[0]
    answer = raw_call(url, "chain", **prompts, image_a={"path": uploaded, "meta": {"_type": "gradio.FileData"}})
    assert "event: complete" in answer, answer
    assert stand_in.calls == 1
