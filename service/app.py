"""The Gradio page and its API endpoint `morph`: a thin layer over `pipelines.morph.Morpher`.

`build_demo(morphers, limits)` only wires widgets to the engine; models are
loaded by `service.__main__.main()`, never at import. One procedure
(`MorphService._updates`) serves the page's Render button, the examples and the
API (`api_name="morph"`); two thin adapters turn its updates into what the page
shows (streamed frames, a progress line, download buttons) and what the API
returns (GIF, strip, MP4, manifest, frames):

1. check every value against the limits (before any work, API calls included);
2. wait for the model (one job at a time per model: a diffusers scheduler is not thread-safe);
3. run the morph in a worker thread (`service.jobs.MorphJob`), yielding at every step,
   so Cancel or a closed tab stops it at the next step;
4. write GIF, MP4, strip PNG and manifest JSON in a private temporary folder, hand
   them to Gradio (which copies them to its cache), and remove the folder.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from service.jobs import Done, JobCancelled, JobDeadline, JobOutOfMemory, MorphJob, Progress
from service.limits import INTERP_CHOICES, SEED_MAX, SPACING_CHOICES, LimitError, Limits, check_form

if TYPE_CHECKING:
    from pipelines.morph import Morpher

log = logging.getLogger(__name__)

TITLE = "latent morph"
# Prompt pairs the bundled shapes model knows (coloured shapes on plain backgrounds).
EXAMPLES = [
    ["a red circle", "a blue square"],
    ["a small yellow star", "a large purple triangle"],
    ["a large green square", "a small orange circle"],
    ["a white triangle on a black background", "a black star on a white background"],
    ["a large red circle", "a large blue circle"],
]
DEFAULTS = {
    "seeds": "0",
    "frames": 16,
    "steps": 20,
    "guidance": 5.0,
    "size": "64x64",
    "interp": "slerp",
    "spacing": "linear",
    "fps": 8,
    "loop": False,
}
POLL_S = 0.25  # the handler yields at least this often, so a cancel never waits long
FRAME_FILE = "frame-{index:03d}.png"
GIF_FILE, MP4_FILE, STRIP_FILE, MANIFEST_FILE = "morph.gif", "morph.mp4", "strip.png", "manifest.json"
# small frames (64x64) are shown scaled up with hard pixel edges, not blurred
CSS = """
#morph-gif img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#morph-frames img { image-rendering: pixelated; }
.morph-status { display: flex; align-items: center; gap: 0.75em; }
.morph-status progress { flex: 1; height: 0.75em; accent-color: var(--color-accent); }
"""


@dataclass(frozen=True)
class FrameSaved:
    """A finished frame, already written as PNG in the job's folder."""

    index: int
    t: float
    path: Path


@dataclass(frozen=True)
class MorphFiles:
    gif: Path
    strip: Path
    mp4: Path
    manifest: Path


class _JobFolder:
    """A private temporary folder shared by the handler and the worker; the last one out removes it."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="latent-morph-"))
        self._owners = 2
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._owners -= 1
            last = self._owners == 0
        if last:
            shutil.rmtree(self.path, ignore_errors=True)


def _engine():
    """The engine's request type and helpers, imported on first use (keeps import of this module light)."""
    from pipelines import media, morph

    return morph, media


def _morph_work(morpher: "Morpher", request: Any, fps: float, folder: Path):
    """The work run in the worker thread: frames as they finish, then the media files."""
    morph, media = _engine()

    def work(report, should_stop) -> MorphFiles:
        # 1. frames, streamed: each one saved and reported as soon as its batch is done
        rendered = []
        timings: dict[str, float] = {}
        started = time.perf_counter()
        for frame in morpher.frames(request, on_step=report, should_stop=should_stop, timings=timings):
            path = folder / FRAME_FILE.format(index=frame.index)
            frame.image.save(path)
            rendered.append(frame)
            report(FrameSaved(frame.index, float(frame.t), path))
        # 2. the manifest, from the same frames (no second render)
        timings["total_s"] = time.perf_counter() - started  # includes saving the frames
        manifest = morpher.manifest(request, rendered, timings)
        manifest["fps"] = fps
        # 3. media at the edge
        images = [frame.image for frame in rendered]
        return MorphFiles(
            gif=media.write_media(images, folder / GIF_FILE, fps=fps, loop=True),
            strip=media.write_media(images, folder / STRIP_FILE, fps=fps),
            mp4=media.write_media(images, folder / MP4_FILE, fps=fps),
            manifest=media.write_manifest(manifest, folder / MANIFEST_FILE),
        )

    return work


