"""torch.compile as the engine uses it: the flag, the on-disk cache, and when compiling pays.

See pipelines/speed.py for where it is applied; the figures below are measured by
`python -m benchmarks.speed_bench` (BENCHMARKS.md, "Speed at equal work").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the CLI builds its flags before importing it
    import torch

OPENVINO = "openvino"  # the UNet converted and run by OpenVINO on the CPU (pipelines/openvino_unet.py)
COMPILE_MODES = ("auto", "on", "off", OPENVINO)
COMPILE_ENV = "LATENT_MORPH_COMPILE"  # auto | on | off | openvino, for surfaces without a flag (tests, replicas)
COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's own variable; kept when someone set it
# Measured by benchmarks/speed_bench.py on the 2-core CPU (BENCHMARKS.md "Speed at equal work"):
# the compile's cost with an empty and with a warm on-disk cache (a bundled model, two batch
# shapes), and the UNet time per row and denoising step it saves at 16 x 16 latents.
CPU_COMPILE_COLD_S = 180.0  # measured 77-181 s (shapes64) and 88-95 s (scenes) over two runs
CPU_COMPILE_WARM_S = 33.0  # measured 28-29 s and 29-33 s
CPU_SAVED_S_PER_ROW_STEP = 0.0009  # measured 1.47 ms (shapes64) and 0.94 ms (scenes) a row, 16 rows a call
LATENT_PIXELS_MEASURED = 16 * 16
RECOMPILE_LIMIT = 64
# OpenVINO's preparation (convert, then compile for the render's call shape; from the converted model
# on disk: load and compile, plus importing openvino) and the UNet time per row and step it saves
# against the eager UNet.
OPENVINO_PREPARE_COLD_S = 30.0  # measured 8-10 s (shapes64) and 8-28 s (scenes), some on a loaded machine
OPENVINO_PREPARE_WARM_S = 2.0  # measured 1.2-1.8 s (a shape's compile: 0.5 s), and 0.3-0.6 s to import openvino
# against the eager engine, whole renders: measured 3.5-5.3 ms (both models, 16 and 64 frames)
OPENVINO_SAVED_S_PER_ROW_STEP = 0.0035


COMPILE_HELP = ("torch.compile the UNet: 'auto' does where it pays (a GPU; on a CPU the service, in the "
                "background, and a CLI render long enough to pay the compile back), 'on' always, 'off' never; "
                "'openvino' runs it with OpenVINO on the CPU (optional: pip install openvino)")


def add_compile_flag(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """`--compile auto|on|off`, its default from `LATENT_MORPH_COMPILE`: one flag for the CLI and the service."""
    def mode(text: str) -> str:
        chosen = text.strip().lower()
        if chosen not in COMPILE_MODES:
            raise argparse.ArgumentTypeError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {text!r}")
        if chosen == OPENVINO:
            from pipelines.openvino_unet import OpenVINOUnavailable, openvino_available

            if not openvino_available():
                raise argparse.ArgumentTypeError(f"--compile openvino: {OpenVINOUnavailable()}")
        return chosen

    mode.__name__ = "compile"
    env = os.environ if environ is None else environ
    parser.add_argument("--compile", type=mode, default=(env.get(COMPILE_ENV) or "").strip() or "auto",
                        metavar="auto|on|off|openvino", help=f"{COMPILE_HELP} ({COMPILE_ENV}; default auto)")


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
    import torch._dynamo

    os.environ[COMPILE_CACHE_ENV] = str(compile_cache_dir())
    # dynamo keeps at most `recompile_limit` graphs per code object, and every UNet of a class shares
    # one forward: two models, each with a static and a dynamic batch graph (and diffusers' branch at
    # 64 rows), used up the default of 8, after which new shapes silently ran eager
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    if device.type == "cuda":
        return torch.compile(module, mode="max-autotune")
    return torch.compile(module, options={"freezing": True})


def accelerated_unet(unet: "torch.nn.Module", device: "torch.device", mode: str) -> Any:
    """What renders in place of the eager UNet: OpenVINO's stand-in (`mode` openvino), else `torch.compile`'s."""
    if mode == OPENVINO:
        from pipelines.openvino_unet import openvino_unet
        from pipelines.threads import usable_cores

        if device.type != "cpu":
            raise ValueError(f"--compile openvino runs the UNet on the CPU; this model is on {device.type}")
        return openvino_unet(unet, threads=usable_cores())
    return compiled_module(unet, device)


def pays_to_convert(unet: Any, row_steps: int, latent_pixels: int) -> bool:
    """Whether a CPU render of `row_steps` UNet rows x steps saves more than OpenVINO's preparation."""
    from pipelines.openvino_unet import is_converted

    cost = OPENVINO_PREPARE_WARM_S if is_converted(unet) else OPENVINO_PREPARE_COLD_S
    return row_steps * OPENVINO_SAVED_S_PER_ROW_STEP * latent_pixels / LATENT_PIXELS_MEASURED > cost


def pays_to_compile(row_steps: int, latent_pixels: int, cache_warm: bool | None = None) -> bool:
    """Whether a CPU render of `row_steps` UNet rows x steps saves more than the compile costs."""
    warm = compile_cache_dir().is_dir() and any(compile_cache_dir().iterdir()) if cache_warm is None else cache_warm
    cost = CPU_COMPILE_WARM_S if warm else CPU_COMPILE_COLD_S
    saved = row_steps * CPU_SAVED_S_PER_ROW_STEP * latent_pixels / LATENT_PIXELS_MEASURED
    return CPU_SAVED_S_PER_ROW_STEP > 0 and saved > cost


def sample_inputs_of(unet: Any, rows: int) -> tuple:
    import torch

    config = unet.config
    side = config.sample_size
    sample = torch.zeros(rows, config.in_channels, side, side, dtype=unet.dtype, device=unet.device)
    context = torch.zeros(rows, 77, config.cross_attention_dim, dtype=unet.dtype, device=unet.device)
    return sample, torch.tensor(500, device=unet.device), context
