"""How fast each loaded model renders, timed once in the background (see `service.cost`).

Timing the models takes seconds (more on a busy CPU): the server starts it once the page
is served, so the page comes up sooner and the timing has the CPU to itself. A request
that arrives before it has finished waits for it, before any work, so no render shares a
pipeline with the timing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from service.cost import Speed, speed_of
from service.limits import Limits


class ModelSpeeds:
    """Model name -> Speed (or None: not checked against the deadline): given, or timed once."""

    def __init__(self, morphers: Mapping[str, Any], limits: Limits,
                 given: Mapping[str, Speed | None] | None = None) -> None:
        self._morphers, self._limits = dict(morphers), limits
        self._speeds: Future[dict[str, Speed | None]] = Future()
        self._lock = threading.Lock()
        if given is not None:
            self._speeds.set_result(dict(given))

    def start(self) -> None:
        """Time the models in a background thread (once; nothing when they were given)."""
        with self._lock:
            if self._speeds.running() or self._speeds.done():
                return
            self._speeds.set_running_or_notify_cancel()
        threading.Thread(target=self._time, name="time-models", daemon=True).start()

    def _time(self) -> None:
        try:
            self._speeds.set_result({name: speed_of(morpher, self._limits)
                                     for name, morpher in self._morphers.items()})
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits for the speeds
            self._speeds.set_exception(error)

    def all(self) -> dict[str, Speed | None]:
        """Every model's speed, timing them first if nobody started it."""
        self.start()
        return self._speeds.result()
