"""Reading Ray Serve streaming responses from a worker thread without ever hanging on them.

A `DeploymentResponseGenerator` is read by a daemon thread per response ("pump"),
which puts its items on one queue shared by all responses of a job. The job's
worker thread reads that queue with a timeout, so between two items it can notice a
cancel (and cancel every response), or that the Ray cluster has gone away (and give
up at once with a clear error, even if Ray's own call would wait for a replica that
never comes back). Ray's errors are translated here into the service's own.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from service.backends import BackendBusy, BackendUnavailable

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the reader looks at the stop flag while no item comes
HEALTH_S = 2.0  # how often it checks that the cluster is still there while no item comes


class ReplicaLost(Exception):
    """The replica serving a call died or became unreachable; another replica may take it."""


@dataclass(frozen=True)
class Item:
    tag: Any
    value: Any


@dataclass(frozen=True)
class End:
    tag: Any


@dataclass(frozen=True)
class Failed:
    tag: Any
    error: BaseException


def gcs_probe(address: str | None, timeout_s: float = 2.0) -> Callable[[], bool] | None:
    """A check that the cluster's GCS still accepts connections (None: no address to check).

    A plain TCP connect: when the head node is gone it is refused at once, where a
    Ray call would keep retrying.
    """
    if not address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")

    def alive() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return True
        except OSError:
            return False

    return alive


def busy_message(error: Any, replicas: int) -> str:
    queued = getattr(error, "args", (None, None))
    limit = queued[1] if len(queued) > 1 else "its limit of"
    return (f"The server is busy: all {replicas} render replicas are working and {limit} more requests are "
            "already queued (--queue-size). Try again in a moment.")


def translate(error: BaseException, replicas: int) -> BaseException:
    """Ray's exception -> what the service raises (the replica's own error is unwrapped)."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    if isinstance(error, serve_errors.BackPressureError):
        return BackendBusy(busy_message(error, replicas))
    if isinstance(error, ray_errors.RayTaskError) and isinstance(error.cause, BaseException):
        return translate(error.cause, replicas)  # LimitError, JobDeadline, JobOutOfMemory, ...
    if isinstance(error, (ray_errors.RayActorError, serve_errors.ReplicaUnavailableError)):
        return ReplicaLost(f"a render replica stopped while working ({type(error).__name__})")
    if isinstance(error, serve_errors.DeploymentUnavailableError):
        return BackendUnavailable("The render deployment is not available on the Ray cluster; try again later.")
    if isinstance(error, (ray_errors.RaySystemError, ConnectionError)):
        return BackendUnavailable(f"The Ray cluster is not reachable ({type(error).__name__}); try again later.")
    return error


class Streams:
    """The streaming responses of one job, read together from one queue."""

    def __init__(self, replicas: int, should_stop: Callable[[], bool], alive: Callable[[], bool] | None) -> None:
        self.replicas = replicas
        self.should_stop = should_stop
        self.alive = alive
        self._queue: queue.Queue[Item | End | Failed] = queue.Queue()
        self._responses: dict[Any, Any] = {}
        self.open: set[Any] = set()

    def add(self, tag: Any, response: Any) -> None:
        """Start reading `response` (a DeploymentResponseGenerator) under `tag`."""
        self._responses[tag] = response
        self.open.add(tag)
        threading.Thread(target=self._pump, args=(tag, response), name=f"ray-stream-{tag}", daemon=True).start()

    def _pump(self, tag: Any, response: Any) -> None:
        try:
            for value in response:
                self._queue.put(Item(tag, value))
            self._queue.put(End(tag))
        except BaseException as error:  # noqa: BLE001 - handed to the reader
            self._queue.put(Failed(tag, error))

    def cancel(self) -> None:
        """Cancel every response still open; never blocks (a dead cluster may not answer)."""
        for tag in list(self.open):
            threading.Thread(target=_cancel_quietly, args=(self._responses[tag],), daemon=True).start()

    def events(self) -> Iterator[Item | Failed]:
        """Items and failures (Ray's errors translated) until every response has ended.

        Raises MorphCancelled once `should_stop()` says so (the responses are cancelled),
        and BackendUnavailable when the cluster stops answering.
        """
        from pipelines.render import MorphCancelled

        checked = time.monotonic()
        while self.open:
            if self.should_stop():
                self.cancel()
                raise MorphCancelled("morph cancelled")
            try:
                event = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self.alive is not None and time.monotonic() - checked > HEALTH_S:
                    checked = time.monotonic()
                    if not self.alive():
                        self.cancel()
                        raise BackendUnavailable("The Ray cluster went away (its head node does not answer); "
                                                 "the job was stopped. Try again once the cluster is back.") from None
                continue
            if isinstance(event, End):
                self.open.discard(event.tag)
            elif isinstance(event, Failed):
                self.open.discard(event.tag)
                if self.should_stop() and _is_cancel(event.error):
                    raise MorphCancelled("morph cancelled")
                yield Failed(event.tag, translate(event.error, self.replicas))
            else:
                yield event


def _is_cancel(error: BaseException) -> bool:
    import asyncio
    import concurrent.futures

    from ray.exceptions import TaskCancelledError

    return isinstance(error, (TaskCancelledError, asyncio.CancelledError, concurrent.futures.CancelledError))


def _cancel_quietly(response: Any) -> None:
    try:
        response.cancel()
    except Exception as error:  # noqa: BLE001 - a refused or finished request has nothing to cancel
        log.debug("cancel: %s", error)
