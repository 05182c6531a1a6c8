"""The Gradio page and its API endpoints: layout and event wiring over `service.runner.Runner`.

One tab per walk (chain, grid, direction), each generated from the walk's inputs
(`service.form.inputs_for`, itself generated from `pipelines/request.py`). Every
tab's Render button and its API endpoint (`/morph`, `/grid`, `/direction`) run
the same `Runner.updates`; two thin adapters turn its updates into what the page
shows (streamed frames, a progress line, download buttons) and what the API
returns (the walk's files and the frames). Plain exceptions become `gr.Error` here.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.walks import WALKS
from service import widgets
from service.widgets import status_html
from service.examples import examples_for
from service.form import inputs_for
from service.backends import BackendBusy, BackendUnavailable
from service.jobs import DEADLINE_HINT, UNREAD_S, JobCancelled, JobDeadline, JobOutOfMemory, JobUncollected
from service.limits import LimitError, Limits
from service.runner import Runner, Update

if TYPE_CHECKING:
    from pipelines.engine import Morpher

log = logging.getLogger(__name__)

TITLE = "latent morph"
# Every registered walk gets a tab and an API endpoint (`/morph` for the chain keeps its name).
ENDPOINTS = {name: walk.endpoint for name, walk in WALKS.items()}
TAB_TITLES = {name: walk.title for name, walk in WALKS.items()}
INTRO = {name: walk.description for name, walk in WALKS.items()}
# small frames (64x64) are shown scaled up with hard pixel edges, not blurred
CSS = """
.morph-main img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.morph-frames img { image-rendering: pixelated; }
.morph-status { display: flex; align-items: center; gap: 0.75em; }
.morph-status progress { flex: 1; height: 0.75em; accent-color: var(--color-accent); }
"""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def guarded(updates: Iterator[Update]) -> Iterator[Update]:
    """The runner's updates, with its plain exceptions turned into the messages visitors see."""
    try:
        yield from updates
    except JobUncollected as error:  # nobody should be reading; if someone is, they learn why it stopped
        raise gr.Error(_first_line(error), title="Cancelled", print_exception=False) from None
    except JobCancelled:
        return
    except (LimitError, ValueError) as error:
        raise gr.Error(_first_line(error), title="Invalid input", print_exception=False) from None
    except JobDeadline as error:
        text = _first_line(error)  # the hint is in the message already, unless an older replica sent it
        text = text if DEADLINE_HINT in text else f"{text} {DEADLINE_HINT}."
        raise gr.Error(text, title="Time limit", print_exception=False) from None
    except JobOutOfMemory as error:
        hint = " Memory was freed; try a smaller size or fewer frames."
        raise gr.Error(_first_line(error) + hint, title="Out of memory", print_exception=False) from None
    except BackendBusy as error:
        raise gr.Error(_first_line(error), title="Busy, try again", print_exception=False) from None
    except BackendUnavailable as error:
        raise gr.Error(_first_line(error), title="Render cluster unavailable", print_exception=False) from None
    except gr.Error:
        raise
    except Exception:
        log.exception("morph failed")
        raise gr.Error("The morph failed on the server; the error was logged.", print_exception=False) from None


def result_reader() -> Callable[[], bool] | None:
    """In a handler: whether the caller of this event reads its results now (None: cannot be told).

    Gradio internals, read here only (tests/test_service_uncollected.py fails if they change): a
    handler runs with `gradio.context.LocalContext` set (as `gr.Progress` reads it); the queue keeps
    an asyncio.Queue of messages per session (`Queue.pending_messages_per_session`) that the session's
    stream (`GET /queue/data`) empties. Someone reads when it is empty or its oldest message changed
    since the last look (a fast render may yield faster than a reader reads).
    """
    from gradio.context import LocalContext

    blocks, request = LocalContext.blocks.get(None), LocalContext.request.get(None)
    session = getattr(request, "session_hash", None)
    pending = getattr(getattr(blocks, "_queue", None), "pending_messages_per_session", None)
    if session is None or not hasattr(pending, "get"):
        return None  # outside an event, or another Gradio: never cancel on a guess
    seen: list[Any] = [None]  # the oldest message at the last look

    def reading() -> bool:
        messages = pending.get(session)
        if messages is None:
            return False
        try:
            oldest = messages._queue[0]  # asyncio.Queue's deque; the event loop may empty it meanwhile
        except IndexError:
            oldest = None
        before, seen[0] = seen[0], oldest
        return oldest is None or (before is not None and oldest is not before)

    return reading