def _frame_or_done(event: Any) -> bool:
    return isinstance(event, Done) or (isinstance(event, Progress) and isinstance(event.value, FrameSaved))


def _describe(progress_value: Any, batch_size: int) -> tuple[float, str] | None:
    """(fraction, text) for the progress bar from the engine's StepProgress."""
    try:
        done, total = progress_value.frames_done, progress_value.frames_total
        step, steps = progress_value.step, progress_value.steps_total
    except AttributeError:
        return None
    # the current batch's frames are `step / steps` of the way there
    in_flight = min(batch_size, max(total - done, 0)) * step / max(steps, 1)
    fraction = (done + in_flight) / max(total, 1)
    return min(fraction, 1.0), f"{done}/{total} frames done, step {step}/{steps}"


def _user_message(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


@dataclass(frozen=True)
class Update:
    """What the morph handler has to tell its page or API caller."""

    kind: str  # "clear" | "wait" | "step" | "frame" | "done" | "tick"
    gallery: list[tuple[str, str]] | None = None
    files: MorphFiles | None = None
    fraction: float = 0.0
    text: str = ""


def _status_html(fraction: float, text: str) -> str:
    """A progress bar that stays visible while frames stream in (Gradio hides its own then)."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return (
        f'<div class="morph-status"><progress max="100" value="{percent}"></progress>'
        f"<span>{html.escape(text)}</span></div>"
    )


class MorphService:
    """The models on offer (an allow-list fixed at launch) and the handlers that run morphs."""

    def __init__(self, morphers: Mapping[str, "Morpher"], limits: Limits) -> None:
        if not morphers:
            raise ValueError("at least one model is needed")
        self.morphers = dict(morphers)
        self.limits = limits
        # one job at a time per model; released by the worker when the job has really ended
        self._slots = {name: threading.BoundedSemaphore(1) for name in self.morphers}

    @property
    def model_names(self) -> list[str]:
        return list(self.morphers)

    def morph(
        self,
        prompt_a: str,
        prompt_b: str,
        more_prompts: str = "",
        negative_prompt: str = "",
        seeds: str = "0",
        frames: int = 16,
        steps: int = 20,
        guidance: float = 5.0,
        size: str = "64x64",
        interp: str = "slerp",
        spacing: str = "linear",
        fps: float = 8,
        loop: bool = False,
        model: str | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[Any]:
        """Morph through a chain of prompts; returns (GIF, strip PNG, MP4, manifest JSON, frames).

        The arguments mirror the CLI: prompt_a and prompt_b (more_prompts: one per line),
        negative_prompt (--negative), seeds ('0' or one per prompt, --seed), frames, steps,
        guidance, size ('WxH'), interp, spacing, fps, loop and model (one of the served models).
        Progress comes as status updates; the frames come with the result (streaming them
        would make `gradio_client` download the growing gallery again at every update).
        """
        values = locals()
        for update in self._updates({name: values[name] for name in INPUT_NAMES}):
            if update.kind == "clear":
                yield None, None, None, None, []
            elif update.kind == "done":
                files = update.files
                progress(1.0, desc=update.text)
                yield str(files.gif), str(files.strip), str(files.mp4), str(files.manifest), update.gallery
            else:
                if update.kind in ("wait", "step"):
                    progress(update.fraction, desc=update.text)
                yield gr.skip()

    def morph_page(self, *args: Any) -> Iterator[Any]:
        """The page's handler: as `morph`, plus a progress line and download buttons."""
        values = dict(zip(INPUT_NAMES, args))
        for update in self._updates(values):
            if update.kind == "clear":
                hidden = gr.DownloadButton(value=None, visible=False)
                yield None, [], _status_html(0.0, "starting"), hidden, hidden, hidden, hidden
            elif update.kind == "frame":
                yield gr.skip(), update.gallery, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            elif update.kind in ("wait", "step"):
                status = _status_html(update.fraction, update.text)
                yield gr.skip(), gr.skip(), status, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            elif update.kind == "done":
                files = update.files
                downloads = (files.gif, files.strip, files.mp4, files.manifest)
                yield (
                    str(files.gif),
                    update.gallery,
                    _status_html(1.0, update.text),
                    *(gr.DownloadButton(value=str(path), visible=True) for path in downloads),
                )
            else:
                yield gr.skip()

    def _updates(self, values: dict[str, Any]) -> Iterator[Update]:
        """The one morph procedure behind the page and the API."""
        # 1. check everything before any work
        try:
            form = check_form(self.limits, self.model_names, **values)
            morph, _ = _engine()
            request = morph.MorphRequest(**form.request_fields())
            morph.check_request(request)
        except (LimitError, ValueError) as error:
            raise gr.Error(_user_message(error), title="Invalid input", print_exception=False) from None

        # 2. wait for the model, yielding so a cancel lands while waiting
        yield Update("clear")
        slot = self._slots[form.model]
        while not slot.acquire(timeout=POLL_S):
            yield Update("wait", text=f"waiting for {form.model}: one morph at a time")

        # 3. run it in a worker thread; this generator only relays progress
        morpher = self.morphers[form.model]
        batch_size = request.batch_size or morph.default_batch_size(
            morpher.model.device, request.width, request.height
        )
        try:
            folder = _JobFolder()
        except BaseException:
            slot.release()
            raise

        def on_exit() -> None:
            slot.release()
            folder.release()

        job = MorphJob(
            _morph_work(morpher, request, form.fps, folder.path),
            deadline_s=self.limits.deadline_s,
            on_exit=on_exit,
            cancelled_types=(morph.MorphCancelled,),
        )
        gallery: list[tuple[str, str]] = []
        started = False
        began = time.monotonic()
        try:
            job.start()
            started = True
            yield Update("step", text=f"{form.model}: starting")
            for event in job.events(poll_s=POLL_S):
                if isinstance(event, Done):
                    # 4. results; Gradio copies the files to its cache before this generator resumes
                    text = f"{len(gallery)} frames in {time.monotonic() - began:.1f} s"
                    yield Update("done", gallery=gallery, files=event.result, fraction=1.0, text=text)
                    return
                if isinstance(event, Progress) and isinstance(event.value, FrameSaved):
                    saved = event.value
                    gallery = [*gallery, (str(saved.path), f"{saved.index} · t={saved.t:.3f}")]
                    # a batch finishes several frames at once: show them in one update
                    # (Gradio re-reads every file of the gallery at each update)
                    yield Update("tick") if job.next_is(_frame_or_done) else Update("frame", gallery=gallery)
                    continue
                described = _describe(event.value, batch_size) if isinstance(event, Progress) else None
                if described is not None:
                    yield Update("step", fraction=described[0], text=described[1])
                else:
                    yield Update("tick")
        except JobCancelled:
            return
        except (JobDeadline, JobOutOfMemory) as error:
            title = "Time limit" if isinstance(error, JobDeadline) else "Out of memory"
            hint = (
                " Try fewer frames, fewer steps or a smaller size." if isinstance(error, JobDeadline)
                else " Memory was freed; try a smaller size or fewer frames."
            )
            raise gr.Error(_user_message(error) + hint, title=title, print_exception=False) from None
        except ValueError as error:  # the engine refusing a request it cannot do
            raise gr.Error(_user_message(error), title="Invalid input", print_exception=False) from None
        except Exception:
            log.exception("morph failed")
            raise gr.Error("The morph failed on the server; the error was logged.", print_exception=False) from None
        finally:
            # Cancel / disconnect close this generator: stop the worker at its next step.
            # Never wait for it here: Gradio closes generators on its event loop.
            job.stop()
            if not started:  # no worker: release its share here
                on_exit()
            folder.release()


INPUT_NAMES = (
    "prompt_a", "prompt_b", "more_prompts", "negative_prompt", "seeds", "frames", "steps",
    "guidance", "size", "interp", "spacing", "fps", "loop", "model",
)


def build_demo(
    morphers: Mapping[str, "Morpher"],
    limits: Limits,
    *,
    examples: list[list[str]] | None = None,
    cache_s: int = 3600,
) -> gr.Blocks:
    """The page and the `morph` API endpoint for already loaded models (name -> Morpher).

    `examples` are prompt pairs shown under the page (default: the bundled model's shapes);
    results leave Gradio's cache `cache_s` seconds after they were made.
    """
    service = MorphService(morphers, limits)
    names = service.model_names
    sizes = limits.sizes()
    default_size = DEFAULTS["size"] if DEFAULTS["size"] in sizes else (sizes[0] if sizes else "64x64")

    with gr.Blocks(title=TITLE, delete_cache=(min(600, cache_s), cache_s)) as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "Type two prompts (or more), press **Render**: the frames walk the model's latent space "
            "from one prompt to the next, with the seed noise slerped between keyframes."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                prompt_a = gr.Textbox(label="Prompt A", placeholder="a red circle", max_lines=2)
                prompt_b = gr.Textbox(label="Prompt B", placeholder="a blue square", max_lines=2)
                with gr.Accordion("Add more prompts", open=False):
                    more_prompts = gr.Textbox(
                        label="More prompts",
                        value="",
                        info=f"One per line, appended to the chain (at most {limits.max_prompts} prompts in all).",
                        lines=3,
                    )
                negative_prompt = gr.Textbox(label="Negative prompt", value="", max_lines=2)
                with gr.Row(equal_height=True):
                    seeds = gr.Textbox(
                        label="Seeds",
                        value=DEFAULTS["seeds"],
                        info="One for all prompts, or one per prompt (e.g. 1 2).",
                        scale=4,
                    )
                    dice = gr.Button("Random seed", scale=1, min_width=90, elem_id="dice")
                with gr.Row():
                    frames = gr.Slider(
                        2, limits.max_frames, value=min(DEFAULTS["frames"], limits.max_frames), step=1, label="Frames"
                    )
                    steps = gr.Slider(
                        1, limits.max_steps, value=min(DEFAULTS["steps"], limits.max_steps), step=1, label="Steps"
                    )
                with gr.Row():
                    guidance = gr.Slider(
                        0, limits.max_guidance, value=DEFAULTS["guidance"], step=0.5, label="Guidance"
                    )
                    size = gr.Dropdown(
                        sizes, value=default_size, label="Size (WxH)", allow_custom_value=True,
                        info=f"Multiples of 8, at most {limits.max_pixels} pixels.",
                    )
                with gr.Accordion("More settings", open=False):
                    with gr.Row():
                        interp = gr.Radio(
                            list(INTERP_CHOICES), value=DEFAULTS["interp"], label="Embedding interpolation"
                        )
                        spacing = gr.Radio(
                            list(SPACING_CHOICES), value=DEFAULTS["spacing"], label="Spacing",
                            info="even: equal visual steps between frames; denoises up to twice as many frames",
                        )
                    with gr.Row():
                        fps = gr.Slider(1, limits.max_fps, value=DEFAULTS["fps"], step=1, label="FPS")
                        loop = gr.Checkbox(value=DEFAULTS["loop"], label="Loop back to prompt A")
                model = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1)
                with gr.Row():
                    render = gr.Button("Render", variant="primary", elem_id="render")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=3):
                gif = gr.Image(
                    label="Morph (GIF)", type="filepath", elem_id="morph-gif", height=320,
                    buttons=["download", "fullscreen"], interactive=False,
                )
                status = gr.HTML(_status_html(0.0, "ready"), elem_id="morph-status")
                with gr.Row():
                    gif_button = gr.DownloadButton("GIF", visible=False, elem_id="download-gif", size="sm")
                    strip = gr.DownloadButton("Strip PNG", visible=False, elem_id="download-strip", size="sm")
                    mp4 = gr.DownloadButton("Video MP4", visible=False, elem_id="download-mp4", size="sm")
                    manifest = gr.DownloadButton("Manifest JSON", visible=False, elem_id="download-manifest", size="sm")
                gallery = gr.Gallery(
                    label="Frames", columns=6, height="auto", elem_id="morph-frames", interactive=False, format="png"
                )
        # the API endpoint hangs on a button that is never shown: the page has its own event
        # below (with a progress line and download buttons), the API returns plain files
        api_trigger = gr.Button("morph", visible=False)

        inputs = [
            prompt_a, prompt_b, more_prompts, negative_prompt, seeds, frames, steps,
            guidance, size, interp, spacing, fps, loop, model,
        ]  # in the order of INPUT_NAMES
        common = {
            "inputs": inputs,
            # our own checks give messages naming the limit; Gradio's would not
            "preprocess": False,
            "concurrency_limit": len(names),
            "concurrency_id": "morph",
        }
        api_trigger.click(service.morph, outputs=[gif, strip, mp4, manifest, gallery], api_name="morph", **common)
        page = {
            "fn": service.morph_page,
            "outputs": [gif, gallery, status, gif_button, strip, mp4, manifest],
            "api_visibility": "private",
            # Gradio's bar shows while the job waits in the queue; once frames stream, `status` takes over
            "show_progress_on": [gif],
            **common,
        }
        running = [render.click(**page), prompt_b.submit(**page)]
        example_list = EXAMPLES if examples is None else examples
        if example_list:
            shown = gr.Examples(example_list, inputs=[prompt_a, prompt_b], label="Examples (click one to render it)")
            running.append(shown.load_input_event.then(**page))
        cancel.click(fn=None, cancels=running)
        # Gradio fires `.failure` listeners of a cancelled event too: one line covers both
        stopped = f"() => {json.dumps(_status_html(0.0, 'stopped'))}"
        for event in running:
            event.failure(fn=None, outputs=[status], js=stopped)
        dice.click(fn=None, outputs=[seeds], js=f"() => String(Math.floor(Math.random() * {SEED_MAX + 1}))")
    demo.queue(api_open=False, max_size=limits.queue_size, default_concurrency_limit=len(names))
    return demo
