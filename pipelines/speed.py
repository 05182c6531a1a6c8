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
  enough to pay the compile back (`pays_to_compile`, from the measured break-even).
- **channels_last** on CUDA (the usual tensor-core layout); on this CPU it measured no
  better than the default layout once compiled, so the CPU keeps the default.
- the thread policy (pipelines/threads.py).

Measured and not kept: splitting a batch over single-threaded lanes (the Python side
of eager modules holds the GIL, so two lanes ran no faster than two intra-op threads),
inductor's C++ wrapper and fused QKV projections on the CPU (no gain beyond noise),
classic attention instead of SDPA (slower or equal). OpenVINO (`benchmarks/openvino_probe.py`)
ties inductor on the scenes UNet and beats it by 1.2x on shapes64, and prepares in 8 s
instead of 23-90 s; it is a 180 MB runtime and is not a backend of the engine yet.

Everything here keeps keyframes exact (>= 40 dB against plain renders: tested). It
applies to plain-attention renders; attention interpolation and the deep-feature
cache install Python-level processors and hooks, so their batches run on the eager UNet.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # torch is imported where it is used: the CLI builds its flags before importing it
    import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("auto", "on", "off")
COMPILE_ENV = "LATENT_MORPH_COMPILE"  # auto | on | off, for surfaces without a flag (tests, replicas)
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's own variable; kept when someone set it
# Measured by benchmarks/speed_bench.py on the 2-core CPU (BENCHMARKS.md "Speed at equal work"):
# the compile's cost with an empty and with a warm on-disk cache (a bundled model, two batch
# shapes), and the UNet time per row and denoising step it saves at 16 x 16 latents.
CPU_COMPILE_COLD_S = 90.0  # measured 77 s (shapes64) and 88 s (scenes)
CPU_COMPILE_WARM_S = 33.0  # measured 28 s and 33 s
CPU_SAVED_S_PER_ROW_STEP = 0.0009  # measured 1.47 ms (shapes64) and 0.94 ms (scenes) a row, 16 rows a call
LATENT_PIXELS_MEASURED = 16 * 16


@dataclass(frozen=True)
class SpeedSettings:
    """Which exact speed-ups a loaded model renders with."""

    compile: str = "auto"  # "auto" | "on" | "off"
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: "torch.device", compile: str | None = None) -> "SpeedSettings":
        """The measured fastest exact settings of a device kind (`compile` None: the environment's, else auto)."""
        compile = compile or os.environ.get(COMPILE_ENV) or "auto"
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
        if device.type == "mps":  # inductor does not target MPS
            return cls(compile="off" if compile == "auto" else compile)
        return cls(compile=compile, channels_last=device.type == "cuda")


COMPILE_HELP = ("torch.compile the UNet: 'auto' does where it pays (a GPU; on a CPU the service, in the "
                "background, and a CLI render long enough to pay the compile back), 'on' always, 'off' never")