def api_handler(runner: Runner, walk: str, names: list[str], defaults: list[Any]) -> Callable[..., Iterator[Any]]:
    """The API endpoint of one walk: returns (its files..., frames), with progress as status updates.

    The frames come with the result only: streaming them would make `gradio_client`
    download the growing gallery again at every update. The function's signature is
    made from the walk's inputs, so the API's parameter names and defaults are theirs.
    """
    from pipelines.walks import get_walk

    outputs = get_walk(walk).outputs

    def handler(*args: Any, progress: gr.Progress = gr.Progress()) -> Iterator[Any]:
        values = dict(zip(names, args))
        for update in guarded(runner.updates(walk, values, reading=result_reader())):
            if update.kind == "clear":
                yield *([None] * len(outputs)), []
            elif update.kind == "done":
                progress(1.0, desc=update.text)
                yield *(str(update.files[name]) for name in outputs), update.gallery
            else:
                if update.kind in ("wait", "step"):
                    progress(update.fraction, desc=update.text)
                yield gr.skip()

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                  for name, default in zip(names, defaults)]
    parameters.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress()))
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    handler.__name__ = ENDPOINTS[walk]
    handler.__doc__ = f"Render a {walk} walk; returns ({', '.join(outputs)}, frames)."
    return handler


def page_handler(runner: Runner, walk: str, names: list[str]) -> Callable[..., Iterator[Any]]:
    """The page's handler of one tab: the main picture, frames, a progress line, downloads and the inspector."""
    from pipelines.walks import get_walk

    outputs = get_walk(walk).outputs
    main = outputs[0]  # the GIF of a path walk, the mosaic of a grid

    def handler(*args: Any) -> Iterator[Any]:
        values = dict(zip(names, args))
        keep = [gr.skip()] * (len(outputs) + 2)  # the buttons, the plot and the table
        for update in guarded(runner.updates(walk, values, extra=("plot",), reading=result_reader())):
            if update.kind == "clear":
                hidden = [gr.DownloadButton(value=None, visible=False)] * len(outputs)
                yield None, [], status_html(0.0, "starting"), *hidden, None, None
            elif update.kind == "frame":
                yield gr.skip(), update.gallery, gr.skip(), *keep
            elif update.kind in ("wait", "step"):
                yield gr.skip(), gr.skip(), status_html(update.fraction, update.text), *keep
            elif update.kind == "done":
                buttons = [gr.DownloadButton(value=str(update.files[name]), visible=True) for name in outputs]
                table = widgets.nearest_table(update.files["manifest"])
                yield (str(update.files[main]), update.gallery, status_html(1.0, update.text), *buttons,
                       str(update.files["plot"]), table)
            else:
                yield gr.skip()

    return handler


def inspect_handler(runner: Runner) -> Callable[..., Iterator[Any]]:
    """`/inspect`: the path plot and the measured path of a morph, from the manifest it returned.

    The morph is rendered again with the same request: its frames come from the frame
    cache, so this normally denoises nothing.
    """

    def inspect(manifest: Any, progress: gr.Progress = gr.Progress()) -> Iterator[Any]:
        reading = result_reader()

        def run() -> Iterator[Update]:
            walk, values = widgets.read_manifest_upload(manifest)
            yield from runner.updates(walk, values, extra=("plot",), reading=reading)

        for update in guarded(run()):
            if update.kind == "done":
                progress(1.0, desc=update.text)
                yield str(update.files["plot"]), str(update.files["manifest"])
            else:
                if update.kind in ("wait", "step"):
                    progress(update.fraction, desc=update.text)
                yield gr.skip()

    return inspect


