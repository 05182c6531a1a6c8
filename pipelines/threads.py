"""How many CPU threads torch computes with: as many as there are cores no other process is using.

Why this exists: torch's OpenMP workers spin at the barrier after every operation. When
another process holds one of the cores, the worker sharing that core is descheduled for
a whole time slice while its partner spins, and every one of the thousands of small
operations in a denoising step waits for it: on 2 cores with one busy, a morph of the
bundled models rendered 20-30x slower with torch's default of 2 threads than with 1.
With the cores free, 2 threads are faster than 1. So the count follows the machine:

- `auto` (the default): before a render and at every denoising step (at most every
  `RECHECK_S`), read how much CPU other processes used since the last look (`/proc/stat`
  minus this process's own time) and use the cores left over, at least one. Heavy work
  (a real-size UNet at 256 px and up, `is_heavy`) uses every core regardless: its long
  operations amortise a descheduled worker, and measured, 2 threads beat 1 beside a busy core.
- a number (`--threads N` or `LATENT_MORPH_THREADS=N`): exactly that many, always.

`auto` never goes above `OMP_NUM_THREADS` when that is set.

torch keeps the thread count per calling thread (OpenMP's team size belongs to the
thread that starts the parallel region), so the count is set from the thread that
renders: `rebalance()` is called by the engine at the start of a render and at each
step boundary. On systems without `/proc` (macOS, Windows) `auto` keeps torch's choice.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

THREADS_ENV = "LATENT_MORPH_THREADS"
AUTO = "auto"
RECHECK_S = 0.5  # how often a render looks at the machine again (two small file reads)
# A look back longer than STALE_S (a server idle for an hour) or shorter than PROBE_S (a few
# 10 ms clock ticks) says little about now: then the governor looks for PROBE_S before deciding.
STALE_S = 5.0
PROBE_S = 0.15
# Another process's use below this share of a core is noise (a shell, a log writer), not a busy core.
IDLE_SHARE = 0.3
HEAVY_ACTIVATIONS = 256 * 1024  # see is_heavy


@dataclass(frozen=True)
class CpuSample:
    """CPU time counters at one moment, in clock ticks (USER_HZ)."""

    wall_s: float
    machine_busy: int  # all processes, all cores: every state but idle and iowait
    own: int  # this process, all of its threads


# Processes that work for this one (UNet lanes, pipelines/lanes.py): their CPU time counts as our own.
_helper_pids: set[int] = set()


def register_helper(pid: int) -> None:
    _helper_pids.add(pid)


def unregister_helper(pid: int) -> None:
    """A helper is gone: its counters vanish with it, so the next look starts afresh."""
    _helper_pids.discard(pid)
    if _governor is not None:
        _governor.last = read_sample()
        _governor.current = None


def read_sample(stat: Path = Path("/proc/stat"), own_stat: Path = Path("/proc/self/stat")) -> CpuSample | None:
    """The counters now, or None where the kernel does not offer them."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()[1:]
        own = _process_ticks(own_stat)
    except (OSError, IndexError):
        return None
    ticks = [int(value) for value in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    # guest time is already counted in user and nice: keep the first 8 fields only
    busy = sum(ticks[:8]) - idle
    for pid in list(_helper_pids):
        try:
            own += _process_ticks(Path(f"/proc/{pid}/stat"))
        except (OSError, IndexError):  # it has just exited
            pass
    return CpuSample(time.monotonic(), busy, own)


def _process_ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat(5))


def busy_elsewhere(before: CpuSample, after: CpuSample, ticks_per_s: float | None = None) -> float:
    """Cores' worth of CPU that other processes used between two samples."""
    ticks_per_s = ticks_per_s or os.sysconf("SC_CLK_TCK")
    elapsed = after.wall_s - before.wall_s
    if elapsed <= 0:
        return 0.0
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, others / ticks_per_s / elapsed)


def usable_cores(environ: Mapping[str, str] | None = None) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota and by
    `OMP_NUM_THREADS` when it is set (someone sharing the machine asked for at most that many)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    asked = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if asked.isdigit() and int(asked) >= 1:
        cores = min(cores, int(asked))
    return max(1, cores)


def is_heavy(activations: int) -> bool:
    """Whether a UNet's operations are large enough (elements of its first block's activations per
    row) that every core pays even when one is shared: measured, SD 1.5 at 512 px (1.3 M) ran 20-25%
    faster with 2 threads than with 1 beside a busy core; the bundled models (8-16 K) 2-4x slower."""
    return activations >= HEAVY_ACTIVATIONS