def add_compile_flag(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """`--compile auto|on|off`, its default from `LATENT_MORPH_COMPILE`: one flag for the CLI and the service."""
    def mode(text: str) -> str:
        if text.strip().lower() not in COMPILE_MODES:
            raise argparse.ArgumentTypeError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {text!r}")
        return text.strip().lower()

    mode.__name__ = "compile"
    env = os.environ if environ is None else environ
    parser.add_argument("--compile", type=mode, default=(env.get(COMPILE_ENV) or "").strip() or "auto",
                        metavar="auto|on|off", help=f"{COMPILE_HELP} ({COMPILE_ENV}; default auto)")


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels and graphs between processes: TORCHINDUCTOR_CACHE_DIR when
    someone chose it, else a folder beside the frame cache (inductor's own default is in /tmp)."""
    chosen = os.environ.get(COMPILE_CACHE_ENV)
    if chosen and chosen != _inductor_default():
        return Path(chosen)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "latent-morph" / "torch-compile"


def _inductor_default() -> str | None:
    """Inductor writes its default into the environment when it is first imported (diffusers imports it)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: treat any value as chosen
        return None
    return default_cache_dir()


def compiled_module(module: "torch.nn.Module", device: "torch.device") -> Any:
    """`torch.compile` as the engine uses it (compiled on the first call, cached on disk)."""
    import torch

    os.environ[COMPILE_CACHE_ENV] = str(compile_cache_dir())
    if device.type == "cuda":
        return torch.compile(module, mode="max-autotune")
    return torch.compile(module, options={"freezing": True})


def pays_to_compile(row_steps: int, latent_pixels: int, cache_warm: bool | None = None) -> bool:
    """Whether a CPU render of `row_steps` UNet rows x steps saves more than the compile costs."""
    warm = compile_cache_dir().is_dir() and any(compile_cache_dir().iterdir()) if cache_warm is None else cache_warm
    cost = CPU_COMPILE_WARM_S if warm else CPU_COMPILE_COLD_S
    saved = row_steps * CPU_SAVED_S_PER_ROW_STEP * latent_pixels / LATENT_PIXELS_MEASURED
    return CPU_SAVED_S_PER_ROW_STEP > 0 and saved > cost


class Accelerator:
    """A model's exact speed-ups: set up once, applied around each plain-attention render."""

    def __init__(self, pipe: Any, device: "torch.device", settings: SpeedSettings | None = None) -> None:
        self.pipe = pipe
        self.device = device
        self.settings = settings or SpeedSettings.for_device(device)
        self.compiled: Any = None
        self._twin: Any = None  # the eager UNet for processors and hooks, once there is a compiled one (hookable)
        self.ready = threading.Event()  # the compiled UNet has run once (compiled) and may be used
        if self.settings.channels_last:
            import torch

            pipe.unet.to(memory_format=torch.channels_last)

    def describe(self) -> str:
        if self.compiled is None:
            return "eager UNet"
        return "compiled UNet" if self.ready.is_set() else "eager UNet (compiled one being built)"

    def wanted(self, row_steps: int | None = None, latent_pixels: int = LATENT_PIXELS_MEASURED) -> bool:
        """Should this model be compiled: the settings, and for `auto` the device and the work.

        `row_steps` is the expected work (a CLI render's); None for a long-lived service.
        """
        mode = self.settings.compile
        if mode != "auto":
            return mode == "on"
        if self.device.type == "cuda":
            return True
        if self.device.type != "cpu" or self._heavy():
            return False  # measured: a real-size SD 1.5 block gained 0-12% on a CPU, against minutes of compiling
        return row_steps is None or pays_to_compile(row_steps, latent_pixels)

    def _heavy(self) -> bool:
        from pipelines.threads import is_heavy

        config = self.pipe.unet.config
        return is_heavy(int(config.sample_size) ** 2 * int(config.block_out_channels[0]))

    def wanted_for(self, request: Any) -> bool:
        """`wanted` for one resolved request's work: UNet rows x steps at most (even spacing denoises
        up to twice the frames; guidance doubles the rows), at its latent size (the CLI's choice)."""
        from pipelines.keys import uses_guidance
        from pipelines.walks import get_walk

        rows = len(get_walk(request.walk).plan(request)) * (2 if request.spacing == "even" else 1)
        rows *= 2 if uses_guidance(self.pipe, request.guidance) else 1
        scale = self.pipe.vae_scale_factor
        return self.wanted(rows * request.steps, (request.height // scale) * (request.width // scale))

    def prepare(self) -> None:
        """Compile now: the first plain render after this pays the compile (the CLI's way)."""
        if self.compiled is None:
            self.compiled = compiled_module(self.pipe.unet, self.device)
            self.ready.set()

    def prepare_in_background(self, sample_rows: tuple[int, ...] = (16, 4)) -> threading.Thread:
        """Compile on a thread with sample inputs of these batch sizes (the second makes the batch
        dimension dynamic: one more compile covers every batch); renders use the eager UNet until done."""
        self.compiled = compiled_module(self.pipe.unet, self.device)
        if self.pipe.unet.config.addition_embed_type is not None:  # SDXL's extra inputs: compiled on first use
            self.ready.set()

        def build() -> None:
            import torch

            if self.ready.is_set():
                return
            try:
                for rows in sample_rows:
                    with torch.no_grad():
                        self.compiled(*sample_inputs(self.pipe, rows))
                self.ready.set()
                log.info("UNet compiled (cache: %s)", os.environ.get(COMPILE_CACHE_ENV))
            except Exception:  # a backend without a compiler keeps the eager UNet; the service goes on
                log.exception("torch.compile failed; rendering with the eager UNet")
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
        if self.compiled is None:
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
    def applied(self) -> Iterator[None]:
        """Inside the block the pipeline calls the compiled UNet, once it is ready."""
        if self.compiled is None or not self.ready.is_set():
            yield
            return
        unet = self.pipe.unet
        self.pipe.unet = self.compiled
        try:
            yield
        finally:
            self.pipe.unet = unet


def sample_inputs(pipe: Any, rows: int) -> tuple:
    """UNet inputs of `rows` rows at the model's own size (for compiling ahead of the first render)."""
    import torch

    unet = pipe.unet
    config = unet.config
    side = config.sample_size
    sample = torch.zeros(rows, config.in_channels, side, side, dtype=unet.dtype, device=unet.device)
    context = torch.zeros(rows, 77, config.cross_attention_dim, dtype=unet.dtype, device=unet.device)
    return sample, torch.tensor(500, device=unet.device), context
