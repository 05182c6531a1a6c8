"""The Ray backend on a local 2-replica CPU Ray Serve app with the tiny model.

Ray starts once for the module (about a minute on 2 busy cores: Ray's own processes,
then two replicas loading the model); frames are 32x32 with 2-4 steps, so the
renders themselves take a fraction of that. Covered: a morph through the Runner, two
clients at once on both replicas, cancel reaching the replica's engine, a replica
killed mid-job, a full cluster, sharding with the shared frame cache, bad input
refused before anything reaches Ray, and the cluster going away.
"""

from __future__ import annotations

from dataclasses import replace

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from PIL import Image  # noqa: E402

from pipelines.render import MorphCancelled, StepProgress  # noqa: E402
from pipelines.request import MorphRequest  # noqa: E402
from service.backends import BackendBusy, BackendOptions, BackendUnavailable  # noqa: E402
from service.backends.replica import Started  # noqa: E402
from service.limits import LimitError, Limits  # noqa: E402
from service.runner import FrameSaved, Runner  # noqa: E402

LIMITS = Limits(max_frames=24, max_steps=60, max_pixels=64 * 64, deadline_s=120, queue_size=2)
OPTIONS = BackendOptions(backend="ray", replicas=2, shard_frames=3)
OUTPUTS = ("gif", "strip", "manifest")
WAIT_S = 120.0  # generous: only ever waited on for something that must happen


@pytest.fixture(scope="module")
def remote(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model on two CPU replicas sharing one frame cache folder."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from service.backends.ray_serve import connect, deploy, shutdown

    cache = tmp_path_factory.mktemp("ray-frame-cache")
    gcs_address = connect(OPTIONS, num_cpus=2)
    try:
        yield deploy(str(tiny_model_dir), 0, OPTIONS, queue_size=LIMITS.queue_size, deadline_s=LIMITS.deadline_s,
                     device="cpu", cache_folder=str(cache), cache_mb=64, gcs_address=gcs_address)
    finally:
        shutdown()


def request(seed: int, frames: int = 3, steps: int = 2) -> MorphRequest:
    """A small chain; tests use their own seeds so nothing comes from another test's cache."""
    return MorphRequest(prompts=("a red circle", "a blue square"), seeds=(seed,), frames=frames, steps=steps,
                        size=(32, 32))


class Recorder:
    """A job's `report` callback: keeps every event, and can act on one (stop, kill) from the worker thread."""

    def __init__(self, on_event: Callable[[Any, "Recorder"], None] | None = None) -> None:
        self.events: list[Any] = []
        self.stop = threading.Event()
        self.on_event = on_event
        self.killed: str | None = None  # the replica a test killed

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event, self)

    def replicas(self) -> list[str]:
        return [event.replica for event in self.events if isinstance(event, Started)]


def run(remote, morph: MorphRequest, folder: Path, recorder: Recorder | None = None) -> dict[str, Path]:
    """What the Runner's worker thread does with a remote model: its work, to the end."""
    recorder = recorder or Recorder()
    folder.mkdir(parents=True, exist_ok=True)
    return remote.morph_work(morph, OUTPUTS, folder)(recorder, recorder.stop.is_set)


def replica_jobs(remote) -> dict[str, list[dict]]:
    """Each replica's latest jobs, asked of every replica at once (Serve's broadcast)."""
    answers = remote.handle.broadcast("jobs").results(timeout_s=WAIT_S)
    return {answer["replica"]: answer["jobs"] for answer in answers}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.2)):
        if condition():
            return
        done.wait(0.2)
    raise AssertionError(f"never happened: {what}")


# ---------------------------------------------------------------- the page's path, unchanged

def test_a_morph_through_the_runner_streams_progress_and_frames_and_returns_the_files(remote) -> None:
    runner = Runner({remote.model.name: remote}, LIMITS)
    assert runner.concurrency == 2  # the page lets one job per replica through
    values = {"prompt_a": "a red circle", "prompt_b": "a blue square", "seeds": "11", "frames": 3, "steps": 2,
              "size": "32x32"}
    updates = []
    running = runner.updates("chain", values)
    for update in running:  # the files live until the next update is asked for: read them at "done"
        updates.append(update)
        if update.kind == "done":
            break
    kinds = [update.kind for update in updates]
    assert kinds[0] == "clear" and kinds[-1] == "done" and "step" in kinds
    steps = [update for update in updates if update.kind == "step" and "frames done" in update.text]
    assert steps and 0 < steps[0].fraction <= steps[-1].fraction <= 1
    done = updates[-1]
    assert len(done.gallery) == 3
    with Image.open(done.files["gif"]) as gif:
        assert gif.n_frames == 3 and gif.size == (32, 32)
    record = json.loads(done.files["manifest"].read_text())
    assert record["model"] == remote.model.name and len(record["frames"]) == 3
    assert list(running) == []


