"""The ways a morph's frames can be rendered, for speed comparisons at equal work.

Every method renders the same frames of a 2-prompt chain at linear spacing (same t,
same noise, same embeddings, same steps and pixels), so their times compare work for
work and their pictures differ by float rounding only (exact methods) or by what an
approximation costs (measured as PSNR against the exact frames):

- `stock per-frame`: one stock pipeline call per frame, prompts encoded for every frame
  (the A1111 travel scripts, the ComfyUI walk nodes);
- `stock batched 4`: prompts encoded once, frames through the stock pipeline 4 at a
  time with `prompt_embeds=` and `latents=` (stable-diffusion-videos, diffusers'
  community walk pipelines);
- `engine` with its exact speed-ups on or off (compiled; split over CPU lanes), and its
  approximate modes.

Used by `benchmarks/speed_bench.py` (CPU) and `benchmarks/gpu_bench.py` (CUDA).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from PIL import Image

from pipelines.engine import Morpher
from pipelines.interpolate import interpolate
from pipelines.compiling import OPENVINO
from pipelines.keys import draw_noise, keys_for, uses_guidance
from pipelines.lanes import lanes_for
from pipelines.threads import usable_cores
from pipelines.openvino_unet import openvino_available
from pipelines.loading import LoadedModel
from pipelines.request import MorphRequest
from pipelines.speed import SpeedSettings
from pipelines.walks import ChainWalk

PEER_BATCH = 4  # what stable-diffusion-videos and diffusers' community walk pipelines batch
_morphers: dict[tuple, Morpher] = {}
lane_start_s: dict[tuple, float] = {}  # (model name, compiled) -> seconds from starting lanes to their use


@dataclass(frozen=True)
class Method:
    """One way to render a request's frames."""

    name: str
    exact: bool  # the model's own frames (float rounding aside)
    render: Callable[[LoadedModel, MorphRequest], list[Image.Image]]
    note: str = ""


def _encoded(pipe: Any, request: MorphRequest) -> tuple[list, list]:
    """Each prompt's (embeds, negative embeds) from `encode_prompt`, and each key's noise."""
    device = pipe._execution_device
    guided = uses_guidance(pipe, request.guidance)
    seeds = [key.seed for key in keys_for(request.prompts, request.seeds)]
    scale = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, request.height // scale, request.width // scale)
    cond = [pipe.encode_prompt(prompt, device, 1, guided, request.negative_prompt or None) for prompt in request.prompts]
    return cond, [draw_noise(seed, shape, cond[0][0].dtype, device) for seed in seeds]


