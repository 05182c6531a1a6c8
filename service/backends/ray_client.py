"""The front end's side of the Ray backend: a model that lives on Ray Serve replicas.

`RemoteMorpher` stands where `service.runner.Runner` expects a Morpher: it has the
model's name and device (`model`), its native size, `resolve` (checks a request
exactly as the engine does, without the weights) and `morph_work`, the work the
Runner's worker thread runs:

1. shards: a morph of at least 2 x `shard_frames` frames is split into point ranges,
   one per replica, rendered at once into the shared frame cache (best effort: a shard
   that fails only leaves its frames to step 2);
2. the whole morph on one replica, streamed back: progress after every step, frames as
   they finish (the sharded ones are cache hits), then the manifest; a replica that
   dies mid-job is replaced by another one once (frames already shown are not shown
   twice, frames already rendered come from the cache);
3. the walk's files, written here by the same code as the local backend's.

Cancel: the Runner's stop flag is polled between stream items; every open response
is then cancelled, which cancels the replica's generator and stops its engine.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

from service.backends import BackendOptions, BackendUnavailable
from service.backends.replica import Finished, Started
from service.backends.streams import Failed, ReplicaLost, Streams

if TYPE_CHECKING:
    from pipelines.request import MorphRequest

log = logging.getLogger(__name__)

RETRIES = 1  # a job whose replica died runs once more on another replica


def shard_ranges(count: int, replicas: int, min_frames: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of a plan of `count` points, one per replica, each >= min_frames.

    No shards (an empty list) for one replica, `min_frames` 0 or a plan under 2 x min_frames.
    """
    if min_frames <= 0 or replicas < 2 or count < 2 * min_frames:
        return []
    parts = min(replicas, count // min_frames)
    bounds = [round(index * count / parts) for index in range(parts + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


def uses_pictures(request: "MorphRequest") -> bool:
    """Picture keys are inverted where they are rendered: such morphs are not sharded."""
    from pipelines.keys import IMAGE_PREFIX

    return any(prompt.startswith(IMAGE_PREFIX) for prompt in request.prompts)


class RemoteMorpher:
    """One model served by a Ray Serve deployment, seen from the front end."""

    def __init__(self, handle: Any, info: dict, options: BackendOptions,
                 alive: Callable[[], bool] | None = None) -> None:
        """`handle`: the deployment's DeploymentHandle; `info`: what `MorphReplica.describe` said."""
        import torch

        self.handle = handle
        self.model = SimpleNamespace(name=info["name"], device=torch.device(info["device"]))
        self.native_side = int(info["side"])
        self.concurrency = options.most_replicas  # jobs let through at once: one per replica
        self.shard_frames = options.shard_frames
        self.alive = alive

    def resolve(self, request: "MorphRequest") -> "MorphRequest":
        """The request checked, with the model's own size when none was asked for (as `Morpher.resolve`)."""
        from pipelines.request import check_request

        check_request(request)
        if request.size is None:
            request = replace(request, size=(self.native_side, self.native_side))
        return request

    def morph_work(self, request: "MorphRequest", outputs: tuple[str, ...], folder: Path):
        """The work for the Runner's worker thread: shards, the streamed render, then the files."""
        from service.runner import write_files

        def work(report: Callable[[Any], None], should_stop: Callable[[], bool]) -> dict[str, Path]:
            resolved = self.resolve(request)
            self.render_shards(resolved, report, should_stop)
            frames, manifest = self.render(resolved, folder, report, should_stop)
            return write_files(resolved, frames, manifest, outputs, folder)

        return work

    # ------------------------------------------------------------ 1. shards
    def render_shards(self, request: "MorphRequest", report: Callable[[Any], None],
                      should_stop: Callable[[], bool]) -> list[dict]:
        """Each shard's counts (`replica.shard_counts`); progress is reported over all shards."""
        from pipelines.render import StepProgress
        from pipelines.walks import get_walk

        if uses_pictures(request):
            return []
        total = len(get_walk(request.walk).plan(request))
        ranges = shard_ranges(total, self.concurrency, self.shard_frames)
        if not ranges:
            return []
        streams = Streams(self.concurrency, should_stop, self.alive)
        for index, (start, stop) in enumerate(ranges):
            streams.add(index, self.handle.options(stream=True).shard.remote(request, start, stop))
        done = [0] * len(ranges)
        counts: list[dict] = []
        for event in streams.events():
            if isinstance(event, Failed):
                log.warning("shard %s failed, its frames are left to the whole render: %s", event.tag, event.error)
                if isinstance(event.error, BackendUnavailable):
                    raise event.error
                continue
            value = event.value
            if isinstance(value, StepProgress):
                done[event.tag] = value.frames_done
                report(replace(value, frames_done=sum(done), frames_total=total))
            elif isinstance(value, Finished):
                done[event.tag] = value.result["frames"]
                counts.append(value.result)
            elif isinstance(value, Started):
                report(value)
        return counts

    # ------------------------------------------------------------ 2. the whole morph
    def render(self, request: "MorphRequest", folder: Path, report: Callable[[Any], None],
               should_stop: Callable[[], bool]) -> tuple[list, dict]:
        """All frames in order and the manifest; a lost replica costs one retry, then a clear error."""
        shown: dict[int, Any] = {}
        for attempt in range(RETRIES + 1):
            try:
                return self._render_once(request, folder, report, should_stop, shown)
            except ReplicaLost as error:
                if attempt == RETRIES:
                    raise BackendUnavailable(f"The morph failed: {error}, twice. Try again in a moment.") from None
                log.warning("%s; the job goes to another replica", error)
        raise AssertionError("unreachable")

    def _render_once(self, request: "MorphRequest", folder: Path, report: Callable[[Any], None],
                     should_stop: Callable[[], bool], shown: dict[int, Any]) -> tuple[list, dict]:
        from pipelines.render import RenderedFrame
        from service.runner import FRAME_FILE, FrameSaved

        streams = Streams(self.concurrency, should_stop, self.alive)
        streams.add("render", self.handle.options(stream=True).render.remote(request))
        frames: dict[int, Any] = {}
        for event in streams.events():
            if isinstance(event, Failed):
                raise event.error
            value = event.value
            if isinstance(value, RenderedFrame):
                frames[value.index] = value
                if value.index not in shown:  # after a retry, frames already on the page stay put
                    path = folder / FRAME_FILE.format(index=value.index)
                    value.image.save(path)
                    shown[value.index] = value
                    report(FrameSaved(value.index, f"{value.index} · {value.caption}", path))
            elif isinstance(value, Finished):
                return [frames[index] for index in sorted(frames)], value.result
            else:
                report(value)  # Started, StepProgress
        raise ReplicaLost("the render ended without its manifest")