def test_two_clients_at_once_run_on_both_replicas(remote, tmp_path: Path) -> None:
    recorders = [Recorder(), Recorder()]
    results: dict[int, dict] = {}

    def client(index: int) -> None:
        results[index] = run(remote, request(seed=20 + index, frames=4, steps=4), tmp_path / str(index),
                             recorders[index])

    threads = [threading.Thread(target=client, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(results) == [0, 1]
    for files in results.values():
        with Image.open(files["strip"]) as strip:
            assert strip.size == (4 * 32, 32)
    # max_ongoing_requests=1: two jobs in flight at once are on two different replicas
    assert len({recorder.replicas()[0] for recorder in recorders}) == 2


# ---------------------------------------------------------------- sharding and the shared frame cache

def test_a_long_morph_is_sharded_and_a_retried_shard_renders_nothing_twice(remote, tmp_path: Path) -> None:
    morph = remote.resolve(request(seed=30, frames=8))
    first = remote.render_shards(morph, Recorder(), lambda: False)
    assert len(first) == 2 and sum(shard["frames"] for shard in first) == 8
    assert sum(shard["rendered"] for shard in first) == 8 and sum(shard["cached"] for shard in first) == 0
    # the same shards again (a retry): every frame is in the cache the replicas share
    again = remote.render_shards(morph, Recorder(), lambda: False)
    assert sum(shard["rendered"] for shard in again) == 0 and sum(shard["cached"] for shard in again) == 8
    # the whole morph after its shards: assembled from cache hits only
    files = run(remote, morph, tmp_path)
    stats = json.loads(files["manifest"].read_text())["render"]
    assert stats["cache_hits"] == 8 and stats["frames_rendered"] == 0


# ---------------------------------------------------------------- cancel, refusal, faults

def test_cancel_reaches_the_replica_and_stops_its_engine(remote, tmp_path: Path) -> None:
    def stop_at_first_step(event: Any, recorder: Recorder) -> None:
        if isinstance(event, StepProgress):
            recorder.stop.set()  # what Gradio's Cancel does to the Runner's job

    recorder = Recorder(stop_at_first_step)
    with pytest.raises(MorphCancelled):
        run(remote, request(seed=40, frames=2, steps=60), tmp_path, recorder)
    name = recorder.replicas()[0]

    def ended() -> bool:
        jobs = replica_jobs(remote).get(name) or [{}]
        return bool(jobs[-1].get("ended"))

    wait_until(ended, "the cancelled job's engine ended")
    job = replica_jobs(remote)[name][-1]
    assert job["outcome"] == "cancelled"
    assert job["steps"] < 60  # stopped long before its last step, not run to the end
    assert run(remote, request(seed=41), tmp_path / "next")["gif"].exists()  # and the service goes on


def test_bad_input_is_refused_before_anything_reaches_ray(remote, monkeypatch: pytest.MonkeyPatch) -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the deployment handle was used ({name})")

    runner = Runner({remote.model.name: remote}, LIMITS)
    monkeypatch.setattr(remote, "handle", Untouchable())
    bad = {"prompt_a": "a red circle", "prompt_b": "a blue square", "frames": 25}
    with pytest.raises(LimitError, match=r"frames must be between 2 and 24 \(--max-frames\); got 25"):
        next(runner.updates("chain", bad))
    with pytest.raises(LimitError, match=r"size 128x128 is 16384 pixels; the limit is 4096"):
        next(runner.updates("chain", {**bad, "frames": 3, "size": "128x128"}))


def test_a_full_cluster_answers_busy_at_once(remote, tmp_path: Path) -> None:
    # two long jobs running on the two replicas (each has sent its first event), then the queue
    # (--queue-size 2) filled behind them: sent together, Ray could count the first two as queued.
    # The jobs are as long as the limits allow, so none can finish (and free a place) on a fast
    # machine before the last request is refused; they are cancelled at the end.
    def send(seed: int):
        # one frame a pipeline call at the largest size: the longest job the limits allow (the engine's
        # own batches of 8 made it short enough to finish first on a quiet machine)
        long_job = replace(request(seed=seed, frames=LIMITS.max_frames, steps=LIMITS.max_steps),
                           size=(64, 64), batch_size=1)
        return remote.handle.options(stream=True).render.remote(long_job)

    held = [send(50), send(51)]
    for response in held:
        next(response)  # running on a replica: its Started event has arrived
    held += [send(52 + index) for index in range(LIMITS.queue_size)]
    try:
        with pytest.raises(BackendBusy, match=r"busy: all 2 render replicas .* 2 more requests .*--queue-size"):
            run(remote, request(seed=55), tmp_path)
    finally:
        for response in held:
            try:
                response.cancel()
            except Exception:  # noqa: BLE001 - a refused request has nothing to cancel
                pass


def test_a_replica_killed_mid_job_hands_the_job_to_another(remote, tmp_path: Path) -> None:
    import ray

    def kill_on_first_step(event: Any, recorder: Recorder) -> None:
        if isinstance(event, StepProgress) and len(recorder.replicas()) == 1 and not recorder.killed:
            recorder.killed = recorder.replicas()[0]
            ray.kill(ray.get_actor(recorder.killed, namespace="serve"), no_restart=True)

    recorder = Recorder(kill_on_first_step)
    files = run(remote, request(seed=60, frames=3, steps=30), tmp_path, recorder)
    first, second = recorder.replicas()
    assert first == recorder.killed and second != first
    saved = [event.index for event in recorder.events if isinstance(event, FrameSaved)]
    assert sorted(saved) == [0, 1, 2]  # each frame shown once, despite the second attempt
    with Image.open(files["gif"]) as gif:
        assert gif.n_frames == 3
    assert run(remote, request(seed=61), tmp_path / "next")["gif"].exists()  # the service goes on


def test_a_job_whose_replicas_keep_dying_fails_with_a_clear_error(tmp_path: Path) -> None:
    """Without Ray's cluster: a handle whose every replica dies at once (killing both real replicas
    would cost two model loads)."""
    from ray.exceptions import ActorDiedError

    from service.backends.ray_client import RemoteMorpher

    class Dying:
        def __init__(self) -> None:
            self.calls = 0

        def __iter__(self):
            raise ActorDiedError()

        def cancel(self) -> None:
            pass

    class Handle:
        def __init__(self) -> None:
            self.dying = Dying()
            self.render = self

        def options(self, **_: Any) -> "Handle":
            return self

        def remote(self, *args: Any) -> Dying:
            self.dying.calls += 1
            return self.dying

    handle = Handle()
    model = RemoteMorpher(handle, {"name": "tiny", "device": "cpu", "side": 32}, OPTIONS)
    with pytest.raises(BackendUnavailable, match="a render replica stopped while working .*twice"):
        run(model, request(seed=70), tmp_path)
    assert handle.dying.calls == 2  # the first attempt and one retry, then the error


def test_the_cluster_going_away_stops_the_job_with_a_clear_error() -> None:
    from service.backends.streams import Streams

    class Silent:
        """A response whose replica never answers (what a dead head node looks like to a handle)."""

        def __iter__(self):
            threading.Event().wait()  # forever, in the pump's daemon thread
            yield None

        def cancel(self) -> None:
            pass

    streams = Streams(2, should_stop=lambda: False, alive=lambda: False)
    streams.add("render", Silent())
    with pytest.raises(BackendUnavailable, match="The Ray cluster went away"):
        list(streams.events())


def test_rays_errors_become_the_services_own() -> None:
    from ray.exceptions import ActorDiedError, RaySystemError
    from ray.serve.exceptions import BackPressureError

    from service.backends.streams import ReplicaLost, translate
    from service.jobs import JobDeadline

    assert isinstance(translate(BackPressureError(3, 2), 2), BackendBusy)
    assert isinstance(translate(ActorDiedError(), 2), ReplicaLost)
    assert isinstance(translate(RaySystemError("gcs down"), 2), BackendUnavailable)
    deadline = JobDeadline("The job ran past the 1 s limit per job and was stopped.")
    assert translate(deadline, 2) is deadline
