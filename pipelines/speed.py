"""Exact speed-ups of the UNet: the same frames (float rounding aside), sooner.

A render's time is the UNet's (over 90% of it). What pays, measured by
`python -m benchmarks.speed_bench` (BENCHMARKS.md, "Speed at equal work"):

- **torch.compile** (inductor) of the UNet. On the CPU with `freezing` (weights folded
  in as constants and pre-packed for oneDNN, elementwise work fused into the
  convolutions and matmuls); on CUDA with `max-autotune` (kernels chosen by timing,
  CUDA graphs). Its artifacts are cached on disk (`compile_cache_dir`), so a second
  process compiles from the cache. Compiling still costs seconds to minutes, so:
  the service compiles in the background after it starts and switches to the
  compiled UNet when it is ready; the CLI compiles only when the render is long
  enough to pay the compile back (`pays_to_compile` in pipelines/compiling.py, from the measured break-even).
- **OpenVINO** on a CPU, when the optional package is installed: `auto` converts the
  bundled models' UNet (pipelines/openvino_unet.py), the fastest exact setting measured
  there, compiled for each call shape it meets (pipelines/openvino_shapes.py: fixed shapes
  ran 20-25% faster than one dynamic graph); without it, torch.compile as above.
- **channels_last** on CUDA (the usual tensor-core layout); on this CPU it measured no
  better than the default layout once compiled, so the CPU keeps the default for the UNet,
  but with an accelerated UNet hands the VAE decoder channels-last latents
  (pipelines/render.py): 20-30% faster decodes.
- the thread policy (pipelines/threads.py).

Measured and not on by default: lanes (pipelines/lanes.py, `--lanes N`: rows split over
worker processes; no faster than the compiled UNet on 2 cores). Measured and not kept:
lanes as threads of one process (the modules' Python holds the GIL), inductor's C++
wrapper and fused QKV on the CPU (no gain beyond noise), classic attention instead of
SDPA (slower or equal), torch.compile of the VAE decoder on the CPU (5-7% faster than
the channels-last decode, after a 40-45 s compile: benchmarks/vae_compile_probe.py).

Everything here keeps keyframes exact (>= 40 dB against plain renders: tested). It
applies to plain-attention renders; attention interpolation and the deep-feature
cache install Python-level processors and hooks, so their batches run on the eager UNet.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from pipelines.compiling import (
    COMPILE_ENV, COMPILE_MODES, LATENT_PIXELS_MEASURED, OPENVINO, accelerated_unet, compiled_module,
    pays_to_compile, pays_to_convert, sample_inputs_of,
)

if TYPE_CHECKING:  # torch is imported where it is used: the CLI builds its flags before importing it
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedSettings:
    """Which exact speed-ups a loaded model renders with."""

    compile: str = "auto"  # "auto" | "on" | "off" | "openvino"
    channels_last: bool = False
    lanes: int = 1  # CPU lanes (pipelines/lanes.py): opt-in

    @classmethod
    def for_device(cls, device: "torch.device", compile: str | None = None,
                   lanes: int | str | None = None) -> "SpeedSettings":
        """The measured fastest exact settings of a device kind (`compile` / `lanes` None: the
        environment's, else auto)."""
        from pipelines.lanes import LANES_ENV, parse_lanes

        compile = compile or os.environ.get(COMPILE_ENV) or "auto"
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
        lanes = parse_lanes(os.environ.get(LANES_ENV) if lanes is None else lanes)
        if device.type == "mps":  # inductor does not target MPS
            return cls(compile="off" if compile == "auto" else compile, lanes=lanes)
        return cls(compile=compile, channels_last=device.type == "cuda", lanes=lanes)


class Accelerator:
    """A model's exact speed-ups: set up once, applied around each plain-attention render."""

    def __init__(self, pipe: Any, device: "torch.device", settings: SpeedSettings | None = None) -> None:
        self.pipe = pipe
        self.device = device
        self.settings = settings or SpeedSettings.for_device(device)
        self.mode = self._mode()  # the settings' compile mode, with auto resolved to OpenVINO where it wins
        self.compiled: Any = None
        self.lanes: Any = None  # pipelines.lanes.Lanes, once started
        self._twin: Any = None  # the eager UNet for processors and hooks, once there is a compiled one (hookable)
        self.ready = threading.Event()  # the compiled UNet has run once (compiled) and may be used
        if self.settings.channels_last:
            import torch

            pipe.unet.to(memory_format=torch.channels_last)

    def describe(self) -> str:
        kind = "OpenVINO" if self.mode == OPENVINO else "compiled"
        if self.compiled is None:
            unet = "eager UNet"
        else:
            unet = f"{kind} UNet" if self.ready.is_set() else f"eager UNet ({kind} one being built)"
        return unet if self.lanes is None else f"{unet}, {self.lanes.describe()}"

    def lanes_wanted(self) -> int:
        """CPU lanes for this model: as the settings ask, on a CPU."""
        from pipelines.lanes import lanes_for

        if self.mode == OPENVINO:
            return 1  # OpenVINO splits a call's rows over its own CPU streams
        return lanes_for(self.device.type, self.settings.lanes)

    def start_lanes(self) -> None:
        """Start the lane workers in the background (compiled like this process's UNet when it is compiled);
        renders split their rows over the lanes once every worker is ready."""
        from pipelines.lanes import Lanes

        count = self.lanes_wanted()
        if self.lanes is None and count > 1:
            self.lanes = Lanes(self.pipe.unet, count, compile=self.compiled is not None)
            self.lanes.start_in_background()

    def wanted(self, row_steps: int | None = None, latent_pixels: int = LATENT_PIXELS_MEASURED) -> bool:
        """Should this model be compiled: the settings, and for `auto` the device and the work.

        `row_steps` is the expected work (a CLI render's); None for a long-lived service.
        """
        mode = self.settings.compile
        if mode != "auto":
            return mode in ("on", OPENVINO)
        if self.mode == OPENVINO:
            return row_steps is None or pays_to_convert(self.pipe.unet, row_steps, latent_pixels)
        if self.device.type == "cuda":
            return True
        if self.device.type != "cpu" or self._heavy():
            return False  # measured: a real-size SD 1.5 block gained 0-12% on a CPU, against minutes of compiling
        return row_steps is None or pays_to_compile(row_steps, latent_pixels)

    def _mode(self) -> str:
        """`auto` on a CPU runs the bundled models' UNet with OpenVINO when it is installed (measured
        the fastest exact setting there, BENCHMARKS.md "Speed at equal work"), else as the settings say."""
        from pipelines.openvino_unet import openvino_available

        auto = self.settings.compile == "auto"
        if auto and self.device.type == "cpu" and not self._heavy() and openvino_available():
            return OPENVINO
        return self.settings.compile

    def _heavy(self) -> bool:
        from pipelines.threads import is_heavy

        config = self.pipe.unet.config
        return is_heavy(int(config.sample_size) ** 2 * int(config.block_out_channels[0]))

    def wanted_for(self, request: Any) -> bool:
        """`wanted` for one resolved request's work (the CLI's choice)."""
        return self.wanted(*self._work(request))

    def _work(self, request: Any) -> tuple[int, int]:
        """UNet rows x steps at most (even spacing denoises up to twice the frames; guidance doubles
        the rows), and the latent's pixels."""
        from pipelines.keys import uses_guidance
        from pipelines.walks import get_walk

        rows = len(get_walk(request.walk).plan(request)) * (2 if request.spacing == "even" else 1)
        rows *= 2 if uses_guidance(self.pipe, request.guidance) else 1
        scale = self.pipe.vae_scale_factor
        return rows * request.steps, (request.height // scale) * (request.width // scale)

    def prepare(self) -> None:
        """Compile now: the first plain render after this pays the compile (the CLI's way)."""
        if self.compiled is None:
            self.compiled = accelerated_unet(self.pipe.unet, self.device, self.mode)
            self.ready.set()

    def prepare_in_background(self, sample_rows: tuple[int, ...] = (16, 4)) -> threading.Thread:
        """Compile on a thread with sample inputs of these batch sizes (the second makes the batch
        dimension dynamic: one more compile covers every batch); renders use the eager UNet until done."""
        openvino = self.mode == OPENVINO
        self.compiled = None if openvino else compiled_module(self.pipe.unet, self.device)
        if self.pipe.unet.config.addition_embed_type is not None:  # SDXL's extra inputs: compiled on first use
            self.ready.set()

        def build() -> None:
            import torch

            if self.ready.is_set():
                return
            try:
                if openvino:  # converted here, off the start-up path (seconds; from its disk cache: under one)
                    self.compiled = accelerated_unet(self.pipe.unet, self.device, OPENVINO)
                for rows in sample_rows:
                    with torch.no_grad():
                        self.compiled(*sample_inputs(self.pipe, rows))
                self.ready.set()
                log.info("UNet ready: %s", self.describe())
            except Exception:  # a backend without a compiler keeps the eager UNet; the service goes on
                log.exception("preparing the UNet (%s) failed; rendering with the eager UNet", self.mode)
                self.compiled = None

        thread = threading.Thread(target=build, name="unet-compile", daemon=True)
        thread.start()
        return thread

    @contextmanager
    def hookable(self) -> Iterator[Any]:
        """The UNet to install attention processors or hooks on, called by the pipeline inside the block.

        Without a compiled UNet that is the model's own. With one, it is a twin that shares
        the weights: processors and hooks on the compiled module would fail its guards and
        recompile it (tens of seconds) on the next plain render, and again after each.
        """
        unet = self.pipe.unet
        if self.compiled is None or self.mode == OPENVINO:  # nothing compiled from this module
            yield unet
            return
        if self._twin is None:
            shared = {id(tensor): tensor for tensor in [*unet.parameters(), *unet.buffers()]}
            self._twin = copy.deepcopy(unet, memo=shared)
        self.pipe.unet = self._twin
        try:
            yield self._twin
        finally:
            self.pipe.unet = unet

    @contextmanager
    def applied(self) -> Iterator[bool]:
        """Inside the block the pipeline calls the compiled UNet once it is ready, split over the lanes
        once they are; yields whether it does (False: the eager UNet, bit-equal to plain renders)."""
        from pipelines.lanes import LanedUNet

        compiled = self.compiled if self.compiled is not None and self.ready.is_set() else None
        lanes = self.lanes if self.lanes is not None and self.lanes.usable() else None
        if compiled is None and lanes is None:
            yield False
            return
        unet = self.pipe.unet
        self.pipe.unet = LanedUNet(compiled if compiled is not None else unet, lanes) if lanes is not None else compiled
        try:
            yield True
        finally:
            self.pipe.unet = unet


def sample_inputs(pipe: Any, rows: int) -> tuple:
    """UNet inputs of `rows` rows at the model's own size (for compiling ahead of the first render)."""
    return sample_inputs_of(pipe.unet, rows)
