"""Lanes (opt-in, `--lanes N`): each UNet call's rows split over worker processes, a core each.

Why they exist: torch's intra-op threads scale poorly on the bundled models' small
operations. Two single-threaded processes, each running the eager UNet on 16 rows, did
1.45x (scenes) and 1.52x (shapes64) the work of one process with two threads; threads
in one process cannot do the same, since the modules' Python holds the GIL.

Why they are off by default: in the engine each lane gets part of a call's rows
(smaller matrices, less work per operation), and the compiled UNet uses two threads
well, so on the 2-core machine lanes measured no faster than the compiled UNet alone
(BENCHMARKS.md "Speed at equal work"). They are there for machines where one process's
threads scale worse (many cores); that was not measured here.

The calling process is lane 0 and `lanes - 1` spawned workers hold a copy of the UNet
(compiled like the caller's when compiling is on, from the same on-disk cache). The
pipeline calls `LanedUNet` in place of its UNet: rows are cut into one chunk per lane,
sent to the workers as arrays over pipes, computed at the same time as lane 0's chunk,
and put back in order. Each row meets the same weights, so frames are the same but for
float rounding (tested >= 40 dB, like compiling).

The lanes a call uses follow the thread policy (pipelines/threads.py): one lane per
thread it grants the rendering thread now; with one core free the call runs in lane 0
alone. Workers' CPU time counts as this process's own there, so lanes do not mistake
each other for a busy machine.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Mapping
from typing import Any

from pipelines import threads

log = logging.getLogger(__name__)

LANES_ENV = "LATENT_MORPH_LANES"
MAX_LANES = 64
WARM_ROWS = (16, 4)  # two batch sizes, so a compiled worker's batch dimension is dynamic (as the caller's)


def parse_lanes(text: str | int | None) -> int:
    """A whole number from 1 to MAX_LANES (empty or None: 1, no lanes). ValueError names the bad value."""
    if text is None or str(text).strip() == "":
        return 1
    value = str(text).strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_LANES:
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise ValueError(f"lanes must be a whole number from 1 to {MAX_LANES}, got {shown!r}")
    return int(value)


LANES_HELP = ("CPU worker processes each UNet call's rows are split over, one core each (1: none; "
              "measured no faster than the compiled UNet on 2 cores, see README 'Speed settings')")


def add_lanes_flag(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """`--lanes N`, its default from `LATENT_MORPH_LANES`: one flag for the CLI and the service."""
    threads.add_env_flag(parser, "lanes", parse_lanes, LANES_ENV, "1", "N", LANES_HELP, environ)


def lanes_for(device_type: str, asked: int) -> int:
    """How many lanes a model renders with: as asked on a CPU; one elsewhere (a GPU runs one stream of work)."""
    return max(1, asked) if device_type == "cpu" else 1


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
            threads.unregister_helper(process.pid)
            try:
                connection.send(None)
                connection.close()
            except OSError:
                pass
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
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
