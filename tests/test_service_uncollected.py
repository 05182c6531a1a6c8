"""Jobs nobody collects: queue joins whose result stream is never opened render nothing.

Against a live app, through Gradio's raw queue protocol (`POST /gradio_api/queue/join`,
then `GET /gradio_api/queue/data?session_hash=...` for the results). The second test
pins the Gradio internals `service.app.result_reader` reads: it fails if Gradio changes them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections import Counter
from types import SimpleNamespace

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx
from gradio_client import Client
from test_service_runner import MANY, StandInMorpher, values

from service.app import ENDPOINTS, build_demo, result_reader
from service.form import inputs_for
from service.limits import Limits
from service.testing import free_port, wait_for

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
RESULT_S = 120.0  # generous: a wait for a result, never an assertion on time
UNREAD_S = 1.0  # the tests' patience with a caller who reads nothing (the service's is UNREAD_S)


class CountingMorpher:
    """A Morpher with a tally of the frames it renders, by the request's first seed."""

    def __init__(self, morpher) -> None:
        self.inner = morpher
        self.model = morpher.model
        self.rendered: Counter[int] = Counter()

    def resolve(self, request):
        return self.inner.resolve(request)

    def frames(self, request, **kwargs):
        for frame in self.inner.frames(request, **kwargs):
            self.rendered[request.seeds[0]] += 1
            yield frame

    def manifest(self, request, frames, timings):
        return self.inner.manifest(request, frames, timings)


@pytest.fixture
def launch():
    """launch(morphers, limits, **build) -> (demo, url); every demo is closed afterwards."""
    demos = []

    def start(morphers, limits, **build):
        demo = build_demo(morphers, limits, examples={}, **build)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=False)
        demos.append(demo)
        return demo, f"http://127.0.0.1:{port}/"

    yield start
    for demo in demos:
        demo.close()


def join(demo, url: str, session: str, **given) -> None:
    """Join the queue for `/morph` as a raw client would, and never open the result stream."""
    fn_index = next(index for index, fn in demo.fns.items() if fn.api_name == ENDPOINTS["chain"])
    data = [given.get(item.name, item.default) for item in inputs_for("chain", "64x64")]
    answer = httpx.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                              "session_hash": session}, timeout=30)
    assert answer.status_code == 200, answer.text



def test_joins_nobody_collects_render_nothing_and_the_next_caller_is_served(launch, morpher, caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.runner")
    counting = CountingMorpher(morpher)
    demo, url = launch({"tiny": counting}, Limits(max_pixels=64 * 64, queue_size=8), unread_s=UNREAD_S)
    uncollected = [100 + index for index in range(4)]
    for seed in uncollected:  # each long enough to hold the model for a good while if it ran
        join(demo, url, f"never-read-{seed}", **values(frames=24, steps=40, seeds=str(seed), size="64x64"))
    gif, *_, frames = Client(url, verbose=False).predict(
        **values(frames=4, steps=2, seeds="7", size="64x64"), api_name="/morph")
    assert len(frames) == 4 and os.path.getsize(gif) > 0
    # the joins came first (one job at a time, in order): each was given up without a frame
    assert counting.rendered == Counter({7: 4})
    gave_up = [record for record in caplog.records if "nobody read the results" in record.getMessage()]
    assert len(gave_up) == len(uncollected)


def reader_in(blocks, session: str):
    """`result_reader()` as a handler of `session` on `blocks` would get it."""
    from gradio.context import LocalContext

    def make():
        LocalContext.blocks.set(blocks)
        LocalContext.request.set(SimpleNamespace(session_hash=session))
        return result_reader()

    return contextvars.copy_context().run(make)


def test_a_reader_slower_than_the_render_still_counts_as_reading() -> None:
    """A fast render yields faster than a reader reads: its queue is never empty, yet it moves."""
    messages: asyncio.Queue = asyncio.Queue()
    blocks = SimpleNamespace(_queue=SimpleNamespace(pending_messages_per_session={"s": messages}))
    reading = reader_in(blocks, "s")
    assert reading()  # nothing waiting: whoever there is has read everything
    for step in range(3):
        messages.put_nowait(step)
    assert not reading()  # messages waiting, and no earlier look to compare with
    assert not reading()  # the same oldest message: nobody took one
    messages.get_nowait()
    messages.put_nowait(3)
    messages.put_nowait(4)
    assert messages.qsize() == 4 and reading()  # more waiting than before, but one was read
    assert not reading()
    assert not reader_in(blocks, "gone")()  # no queue: the stream has gone (or never was)


def test_the_gradio_queue_tells_whether_a_sessions_stream_is_read(launch) -> None:
    """What `result_reader` relies on: Gradio's handler context and its per-session message queues."""
    stand_in = StandInMorpher("m", gate=threading.Semaphore(0))
    demo, url = launch({"m": stand_in}, Limits(), unread_s=RESULT_S)  # waits for a reader, never gives up
    assert contextvars.Context().run(result_reader) is None  # outside a handler: cannot tell
    assert reader_in(demo, "nobody-joined")() is False
    join(demo, url, "quiet", **values(seeds="3"))
    reading = reader_in(demo, "quiet")
    assert reading is not None
    assert not any(reading() for _ in range(5))  # joined, stream never opened: the same messages wait
    assert stand_in.calls == 0  # and the job does not start without a reader

    lines: list[str] = []

    def read_stream() -> None:
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": "quiet"},
                          timeout=RESULT_S) as stream:
            for line in stream.iter_lines():
                lines.append(line)
                if "process_completed" in line:
                    return

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert wait_for(reading), "an open stream never emptied the session's messages"
    assert wait_for(lambda: stand_in.calls == 1), "the job did not start once its stream was open"
    stand_in.gate.release(MANY)
    reader.join(RESULT_S)
    assert any('"success":true' in line and "process_completed" in line for line in lines), lines[-3:]


def test_a_caller_told_nobody_read_its_results_sees_why_it_stopped() -> None:
    """If a caller was reading after all, it gets a message rather than an empty success."""
    import gradio as gr

    from service.app import guarded
    from service.jobs import JobUncollected

    def given_up():
        yield from ()
        raise JobUncollected("Nobody read the results for 5 s; the job was cancelled.")

    with pytest.raises(gr.Error) as caught:
        list(guarded(given_up()))
    assert caught.value.title == "Cancelled" and "Nobody read the results for 5 s" in caught.value.message
