"""The service's morph procedure, framework-free: checked values in, progress and files out.

`Runner.updates(walk, values)` is what every endpoint (the page's tabs, the
examples, `/morph`, `/grid`, `/direction`) runs:

1. check every value against the limits, and the estimated time against the deadline
   (`service.cost`), before any work, API calls included;
2. wait until the caller is seen reading the updates (a queue join whose stream is never
   opened renders nothing), then for the model (one job at a time per model: a diffusers
   scheduler is not thread-safe; a model on Ray Serve replicas takes one job per replica);
3. run the morph in a worker thread (`service.jobs.MorphJob`), yielding at every step,
   so a cancel, a closed tab or a caller nobody reads for `unread_s` stops it at the next
   step; a remote model's work (`service.backends`) streams the same progress and frames
   back from a replica;
4. write the walk's files (media registry) in a private temporary folder and hand
   them over; the caller copies them before asking for the next update.

Errors are plain exceptions (`LimitError`, `JobCancelled` and its `JobUncollected`, `JobDeadline`,
`JobOutOfMemory`, or the engine's own); `service/app.py` turns them into what Gradio shows.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cost import Speed, check_cost
from service.speeds import ModelSpeeds
from service.form import check_form
from service.jobs import UNREAD_S, Done, JobUncollected, MorphJob, Progress, ReaderWatch
from service.limits import LimitError, Limits

if TYPE_CHECKING:
    from pipelines.engine import Morpher
    from pipelines.request import MorphRequest

log = logging.getLogger(__name__)

POLL_S = 0.25  # updates come at least this often, so a cancel never waits long
FRAME_FILE = "frame-{index:03d}.png"
FILE_NAMES = {"gif": "morph.gif", "webp": "morph.webp", "mp4": "morph.mp4", "strip": "strip.png",
              "grid": "grid.png", "manifest": "manifest.json", "plot": "path.png"}


@dataclass(frozen=True)
class FrameSaved:
    """A finished frame, already written as PNG in the job's folder."""

    index: int
    caption: str
    path: Path


@dataclass(frozen=True)
class Update:
    """What a running morph has to tell its page or API caller."""

    kind: str  # "clear" | "wait" | "step" | "frame" | "done" | "tick"
    gallery: list[tuple[str, str]] = field(default_factory=list)  # (PNG path, caption) of every frame so far
    files: dict[str, Path] = field(default_factory=dict)  # format name -> file, when done
    fraction: float = 0.0
    text: str = ""


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


def write_files(request: "MorphRequest", rendered: list, manifest: dict, outputs: tuple[str, ...],
                folder: Path) -> dict[str, Path]:
    """The walk's files (media registry) from finished frames and their manifest."""
    from pipelines import media

    tiles = None
    if rendered and rendered[0].point.get("row") is not None:
        tiles = [(int(frame.point["row"]), int(frame.point["column"])) for frame in rendered]
    film = media.Film([frame.image for frame in rendered], fps=request.fps, loop=True, tiles=tiles,
                      manifest=manifest)
    return {name: media.write(film, folder / FILE_NAMES[name], name) for name in outputs}


def morph_work(morpher: "Morpher", request: "MorphRequest", outputs: tuple[str, ...], folder: Path):
    """The work run in the worker thread: frames as they finish, then the walk's files."""

    def work(report, should_stop) -> dict[str, Path]:
        # 1. frames, streamed: each one saved and reported as soon as its batch is done
        rendered = []
        timings: dict[str, float] = {}
        started = time.perf_counter()
        for frame in morpher.frames(request, on_step=report, should_stop=should_stop, timings=timings):
            path = folder / FRAME_FILE.format(index=frame.index)
            frame.image.save(path)
            rendered.append(frame)
            report(FrameSaved(frame.index, f"{frame.index} · {frame.caption}", path))
        # 2. the manifest, from the same frames (no second render)
        timings["total_s"] = time.perf_counter() - started  # includes saving the frames
        manifest = morpher.manifest(request, rendered, timings)
        # 3. media at the edge, from the one registry of formats
        return write_files(request, rendered, manifest, outputs, folder)

    return work


