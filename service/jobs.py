"""Run one morph in a worker thread and hand its progress to a Gradio generator.

Why a thread: Gradio can only stop a generator handler between two `yield`s
(on Cancel it closes the generator; when the browser goes away it stops asking
for the next value). A morph spends seconds inside one call to the engine, so
the handler must not run the engine itself. Here the engine runs in a worker
thread; the handler polls `MorphJob.events()` and yields at every denoising
step (and at least every `poll_s` seconds). When the handler is closed, its
`finally` calls `MorphJob.stop()`, and the engine's `should_stop` callback,
checked at every step, ends the work at the next step boundary.

The worker, not the handler, releases the model's slot when it really ends,
so the next job never races a cancelled one on the same scheduler.

A caller that never reads its results (a queue join whose stream is never opened,
or a stream that has gone) would still hold the model: `ReaderWatch` tells the
handler when nobody has read them for `UNREAD_S` seconds, and the job is skipped
before its work starts or stopped at its next step.
"""

from __future__ import annotations

import gc
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# A job whose caller reads none of its results for this long is cancelled: long enough for
# any client to open its stream after joining the queue, short next to a render (`--help` says it).
UNREAD_S = 5.0
# What a visitor can do about a deadline; also in the message of an older replica's JobDeadline.
DEADLINE_HINT = "Try fewer frames, fewer steps or a smaller size"


class JobCancelled(Exception):
    """The job was stopped because its caller went away or pressed Cancel."""


class JobUncollected(JobCancelled):
    """Nobody read the job's results for `UNREAD_S` seconds: its caller never opened its stream, or left."""


class JobDeadline(Exception):
    """The job ran past its wall-clock deadline and was stopped."""


class JobOutOfMemory(Exception):
    """The device ran out of memory; caches were freed, the next job can run."""


@dataclass(frozen=True)
class Tick:
    """Nothing new within the poll interval; yield anyway so a cancel can land."""


@dataclass(frozen=True)
class Progress:
    """One denoising step (or frame) finished; `value` is what the work reported."""

    value: Any


@dataclass(frozen=True)
class Done:
    """The work returned `result`."""

    result: Any


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA / MPS / CPU allocation failures, whatever exception type carries them."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def free_device_memory() -> None:
    """Drop unreachable tensors and return cached blocks to the device."""
    gc.collect()
    torch = sys.modules.get("torch")  # no model, no torch: nothing to free
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            torch.mps.empty_cache()
    except Exception:  # freeing memory must never raise a second error
        log.exception("could not empty the device cache")


class ReaderWatch:
    """Whether a job's caller still reads its results: a probe sampled now and then.

    `reading()` says whether someone reads the caller's results at this moment (the
    web front end asks Gradio's queue). One look can miss a reader that is busy
    sending, so the watch keeps the last time a look said yes and gives up only
    after `patience_s` without one, counted from when the watch was made.
    """

    def __init__(self, reading: Callable[[], bool], patience_s: float = UNREAD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reading = reading
        self.patience_s = patience_s
        self._clock = clock
        self._last_read = clock()

    def abandoned(self) -> bool:
        """Look once; True when nobody has read for longer than the patience."""
        now = self._clock()
        if self._reading():
            self._last_read = now
        return now - self._last_read > self.patience_s

    def wait_for_reader(self, timeout_s: float, every_s: float = 0.02) -> bool:
        """Look every `every_s` for up to `timeout_s`; True as soon as someone reads."""
        deadline = self._clock() + timeout_s
        while True:
            if self._reading():
                self._last_read = self._clock()
                return True
            if self._clock() >= deadline:
                return False
            time.sleep(every_s)


# the work: called in the worker thread as work(report, should_stop) -> result
Work = Callable[[Callable[[Any], None], Callable[[], bool]], Any]


class MorphJob:
    """One unit of work in a daemon thread, with a stop flag, a deadline and an event queue."""

    def __init__(
        self,
        work: Work,
        deadline_s: float,
        on_exit: Callable[[], None] | None = None,
        cancelled_types: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`on_exit` runs in the worker once the work has really ended (release the model there).

        `cancelled_types` are the exceptions the work raises when `should_stop()` said yes
        (the engine's `MorphCancelled`); they become JobCancelled or JobDeadline.
        """
        self._work = work
        self._deadline_s = deadline_s
        self._on_exit = on_exit
        self._cancelled_types = cancelled_types
        self._events: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._started_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="morph-job", daemon=True)
        self.finished = threading.Event()

    # -- worker side -------------------------------------------------------------
    def _past_deadline(self) -> bool:
        return self._started_at is not None and time.monotonic() - self._started_at > self._deadline_s

    def should_stop(self) -> bool:
        """What the engine polls at every step."""
        return self._stop.is_set() or self._past_deadline()

    def _report(self, value: Any) -> None:
        self._events.put(Progress(value))

    def _run(self) -> None:
        outcome: Any
        try:
            try:
                outcome = Done(self._work(self._report, self.should_stop))
            except BaseException as error:  # noqa: BLE001 - every failure goes to the handler
                if self._cancelled_types and isinstance(error, self._cancelled_types) or self._stop.is_set():
                    outcome = _Failed(self._stopped_error())
                elif is_out_of_memory(error):
                    log.warning("out of memory: %s", error)
                    outcome = _Failed(JobOutOfMemory(str(error)))
                else:
                    log.exception("morph failed")
                    outcome = _Failed(error)
                # the traceback keeps the work's tensors alive: drop it before freeing memory
                del error
            if isinstance(outcome, _Failed):
                outcome.error.__traceback__ = None
                free_device_memory()
            elapsed = time.monotonic() - (self._started_at or time.monotonic())
            result = "done" if isinstance(outcome, Done) else type(outcome.error).__name__
            log.info("job %s after %.2f s", result, elapsed)
            self._events.put(outcome)
        finally:
            self.finished.set()
            if self._on_exit is not None:
                try:
                    self._on_exit()
                except Exception:
                    log.exception("job clean-up failed")

    def _stopped_error(self) -> Exception:
        if self._past_deadline() and not self._stop.is_set():
            return JobDeadline(f"The job ran past the {self._deadline_s:g} s limit per job and was stopped. "
                               f"{DEADLINE_HINT}; the limit is the server's --deadline-s.")
        return JobCancelled("The job was cancelled.")

    # -- handler side -------------------------------------------------------------
    def start(self) -> None:
        self._started_at = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Ask the work to end at its next step; returns at once (never blocks the caller)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.finished.is_set()

    def next_is(self, predicate: Callable[[Any], bool]) -> bool:
        """True when an event is already waiting and `predicate(event)` holds (never blocks)."""
        with self._events.mutex:
            return bool(self._events.queue) and predicate(self._events.queue[0])

    def events(self, poll_s: float = 0.25) -> Iterator[Tick | Progress | Done]:
        """Progress events as they come, a Tick when there is no news for `poll_s`, then Done.

        Raises JobCancelled / JobDeadline / JobOutOfMemory or the work's own error.
        """
        while True:
            try:
                event = self._events.get(timeout=poll_s)
            except queue.Empty:
                yield Tick()
                continue
            if isinstance(event, _Failed):
                raise event.error
            yield event
            if isinstance(event, Done):
                return