def walk_tab(runner: Runner, walk: str, limits: Limits, default_size: str, examples: list[list[str]]) -> list:
    """One tab's widgets and events; returns the running events (for the Cancel button)."""
    from pipelines.walks import get_walk

    inputs = inputs_for(walk, default_size)
    names = [item.name for item in inputs]
    gr.Markdown(INTRO[walk])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            components = widgets.build_inputs(inputs, limits, runner.model_names, walk)
            with gr.Row():
                render = gr.Button("Render", variant="primary", elem_id=f"{walk}-render")
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{walk}-cancel")
        with gr.Column(scale=3):
            shown, gallery, status, buttons = widgets.build_outputs(walk, get_walk(walk).outputs)
            plot, table = widgets.build_inspector(walk)
    # the API endpoint hangs on a button that is never shown: the page has its own event
    # (with a progress line and download buttons), the API returns plain files
    api_trigger = gr.Button(ENDPOINTS[walk], visible=False)
    common = {
        "inputs": components,
        "preprocess": False,  # our own checks give messages naming the limit; Gradio's would not
        "concurrency_limit": runner.concurrency,  # one per model, one per replica on Ray
        "concurrency_id": "morph",
    }
    api_trigger.click(api_handler(runner, walk, names, [item.default for item in inputs]),
                      outputs=[*buttons, gallery], api_name=ENDPOINTS[walk], **common)
    page = {
        "fn": page_handler(runner, walk, names),
        "outputs": [shown, gallery, status, *buttons, plot, table],
        "api_visibility": "private",
        "show_progress_on": [shown],  # Gradio's bar shows while the job waits in the queue
        **common,
    }
    running = [render.click(**page), components[1].submit(**page)]
    if examples:
        slots = components[: len(get_walk(walk).slots)]
        shown_examples = gr.Examples(examples, inputs=slots, label="Examples (click one to render it)")
        running.append(shown_examples.load_input_event.then(**page))
    cancel.click(fn=None, cancels=running)
    # Gradio fires `.failure` listeners of a cancelled event too: one line covers both
    stopped = f"() => {json.dumps(status_html(0.0, 'stopped'))}"
    for event in running:
        event.failure(fn=None, outputs=[status], js=stopped)
    return running


def build_demo(
    morphers: Mapping[str, "Morpher"],
    limits: Limits,
    *,
    examples: Mapping[str, list[list[str]]] | None = None,
    cache_s: int = 3600,
    unread_s: float = UNREAD_S,
) -> gr.Blocks:
    """The page and the API endpoints for already loaded models (name -> Morpher).

    `examples` are prompts per walk shown under each tab (default: the bundled model's
    shapes); results leave Gradio's cache `cache_s` seconds after they were made. A job
    whose caller reads none of its results for `unread_s` seconds is cancelled. Each
    local model is timed once here, for the cost check (`service.cost`).
    """
    from gradio.utils import get_upload_folder

    runner = Runner(morphers, limits, uploads=Path(get_upload_folder()), unread_s=unread_s)
    default_size = widgets.native_size(next(iter(morphers.values())), limits)
    chosen = examples_for(runner.model_names[0]) if examples is None else examples
    with gr.Blocks(title=TITLE, delete_cache=(min(600, cache_s), cache_s)) as demo:
        gr.Markdown(f"# {TITLE}")
        with gr.Tabs():
            for walk in ENDPOINTS:
                with gr.Tab(TAB_TITLES[walk], id=walk, elem_id=f"tab-{walk}"):
                    walk_tab(runner, walk, limits, default_size, list(chosen.get(walk, [])))
        inspect_trigger = gr.Button("inspect", visible=False)
        inspect_in = gr.File(visible=False, label="manifest")
        inspect_out = [gr.File(visible=False, label="path plot"), gr.File(visible=False, label="manifest")]
        inspect_trigger.click(inspect_handler(runner), inputs=[inspect_in], outputs=inspect_out, api_name="inspect",
                              preprocess=False, concurrency_limit=runner.concurrency, concurrency_id="morph")
    demo.queue(api_open=False, max_size=limits.queue_size, default_concurrency_limit=runner.concurrency)
    demo.runner = runner  # the server starts the models' timing once the page is up
    return demo