def job_work(morpher: Any, request: "MorphRequest", outputs: tuple[str, ...], folder: Path):
    """What the worker thread runs: a remote model (`service.backends`) brings its own work."""
    remote = getattr(morpher, "morph_work", None)
    return remote(request, outputs, folder) if remote is not None else morph_work(morpher, request, outputs, folder)


def describe_step(progress: Any, batch_size: int) -> tuple[float, str] | None:
    """(fraction, text) for a progress bar from the engine's StepProgress."""
    try:
        done, total = progress.frames_done, progress.frames_total
        step, steps = progress.step, progress.steps_total
    except AttributeError:
        return None
    # the current batch's frames are `step / steps` of the way there
    in_flight = min(batch_size, max(total - done, 0)) * step / max(steps, 1)
    fraction = (done + in_flight) / max(total, 1)
    return min(fraction, 1.0), f"{done}/{total} frames done, step {step}/{steps}"


def jobs_at_once(morpher: Any) -> int:
    """1 for an in-process Morpher; a remote model says how many replicas serve it."""
    return int(getattr(morpher, "concurrency", 1))


def _at_once(count: int) -> str:
    return "one morph at a time" if count == 1 else f"{count} morphs at a time"


def _frame_or_done(event: Any) -> bool:
    return isinstance(event, Done) or (isinstance(event, Progress) and isinstance(event.value, FrameSaved))