def _frame_inputs(request: MorphRequest, cond: list, noise: list, point: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One frame's (prompt embeds, latents, step generator seed), mixed as the engine mixes a chain."""
    segment, t = int(point["segment"]), float(point["t"])
    start, end = segment, (segment + 1) % len(request.prompts)
    seeds = [key.seed for key in keys_for(request.prompts, request.seeds)]
    return (interpolate(cond[start][0], cond[end][0], t, request.interp),
            interpolate(noise[start], noise[end], t, request.noise_interp),
            seeds[start] if t < 0.5 else seeds[end])


def _plan(request: MorphRequest) -> list:
    return ChainWalk().plan(replace(request, spacing="linear"))


def _step_generator(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Generator:
    generator = torch.Generator("cpu").manual_seed(seed)
    torch.randn(shape, generator=generator, dtype=dtype)  # as the engine's step generators
    return generator


@torch.no_grad()
def stock_batched(model: LoadedModel, request: MorphRequest, batch: int = PEER_BATCH) -> list[Image.Image]:
    """Prompts encoded once; the stock pipeline called on `batch` frames at a time."""
    pipe = model.pipe
    cond, noise = _encoded(pipe, request)
    embeds, latents, seeds = zip(*[_frame_inputs(request, cond, noise, point) for point in _plan(request)])
    images: list[Image.Image] = []
    for start in range(0, len(latents), batch):
        rows = slice(start, start + batch)
        output = pipe(
            prompt_embeds=torch.cat(embeds[rows]),
            negative_prompt=[request.negative_prompt] * len(latents[rows]),  # encoded by the pipeline, every call
            latents=torch.cat(latents[rows]),
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            height=request.height,
            width=request.width,
            generator=[_step_generator(seed, latents[0].shape, latents[0].dtype) for seed in seeds[rows]],
            output_type="pil",
        )
        images += output.images
    return images


@torch.no_grad()
def stock_per_frame(model: LoadedModel, request: MorphRequest) -> list[Image.Image]:
    """One stock pipeline call per frame, both prompts encoded again for every frame."""
    images: list[Image.Image] = []
    for point in _plan(request):
        cond, noise = _encoded(model.pipe, request)  # what these tools do: both prompts encoded for every frame
        embeds, latents, seed = _frame_inputs(request, cond, noise, point)
        output = model.pipe(
            prompt_embeds=embeds,
            negative_prompt=request.negative_prompt,
            latents=latents,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            height=request.height,
            width=request.width,
            generator=_step_generator(seed, latents.shape, latents.dtype),
            output_type="pil",
        )
        images += output.images
    return images


def engine(settings: SpeedSettings, speed: str = "exact", steps_scale: float = 1.0,
           batch_size: int | None = None) -> Callable:
    """The engine with these exact speed-ups, the request's `speed` mode, its steps scaled and its
    batch size (None: the engine's default for the device and size)."""
    def render(model: LoadedModel, request: MorphRequest) -> list[Image.Image]:
        morpher = _morphers.get((id(model), settings))
        if morpher is None:  # one per model and settings, kept: a compiled UNet stays compiled
            morpher = _morphers[(id(model), settings)] = Morpher(model, speed=settings)
            if morpher.accelerator.wanted():
                morpher.accelerator.prepare()
            _start_lanes(model, morpher)
        changed = replace(request, speed=speed, steps=max(1, round(request.steps * steps_scale)), batch_size=batch_size)
        # the frames alone: the manifest's extras (nearest prompts, path map) are not rendering
        return [frame.image for frame in morpher.frames(changed)]

    return render


def _start_lanes(model: LoadedModel, morpher: Morpher) -> None:
    """Start the settings' lanes and wait for them (their start is timed, like a compile, not rendering)."""
    accelerator = morpher.accelerator
    began = time.perf_counter()
    accelerator.start_lanes()
    if accelerator.lanes is not None:
        if not accelerator.lanes.ready.wait(600):
            raise RuntimeError(f"lanes did not start: {accelerator.describe()}")
        lane_start_s[(model.name, accelerator.lanes.compile)] = time.perf_counter() - began


def methods(device: torch.device, compile_too: bool = True) -> list[Method]:
    """Every method, baselines first; the engine's exact speed-ups one by one, then its approximate modes."""
    cores_lanes = lanes_for(device.type, asked=usable_cores())  # one lane per core
    eager = SpeedSettings.for_device(device, compile="off", lanes=1)
    compiled = SpeedSettings.for_device(device, compile="on", lanes=1)
    found = [
        Method("stock per-frame", True, stock_per_frame, "one call per frame, prompts encoded per frame"),
        Method(f"stock batched {PEER_BATCH}", True, stock_batched, "what the peers do"),
        Method(f"engine, eager, {PEER_BATCH} a batch", True, engine(eager, batch_size=PEER_BATCH),
               "the engine before these speed-ups"),
        Method("engine, eager", True, engine(eager), "the engine's batch (8 frames at these sizes)"),
    ]
    if compile_too:
        found.append(Method("engine, compiled", True, engine(compiled), "torch.compile of the UNet, the engine's batch"))
    best = compiled if compile_too else eager
    if cores_lanes > 1:
        lanes = f"{cores_lanes} lanes"
        laned = replace(best, lanes=cores_lanes)
        found.append(Method(f"engine, {'compiled' if compile_too else 'eager'}, {lanes}", True, engine(laned),
                            "and each call's rows split over one process per core (--lanes)"))
    if compile_too and device.type == "cpu" and openvino_available():  # the optional extra, when installed
        found.append(Method("engine, OpenVINO", True, engine(SpeedSettings.for_device(device, compile=OPENVINO)),
                            "the UNet run by OpenVINO, a stream per core"))
    found += [
        Method("deepcache-2", False, engine(best, "deepcache-2"), "deep features reused on 1 of 2 steps (eager UNet)"),
        Method("deepcache-3", False, engine(best, "deepcache-3"), "deep features reused on 2 of 3 steps (eager UNet)"),
        Method("half the steps", False, engine(best, steps_scale=0.5),
               "the model's own solver at half the steps, exact speed-ups on"),
    ]
    return found