def threads_for(cores: int, others: float, heavy: bool = False) -> int:
    """Threads to use when other processes keep `others` cores busy: the cores left, at least one
    (every core for heavy work, whose long operations amortise a descheduled worker)."""
    if heavy:
        return cores
    taken = math.ceil(others - IDLE_SHARE) if others > IDLE_SHARE else 0
    return max(1, min(cores, cores - taken))


def parse_threads(text: str | int | None) -> int | None:
    """`auto` (or empty) -> None; a whole number >= 1 -> that number. ValueError names the bad value."""
    if text is None or str(text).strip().lower() in ("", AUTO):
        return None
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1 or len(value) > 4:
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise ValueError(f"threads must be 'auto' or a whole number from 1 to 9999, got {shown!r}")
    return int(value)


def threads_from_env(environ: dict[str, str] | None = None) -> int | None:
    """The `LATENT_MORPH_THREADS` setting (None: auto)."""
    return parse_threads((environ if environ is not None else os.environ).get(THREADS_ENV))


THREADS_HELP = ("CPU threads torch renders with: 'auto' uses the cores other processes leave free, looked at "
                "before each render and during it; a number fixes it")


def add_env_flag(parser: argparse.ArgumentParser, name: str, parse: Callable[[str], object], env_name: str,
                 default: str, metavar: str, help: str, environ: Mapping[str, str] | None = None) -> None:
    """`--name`, parsed by `parse` (its ValueError becomes argparse's one-line error), its default from
    `env_name`: one way for the CLI's and the service's machine flags (threads, lanes)."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    env = os.environ if environ is None else environ
    parser.add_argument(f"--{name}", type=convert, default=(env.get(env_name) or "").strip() or default,
                        metavar=metavar, help=f"{help} ({env_name}; default {default})")


def add_threads_flag(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """`--threads auto|N`, its default from `LATENT_MORPH_THREADS`: the same flag for the CLI and the service."""
    add_env_flag(parser, "threads", parse_threads, THREADS_ENV, AUTO, "auto|N", THREADS_HELP, environ)


class ThreadGovernor:
    """Sets torch's thread count for the rendering thread: fixed, or the cores other processes leave free."""

    def __init__(self, fixed: int | None = None, cores: int | None = None) -> None:
        self.fixed = fixed
        self.cores = cores or usable_cores()
        self.last = read_sample()
        self.current: int | None = None
        self.heavy = False  # the current render's work, told by the engine at its start

    def describe(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed} (--threads / {THREADS_ENV})"
        if self.last is None:
            return "torch's default (auto: this system does not report CPU use)"
        return f"auto: the cores of {self.cores} that other processes leave free, rechecked every {RECHECK_S} s"

    def choose(self) -> int | None:
        """The count to use now (None: leave torch alone), from the CPU use since the last look."""
        if self.fixed is not None:
            return self.fixed
        if self.last is None:
            return None
        if self.current is not None and time.monotonic() - self.last.wall_s < RECHECK_S:
            return self.current  # between rechecks a step reads no file
        now = read_sample()
        if now is None:
            return None
        elapsed = now.wall_s - self.last.wall_s
        if elapsed > STALE_S or (self.current is None and elapsed < PROBE_S):
            # too long a look back says little about now, too short one sees a few clock ticks: look now
            time.sleep(PROBE_S)
            self.last, now = now, read_sample() or now
        others = busy_elsewhere(self.last, now)
        self.last = now
        return threads_for(self.cores, others, self.heavy)

    def rebalance(self) -> None:
        """Apply `choose()` to torch in the calling thread (the one that renders)."""
        threads = self.choose()
        if threads is None:
            return
        import torch

        if threads != self.current or torch.get_num_threads() != threads:
            if threads != self.current:
                log.info("torch threads: %d (%s)", threads, "fixed" if self.fixed else "auto")
            torch.set_num_threads(threads)
            self.current = threads


_governor: ThreadGovernor | None = None


def configure(threads: int | None) -> ThreadGovernor:
    """Choose the process's policy once, at start-up (the CLI, the service, a benchmark, a replica)."""
    global _governor
    _governor = ThreadGovernor(fixed=threads)
    return _governor


def rebalance(activations: int | None = None) -> None:
    """Called by the engine before a render (with the size of its work, see `is_heavy`) and at each
    step; nothing happens until `configure` ran."""
    if _governor is None:
        return
    if activations is not None and is_heavy(activations) != _governor.heavy:
        _governor.heavy = is_heavy(activations)
        _governor.current = None  # decide again now, not at the next recheck
    _governor.rebalance()