class Runner:
    """The models on offer (an allow-list fixed at launch) and the procedure that runs a morph."""

    def __init__(self, morphers: Mapping[str, "Morpher"], limits: Limits, uploads: Path | None = None,
                 speeds: Mapping[str, Speed | None] | None = None, unread_s: float = UNREAD_S) -> None:
        """`uploads` is the only folder pictures are read from (Gradio's upload folder).

        `speeds`: how fast each model renders (default: each local model timed now, once,
        see `service.cost`); a model without one is not checked against the deadline.
        `unread_s`: a job whose caller reads none of its updates for this long is cancelled.
        """
        if not morphers:
            raise ValueError("at least one model is needed")
        self.morphers = dict(morphers)
        self.limits = limits
        self.uploads = uploads
        self.unread_s = unread_s
        self.timing = ModelSpeeds(self.morphers, limits, speeds)  # started by the server once it is up
        # one job at a time per local model (more for a remote one with several replicas);
        # released by the worker when the job has really ended
        self._slots = {name: threading.BoundedSemaphore(jobs_at_once(morpher))
                       for name, morpher in self.morphers.items()}

    def start_timing(self) -> None:
        """Time the local models in the background (see `service.speeds`), and compile the UNets that
        pay for it and start their CPU lanes (pipelines/speed.py): renders use the eager UNet alone until
        the compiled one and the lanes are ready."""
        for morpher in self.morphers.values():
            accelerator = getattr(morpher, "accelerator", None)  # a remote (Ray) model compiles on its replica
            if accelerator is not None and accelerator.compiled is None and accelerator.wanted():
                accelerator.prepare_in_background()
            if accelerator is not None:
                accelerator.start_lanes()
        self.timing.start()

    @property
    def speeds(self) -> dict[str, Speed | None]:
        """How fast each model renders (see `service.cost`), once the timing is done."""
        return self.timing.all()

    @property
    def model_names(self) -> list[str]:
        return list(self.morphers)

    @property
    def concurrency(self) -> int:
        """Morphs that may run at once over all models (the page's concurrency limit)."""
        return sum(jobs_at_once(morpher) for morpher in self.morphers.values())

    def updates(self, walk: str, values: dict[str, Any], extra: tuple[str, ...] = (),
                reading: Callable[[], bool] | None = None) -> Iterator[Update]:
        """Run one morph; raises LimitError before any work, job errors while it runs.

        The files are the walk's outputs plus `extra` ones (the page adds the path plot).
        `reading()` says whether the caller reads these updates now (the web front end asks
        Gradio's queue); nobody reading for `unread_s` raises JobUncollected, before the work
        starts or at its next step. None: always read (a direct caller).
        """
        from pipelines.render import MorphCancelled, default_batch_size
        from pipelines.walks import get_walk

        # 1. check everything before any work
        form = check_form(self.limits, self.model_names, walk, uploads=self.uploads, **values)
        morpher = self.morphers[form.model]
        request = morpher.resolve(form.request)  # the model's own size when none was asked for
        if request.width * request.height > self.limits.max_pixels:
            raise LimitError(f"size {request.width}x{request.height} is over the limit of {self.limits.max_pixels} "
                             "pixels per frame (--max-pixels).")
        check_cost(request, self.speeds.get(form.model), self.limits.deadline_s)

        # 2. wait for the caller to read, then for the model, yielding so a cancel lands while waiting
        yield Update("clear")
        watch = ReaderWatch(reading, self.unread_s) if reading is not None else None
        yield from self._wait_for_reader(watch)
        slot = self._slots[form.model]
        while not slot.acquire(timeout=POLL_S):
            self._check_read(watch)
            yield Update("wait", text=f"waiting for {form.model}: {_at_once(jobs_at_once(morpher))}")

        # 3. run it in a worker thread; this generator only relays progress
        batch_size = request.batch_size or default_batch_size(morpher.model.device, request.width, request.height)
        try:
            folder = _JobFolder()
        except BaseException:
            slot.release()
            raise

        def on_exit() -> None:
            slot.release()
            folder.release()

        outputs = get_walk(request.walk).outputs + tuple(name for name in extra if name not in get_walk(request.walk).outputs)
        job = MorphJob(job_work(morpher, request, outputs, folder.path), deadline_s=self.limits.deadline_s,
                       on_exit=on_exit, cancelled_types=(MorphCancelled,))
        started = False
        try:
            job.start()
            started = True
            yield from self._relay(job, form.model, batch_size, watch)
        finally:
            # A cancel or disconnect closes this generator: stop the worker at its next step.
            # Never wait for it here: Gradio closes generators on its event loop.
            job.stop()
            if not started:  # no worker: release its share here
                on_exit()
            folder.release()

    def _wait_for_reader(self, watch: ReaderWatch | None) -> Iterator[Update]:
        """Before any work: someone must read the caller's updates (or the job is skipped, nothing rendered)."""
        while watch is not None and not watch.wait_for_reader(POLL_S):
            self._check_read(watch)
            yield Update("wait", text="waiting for the caller to read the results")

    def _check_read(self, watch: ReaderWatch | None) -> None:
        """JobUncollected when nobody has read the caller's updates for `unread_s`."""
        if watch is not None and watch.abandoned():
            log.info("nobody read the results for %g s (the caller never opened its stream, or left): "
                     "job cancelled", watch.patience_s)
            raise JobUncollected(f"Nobody read the results for {watch.patience_s:g} s; the job was cancelled.")

    def _relay(self, job: MorphJob, model: str, batch_size: int, watch: ReaderWatch | None) -> Iterator[Update]:
        """The job's events as Updates, until its files are written; the caller's finally stops the job."""
        gallery: list[tuple[str, str]] = []
        began = time.monotonic()
        yield Update("step", text=f"{model}: starting")
        for event in job.events(poll_s=POLL_S):
            self._check_read(watch)
            if isinstance(event, Done):
                # 4. results; the caller copies the files before this generator resumes
                text = f"{len(gallery)} frames in {time.monotonic() - began:.1f} s"
                yield Update("done", gallery=gallery, files=event.result, fraction=1.0, text=text)
                return
            if isinstance(event, Progress) and isinstance(event.value, FrameSaved):
                saved = event.value
                gallery = [*gallery, (str(saved.path), saved.caption)]
                # a batch finishes several frames at once: show them in one update
                yield Update("tick") if job.next_is(_frame_or_done) else Update("frame", gallery=gallery)
                continue
            described = describe_step(event.value, batch_size) if isinstance(event, Progress) else None
            yield Update("step", fraction=described[0], text=described[1]) if described else Update("tick")
