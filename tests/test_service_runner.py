"""The service's runner without Gradio: checks, update order, files per walk, cancel, one job per model.

The stand-in morpher follows `pipelines.engine.Morpher`'s interface (`model`,
`resolve`, `frames`, `manifest`), plans its points with the real walks and draws
flat colours. Its steps can be gated by a semaphore (one permit per step), so the
tests decide exactly how far a job gets: no sleeps, no timing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from pipelines.render import MorphCancelled, RenderedFrame, StepProgress, batched, default_batch_size
from pipelines.request import check_request
from pipelines.walks import get_walk
from service.cost import Speed, estimate_s
from service.jobs import JobDeadline, JobOutOfMemory, JobUncollected
from service.limits import LimitError, Limits
from service.runner import Runner, Update

LIMITS = Limits(max_frames=24, max_steps=30, max_pixels=128 * 128, deadline_s=60)
PROMPTS = {
    "chain": {"prompt_a": "a red circle", "prompt_b": "a blue square"},
    "grid": {"prompt_a": "a red circle", "prompt_b": "a blue circle", "prompt_c": "a red square",
             "prompt_d": "a blue square"},
    "direction": {"prompt_a": "a red circle", "prompt_b": "a red square", "prompt_c": "a blue square"},
}
WAIT_S = 60.0  # generous: only ever waited on for something that must happen
MANY = 1_000_000  # permits that let a gated stand-in run to its end


class StandInMorpher:
    """Flat-colour frames on the real walks' plans; honours `should_stop` at every step like the engine.

    `gate`: a semaphore taken before every step (None: run freely). `failures`: raised,
    one per call, before any step. `native`: the side it draws at when no size is asked.
    """

    def __init__(self, name: str, gate: threading.Semaphore | None = None,
                 failures: list[BaseException] | None = None, native: int = 64) -> None:
        self.model = SimpleNamespace(name=name, device=torch.device("cpu"))
        self.gate = gate
        self.failures = list(failures or [])
        self.native = native
        self.calls = 0  # frames() calls that began to work
        self.steps_done = 0  # steps reported, over all calls
        self.frames_done = 0  # frames finished, over all calls
        self.active = 0
        self.most_active = 0
        self.outcome: str | None = None  # how the last call ended: "done", "cancelled" or the error's name
        self.ended = threading.Event()  # set whenever a call has ended
        self._lock = threading.Lock()

    def resolve(self, request):
        check_request(request)
        return request if request.size is not None else replace(request, size=(self.native, self.native))

    def frames(self, request, on_step=None, should_stop=None, timings=None) -> Iterator[RenderedFrame]:
        request = self.resolve(request)
        walk = get_walk(request.walk)
        plan = walk.plan(request)
        with self._lock:
            self.calls += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.ended.clear()
        try:
            if self.failures:
                raise self.failures.pop(0)
            size = request.batch_size or default_batch_size(self.model.device, *request.size)
            done = 0
            for batch in batched(list(enumerate(plan)), size):  # like the engine: steps per batch of frames
                for step in range(1, request.steps + 1):
                    if self.gate is not None:
                        self.gate.acquire()
                    if should_stop is not None and should_stop():
                        raise MorphCancelled("morph cancelled")
                    self.steps_done += 1
                    if on_step is not None:
                        on_step(StepProgress(done, len(plan), step, request.steps, len(batch)))
                for index, point in batch:
                    shade = int(255 * index / max(1, len(plan) - 1))
                    image = Image.new("RGB", request.size, (shade, 0, 255 - shade))
                    self.frames_done += 1
                    done += 1
                    yield RenderedFrame(index, point, image, False, walk.caption(point))
            self.outcome = "done"
        except MorphCancelled:
            self.outcome = "cancelled"
            raise
        except BaseException as error:
            self.outcome = type(error).__name__
            raise
        finally:
            with self._lock:
                self.active -= 1
            self.ended.set()

    def manifest(self, request, frames, timings) -> dict:
        request = self.resolve(request)
        return {"walk": request.walk, "prompts": list(request.prompts), "model": self.model.name,
                "frames": [{"index": frame.index, **frame.point.as_dict()} for frame in frames],
                "path": stand_in_path_record(len(frames), len(request.prompts))}


def stand_in_path_record(frames: int, keys: int) -> dict:
    """A made-up `path` record (`pipelines.inspect.path_record`'s fields): enough for the page's path plot."""
    return {
        "noise_interp": "slerp", "noise_norm": [1.0] * frames, "noise_norm_lerp": [0.8] * frames,
        "embed_norm": [1.0] * frames, "gap": [10.0] * max(frames - 1, 0), "cuts": [], "cut_factor": 3.0,
        "nearest": [[{"prompt": "a red circle", "cosine": 0.9}] for _ in range(frames)],
        "map": {"frames": [[float(index), 0.0] for index in range(frames)],
                "keys": [[float(index), 1.0] for index in range(keys)], "landmarks": {"a red circle": [0.0, 0.5]}},
    }


def values(walk: str = "chain", **overrides) -> dict:
    """A small valid request of `walk`, as an endpoint receives it."""
    small = {"chain": {"frames": 3}, "grid": {"grid": "2x3"}, "direction": {"frames": 3, "scale": "0 1"}}[walk]
    return {**PROMPTS[walk], "steps": 2, **small, **overrides}


def advance_until(updates: Iterator[Update], wanted: Callable[[Update], bool], limit: int = 2000) -> list[Update]:
    """Updates up to and including the first one `wanted` accepts (the runner yields every 0.25 s at least)."""
    seen = []
    for update in updates:
        seen.append(update)
        if wanted(update):
            return seen
        if len(seen) >= limit:
            break
    raise AssertionError(f"never came: {[update.kind for update in seen][-20:]}")


def at_step(step: int, steps: int) -> Callable[[Update], bool]:
    return lambda update: update.kind == "step" and f"step {step}/{steps}" in update.text


# ---------------------------------------------------------------- a morph from start to end

@pytest.mark.parametrize("walk", ["chain", "grid", "direction"])
def test_updates_come_in_order_and_end_with_the_walks_files(walk: str) -> None:
    runner = Runner({"m": StandInMorpher("m")}, LIMITS)
    running = runner.updates(walk, values(walk))
    # the files live until the caller asks for the next update (it copies them first)
    updates = advance_until(running, lambda update: update.kind == "done")
    kinds = [update.kind for update in updates if update.kind != "tick"]
    assert kinds[0] == "clear" and kinds[-1] == "done"
    assert kinds.count("done") == 1
    assert set(kinds) <= {"clear", "step", "frame", "done"}  # nothing to wait for: the model was free
    steps = [update for update in updates if update.kind == "step"]
    assert steps and steps[0].text == "m: starting"
    first_frame = kinds.index("frame") if "frame" in kinds else len(kinds) - 1
    assert kinds.index("step") < first_frame  # progress comes before the first finished frame
    fractions = [update.fraction for update in steps[1:]]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1
    # the gallery only grows, and the last update holds every frame
    galleries = [update.gallery for update in updates if update.kind == "frame"]
    assert all(len(earlier) < len(later) for earlier, later in zip(galleries, galleries[1:]))
    done = updates[-1]
    assert all(gallery == done.gallery[: len(gallery)] for gallery in galleries)
    count = 6 if walk == "grid" else 3
    assert len(done.gallery) == count and done.fraction == 1.0 and f"{count} frames in" in done.text
    # the walk's files, each in its format
    outputs = get_walk(walk).outputs
    assert list(done.files) == list(outputs)
    with Image.open(done.files["gif"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == count
    assert done.files["mp4"].read_bytes()[4:8] == b"ftyp"
    record = json.loads(done.files["manifest"].read_text())
    assert record["walk"] == walk and record["model"] == "m"
    if walk == "grid":
        with Image.open(done.files["grid"]) as mosaic:
            assert mosaic.format == "PNG" and mosaic.size == (3 * 64, 2 * 64)  # columns x rows of tiles
        assert [caption.split(" · ")[1] for _, caption in done.gallery[:4]] == ["r0 c0", "r0 c1", "r0 c2", "r1 c2"]
    else:
        with Image.open(done.files["strip"]) as strip:
            assert strip.size == (3 * 64, 64)
    for path, caption in done.gallery:
        assert Path(path).suffix == ".png" and caption
    assert list(running) == []  # nothing after "done"


def test_the_files_are_removed_once_the_caller_and_the_worker_are_done() -> None:
    stand_in = StandInMorpher("m")
    updates = Runner({"m": stand_in}, LIMITS).updates("chain", values())
    done = advance_until(updates, lambda update: update.kind == "done")[-1]
    folder = done.files["gif"].parent
    assert folder.is_dir()  # the caller copies the files before it asks for more
    assert list(updates) == []
    for _ in range(200):  # the worker releases its share when it has really ended
        if not folder.exists():
            break
        threading.Event().wait(0.05)
    assert not folder.exists()


# ---------------------------------------------------------------- checks before any work

@pytest.mark.parametrize(
    ("walk", "overrides", "needle"),
    [
        ("chain", {"frames": 25}, "frames must be between 2 and 24 (--max-frames); got 25"),
        ("chain", {"prompt_b": "  "}, "prompt B is empty"),
        ("grid", {"grid": "9x2"}, "grid rows must be between 2 and 8 (--max-grid-side); got 9"),
        ("grid", {"more_prompts": "a green star"}, "unknown parameter 'more_prompts' for the grid walk"),
        ("direction", {"scale": "0 5"}, "scale must be between -4 and 4 (--max-scale); got 5"),
        ("direction", {"model": "other"}, "model must be one of m; got 'other'"),
    ],
)
def test_a_bad_value_raises_limit_error_before_any_work(walk: str, overrides: dict, needle: str) -> None:
    stand_in = StandInMorpher("m")
    updates = Runner({"m": stand_in}, LIMITS).updates(walk, values(walk, **overrides))
    with pytest.raises(LimitError) as caught:
        next(updates)  # not even the "clear" update comes first
    assert needle in str(caught.value)
    assert stand_in.calls == 0


def test_the_models_own_size_is_checked_against_the_pixel_limit() -> None:
    stand_in = StandInMorpher("m", native=256)  # no size asked: the model's own 256x256
    with pytest.raises(LimitError, match=r"256x256 is over the limit of 16384 pixels per frame \(--max-pixels\)"):
        next(Runner({"m": stand_in}, LIMITS).updates("chain", values()))
    assert stand_in.calls == 0


def test_a_runner_needs_a_model() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        Runner({}, LIMITS)


# ---------------------------------------------------------------- cancel and errors

def test_closing_the_updates_stops_the_work_at_the_next_step_and_frees_the_model() -> None:
    """What Gradio does on Cancel or a closed tab: close the generator."""
    gate = threading.Semaphore(0)
    stand_in = StandInMorpher("m", gate=gate)
    runner = Runner({"m": stand_in}, LIMITS)
    updates = runner.updates("chain", values(frames=4, steps=5))
    gate.release(3)
    advance_until(updates, at_step(3, 5))
    updates.close()
    gate.release(MANY)  # from here on the stand-in could run to its end, if nothing stopped it
    assert stand_in.ended.wait(WAIT_S)
    assert stand_in.outcome == "cancelled"
    assert stand_in.steps_done == 3 and stand_in.frames_done == 0  # not one step after the close
    # the model is free again: the next job runs to its end
    assert advance_until(runner.updates("chain", values()), lambda update: update.kind == "done")
    assert stand_in.calls == 2


def test_a_job_stopped_by_the_caller_never_delivers_files() -> None:
    gate = threading.Semaphore(0)
    stand_in = StandInMorpher("m", gate=gate)
    updates = Runner({"m": stand_in}, LIMITS).updates("grid", values("grid"))
    gate.release(1)
    advance_until(updates, at_step(1, 2))
    updates.close()
    gate.release(MANY)
    assert stand_in.ended.wait(WAIT_S) and stand_in.outcome == "cancelled"
    assert list(updates) == []  # a closed generator says nothing more


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"), JobOutOfMemory),
        (ValueError("spacing 'even' found no steps"), ValueError),
        (KeyError("/secret/path"), KeyError),
    ],
)
def test_job_errors_come_out_as_plain_exceptions(failure: BaseException, expected: type) -> None:
    stand_in = StandInMorpher("m", failures=[failure])
    runner = Runner({"m": stand_in}, LIMITS)
    with pytest.raises(expected):
        list(runner.updates("chain", values()))
    assert stand_in.steps_done == 0
    assert list(runner.updates("chain", values()))[-1].kind == "done"  # the model was freed


def test_the_deadline_stops_a_long_job() -> None:
    gate = threading.Semaphore(0)
    stand_in = StandInMorpher("m", gate=gate)
    updates = Runner({"m": stand_in}, replace(LIMITS, deadline_s=0.01)).updates("chain", values())
    # clear, then "starting": the worker has begun; by the next step the deadline has passed
    advance_until(updates, lambda update: update.kind == "step")
    threading.Event().wait(0.05)
    gate.release(MANY)
    with pytest.raises(JobDeadline, match="0.01 s limit per job"):
        list(updates)
    assert stand_in.outcome == "cancelled" and stand_in.steps_done == 0


# ---------------------------------------------------------------- callers nobody reads

def test_a_job_nobody_reads_is_skipped_before_any_work_and_frees_the_model() -> None:
    stand_in = StandInMorpher("m")
    runner = Runner({"m": stand_in}, LIMITS, unread_s=0.3)
    updates = runner.updates("chain", values(), reading=lambda: False)  # the stream was never opened
    seen = []
    with pytest.raises(JobUncollected, match="Nobody read the results for 0.3 s"):
        for update in updates:
            seen.append(update.kind)
    assert seen[0] == "clear" and set(seen[1:]) == {"wait"}
    assert stand_in.calls == 0  # not one step rendered
    assert list(runner.updates("chain", values()))[-1].kind == "done"  # the model is free


def test_a_job_whose_caller_stops_reading_is_stopped_at_the_next_step() -> None:
    gate = threading.Semaphore(0)
    stand_in = StandInMorpher("m", gate=gate)
    read = threading.Event()
    read.set()
    updates = Runner({"m": stand_in}, LIMITS, unread_s=0.3).updates("chain", values(frames=4, steps=5),
                                                                     reading=read.is_set)
    gate.release(2)
    advance_until(updates, at_step(2, 5))
    read.clear()  # the stream has gone, or nobody reads it any more
    with pytest.raises(JobUncollected):
        list(updates)
    gate.release(MANY)  # from here on the stand-in could run to its end, if nothing stopped it
    assert stand_in.ended.wait(WAIT_S)
    assert stand_in.outcome == "cancelled" and stand_in.steps_done == 2 and stand_in.frames_done == 0


def test_a_caller_who_opens_the_stream_late_still_gets_the_morph() -> None:
    looks = iter([False] * 5)  # five looks find nobody, then someone reads
    stand_in = StandInMorpher("m")
    updates = Runner({"m": stand_in}, LIMITS, unread_s=WAIT_S).updates(
        "chain", values(), reading=lambda: next(looks, True))
    assert [update.kind for update in updates][-1] == "done"
    assert stand_in.calls == 1


# ---------------------------------------------------------------- what a morph costs

SLOW = Speed("cpu", ((64 * 64, 0.01, 0.1),))  # 10 ms per UNet row per step, 100 ms per frame besides


def test_a_morph_over_the_deadline_is_refused_before_any_work_saying_what_fits() -> None:
    stand_in = StandInMorpher("m")
    runner = Runner({"m": stand_in}, replace(LIMITS, deadline_s=10), speeds={"m": SLOW})
    # 24 frames x 2 rows (guidance) x 20 steps x 10 ms + 24 x 100 ms = 12 s, x1.25 = 15 s
    with pytest.raises(LimitError) as caught:
        next(runner.updates("chain", values(frames=24, steps=20)))
    assert str(caught.value).startswith("This morph would take about 15 s on this CPU, over the 10 s limit per job "
                                        "(--deadline-s): try at most 16 frames at these settings, or at most 11 steps")
    assert stand_in.calls == 0
    assert list(runner.updates("chain", values(frames=16, steps=20)))[-1].kind == "done"  # what it said fits
    assert stand_in.calls == 1


def test_the_cost_is_estimated_at_the_models_own_size() -> None:
    stand_in = StandInMorpher("m", native=128)  # no size asked: 128x128, four times the pixels of 64x64
    runner = Runner({"m": stand_in}, replace(LIMITS, deadline_s=10), speeds={"m": SLOW})
    with pytest.raises(LimitError, match="about 40 s on this CPU"):
        next(runner.updates("chain", values(frames=16, steps=20)))
    resolved = stand_in.resolve(check_form_request(frames=16, steps=20))
    assert estimate_s(resolved, SLOW) == pytest.approx(1.25 * 4 * (16 * 2 * 20 * 0.01 + 16 * 0.1))


def check_form_request(**overrides):
    from service.form import check_form

    return check_form(LIMITS, ["m"], "chain", **values(**overrides)).request


# ---------------------------------------------------------------- one job at a time per model

def test_one_job_at_a_time_per_model_while_other_models_run() -> None:
    gate = threading.Semaphore(0)
    first, other = StandInMorpher("first", gate=gate), StandInMorpher("other")
    runner = Runner({"first": first, "other": other}, LIMITS)
    running = runner.updates("chain", values())  # no model named: the first one
    gate.release(1)
    advance_until(running, at_step(1, 2))
    waiting = runner.updates("chain", values(model="first"))
    assert [next(waiting).kind, next(waiting).kind] == ["clear", "wait"]
    assert "one morph at a time" in next(waiting).text
    # another model is not held up by the first
    beside = [update.kind for update in runner.updates("grid", values("grid", model="other"))]
    assert "wait" not in beside and beside[-1] == "done"
    assert first.calls == 1  # the waiting job has not started
    gate.release(MANY)
    assert [update.kind for update in running][-1] == "done"
    assert [update.kind for update in waiting][-1] == "done"
    assert first.calls == 2 and first.most_active == 1


def test_jobs_from_many_threads_never_overlap_on_one_model() -> None:
    stand_in = StandInMorpher("m")
    runner = Runner({"m": stand_in}, LIMITS)
    results: list[str] = []

    def visitor() -> None:
        results.append(list(runner.updates("chain", values(steps=3)))[-1].kind)

    threads = [threading.Thread(target=visitor) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert results == ["done"] * 4
    assert stand_in.calls == 4 and stand_in.most_active == 1


# ---------------------------------------------------------------- pictures as keyframes

def test_a_picture_key_morph_runs_on_the_tiny_model(morpher, tmp_path: Path) -> None:
    """An uploaded picture with no prompt is key A: the engine inverts it and reports how close it came back."""
    from test_service_limits import disc

    uploads = tmp_path / "uploads"
    picture = disc(uploads / "c0ffee" / "disc.png", size=(48, 40))
    runner = Runner({"tiny": morpher}, LIMITS, uploads=uploads)
    updates = runner.updates("chain", values(prompt_a="", image_a=str(picture), frames=3, steps=3, size="32x32"))
    done = advance_until(updates, lambda update: update.kind == "done")[-1]
    assert len(done.gallery) == 3
    record = json.loads(done.files["manifest"].read_text())
    assert record["prompts"][0] == f"image:{picture.resolve()}|"
    key = record["keys"][0]
    assert key["kind"] == "image" and key["file"] == "disc.png" and key["prompt"] == ""
    assert key["crop"] == [4, 0, 44, 40] and len(key["sha256_16"]) == 16  # 48x40: its centre 40x40, for 32x32
    assert set(key["reconstruction"]) >= {"psnr_vs_input_db", "psnr_vs_vae_round_trip_db", "vae_round_trip_psnr_db",
                                          "within_tolerance"}
    assert record["keys"][1]["kind"] == "prompt"
    assert list(updates) == []


@pytest.mark.parametrize(
    ("picture", "needle"),
    [
        ("outside", "picture A: only pictures uploaded to this server are read."),
        ("notes", "picture A: image 'notes.png' is not a picture PIL can read"),
    ],
)
def test_a_bad_picture_is_refused_before_any_work(tmp_path: Path, picture: str, needle: str) -> None:
    from test_service_limits import disc

    uploads = tmp_path / "uploads"
    if picture == "outside":
        path = disc(tmp_path / "elsewhere" / "disc.png")
    else:
        path = uploads / "1" / "notes.png"
        path.parent.mkdir(parents=True)
        path.write_text("not a picture")
    stand_in = StandInMorpher("m")
    updates = Runner({"m": stand_in}, LIMITS, uploads=uploads).updates("chain", values(image_a=str(path)))
    with pytest.raises(LimitError) as caught:
        next(updates)
    assert needle in str(caught.value)
    assert stand_in.calls == 0


def test_a_runner_without_an_upload_folder_reads_no_picture(tmp_path: Path) -> None:
    from test_service_limits import disc

    picture = disc(tmp_path / "disc.png")
    stand_in = StandInMorpher("m")
    with pytest.raises(LimitError, match="only pictures uploaded to this server are read"):
        next(Runner({"m": stand_in}, LIMITS).updates("chain", values(image_a=str(picture))))
    assert stand_in.calls == 0
