"""What one render replica does, framework-free: one model, morphs streamed out as events.

`service.backends.ray_serve` wraps `MorphReplica` in a Ray Serve deployment; the class
itself knows nothing of Ray. Its two entry points are async generators:

- `render(request)`: `Started`, then the engine's `StepProgress` after every denoising
  step and each `RenderedFrame` as its batch finishes, then `Finished(manifest)`;
- `shard(request, start, stop)`: renders points `start:stop` of the request's plan into
  the shared frame cache, with progress, then `Finished(counts)`.

The engine runs in a worker thread (`service.jobs.MorphJob`, as in the local backend);
the generator relays its events. When the caller cancels, Ray cancels the generator's
task: the `CancelledError` lands at the generator's `await`, whose `finally` sets the
job's stop flag, and the engine stops at its next denoising step.
Everything yielded is picklable: dataclasses, PIL images and JSON-ready dicts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.jobs import Done, MorphJob, Progress

if TYPE_CHECKING:
    from pipelines.engine import Morpher
    from pipelines.request import MorphRequest

log = logging.getLogger(__name__)

POLL_S = 0.25  # the relay wakes at least this often, so a cancel lands within one poll
HISTORY = 32  # jobs remembered per replica


@dataclass(frozen=True)
class Started:
    """The first event of every call: which replica took it (a Ray actor name under Ray)."""

    replica: str


@dataclass(frozen=True)
class Finished:
    """The last event: the manifest of a render, or a shard's counts."""

    result: dict


def shard_counts(frames: int, rendered: int, cached: int) -> dict:
    """What a shard reports: its frames, how many were denoised and how many came from the cache."""
    return {"frames": frames, "rendered": rendered, "cached": cached}


def render_work(morpher: "Morpher", request: "MorphRequest") -> Callable[..., dict]:
    """All frames, reported one by one, then the manifest (as `service.runner.morph_work` does locally)."""

    def work(report: Callable[[Any], None], should_stop: Callable[[], bool]) -> dict:
        rendered = []
        timings: dict[str, float] = {}
        started = time.perf_counter()
        for frame in morpher.frames(request, on_step=report, should_stop=should_stop, timings=timings):
            rendered.append(frame)
            report(frame)
        timings["total_s"] = time.perf_counter() - started
        return morpher.manifest(request, rendered, timings)

    return work


def shard_work(morpher: "Morpher", request: "MorphRequest", start: int, stop: int) -> Callable[..., dict]:
    """Points `start:stop` of the request's plan, rendered into the frame cache.

    The frames get the very cache keys the whole morph asks for (a key hashes the point
    and the job, not the range), so a later render of the whole morph finds them, and a
    shard run twice denoises nothing the second time. With `spacing="even"` the plan is
    the linear pilot pass, the part of the work known before any frame is seen.
    """
    from pipelines.walks import get_walk

    def work(report: Callable[[Any], None], should_stop: Callable[[], bool]) -> dict:
        resolved = morpher.resolve(request)
        walk = get_walk(resolved.walk)
        job = morpher.start_job(resolved, walk, report, should_stop)
        points = walk.plan(resolved)[start:stop]
        job.progress.frames_total = len(points)
        for _ in morpher.render_points(points, job):
            pass
        return shard_counts(len(points), job.stats.frames_rendered, job.stats.cache_hits)

    return work


def load_morpher(spec: str | None, device: str, cache_folder: str | None, cache_mb: float) -> "Morpher":
    """The replica's one model, with a frame cache in `cache_folder` (memory only when None or 0 MB)."""
    from pipelines.cache import FrameCache
    from pipelines.engine import Morpher
    from pipelines.loading import default_model_spec, load_model

    model = load_model(spec or default_model_spec(), device=device)
    if cache_folder and cache_mb > 0:
        cache = FrameCache(folder=Path(cache_folder), disk_bytes=int(cache_mb * 2**20))
    else:
        cache = FrameCache()
    morpher = Morpher(model, cache=cache)  # torch.compile as LATENT_MORPH_COMPILE says (pipelines/speed.py)
    if morpher.accelerator.wanted():
        morpher.accelerator.prepare_in_background()
    return morpher


