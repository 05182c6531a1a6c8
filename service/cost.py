"""What a morph will cost before it runs, and the refusal of what cannot finish in time.

Nearly all of a morph's time is UNet passes, so its cost is counted in UNet rows
(one frame's latent through the UNet for one denoising step):

    seconds = SAFETY x (rows x steps x row_s(pixels) + frames x frame_s(pixels))

- rows: every frame denoised (twice the output with `spacing="even"`: the pilot pass
  plus the re-timed frames, the engine's budget), doubled by classifier-free guidance,
  plus the keyframes that ride along each batch as anchors with `attention="interpolate"`,
  plus a picture key's inversion (one row per step, at guidance 1);
- row_s, frame_s: seconds per row per step, and per frame outside the steps (prompt
  encoding, VAE decode), at the frame's pixel count. `measure` times the loaded model
  once at start-up (a few steps at 64x64, batched as the renderer batches, and one
  frame at the largest size the limits allow) and interpolates linearly in pixels
  between the two: attention grows faster than the pixels, so the straight line lies
  above the true curve and errs high.
  A model on Ray Serve replicas is not timed from here: `REMOTE_SPEEDS` holds stated
  figures per device.

A request whose estimate is over the deadline (`--deadline-s`) is refused before any
work, with what would fit: at most so many frames (or so large a grid), or so many steps.
The cache is not consulted: a morph that would mostly come from it is estimated in full.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pipelines.limits import device_limits  # noqa: F401 - the service's per-device defaults, declared there
from service.limits import LimitError, Limits

if TYPE_CHECKING:
    from pipelines.request import MorphRequest

log = logging.getLogger(__name__)

# Estimates are multiplied by this: the machine may be busier than when it was timed, and the
# frames, GIF and MP4 are written inside the deadline too. Small, as the estimate errs high already
# (one-frame batches at the large size, the straight line over a convex curve, every key an anchor).
SAFETY = 1.25
SMALL_SIDE = 64  # the small size `measure` times (the bundled models' native size or near it)
TIMED_STEPS = 3  # steps per timed render: the gaps between their callbacks give the step time
TIMED_GUIDANCE = 5.0  # above 1: the timed render uses guidance, two rows per frame
PLACES = {"cpu": "this CPU", "cuda": "this GPU", "mps": "this Mac's GPU"}


@dataclass(frozen=True)
class Speed:
    """Seconds per UNet row per step, and per frame besides, at a few pixel counts (one model, one device)."""

    device: str  # "cpu", "cuda", "mps": decides the batch size, hence the anchors per batch
    points: tuple[tuple[int, float, float], ...]  # (pixels, row_s, frame_s), pixels increasing
    guided: bool = True  # False for a guidance-distilled UNet: one row per frame whatever the guidance
    where: str = ""  # for messages, when not this machine's device: "a Ray replica's GPU"

    @property
    def place(self) -> str:
        return self.where or PLACES.get(self.device, self.device)

    def row_s(self, pixels: int) -> float:
        return _along(self.points, pixels, 1)

    def frame_s(self, pixels: int) -> float:
        return _along(self.points, pixels, 2)


def _along(points: tuple[tuple[int, float, float], ...], pixels: int, column: int) -> float:
    """Linear in pixels between measured points; the smallest's value below them, proportional above."""
    first, last = points[0], points[-1]
    if pixels <= first[0]:
        return first[column]
    if pixels >= last[0]:
        return last[column] * pixels / last[0]
    for low, high in itertools.pairwise(points):
        if pixels <= high[0]:
            share = (pixels - low[0]) / (high[0] - low[0])
            return low[column] + share * (high[column] - low[column])
    raise AssertionError("unreachable")


# A model on Ray Serve replicas cannot be timed from the front end. GPU: SD-1.5-sized UNets in
# float16 on a T4-class card (about 7 steps/s at 512x512 with guidance), SDXL-sized at 1024x1024;
# a faster card is only refused more often than it need be. CPU: the bundled scenes model timed by
# `measure` on a 2-core machine (one frame per batch); a bigger model on a remote CPU is underestimated.
REMOTE_SPEEDS = {
    "cuda": Speed("cuda", ((64 * 64, 0.005, 0.02), (512 * 512, 0.075, 0.15), (1024 * 1024, 0.7, 1.2)),
                  where="a Ray replica's GPU"),
    "cpu": Speed("cpu", ((64 * 64, 0.02, 0.05), (128 * 128, 0.025, 0.05), (256 * 256, 0.055, 0.12),
                         (512 * 512, 0.17, 0.5)), where="a Ray replica's CPU"),
}


