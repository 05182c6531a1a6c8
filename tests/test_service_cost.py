"""What a morph costs before it runs: the estimate, the refusal and what it suggests, the
timing of a loaded model, per-device default limits, and the check on every path (runner, API, Ray)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_service_runner import StandInMorpher, values

from pipelines.request import MorphRequest
from service.cost import (
    REMOTE_SPEEDS,
    SAFETY,
    Speed,
    check_cost,
    device_limits,
    estimate_s,
    measure,
    speed_of,
    unet_rows,
)
from service.limits import LimitError, Limits
from service.runner import Runner

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
# 10 ms per UNet row per step and 100 ms per frame besides at 64x64; 50 ms and 300 ms at 128x128
SPEED = Speed("cpu", ((64 * 64, 0.01, 0.1), (128 * 128, 0.05, 0.3)))
PROMPTS = ("a red circle", "a blue square")


def chain(**fields) -> MorphRequest:
    return MorphRequest(prompts=PROMPTS, **{"frames": 16, "steps": 20, "guidance": 5.0, "size": (64, 64), **fields})


# ---------------------------------------------------------------- the estimate

@pytest.mark.parametrize(
    ("request_", "rows"),
    [
        (chain(), 16 * 2),  # every frame twice: guidance
        (chain(guidance=1.0), 16),  # no guidance: one row per frame
        (chain(spacing="even"), 32 * 2),  # the even re-timing may denoise twice the frames
        (MorphRequest(prompts=PROMPTS * 2, walk="grid", grid=(3, 4), guidance=5.0, size=(64, 64)), 12 * 2),
        (chain(attention="interpolate", batch_size=4), (16 + 4 * 2) * 2),  # both keys ride along each batch
        (MorphRequest(prompts=("image:/uploads/disc.png|", "a blue square"), frames=16, guidance=5.0,
                      size=(64, 64)), 16 * 2 + 1),  # the picture's inversion: one row per step
    ],
)
def test_rows_count_frames_guidance_walk_spacing_anchors_and_inversions(request_: MorphRequest, rows: int) -> None:
    assert unet_rows(request_, SPEED) == rows


def test_a_guidance_distilled_model_never_doubles_rows() -> None:
    assert unet_rows(chain(), replace(SPEED, guided=False)) == 16


def test_seconds_are_rows_times_steps_plus_frames_at_the_frames_pixel_count() -> None:
    assert estimate_s(chain(), SPEED) == pytest.approx(SAFETY * (32 * 20 * 0.01 + 16 * 0.1))
    # between two timed sizes: on the straight line; below the smallest: its figures; above: in proportion
    middle = chain(size=(96, 96))  # 9216 pixels, 5/12 of the way from 4096 to 16384
    assert estimate_s(middle, SPEED) == pytest.approx(SAFETY * (32 * 20 * (0.01 + 0.04 * 5 / 12) + 16 * (0.1 + 0.2 * 5 / 12)))
    assert estimate_s(chain(size=(32, 32)), SPEED) == estimate_s(chain(), SPEED)
    assert estimate_s(chain(size=(256, 256)), SPEED) == pytest.approx(SAFETY * 4 * (32 * 20 * 0.05 + 16 * 0.3))


# ---------------------------------------------------------------- the refusal

def test_a_refusal_names_the_estimate_the_deadline_flag_and_the_most_that_fits() -> None:
    big = chain(frames=48, steps=50)
    with pytest.raises(LimitError) as caught:
        check_cost(big, SPEED, deadline_s=30)
    assert str(caught.value) == ("This morph would take about 66 s on this CPU, over the 30 s limit per job "
                                 "(--deadline-s): try at most 21 frames at these settings, or at most 20 steps, "
                                 "or a smaller size.")
    # the suggestions are the most that fit, not just some that do
    assert estimate_s(replace(big, frames=21), SPEED) <= 30 < estimate_s(replace(big, frames=22), SPEED)
    assert estimate_s(replace(big, steps=20), SPEED) <= 30 < estimate_s(replace(big, steps=21), SPEED)
    check_cost(replace(big, frames=21), SPEED, deadline_s=30)  # and it is accepted


def test_a_grid_is_told_which_grid_fits() -> None:
    grid = MorphRequest(prompts=PROMPTS * 2, walk="grid", grid=(8, 8), steps=50, guidance=5.0, size=(64, 64))
    # 1.375 s a tile: 21 tiles fit in 30 s, and 3x7 is the grid of 21
    with pytest.raises(LimitError, match=r"try a grid of at most 3x7 at these settings, or at most 13 steps"):
        check_cost(grid, SPEED, deadline_s=30)
    check_cost(replace(grid, grid=(3, 7)), SPEED, deadline_s=30)


def test_when_no_frame_count_or_step_count_fits_only_a_smaller_size_is_left() -> None:
    with pytest.raises(LimitError, match=r"over the 0\.5 s limit per job \(--deadline-s\): try a smaller size\.$"):
        check_cost(chain(), SPEED, deadline_s=0.5)


def test_a_chain_is_never_told_to_use_fewer_frames_than_prompts() -> None:
    three = MorphRequest(prompts=(*PROMPTS, "a green star"), frames=10, steps=50, guidance=5.0, size=(64, 64))
    # 1.375 s a frame: 2 frames would fit in 4 s, but a chain of 3 prompts shows at least 3 frames (4.1 s)
    with pytest.raises(LimitError, match=r"\(--deadline-s\): try at most 11 steps, or a smaller size\.$"):
        check_cost(three, SPEED, deadline_s=4)
    with pytest.raises(LimitError, match=r"try at most 3 frames at these settings, or at most 15 steps"):
        check_cost(three, SPEED, deadline_s=5)


def test_an_unknown_speed_checks_nothing() -> None:
    check_cost(chain(frames=10_000), None, deadline_s=1)


# ---------------------------------------------------------------- where the speed comes from

def test_the_loaded_model_is_timed_once_without_touching_the_global_rng(tiny_model, caplog) -> None:
    caplog.set_level(logging.INFO, logger="service.cost")
    state = torch.random.get_rng_state()
    speed = measure(tiny_model, 128)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert speed is not None and speed.device == "cpu" and speed.place == "this CPU" and speed.guided
    assert [pixels for pixels, _, _ in speed.points] == [64 * 64, 128 * 128]
    assert all(0 < row_s < 60 and 0 <= frame_s < 60 for _, row_s, frame_s in speed.points)
    logged = [record.getMessage() for record in caplog.records]
    assert any("tiny on cpu:" in line and "per UNet row per step at 64x64" in line for line in logged)
    assert any("at 128x128" in line for line in logged)


def test_a_timing_that_fails_leaves_the_model_unchecked(caplog) -> None:
    def out_of_memory(**kwargs):
        raise RuntimeError("CUDA out of memory")

    model = SimpleNamespace(name="big", device=torch.device("cpu"), pipe=out_of_memory)
    assert measure(model, 512) is None
    assert any("could not time big" in record.getMessage() for record in caplog.records)


def test_speeds_by_kind_of_model(tiny_model) -> None:
    assert speed_of(StandInMorpher("m"), Limits()) is None  # no pipeline here: nothing to time
    remote = SimpleNamespace(model=SimpleNamespace(name="r", device=torch.device("cuda")), morph_work=None)
    assert speed_of(remote, Limits()) is REMOTE_SPEEDS["cuda"]
    assert REMOTE_SPEEDS["cuda"].place == "a Ray replica's GPU"
    stated = SimpleNamespace(speed=SPEED, model=SimpleNamespace(pipe=object()))
    assert speed_of(stated, Limits()) is SPEED  # a model that says how fast it is is not timed
    timed = speed_of(SimpleNamespace(model=tiny_model), Limits(max_pixels=64 * 64))
    assert timed is not None and [pixels for pixels, _, _ in timed.points] == [64 * 64]


def test_a_remote_model_is_checked_before_anything_is_sent() -> None:
    class Remote:
        """What the Runner sees of a model on Ray Serve replicas (service.backends.ray_client)."""

        model = SimpleNamespace(name="remote", device=torch.device("cpu"))
        sent = 0

        def resolve(self, request):
            return request

        def morph_work(self, request, outputs, folder):
            Remote.sent += 1
            raise AssertionError("sent to a replica")

    runner = Runner({"remote": Remote()}, Limits(deadline_s=60))
    with pytest.raises(LimitError, match=r"on a Ray replica's CPU, over the 60 s limit per job \(--deadline-s\)"):
        next(runner.updates("chain", values(frames=48, steps=50, size="256x256")))
    assert Remote.sent == 0


# ---------------------------------------------------------------- per-device defaults

def test_a_cpu_gets_smaller_default_limits_than_a_gpu() -> None:
    cpu, gpu = device_limits("cpu"), device_limits("cuda")
    assert gpu == Limits() and device_limits("mps") == Limits()
    assert cpu.max_frames < gpu.max_frames and cpu.max_pixels < gpu.max_pixels
    assert cpu.deadline_s == gpu.deadline_s  # the deadline is the operator's, whatever the device


def test_the_launch_flags_default_to_the_devices_limits_and_flags_still_win() -> None:
    from pipelines.loading import resolve_device
    from service.config import build_parser, parse_config

    assert parse_config(["--device", "cpu"], environ={}).limits == device_limits("cpu")
    assert parse_config(["--device", "cuda"], environ={}).limits == Limits()
    assert parse_config([], environ={"LATENT_MORPH_DEVICE": "cpu"}).limits == device_limits("cpu")
    assert parse_config([], environ={}).limits == device_limits(resolve_device("auto").type)
    flagged = parse_config(["--device", "cpu", "--max-frames", "40"], environ={"LATENT_MORPH_MAX_PIXELS": "100000"})
    assert (flagged.limits.max_frames, flagged.limits.max_pixels) == (40, 100000)
    help_text = " ".join(build_parser({}).format_help().split())
    assert "depend on --device" in help_text and "longer than --deadline-s is refused" in help_text
    assert "reads none of its results for 5 s" in help_text


# ---------------------------------------------------------------- through the API

def test_the_api_refuses_a_morph_over_the_deadline_before_any_work(monkeypatch) -> None:
    import service.speeds
    from service.app import build_demo
    from service.testing import free_port

    stand_in = StandInMorpher("m")
    monkeypatch.setattr(service.speeds, "speed_of", lambda morpher, limits: SPEED)
    demo = build_demo({"m": stand_in}, Limits(deadline_s=30), examples={})
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError, match=r"about 66 s on this CPU, over the 30 s limit per job \(--deadline-s\)"):
            client.predict(**values(frames=48, steps=50, size="64x64"), api_name="/morph")
        assert stand_in.calls == 0
        assert len(client.predict(**values(frames=21, steps=50, size="64x64"), api_name="/morph")[4]) == 21
    finally:
        demo.close()
