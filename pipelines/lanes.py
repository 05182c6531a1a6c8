"""Lanes: each UNet call's rows split over worker processes, one core each, computed at once.

Why: at the bundled models' sizes the UNet is thousands of small operations, and torch's
intra-op threads scale poorly on them: a second thread made a 16-row call of the scenes
UNet 1.48x faster, while two single-threaded processes, each with half of the rows or
a call of its own, did 2.1x the work of one (measured side by side, `benchmarks/speed_bench.py`).
Threads in one process cannot do the same: the Python side of the modules holds the GIL.

So on a CPU the calling process is lane 0 and `lanes - 1` spawned workers hold a copy
of the UNet (compiled like the caller's when compiling is on, from the same on-disk
cache). The pipeline calls `LanedUNet` in place of its UNet: rows are cut into one
chunk per lane, sent to the workers as arrays over pipes, computed at the same time as
lane 0's chunk, and put back in order. Each row meets the same weights, so frames are
the same but for float rounding (tested >= 40 dB, like compiling).

The lanes used by a call follow the thread policy (pipelines/threads.py): the CPU
threads it grants the rendering thread now, one lane per `threads_per_lane` of them;
with one core free the call runs in lane 0 alone. Workers' CPU time counts as this
process's own there, so lanes do not mistake each other for a busy machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from pipelines import threads

log = logging.getLogger(__name__)

LANES_ENV = "LATENT_MORPH_LANES"
AUTO = "auto"
AUTO_MAX_LANES = 4  # only 2 cores were measured; beyond 4 lanes each gets several threads instead
WARM_ROWS = (16, 4)  # two batch sizes, so a compiled worker's batch dimension is dynamic (as the caller's)
# A CLI render starts lanes only when it outlasts their start by enough to gain (`lanes_pay`), from
# figures measured on the quiet 2-core machine: a worker's start (spawn, imports, UNet copy), and
# the eager UNet's time per row and step at 16 x 16 latents with 2 threads (the bundled models).
LANES_START_S = 4.0
CPU_S_PER_ROW_STEP = 0.005
LATENT_PIXELS_MEASURED = 16 * 16


def parse_lanes(text: str | int | None) -> int | None:
    """`auto` (or empty) -> None; a whole number >= 1 -> that many lanes. ValueError names the bad value."""
    if text is None or str(text).strip().lower() in ("", AUTO):
        return None
    value = str(text).strip()
    if not value.isdigit() or not 1 <= int(value) <= 64:
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise ValueError(f"lanes must be 'auto' or a whole number from 1 to 64, got {shown!r}")
    return int(value)


LANES_HELP = ("CPU worker processes a UNet call's rows are split over, one core each: 'auto' uses one per "
              f"core (at most {AUTO_MAX_LANES}) for the small bundled models and none for real-size ones; "
              "1 turns lanes off")


def add_lanes_flag(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """`--lanes auto|N`, its default from `LATENT_MORPH_LANES`: one flag for the CLI and the service."""
    def convert(text: str) -> int | None:
        try:
            return parse_lanes(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = "lanes"
    env = os.environ if environ is None else environ
    parser.add_argument("--lanes", type=convert, default=(env.get(LANES_ENV) or "").strip() or AUTO,
                        metavar="auto|N", help=f"{LANES_HELP} ({LANES_ENV}; default auto)")


def lanes_for(device_type: str, heavy: bool, asked: int | None, cores: int | None = None) -> int:
    """How many lanes a model renders with: `asked` when given (on a CPU), else one per core for light work."""
    if device_type != "cpu":
        return 1  # one GPU runs one stream of work; MPS likewise
    cores = cores or threads.usable_cores()
    if asked is not None:
        return max(1, asked)
    if heavy:
        return 1  # real-size UNets use their threads well (BENCHMARKS.md "Threads on a shared CPU")
    return max(1, min(cores, AUTO_MAX_LANES))


def lanes_pay(row_steps: int, latent_pixels: int) -> bool:
    """Whether a render of `row_steps` UNet rows x steps lasts over twice the lanes' start, so the
    lanes carry most of it (while they start, the render runs on the core they leave)."""
    render_s = row_steps * CPU_S_PER_ROW_STEP * latent_pixels / LATENT_PIXELS_MEASURED
    return render_s > 2 * LANES_START_S


def row_chunks(rows: int, lanes: int) -> list[tuple[int, int]]:
    """`rows` cut into at most `lanes` contiguous, near-equal (start, stop) ranges, none empty."""
    lanes = max(1, min(lanes, rows))
    base, extra = divmod(rows, lanes)
    chunks, start = [], 0
    for lane in range(lanes):
        stop = start + base + (1 if lane < extra else 0)
        chunks.append((start, stop))
        start = stop
    return chunks


class LaneError(RuntimeError):
    """A worker failed or went away: the caller computes the rows itself and stops using lanes."""


class Lanes:
    """The worker processes of one UNet: started in the background, used once all are ready."""

    def __init__(self, unet: Any, lanes: int, compile: bool, threads_per_lane: int = 1) -> None:
        self.unet = unet
        self.count = lanes
        self.compile = compile
        self.threads_per_lane = threads_per_lane
        self.workers: list[Any] = []  # (process, connection) pairs
        self.ready = threading.Event()
        self.broken = False
        self._last_context: list[Any] = []  # per worker: the context last sent (sent again only when it changes)

    def describe(self) -> str:
        if self.broken:
            return "1 lane (the workers failed)"
        state = "" if self.ready.is_set() else ", starting"
        return f"{self.count} lanes{state}"

    def start_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self._start, name="unet-lanes", daemon=True)
        thread.start()
        return thread

    def _start(self) -> None:
        import torch.multiprocessing as mp

        from pipelines.lane_worker import serve

        context = mp.get_context("spawn")  # fork would copy torch's thread pools mid-use
        unet = self.unet
        state = {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}
        try:
            for _ in range(self.count - 1):
                ours, theirs = context.Pipe()
                process = context.Process(target=serve, name="latent-morph-lane", daemon=True,
                                          args=(theirs, type(unet), dict(unet.config), state, self.compile,
                                                self.threads_per_lane, WARM_ROWS))
                process.start()
                theirs.close()
                self.workers.append((process, ours))
            for process, connection in self.workers:
                reply = connection.recv()  # ("ready", None) once loaded (and compiled), or ("error", text)
                if reply[0] != "ready":
                    raise LaneError(f"a lane worker failed to start: {reply[1]}")
        except (LaneError, EOFError, OSError) as error:
            log.warning("UNet lanes are off: %s", f"{type(error).__name__} {error}".strip())
            self.close()
            self.broken = True
            return
        self._last_context = [None] * len(self.workers)
        for process, _ in self.workers:  # from now on their CPU time is this render's (pipelines/threads.py);
            threads.register_helper(process.pid)  # while they start, it is a busy core like any other
        self.ready.set()
        log.info("UNet lanes ready: %d processes, %d thread(s) each", self.count, self.threads_per_lane)

    def usable(self) -> bool:
        return self.ready.is_set() and not self.broken

    def lanes_now(self) -> int:
        """Lanes this call may use: one per `threads_per_lane` of the threads the policy grants now."""
        import torch

        return max(1, min(self.count, torch.get_num_threads() // self.threads_per_lane))

    def send(self, worker: int, sample: Any, timestep: Any, context: Any) -> None:
        import torch

        sent = self._last_context[worker]
        same = sent is not None and sent.shape == context.shape and torch.equal(sent, context)
        if not same:
            self._last_context[worker] = context.clone()
        try:
            self.workers[worker][1].send(("run", sample.numpy(), timestep.numpy(), None if same else context.numpy()))
        except OSError as error:
            raise LaneError(f"lane worker {worker + 1} went away ({error})") from error

    def receive(self, worker: int) -> Any:
        import torch

        try:
            kind, value = self.workers[worker][1].recv()
        except (EOFError, OSError) as error:
            raise LaneError(f"lane worker {worker + 1} went away ({error})") from error
        if kind != "ok":
            raise LaneError(f"lane worker {worker + 1} failed: {value}")
        return torch.from_numpy(value)

    def fail(self, error: LaneError) -> None:
        log.warning("UNet lanes are off, rows computed in this process: %s", error)
        self.broken = True
        self.close()

    def close(self) -> None:
        for process, connection in self.workers:
            try:
                connection.send(None)
                connection.close()
            except OSError:
                pass
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
            threads.unregister_helper(process.pid)
        self.workers = []


class LanedUNet:
    """What the pipeline calls in place of its UNet while lanes are ready: the same call, rows split.

    Attributes the pipeline reads (`config`, `dtype`, `device`, ...) come from lane 0's UNet.
    Calls lanes cannot take (extra conditioning, attention arguments, one row) run in lane 0.
    """

    def __init__(self, local: Any, lanes: Lanes) -> None:
        self.local = local
        self.lanes = lanes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def __call__(self, sample: Any, timestep: Any, encoder_hidden_states: Any = None, *args: Any,
                 return_dict: bool = True, **kwargs: Any) -> Any:
        extra = args or any(value is not None and value != {} for value in kwargs.values())
        count = 1 if extra or not self.lanes.usable() else self.lanes.lanes_now()
        if count < 2 or sample.shape[0] < 2:
            return self.local(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        noise = self._split(sample, timestep, encoder_hidden_states, count)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=noise)
        return (noise,)

    def _split(self, sample: Any, timestep: Any, context: Any, count: int) -> Any:
        import torch

        chunks = row_chunks(sample.shape[0], count)
        timestep = torch.as_tensor(timestep)
        per_row = timestep.ndim == 1 and timestep.shape[0] == sample.shape[0]

        def rows(tensor: Any, start: int, stop: int) -> Any:
            return tensor[start:stop].contiguous()

        try:
            for worker, (start, stop) in enumerate(chunks[1:]):
                self.lanes.send(worker, rows(sample, start, stop),
                                rows(timestep, start, stop) if per_row else timestep, rows(context, start, stop))
            start, stop = chunks[0]
            budget = torch.get_num_threads()
            torch.set_num_threads(self.lanes.threads_per_lane)
            try:
                parts = [self.local(rows(sample, start, stop), rows(timestep, start, stop) if per_row else timestep,
                                    rows(context, start, stop), return_dict=False)[0]]
            finally:
                torch.set_num_threads(budget)
            parts += [self.lanes.receive(worker).to(parts[0].dtype) for worker in range(len(chunks) - 1)]
        except LaneError as error:
            self.lanes.fail(error)
            return self.local(sample, timestep, context, return_dict=False)[0]
        return torch.cat(parts)
