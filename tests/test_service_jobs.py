"""The worker-thread job runner: stop, deadline, out-of-memory, clean-up. No model needed."""

from __future__ import annotations

import threading
import time

import pytest

from service.jobs import (
    Done, JobCancelled, JobDeadline, JobOutOfMemory, MorphJob, Progress, ReaderWatch, Tick, is_out_of_memory,
)


WAIT_S = 60.0  # generous: only ever waited on for something that must happen


class Stopped(Exception):
    pass


def stepping_work(steps: int, step_s: float):
    """Work that reports each step and honours should_stop like the engine does."""

    def work(report, should_stop):
        for step in range(steps):
            time.sleep(step_s)
            if should_stop():
                raise Stopped
            report(step)
        return "result"

    return work


def drain(job: MorphJob) -> list:
    return [event for event in job.events(poll_s=0.05) if not isinstance(event, Tick)]


def test_events_then_done_and_on_exit_runs_in_the_worker() -> None:
    exited = threading.Event()
    job = MorphJob(stepping_work(3, 0.01), deadline_s=10, on_exit=exited.set, cancelled_types=(Stopped,))
    job.start()
    events = drain(job)
    assert events == [Progress(0), Progress(1), Progress(2), Done("result")]
    assert exited.wait(WAIT_S)


def gated_work(gate: threading.Semaphore, done: list[int]):
    """Work whose every step waits for a permit, so a test decides how far it gets; `done` lists its steps."""

    def work(report, should_stop):
        for step in range(1000):
            gate.acquire()
            if should_stop():
                raise Stopped
            done.append(step)
            report(step)
        return "result"

    return work


def test_stop_ends_the_work_at_the_next_step() -> None:
    exited = threading.Event()
    gate, done = threading.Semaphore(3), []
    job = MorphJob(gated_work(gate, done), deadline_s=60, on_exit=exited.set, cancelled_types=(Stopped,))
    job.start()
    events = job.events(poll_s=0.05)
    progress = [next(event for event in events if isinstance(event, Progress)) for _ in range(3)]
    assert progress == [Progress(0), Progress(1), Progress(2)]
    job.stop()
    gate.release(1000)  # the work could now run to its end, if the stop did not hold
    with pytest.raises(JobCancelled):
        list(events)  # only Ticks may come before the error
    assert exited.wait(WAIT_S)
    assert done == [0, 1, 2]  # not one step after the stop


def test_no_progress_comes_after_a_stop() -> None:
    gate, done = threading.Semaphore(2), []
    job = MorphJob(gated_work(gate, done), deadline_s=60, cancelled_types=(Stopped,))
    job.start()
    seen = []
    events = job.events(poll_s=0.05)
    for event in events:
        seen.append(event)
        if event == Progress(1):
            job.stop()
            gate.release(1000)
            break
    with pytest.raises(JobCancelled):
        for event in events:
            seen.append(event)
    assert [event for event in seen if not isinstance(event, Tick)] == [Progress(0), Progress(1)]
    assert job.join(WAIT_S) and done == [0, 1]


def test_closing_the_handler_generator_stops_the_job() -> None:
    """What Gradio does on Cancel / disconnect: close the generator; its finally stops the job."""
    exited = threading.Event()
    gate, done = threading.Semaphore(1), []
    job = MorphJob(gated_work(gate, done), deadline_s=60, on_exit=exited.set, cancelled_types=(Stopped,))

    def handler():
        job.start()
        try:
            for event in job.events(poll_s=0.05):
                yield event
        finally:
            job.stop()

    generator = handler()
    assert next(event for event in generator if isinstance(event, Progress)) == Progress(0)
    generator.close()
    gate.release(1000)
    assert exited.wait(WAIT_S), "the worker kept running after its handler was closed"
    assert done == [0]


def test_deadline_stops_the_job_with_its_own_message() -> None:
    job = MorphJob(stepping_work(1000, 0.02), deadline_s=0.2, cancelled_types=(Stopped,))
    job.start()
    with pytest.raises(JobDeadline, match="0.2 s limit per job") as caught:
        drain(job)
    # the visitor learns what to change, and the operator which flag sets the limit
    assert "Try fewer frames" in str(caught.value) and "--deadline-s" in str(caught.value)


def test_out_of_memory_becomes_a_clear_error_and_the_next_job_runs() -> None:
    import torch

    def oom(report, should_stop):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    job = MorphJob(oom, deadline_s=10)
    job.start()
    with pytest.raises(JobOutOfMemory, match="Tried to allocate"):
        drain(job)
    second = MorphJob(stepping_work(2, 0.0), deadline_s=10, cancelled_types=(Stopped,))
    second.start()
    assert drain(second)[-1] == Done("result")


def test_other_errors_pass_through() -> None:
    def broken(report, should_stop):
        raise ValueError("spacing 'even' is not implemented")

    job = MorphJob(broken, deadline_s=10)
    job.start()
    with pytest.raises(ValueError, match="not implemented"):
        drain(job)


def test_out_of_memory_detection() -> None:
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_next_is_peeks_without_taking() -> None:
    job = MorphJob(stepping_work(2, 0.0), deadline_s=10, cancelled_types=(Stopped,))
    assert not job.next_is(lambda event: True)
    job.start()
    assert job.join(timeout=5)
    assert job.next_is(lambda event: event == Progress(0))
    assert drain(job) == [Progress(0), Progress(1), Done("result")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reader_watch_gives_up_only_after_the_patience_without_a_read() -> None:
    clock, reads = Clock(), [True]
    watch = ReaderWatch(lambda: reads[-1], patience_s=5.0, clock=clock)
    reads.append(False)  # a look may miss a reader that is busy sending: one miss is no verdict
    clock.now += 5.0
    assert not watch.abandoned()
    reads.append(True)
    clock.now += 1.0
    assert not watch.abandoned()  # read again: the patience starts over from here
    reads.append(False)
    clock.now += 5.0
    assert not watch.abandoned()
    clock.now += 0.5
    assert watch.abandoned()


def test_a_reader_watch_counts_from_its_start_when_nobody_ever_reads() -> None:
    clock = Clock()
    watch = ReaderWatch(lambda: False, patience_s=2.0, clock=clock)
    assert not watch.abandoned()
    clock.now += 2.5
    assert watch.abandoned()


def test_waiting_for_a_reader_stops_at_the_first_read() -> None:
    looks = iter([False, False, True])
    watch = ReaderWatch(lambda: next(looks), patience_s=60.0)
    assert watch.wait_for_reader(timeout_s=WAIT_S, every_s=0.001)
    assert next(looks, "no more looks") == "no more looks"  # stopped at the read
    assert not ReaderWatch(lambda: False).wait_for_reader(timeout_s=0.05, every_s=0.01)
