"""The engine: any walk over any keys, rendered in batches through the stock diffusers pipeline.

Frames are independent given (model, keys, point), so a morph is a pure function
of its `MorphRequest`. `Morpher._frames` runs the stages in order, the way a
diffusers pipeline's `__call__` does; each stage is a named function elsewhere:

1. check the request (request.py) and settle the size the model draws at;
2. encode each key once into (noise latent, prompt embedding) (keys.py);
3. plan the walk's points, one per output frame (walks.py);
4. mix and denoise the points in batches, cached frames skipped (walks.py, render.py);
   `spacing="even"` re-times a path walk from measured distances (spacing.py);
5. yield frames in order as their batch finishes; the manifest (manifest.py) and
   the files (media.py) are made at the edge.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterator

import torch

from pipelines import manifest as manifests
from pipelines import threads
from pipelines.cache import FrameCache, frame_key, model_fingerprint
from pipelines.keys import ImageKey, TextEncoder, keys_for, uses_guidance
from pipelines.loading import LoadedModel
from pipelines.render import (
    Progress, RenderedFrame, StepProgress, batched, default_batch_size, denoise, step_generators, unet_for_batch,
)
from pipelines.request import MorphRequest, check_request, walk_reads
from pipelines.spacing import RenderStats, even_frames
from pipelines.attention import attention_mixing, with_anchors
from pipelines.deepcache import DEEP_CACHE_INTERVALS
from pipelines.speed import Accelerator, SpeedSettings
from pipelines.inversion import InversionCache, sampler_for_inversion
from pipelines.recipes import weights
from pipelines.job import EncodeContext, Job, MorphResult
from pipelines.walks import Point, PathWalk, Walk, blends, describe, get_walk, nearest_key


class Morpher:
    """Renders morphs with one loaded model. Not thread-safe: serialise calls per model.

    `cache` (optional) keeps rendered frames across requests: a repeated request, a
    re-timing, a render with more frames or another walk through the same points
    reuses them. Without one, frames are only reused inside a request (the "even" pilot).
    """

    def __init__(self, model: LoadedModel, cache: FrameCache | None = None, speed: SpeedSettings | None = None) -> None:
        self.model = model
        self.cache = cache
        self.accelerator = Accelerator(model.pipe, model.device, speed)  # exact speed-ups (pipelines/speed.py)
        self.text = TextEncoder(model.pipe)
        self.last_stats: tuple[MorphRequest, RenderStats] | None = None  # of the last finished morph
        self._fingerprint: str | None = None
        folder = getattr(cache, "folder", None)
        self.inversions = InversionCache(self.fingerprint, folder.parent / "inversions" if folder else None)

    def fingerprint(self) -> str:
        """A short hash of the model's weights (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model.pipe)
        return self._fingerprint

    # ------------------------------------------------------------ entry points
    def resolve(self, request: MorphRequest) -> MorphRequest:
        """The request checked, with the size the model draws at when none was asked for."""
        check_request(request)
        if request.size is None:
            pipe = self.model.pipe
            side = pipe.unet.config.sample_size * pipe.vae_scale_factor
            request = replace(request, size=(side, side))
        return request

    def keys(self, request: MorphRequest) -> list:
        """The keys of a resolved request; pictures are read and checked here (PictureError, a ValueError)."""
        return keys_for(request.prompts, request.seeds, request.size)

    def frames(
        self,
        request: MorphRequest,
        on_step: Callable[[StepProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Iterator[RenderedFrame]:
        """Yield frames in output order as their batch finishes.

        Raises ValueError for a bad request at the call (before any work), and
        MorphCancelled at the next step boundary once `should_stop()` returns True.
        `timings`, when given, receives the stages' seconds for the manifest.
        """
        request = self.resolve(request)
        self.keys(request)  # a bad picture fails here, at the call, before any work
        return self._frames(request, on_step, should_stop, {} if timings is None else timings)

    def render(
        self,
        request: MorphRequest,
        on_step: Callable[[StepProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MorphResult:
        """Render all frames and build the manifest."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        request = self.resolve(request)
        frames = list(self._frames(request, on_step, should_stop, timings))
        timings["total_s"] = time.perf_counter() - started
        return MorphResult(frames=frames, manifest=self.manifest(request, frames, timings))

    def manifest(self, request: MorphRequest, frames: list[RenderedFrame], timings: dict[str, float]) -> dict:
        """The JSON-ready record of a morph (see manifest.py)."""
        request = self.resolve(request)
        stats = self.last_stats[1] if self.last_stats is not None and self.last_stats[0] == request else None
        job = self.start_job(request, get_walk(request.walk))  # prompts and pictures come from the caches
        record = manifests.build(self.model, request, frames, timings, stats, job.encoded, job.keys)
        manifests.add_reconstruction(record, self.model.pipe, job.keys, frames, job.walk, request)
        return record

    # ------------------------------------------------------------ the stages
    def _frames(
        self,
        request: MorphRequest,
        on_step: Callable[[StepProgress], None] | None,
        should_stop: Callable[[], bool] | None,
        timings: dict[str, float],
    ) -> Iterator[RenderedFrame]:
        # 1. Check the request (again: a generator body runs late) and pick the walk; with
        #    picture keys, render with the sampler their inversion undoes (the model's own if it can).
        request = self.resolve(request)
        walk = get_walk(request.walk)
        own_sampler = self.model.pipe.scheduler
        if any(isinstance(key, ImageKey) for key in self.keys(request)):
            self.model.pipe.scheduler = sampler_for_inversion(self.model.pipe)
        try:
            yield from self._stages(request, walk, on_step, should_stop, timings)
        finally:
            self.model.pipe.scheduler = own_sampler

    def _stages(self, request: MorphRequest, walk: Walk, on_step, should_stop, timings: dict) -> Iterator[RenderedFrame]:
        started = time.perf_counter()
        # 1b. the CPU threads for this work and what the machine has free now (pipelines/threads.py)
        threads.rebalance(self.unet_activations(request))
        # 2. Encode each key once: noise from its seed (CPU generator, then moved), embeds via encode_prompt.
        job = self.start_job(request, walk, on_step, should_stop)
        timings["encode_s"] = time.perf_counter() - started
        # 3. The walk's points, one per output frame, in output order.
        plan = walk.plan(request)
        job.progress.frames_total = len(plan)
        job.stats.frames_out = len(plan)
        if request.spacing == "even" and isinstance(walk, PathWalk):
            # 4b. Equal pixel steps: a pilot pass at linear t, then frames placed (and
            #     refined) by the measured distances; only the chosen frames come out.
            frames: Iterator[RenderedFrame] = iter(even_frames(
                lambda points: self.render_points(points, job), walk, request, plan, job.stats, job.progress))
        else:
            # 4. Mix and denoise batch by batch (cached frames skip the pipeline).
            frames = self.render_points(plan, job)
        # 5. Frames in order as their batch finishes.
        yield from frames
        timings["render_s"] = time.perf_counter() - started
        self.last_stats = (request, job.stats)

    def start_job(self, request: MorphRequest, walk: Walk, on_step=None, should_stop=None) -> Job:
        """Encode the keys of a (resolved) request: what rendering its points needs."""
        keys = self.keys(request)
        # the negative prompt is encoded alongside the first prompt, as in a plain call
        uncond = self.text.negative(keys[0].prompt, request.guidance, request.negative_prompt)
        progress = Progress(0, on_step, should_stop)
        context = EncodeContext(self.text, self.latent_shape(request), self._dtype(), self.model.device,
                           self.model.pipe, request.steps, self.inversions, progress.check_stop)
        encoded = [key.encode(context) for key in keys]
        batch_size = request.batch_size or default_batch_size(self.model.device, request.width, request.height)
        return Job(request, walk, keys, encoded, uncond, batch_size, progress, RenderStats())

    def render_points(self, points: list[Point], job: Job) -> Iterator[RenderedFrame]:
        """Frames for `points`, in their order: from the cache when there, else denoised in batches."""
        job.progress.check_stop()
        cache_keys = [self.frame_key(point, job) for point in points] if self.cache is not None else []
        finished: dict[int, RenderedFrame] = {}
        todo = []
        for index, point in enumerate(points):
            stored = self.cache.get(cache_keys[index]) if self.cache is not None else None
            if stored is None:
                todo.append(index)
                continue
            finished[index] = self._frame(index, point, job, stored.image.copy(), stored.nsfw)
            job.stats.cache_hits += 1
            job.progress.frames_done += 1
        position = 0
        for batch in [[], *batched(todo, job.batch_size)]:  # the empty batch first: cached leading frames go out now
            if batch:
                images, flagged = self._denoise([points[index] for index in batch], job)
                for index, image, nsfw in zip(batch, images, flagged):
                    finished[index] = self._frame(index, points[index], job, image, nsfw)
                    job.stats.frames_rendered += 1
                    if self.cache is not None:
                        self.cache.put(cache_keys[index], image, nsfw)
                job.stats.pipeline_calls += 1
            while position < len(points) and position in finished:
                yield finished.pop(position)
                position += 1

    def _frame(self, index: int, point: Point, job: Job, image, nsfw: bool) -> RenderedFrame:
        return RenderedFrame(index, point, image, nsfw, job.walk.caption(point))

    def guidance_at(self, point: Point, job: Job) -> float:
        """A point's guidance: its keys' guidance mixed by their weights (a picture key renders at 1)."""
        mixed = weights(job.walk.recipe(point, job.request))
        # rounded: 0.3 * 5 + 0.7 * 5 is not exactly 5, and frames of one scale share a pipeline call
        return round(float(sum(share * job.keys[index].guidance(job.request.guidance)
                               for index, share in mixed.items())), 9)

    def _denoise(self, points: list[Point], job: Job) -> tuple[list, list[bool]]:
        """Denoise a batch; points that need another guidance scale go in their own pipeline call."""
        scales = [self.guidance_at(point, job) for point in points]
        images: list = [None] * len(points)
        flagged: list[bool] = [False] * len(points)
        for scale in dict.fromkeys(scales):
            group = [index for index, value in enumerate(scales) if value == scale]
            got, flags = self._denoise_group([points[index] for index in group], scale, job)
            for index, image, flag in zip(group, got, flags):
                images[index], flagged[index] = image, flag
        return images, flagged

    def _denoise_group(self, points: list[Point], guidance: float, job: Job) -> tuple[list, list[bool]]:
        request = job.request
        recipes = [job.walk.recipe(point, request) for point in points]
        inputs = job.walk.mix(job.encoded, points, request)
        seeds = [job.keys[nearest_key(recipe)].seed for recipe in recipes]
        mixing = None
        if request.attention == "interpolate" and walk_reads(request.walk, "attention"):
            # the keyframes these frames mix ride along in the batch, as anchors for their attention
            mixing, anchors = attention_mixing([weights(recipe) for recipe in recipes])
            inputs = with_anchors(inputs, [job.encoded[index] for index in anchors])
            seeds += [job.keys[index].seed for index in anchors]
        rows = inputs["latents"].shape[0]
        if job.uncond is not None and uses_guidance(self.model.pipe, guidance):
            inputs["negative_prompt_embeds"] = job.uncond.embeds.repeat(rows, 1, 1)
            if job.uncond.pooled is not None:
                inputs["negative_pooled_prompt_embeds"] = job.uncond.pooled.repeat(rows, 1)
        generators = step_generators(seeds, self.latent_shape(request), self._dtype())
        with unet_for_batch(self.accelerator, mixing, DEEP_CACHE_INTERVALS[request.speed]) as accelerated:
            images, flagged = denoise(self.model.pipe, inputs, generators, request.steps, guidance, request.size,
                                      job.progress, frames=len(points), accelerated=accelerated)
        return images[: len(points)], flagged[: len(points)]  # the anchors' pictures are not output

    # ------------------------------------------------------------ identity of a frame
    def frame_fields(self, point: Point, job: Job) -> dict:
        """Everything that determines one frame's pixels (what its cache key hashes).

        The point is described by its recipe over the keys' digests, not by the walk's
        coordinates: a keyframe depends only on its own key, and two walks that visit
        the same mixture share one entry.
        """
        pipe, request = self.model.pipe, job.request
        recipe = job.walk.recipe(point, request)
        mixes = blends(recipe)
        scale = self.guidance_at(point, job)  # the request's, or nearer 1 towards a picture key
        guided = uses_guidance(pipe, scale)
        return {
            "model": self.model.name,
            "weights": self.fingerprint(),
            "pipeline": type(pipe).__name__,
            "point": describe(recipe, [key.digest() for key in job.keys], [key.text_digest() for key in job.keys]),
            "interp": request.interp if mixes else None,
            "noise_interp": request.noise_interp if mixes else None,
            "attention": request.attention if mixes and walk_reads(request.walk, "attention") else "plain",
            **({"speed": request.speed} if request.speed != "exact" else {}),  # exact frames keep their keys
            "negative_prompt": request.negative_prompt if guided else None,
            "guided": guided,
            "steps": request.steps,
            "guidance": scale if guided else None,
            "size": list(request.size),
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_config": dict(pipe.scheduler.config),
            "safety_checker": getattr(pipe, "safety_checker", None) is not None,
            "dtype": str(self.model.dtype),
            "device": self.model.device.type,
        }

    def frame_key(self, point: Point, job: Job) -> str:
        """The frame cache's key for one frame."""
        return frame_key(self.frame_fields(point, job))

    def unet_activations(self, request: MorphRequest) -> int:
        """Elements of the UNet's first block's activations for one row: the size of its operations."""
        _, _, height, width = self.latent_shape(self.resolve(request))
        return height * width * int(self.model.pipe.unet.config.block_out_channels[0])

    def latent_shape(self, request: MorphRequest) -> tuple[int, int, int, int]:
        """Shape of one frame's latent, as the pipeline's `prepare_latents` computes it."""
        pipe = self.model.pipe
        scale = pipe.vae_scale_factor
        return (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)

    def _dtype(self) -> torch.dtype:
        """The dtype latents are drawn in: the text encoder's output dtype, as in a plain call."""
        return self.model.dtype
