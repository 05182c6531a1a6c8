"""The batched denoise: mixed latents and embeddings in, pictures out, through the stock pipeline.

Nothing here re-implements a sampler: a batch of points is one call of the loaded
diffusers pipeline with `latents=`, `prompt_embeds=` and `negative_prompt_embeds=`;
progress and cancellation ride on its `callback_on_step_end`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from pipelines import threads
from pipelines.attention import Mixing, interpolated_attention
from pipelines.deepcache import deep_feature_cache

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.speed import Accelerator

    from pipelines.walks import Point


class MorphCancelled(Exception):
    """The caller's `should_stop()` returned True; raised at the next step boundary."""


@dataclass
class StepProgress:
    """Progress of a morph, reported after every denoising step."""

    frames_done: int
    frames_total: int
    step: int  # step within the current batch, 1-based
    steps_total: int
    batch_frames: int = 1  # frames being denoised together in the current batch


@dataclass
class RenderedFrame:
    """One finished frame and where it sits on its walk."""

    index: int  # position in the output, 0-based
    point: "Point"
    image: "Image.Image"
    nsfw: bool = False  # flagged by the safety checker (only when it is kept)
    caption: str = ""

    @property
    def t(self) -> float | None:
        """t inside its segment, for walks along a path (None on a grid)."""
        return self.point.get("t")

    @property
    def segment(self) -> int | None:
        value = self.point.get("segment")
        return None if value is None else int(value)


class Progress:
    """Counts finished frames and turns pipeline step callbacks into StepProgress / cancellation."""

    def __init__(
        self,
        frames_total: int,
        on_step: Callable[[StepProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.frames_done = 0
        self.frames_total = frames_total
        self.batch_frames = 1
        self.on_step = on_step
        self.should_stop = should_stop

    def check_stop(self) -> None:
        """Raise MorphCancelled when the caller asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise MorphCancelled("morph cancelled")

    def callback(self, pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        """`callback_on_step_end`: raising here unwinds the pipeline call at a step boundary.

        Raising (rather than setting `pipe._interrupt`) skips the pointless VAE decode
        of a half-denoised batch; `__call__` resets its state on the next call, so the
        pipeline stays usable.
        """
        self.check_stop()
        threads.rebalance()  # the machine may have got busier (or freer) since the last step
        if self.on_step is not None:
            self.on_step(
                StepProgress(self.frames_done, self.frames_total, step + 1, pipe.num_timesteps, self.batch_frames)
            )
        return {}


def default_batch_size(device: torch.device, width: int, height: int) -> int:
    """Frames per pipeline call: as many as comfortably fit, fewer for large images."""
    pixels = width * height
    if device.type == "cuda":
        return max(1, min(16, 8 * 512 * 512 // pixels))
    if device.type == "mps":
        return max(1, min(8, 2 * 512 * 512 // pixels))
    # On a CPU a bigger batch feeds larger matrices to each operation: the bundled models' UNet
    # measured 5.1 / 4.0 / 3.4 ms a row at 8 / 16 / 32 rows (eager; 4.0 / 3.1 / 2.75 compiled).
    # 8 frames (16 rows with guidance) takes most of that and still streams a 16-frame morph in two.
    return max(1, min(8, 4 * 256 * 256 // pixels))


def batched(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def step_generators(seeds: list[int], shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Generator]:
    """Per-frame generators for schedulers that add noise while stepping (ancestral ones).

    Each is seeded with the nearest key's seed and advanced past the latent draw, so
    a keyframe's generator is in the very state the plain pipeline's is after
    `prepare_latents`: keyframes stay exact even with stochastic samplers.
    """
    generators = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        torch.randn(shape, generator=generator, dtype=dtype)
        generators.append(generator)
    return generators


def denoise(
    pipe: Any,
    inputs: dict[str, torch.Tensor],
    generators: list[torch.Generator],
    steps: int,
    guidance: float,
    size: tuple[int, int],
    progress: Progress,
    frames: int | None = None,
    accelerated: bool = False,
) -> tuple[list["Image.Image"], list[bool]]:
    """One call of the stock pipeline for a batch: (images, flagged by the safety checker).

    `frames` is how many of the batch's rows are output frames (the rest are anchors
    rendered for attention interpolation); progress counts those only. `accelerated`: the
    UNet is a compiled or converted one (frames within float rounding of plain renders, not
    bit-equal), so on a CPU the VAE may decode in its faster layout too.
    """
    progress.check_stop()
    count = inputs["latents"].shape[0]
    progress.batch_frames = count if frames is None else frames
    output = pipe(
        **inputs,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=size[0],
        height=size[1],
        generator=generators,
        output_type="pil",
        callback_on_step_end=(decoding_channels_last(progress.callback) if accelerated and pipe.device.type == "cpu"
                              else progress.callback),
    )
    # SDXL pipelines have no safety checker and no such field.
    flagged = getattr(output, "nsfw_content_detected", None) or [False] * count
    progress.frames_done += count if frames is None else frames
    return list(output.images), [bool(flag) for flag in flagged]


def decoding_channels_last(callback: Callable[..., dict]) -> Callable[..., dict]:
    """`callback` that also hands the last step's latents to the VAE in channels-last layout: the
    same values, decoded 20-30% faster on the CPU (oneDNN's NHWC convolutions; measured on both
    bundled models' decoders, 8 frames). Not bit-equal to the default layout's decode (about
    90 dB), so eager renders keep the default: their keyframes are plain diffusers' pixels."""
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        changed = callback(pipe, step, timestep, tensors)
        if step + 1 == pipe.num_timesteps and "latents" in tensors:
            changed = {**changed, "latents": tensors["latents"].to(memory_format=torch.channels_last)}
        return changed

    return on_step_end


@contextmanager
def unet_for_batch(accelerator: "Accelerator", mixing: Mixing | None, deep_cache_interval: int) -> Iterator[bool]:
    """The UNet a batch runs on: the compiled one (exact speed-ups) for plain renders; the eager one
    with attention processors (interpolation) or hooks (the approximate deep-feature cache).
    Yields whether the batch runs on an accelerated UNet."""
    if mixing is None and deep_cache_interval == 1:
        with accelerator.applied() as accelerated:
            yield accelerated
        return
    with accelerator.hookable() as unet, interpolated_attention(unet, mixing), \
            deep_feature_cache(unet, deep_cache_interval):
        yield False