# per-device defaults: `device_limits` is declared with the limits, in pipelines/limits.py

# ---------------------------------------------------------------- timing a loaded model

def largest_side(limits: Limits) -> int:
    """The side of the largest square frame (a multiple of 8) within `limits.max_pixels`."""
    return max(8, math.isqrt(limits.max_pixels) // 8 * 8)


def speed_of(morpher: Any, limits: Limits) -> Speed | None:
    """How fast `morpher` renders: timed when its pipeline is in this process, stated for a
    remote one, None when unknown (a stand-in without a pipeline: no cost check)."""
    own = getattr(morpher, "speed", None)
    if isinstance(own, Speed):
        return own
    model = getattr(morpher, "model", None)
    if getattr(model, "pipe", None) is not None:
        return measure(model, largest_side(limits))
    if hasattr(morpher, "morph_work") and model is not None:
        return REMOTE_SPEEDS.get(model.device.type)
    return None


def measure(model: Any, largest: int) -> Speed | None:
    """Time the loaded pipeline at 64x64 (a batch as the renderer makes it) and at `largest` x `largest`
    (one frame: batching buys little there on a CPU, and a GPU is only refused more often than needed).

    None when a timed render fails (say, out of memory at the largest size): no cost check then.
    """
    from pipelines import threads
    from pipelines.render import default_batch_size

    threads.rebalance()  # the threads a render would use now (this runs in the start-up thread)
    small = min(SMALL_SIDE, largest)
    sizes = {small: default_batch_size(model.device, small, small), largest: 1}
    try:
        points = tuple(_timed_render(model.pipe, model.device, side, batch) for side, batch in sorted(sizes.items()))
    except Exception as error:  # noqa: BLE001 - a failed timing only loses the cost check, never the service
        log.warning("could not time %s, requests are not checked against the deadline: %s", model.name, error)
        return None
    guided = getattr(model.pipe.unet.config, "time_cond_proj_dim", None) is None
    for pixels, row_s, frame_s in points:
        side = math.isqrt(pixels)
        log.info("%s on %s: %.1f ms per UNet row per step at %dx%d (%.3g rows/s), %.0f ms per frame besides",
                 model.name, model.device.type, row_s * 1e3, side, side, 1 / row_s, frame_s * 1e3)
    return Speed(model.device.type, points, guided)


def _timed_render(pipe: Any, device: Any, side: int, batch: int) -> tuple[int, float, float]:
    """(pixels, seconds per row per step, seconds per frame besides) from one timed render.

    The step time is the shortest gap between step callbacks (a busy machine only adds time);
    the rest is what comes before the first step and after the last (prompts, latents, decode).
    """
    import torch

    stamps: list[float] = []

    def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        _synchronize(torch, device)  # a GPU step has only been queued until then
        stamps.append(time.perf_counter())
        return {}

    started = time.perf_counter()
    pipe(prompt=[""] * batch, num_inference_steps=TIMED_STEPS, guidance_scale=TIMED_GUIDANCE, width=side,
         height=side, generator=torch.Generator("cpu").manual_seed(0),  # never the global RNG
         callback_on_step_end=on_step)
    _synchronize(torch, device)
    ended = time.perf_counter()
    step_s = min(later - earlier for earlier, later in itertools.pairwise(stamps))
    rows = batch * (2 if getattr(pipe, "do_classifier_free_guidance", True) else 1)
    besides = (stamps[0] - started - step_s) + (ended - stamps[-1])
    return side * side, step_s / rows, max(besides, 0.0) / batch


def _synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------- the estimate

def frames_rendered(request: MorphRequest) -> int:
    """Frames the engine denoises for a resolved request (the even re-timing's whole budget)."""
    from pipelines.spacing import EVEN_BUDGET
    from pipelines.walks import PathWalk, get_walk

    walk = get_walk(request.walk)
    count = len(walk.plan(request))
    if request.spacing == "even" and isinstance(walk, PathWalk):
        count = int(EVEN_BUDGET * count)
    return count


def unet_rows(request: MorphRequest, speed: Speed) -> int:
    """UNet rows per denoising step, summed over the whole morph."""
    from pipelines.keys import is_image_spec
    from pipelines.render import default_batch_size
    from pipelines.request import walk_reads

    frames = frames_rendered(request)
    rows = frames
    if request.attention == "interpolate" and walk_reads(request.walk, "attention"):
        import torch

        batch = request.batch_size or default_batch_size(torch.device(speed.device), request.width, request.height)
        rows += len(request.prompts) * math.ceil(frames / batch)  # at most every key, in every batch
    if speed.guided and request.guidance > 1:
        rows *= 2
    return rows + sum(is_image_spec(prompt) for prompt in request.prompts)  # inversions: guidance 1


def estimate_s(request: MorphRequest, speed: Speed) -> float:
    """Seconds a resolved request should take at most, safety factor included."""
    pixels = request.width * request.height
    work = unet_rows(request, speed) * request.steps * speed.row_s(pixels)
    return SAFETY * (work + frames_rendered(request) * speed.frame_s(pixels))


def check_cost(request: MorphRequest, speed: Speed | None, deadline_s: float) -> None:
    """Raise LimitError, saying what would fit, when a resolved request cannot finish within the deadline."""
    if speed is None:
        return
    seconds = estimate_s(request, speed)
    if seconds <= deadline_s:
        return
    fits = [hint for hint in (_fewer_frames(request, speed, deadline_s), _fewer_steps(request, speed, deadline_s))
            if hint]
    advice = ", or ".join([*fits, "a smaller size"]) if fits else "try a smaller size"
    raise LimitError(f"This morph would take about {seconds:.0f} s on {speed.place}, over the {deadline_s:g} s "
                     f"limit per job (--deadline-s): {'try ' if fits else ''}{advice}.")


def _valid(request: MorphRequest, **changes: Any) -> bool:
    from pipelines.request import check_request

    try:
        check_request(replace(request, **changes))  # e.g. a chain needs a frame per prompt
    except ValueError:
        return False
    return True


def _fits(request: MorphRequest, speed: Speed, deadline_s: float, **changes: Any) -> bool:
    return _valid(request, **changes) and estimate_s(replace(request, **changes), speed) <= deadline_s


def _fewer_frames(request: MorphRequest, speed: Speed, deadline_s: float) -> str:
    """'at most N frames at these settings' (a grid: 'a grid of at most RxC'), or '' when none fits."""
    from pipelines.request import walk_reads

    if walk_reads(request.walk, "grid"):
        rows, columns = request.grid
        sizes = [(r, c) for r in range(2, rows + 1) for c in range(2, columns + 1) if (r, c) != (rows, columns)]
        fitting = [size for size in sizes if _fits(request, speed, deadline_s, grid=size)]
        if not fitting:
            return ""
        best = max(fitting, key=lambda size: (size[0] * size[1], -abs(size[0] - size[1])))
        return f"a grid of at most {best[0]}x{best[1]} at these settings"
    if not walk_reads(request.walk, "frames"):
        return ""
    fewest = next((frames for frames in range(2, request.frames) if _valid(request, frames=frames)), request.frames)
    most = _most(lambda frames: _fits(request, speed, deadline_s, frames=frames), fewest, request.frames - 1)
    return f"at most {most} frames at these settings" if most else ""


def _fewer_steps(request: MorphRequest, speed: Speed, deadline_s: float) -> str:
    most = _most(lambda steps: _fits(request, speed, deadline_s, steps=steps), 1, request.steps - 1)
    return f"at most {most} step{'s' if most > 1 else ''}" if most else ""


def _most(fits: Any, low: int, high: int) -> int:
    """The largest n in [low, high] with fits(n), the cost growing with n; 0 when none fits."""
    if high < low or not fits(low):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