class MorphReplica:
    """One model in one process; serves one call at a time (a Morpher is not thread-safe)."""

    def __init__(self, spec: str | None, device: str = "auto", cache_folder: str | None = None,
                 cache_mb: float = 0.0, deadline_s: float = 600.0) -> None:
        """`spec`: a model spec as `load_model` takes it (None: the bundled model).

        `cache_folder` is the frame cache's folder, shared by the replicas of one machine
        (and by every node that mounts it at the same path). `deadline_s` bounds a job even
        if its caller has gone away without cancelling it.
        """
        started = time.perf_counter()
        self.morpher = load_morpher(spec, device, cache_folder, cache_mb)
        self.deadline_s = deadline_s
        self.history: deque[dict] = deque(maxlen=HISTORY)  # the latest jobs, for `jobs()`
        log.info("replica %s loaded %s in %.1f s", self.replica_name(), self.morpher.model.name,
                 time.perf_counter() - started)

    def replica_name(self) -> str:
        """Who this is, for logs and events (the Ray deployment names its actor instead)."""
        return f"pid {os.getpid()}"

    def describe(self) -> dict:
        """What the front end needs before any job: the model's name, device and native size."""
        model = self.morpher.model
        pipe = model.pipe
        side = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        return {"name": model.name, "device": model.device.type, "side": side, "replica": self.replica_name()}

    def jobs(self) -> dict:
        """This replica's name and its latest jobs: kind, outcome ("running", "done", "cancelled"
        or the error's name), denoising steps the engine ran, and whether the engine has really ended."""
        return {"replica": self.replica_name(), "jobs": [dict(record) for record in self.history]}

    async def render(self, request: "MorphRequest") -> AsyncIterator[Any]:
        """Started, StepProgress and RenderedFrame events, then Finished(manifest)."""
        yield Started(self.replica_name())
        async for event in self._relay("render", render_work(self.morpher, request)):
            yield event

    async def shard(self, request: "MorphRequest", start: int, stop: int) -> AsyncIterator[Any]:
        """Started and StepProgress events, then Finished(counts) for points `start:stop`."""
        yield Started(self.replica_name())
        async for event in self._relay("shard", shard_work(self.morpher, request, start, stop)):
            yield event

    async def _relay(self, kind: str, work: Callable[..., dict]) -> AsyncIterator[Any]:
        record = {"kind": kind, "outcome": "running", "steps": 0, "ended": False}
        self.history.append(record)
        job = MorphJob(_counted(work, record), deadline_s=self.deadline_s, cancelled_types=_cancelled_types(),
                       on_exit=lambda: record.update(ended=True))
        job.start()
        events = job.events(poll_s=POLL_S)
        try:
            while True:
                # the worker's queue is read in a thread; this await is where a cancel lands
                event = await asyncio.to_thread(next, events, None)
                if isinstance(event, Progress):
                    yield event.value
                elif isinstance(event, (Done, type(None))):
                    record["outcome"] = "done"
                    if event is not None:
                        yield Finished(event.result)
                    return
        except (asyncio.CancelledError, GeneratorExit):
            record["outcome"] = "cancelled"
            raise
        except BaseException as error:
            record["outcome"] = type(error).__name__
            raise
        finally:
            job.stop()  # cancelled or closed: the engine stops at its next step


def _counted(work: Callable[..., dict], record: dict) -> Callable[..., dict]:
    """`work` with every denoising step it reports counted in `record` (even after a cancel)."""
    from pipelines.render import StepProgress

    def counting(report: Callable[[Any], None], should_stop: Callable[[], bool]) -> dict:
        def count(value: Any) -> None:
            if isinstance(value, StepProgress):
                record["steps"] += 1
            report(value)

        return work(count, should_stop)

    return counting


def _cancelled_types() -> tuple[type[BaseException], ...]:
    from pipelines.render import MorphCancelled

    return (MorphCancelled,)
