"""The UNet alone: milliseconds per call, FLOP/s, and the share of the machine's peak it reaches.

The peak is what this machine's BLAS reaches on one large float32 matmul (2048^3) with
the same threads: the most a dense network can hope for here. FLOPs are counted by
torch's `FlopCounterMode` (matmuls and convolutions; the rest is small). Used by
`benchmarks/speed_bench.py`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipelines.compiling import compiled_module, sample_inputs_of
from pipelines.lanes import LanedUNet, Lanes, lanes_for
from pipelines.threads import usable_cores
from pipelines.openvino_unet import openvino_available, openvino_unet

ENGINE_ROWS = 16  # 8 frames a batch (the CPU default for these sizes), doubled by classifier-free guidance
PEER_ROWS = 8  # the peers' 4 frames a batch
REPEATS = 5
CALLS = 5


def peak_flops(size: int = 2048, repeats: int = REPEATS) -> float:
    """FLOP/s of the best of `repeats` float32 matmuls of `size`^3 on the current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _seconds(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def counted_flops(call: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def timed_variants(variants: dict[str, Callable[[], Any]]) -> dict[str, dict]:
    """Each variant warmed up once (compiles), then the best of REPEATS rounds of CALLS calls, alternating."""
    figures: dict[str, dict] = {}
    for name, call in variants.items():
        figures[name] = {"first_call_s": _seconds(call), "ms": []}
    for _ in range(REPEATS):
        for name, call in variants.items():
            figures[name]["ms"].append(1000 * _seconds(lambda: [call() for _ in range(CALLS)]) / CALLS)
    return figures


def report(variants: dict[str, tuple[Callable[[], Any], int, int]], label: str) -> list[dict]:
    """`variants`: name -> (call, rows, FLOPs of one call)."""
    peak = peak_flops()
    out = []
    timed = timed_variants({name: call for name, (call, _, _) in variants.items()})
    for name, figures in timed.items():
        _, rows, flops = variants[name]
        best = min(figures["ms"])
        achieved = flops / (best / 1000)
        out.append({"network": label, "rows": rows, "variant": name, "ms_per_call": best, "ms_all": figures["ms"],
                    "ms_per_row": best / rows, "first_call_s": figures["first_call_s"], "gflop_per_call": flops / 1e9,
                    "gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "share_of_peak": achieved / peak,
                    "threads": torch.get_num_threads()})
    return out


def _variants(networks: dict[str, Any], make_inputs: Callable[[int], tuple], rows_of: dict[str, int]) -> dict:
    variants = {}
    for name, network in networks.items():
        inputs = make_inputs(rows_of[name])
        call = _no_grad(lambda network=network, inputs=inputs: network(*inputs[:-1], encoder_hidden_states=inputs[-1]))
        variants[name] = (call, rows_of[name], counted_flops(_no_grad(
            lambda inputs=inputs, eager=networks[next(iter(networks))]: eager(*inputs[:-1], encoder_hidden_states=inputs[-1]))))
    return variants


def unet_rows(unet: torch.nn.Module, compile_too: bool = True) -> list[dict]:
    """A bundled model's UNet at the peers' batch and the engine's: eager, and compiled as the engine compiles it."""
    config = unet.config

    def make_inputs(rows: int) -> tuple:
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(rows, config.in_channels, config.sample_size, config.sample_size, generator=generator),
                torch.tensor(500), torch.randn(rows, 77, config.cross_attention_dim, generator=generator))

    networks = {f"eager, {PEER_ROWS} rows": unet, f"eager, {ENGINE_ROWS} rows": unet}
    if compile_too:
        networks[f"compiled, {ENGINE_ROWS} rows"] = compiled_module(unet, torch.device("cpu"))
    lanes = _started_lanes(unet, compile_too)
    if lanes is not None:
        local = networks.get(f"compiled, {ENGINE_ROWS} rows", unet)
        networks[f"{'compiled' if compile_too else 'eager'}, {lanes.count} lanes, {ENGINE_ROWS} rows"] = \
            LanedUNet(local, lanes)
    if compile_too and openvino_available():
        networks[f"OpenVINO, {ENGINE_ROWS} rows"] = openvino_unet(unet, threads=torch.get_num_threads())
    rows_of = {name: int(re.search(r"(\d+) rows", name).group(1)) for name in networks}
    try:
        return report(_variants(networks, make_inputs, rows_of), "UNet")
    finally:
        if lanes is not None:
            lanes.close()


def openvino_prepare_s(unet: torch.nn.Module) -> dict | None:
    """Seconds to convert the UNet for OpenVINO and compile it for the engine's call shape (its first
    call), with an empty cache folder, then again from the folder the first left (a second process's
    case); None without the optional package."""
    if not openvino_available():
        return None
    import tempfile

    from pipelines.openvino_unet import OpenVINOUNet

    figures = {}
    with tempfile.TemporaryDirectory(prefix="speed-bench-openvino-") as folder:
        for label in ("cold", "warm"):
            began = time.perf_counter()
            OpenVINOUNet(unet, threads=torch.get_num_threads(), cache=Path(folder))(*sample_inputs_of(unet, ENGINE_ROWS))
            figures[label] = time.perf_counter() - began
    return figures


def _started_lanes(unet: torch.nn.Module, compile_too: bool) -> Lanes | None:
    """The engine's CPU lanes for this UNet (one process per core), started and ready; None on one core."""
    count = lanes_for("cpu", asked=usable_cores())  # one lane per core
    if count < 2:
        return None
    lanes = Lanes(unet, count, compile=compile_too)
    lanes.start_in_background().join()
    return lanes if lanes.usable() else None


def sd_block_rows(compile_too: bool = True) -> list[dict]:
    """SD 1.5's first down block (random weights, real size) at 512 px, one frame with guidance (2 rows)."""
    from diffusers import UNet2DConditionModel

    from benchmarks.sd_configs import SD15_UNET

    block = UNet2DConditionModel(**SD15_UNET).down_blocks[0].eval()

    def make_inputs(rows: int) -> tuple:
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(rows, 320, 64, 64, generator=generator), torch.randn(rows, 1280, generator=generator),
                torch.randn(rows, 77, 768, generator=generator))

    networks = {"eager": block}
    if compile_too:
        networks["compiled"] = compiled_module(block, torch.device("cpu"))
    return report(_variants(networks, make_inputs, {name: 2 for name in networks}), "SD 1.5 first down block, 512 px")


def _no_grad(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return call()
    return run
