"""The frame cache: reuse across requests, bounds in memory and on disk, keys that change with the frame."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.cache import FrameCache, frame_key, image_bytes
from pipelines.engine import Morpher
from pipelines.render import MorphCancelled
from pipelines.request import MorphRequest
from pipelines.walks import Point, get_walk

REQUEST = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=2, size=(32, 32))


def picture(level: int, size: int = 8) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), level, dtype=np.uint8))


class UnetCalls:
    """Counts UNet forward calls (one per denoising step and batch)."""

    def __init__(self, pipe) -> None:
        self.count = 0
        self.handle = pipe.unet.register_forward_pre_hook(self.seen)

    def seen(self, *args) -> None:
        self.count += 1

    def __enter__(self) -> "UnetCalls":
        return self

    def __exit__(self, *args) -> None:
        self.handle.remove()


def test_a_repeated_request_renders_nothing_new_and_gives_the_same_pixels(tiny_model, tmp_path: Path) -> None:
    morpher = Morpher(tiny_model, cache=FrameCache(folder=tmp_path))
    with UnetCalls(tiny_model.pipe) as calls:
        first = morpher.render(REQUEST)
        after_first = calls.count
        second = morpher.render(REQUEST)
    assert after_first > 0 and calls.count == after_first
    assert second.manifest["render"]["frames_rendered"] == 0 and second.manifest["render"]["cache_hits"] == 5
    for a, b in zip(first.frames, second.frames):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    # A new process (a new cache over the same folder) finds them on disk, pixel for pixel.
    fresh = Morpher(tiny_model, cache=FrameCache(folder=tmp_path))
    with UnetCalls(tiny_model.pipe) as calls:
        third = fresh.render(REQUEST)
    assert calls.count == 0 and fresh.cache.stats.disk_hits == 5
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first.frames, third.frames))


def test_more_frames_reuse_the_frames_already_rendered(tiny_model) -> None:
    morpher = Morpher(tiny_model, cache=FrameCache())
    morpher.render(REQUEST)  # t = 0, 1/4, 1/2, 3/4, 1
    record = morpher.render(replace(REQUEST, frames=9)).manifest["render"]  # t = 0, 1/8, ..., 1
    assert record["cache_hits"] == 5 and record["frames_rendered"] == 4
    # The keyframes are shared by every chain that contains them.
    chain = morpher.render(replace(REQUEST, prompts=("a red circle", "a blue square", "a red circle"),
                                   seeds=(1, 2, 1), frames=3)).manifest["render"]
    assert chain["frames_rendered"] == 0


def test_even_spacing_reuses_the_linear_frames_as_its_pilot(tiny_model) -> None:
    morpher = Morpher(tiny_model, cache=FrameCache())
    morpher.render(REQUEST)
    with UnetCalls(tiny_model.pipe) as calls:
        record = morpher.render(replace(REQUEST, spacing="even")).manifest["render"]
    assert record["cache_hits"] >= REQUEST.frames
    assert calls.count == record["pipeline_calls"] * REQUEST.steps
    again = morpher.render(replace(REQUEST, spacing="even")).manifest["render"]
    assert again["frames_rendered"] == 0


def test_cancelled_render_keeps_the_finished_batches(tiny_model) -> None:
    morpher = Morpher(tiny_model, cache=FrameCache())
    steps: list = []
    request = replace(REQUEST, batch_size=2)
    with pytest.raises(MorphCancelled):
        list(morpher.frames(request, on_step=steps.append, should_stop=lambda: len(steps) >= 3))
    record = morpher.render(request).manifest["render"]
    assert record["cache_hits"] == 2 and record["frames_rendered"] == 3


def test_memory_is_bounded_by_count_and_bytes() -> None:
    cache = FrameCache(memory_items=3)
    for level in range(5):
        cache.put(str(level), picture(level))
    assert len(cache) == 3 and cache.get("0") is None and cache.get("4") is not None
    cache.get("2")  # recently used: survives the next eviction
    cache.put("5", picture(5))
    assert cache.get("2") is not None and cache.get("3") is None
    by_bytes = FrameCache(memory_bytes=2 * image_bytes(picture(0)))
    for level in range(4):
        by_bytes.put(str(level), picture(level))
    assert len(by_bytes) == 2 and by_bytes.memory_used <= 2 * image_bytes(picture(0))
    assert by_bytes.stats.evicted_memory == 2


def test_disk_is_capped_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    noisy = [Image.fromarray(np.random.default_rng(n).integers(0, 255, (32, 32, 3), dtype=np.uint8))
             for n in range(12)]
    one_file = FrameCache(folder=tmp_path / "probe")
    one_file.put("probe", noisy[0])
    size = one_file.disk_used()
    cache = FrameCache(memory_items=0, folder=tmp_path / "frames", disk_bytes=int(5.5 * size))
    for n in range(3):
        cache.put(f"{n:02d}", noisy[n])
    old = time.time() - 100
    for n in range(3):
        os.utime(cache._path(f"{n:02d}"), (old + n, old + n))
    assert cache.get("00") is not None  # a hit refreshes its time: now the newest
    for n in range(3, 12):
        cache.put(f"{n:02d}", noisy[n])
    assert cache.disk_used() <= 5.5 * size
    assert cache.get("11") is not None and cache.get("01") is None
    assert cache.stats.evicted_disk >= 6
    # A file that is not what its name says is a miss, not a wrong frame.
    impostor = cache._path("12")
    impostor.parent.mkdir(parents=True, exist_ok=True)
    impostor.write_bytes(cache._path("11").read_bytes())
    assert cache.get("12") is None


def test_memory_only_cache_writes_no_files(tmp_path: Path) -> None:
    cache = FrameCache(folder=None)
    cache.put("k", picture(1))
    assert cache.get("k") is not None and cache.disk_used() == 0
    assert list(tmp_path.iterdir()) == []


def frame_key_of(morpher: Morpher, request: MorphRequest, point: Point) -> str:
    """The cache key the engine gives `point` of `request` (keys encoded as a render would)."""
    request = morpher.resolve(request)
    job = morpher.start_job(request, get_walk(request.walk), None, None)
    return morpher.frame_key(point, job)


def test_frame_keys_follow_everything_that_decides_the_pixels(morpher, monkeypatch) -> None:
    keys_of = {}

    def key(request: MorphRequest, segment: int = 0, t: float = 0.5, model: Morpher = morpher) -> str:
        return frame_key_of(model, request, Point.of(segment=segment, t=t))

    base = key(REQUEST)
    changes = {
        "prompt": replace(REQUEST, prompts=("a red circle", "a green star")),
        "negative": replace(REQUEST, negative_prompt="blurry"),
        "seed": replace(REQUEST, seeds=(1, 3)),
        "steps": replace(REQUEST, steps=3),
        "guidance": replace(REQUEST, guidance=6.0),
        "width": replace(REQUEST, size=(40, 32)),
        "height": replace(REQUEST, size=(32, 40)),
        "interp": replace(REQUEST, interp="lerp"),
        "noise_interp": replace(REQUEST, noise_interp="lerp"),
    }
    for name, request in changes.items():
        keys_of[name] = key(request)
    keys_of["t"] = key(REQUEST, t=0.25)
    assert len({base, *keys_of.values()}) == len(keys_of) + 1, keys_of
    # What does not decide a frame's pixels does not change its key.
    for same in (replace(REQUEST, frames=9), replace(REQUEST, batch_size=1), replace(REQUEST, spacing="even"),
                 replace(REQUEST, fps=24.0), replace(REQUEST, loop=True)):
        assert key(same) == base
    own_size = morpher.resolve(replace(REQUEST, size=None)).size  # "the model's own size" is a size like any
    assert key(replace(REQUEST, size=None)) == key(replace(REQUEST, size=own_size))
    # Keyframes: the end of one segment is the start of the next, whatever the interpolation.
    chain = replace(REQUEST, prompts=("a red circle", "a blue square", "a green star"), seeds=(1, 2, 5))
    assert key(chain, 0, 1.0) == key(chain, 1, 0.0) == key(replace(chain, interp="lerp"), 1, 0.0)
    assert key(chain, 0, 0.0) != key(chain, 1, 0.0)
    # The scheduler's class and config, and the weights, are part of the key.
    pipe = morpher.model.pipe
    with monkeypatch.context() as patch:
        patch.setattr(pipe, "scheduler", type(pipe.scheduler).from_config(pipe.scheduler.config,
                                                                          timestep_spacing="trailing"))
        assert key(REQUEST) != base
    other = Morpher(morpher.model)
    other._fingerprint = "another model"
    assert key(REQUEST, model=other) != base


def test_frame_key_is_exact_about_floats() -> None:
    assert frame_key({"t": 0.1}) != frame_key({"t": 0.1 + 1e-16 * 2})
    assert frame_key({"a": 1, "b": [1.5, None]}) == frame_key({"b": [1.5, None], "a": 1})
