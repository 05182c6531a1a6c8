"""CPU lanes: a UNet call's rows split over worker processes give the same noise predictions and frames,
follow the thread budget, survive a worker's death, and count as this process's own CPU use."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import metrics, threads
from pipelines.engine import Morpher
from pipelines.lanes import (
    LanedUNet, Lanes, add_lanes_flag, lanes_for, parse_lanes, row_chunks,
)
from pipelines.request import MorphRequest
from pipelines.speed import SpeedSettings

REQUEST = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=6, steps=4, size=(64, 64))


# ---------------------------------------------------------------- settings


def test_rows_are_cut_into_near_equal_contiguous_chunks() -> None:
    assert row_chunks(16, 2) == [(0, 8), (8, 16)]
    assert row_chunks(5, 2) == [(0, 3), (3, 5)]
    assert row_chunks(2, 4) == [(0, 1), (1, 2)]  # never an empty chunk
    assert row_chunks(7, 1) == [(0, 7)]


def test_lanes_setting_parses_and_names_a_bad_value() -> None:
    assert parse_lanes(None) == 1 and parse_lanes("") == 1 and parse_lanes(" 3 ") == 3
    for bad in ("0", "two", "-1", "65", "auto"):
        with pytest.raises(ValueError, match=f"lanes must be a whole number from 1 to 64, got '{bad}'"):
            parse_lanes(bad)
    parser = argparse.ArgumentParser()
    add_lanes_flag(parser, environ={"LATENT_MORPH_LANES": "2"})
    assert parser.parse_args([]).lanes == 2
    assert parser.parse_args(["--lanes", "1"]).lanes == 1
    add_lanes_flag(quiet := argparse.ArgumentParser(), environ={})
    assert quiet.parse_args([]).lanes == 1  # off unless asked for


def test_lanes_only_on_a_cpu() -> None:
    assert lanes_for("cpu", asked=2) == 2 and lanes_for("cpu", asked=1) == 1
    assert lanes_for("cuda", asked=4) == 1 and lanes_for("mps", asked=2) == 1


def test_settings_read_lanes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENT_MORPH_LANES", "3")
    assert SpeedSettings.for_device(torch.device("cpu")).lanes == 3
    monkeypatch.delenv("LATENT_MORPH_LANES")
    assert SpeedSettings.for_device(torch.device("cpu")).lanes == 1
    assert SpeedSettings.for_device(torch.device("cpu"), lanes="2").lanes == 2


# ---------------------------------------------------------------- two real lanes


@pytest.fixture
def two_threads():
    """The thread budget the policy would grant on a free 2-core machine (lanes use one lane per thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def lanes(tiny_model, two_threads):
    started = Lanes(tiny_model.pipe.unet, 2, compile=False)
    started.start_in_background().join(timeout=120)
    assert started.usable(), started.describe()
    yield started
    started.close()


def unet_inputs(unet, rows: int, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    config = unet.config
    return (torch.randn(rows, config.in_channels, 8, 8, generator=generator), torch.tensor(700),
            torch.randn(rows, 77, config.cross_attention_dim, generator=generator))


def test_split_rows_predict_the_same_noise_as_one_call(tiny_model, lanes) -> None:
    unet = tiny_model.pipe.unet
    laned = LanedUNet(unet, lanes)
    for rows in (2, 5, 16):
        sample, timestep, context = unet_inputs(unet, rows, seed=rows)
        with torch.no_grad():
            alone = unet(sample, timestep, encoder_hidden_states=context).sample
            split = laned(sample, timestep, encoder_hidden_states=context).sample
            as_tuple = laned(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
        assert split.shape == alone.shape
        torch.testing.assert_close(split, alone, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(as_tuple, alone, rtol=1e-4, atol=1e-5)
    # one timestep per row is cut with the rows
    sample, _, context = unet_inputs(unet, 4)
    per_row = torch.tensor([100, 300, 500, 900])
    with torch.no_grad():
        torch.testing.assert_close(laned(sample, per_row, encoder_hidden_states=context).sample,
                                   unet(sample, per_row, encoder_hidden_states=context).sample, rtol=1e-4, atol=1e-5)


def sends_counted(lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    original = lanes.send
    monkeypatch.setattr(lanes, "send", lambda worker, *args: (sent.append(worker), original(worker, *args)))
    return sent


def test_a_call_uses_one_lane_per_granted_thread_and_keeps_extra_arguments_at_home(
        tiny_model, lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    unet = tiny_model.pipe.unet
    laned = LanedUNet(unet, lanes)
    sent = sends_counted(lanes, monkeypatch)
    sample, timestep, context = unet_inputs(unet, 4)
    with torch.no_grad():
        laned(sample, timestep, encoder_hidden_states=context)
        assert sent == [0]
        torch.set_num_threads(1)  # the policy saw a busy core: lane 0 alone
        laned(sample, timestep, encoder_hidden_states=context)
        torch.set_num_threads(2)
        laned(sample, timestep, encoder_hidden_states=context, cross_attention_kwargs={"scale": 1.0})
    assert sent == [0]
    assert torch.get_num_threads() == 2  # lane 0 ran on one thread and gave the budget back


def test_a_dead_worker_turns_lanes_off_and_the_call_still_answers(tiny_model, lanes) -> None:
    unet = tiny_model.pipe.unet
    laned = LanedUNet(unet, lanes)
    sample, timestep, context = unet_inputs(unet, 6)
    process = lanes.workers[0][0]
    process.kill()
    process.join(timeout=10)
    with torch.no_grad():
        answer = laned(sample, timestep, encoder_hidden_states=context).sample
        alone = unet(sample, timestep, encoder_hidden_states=context).sample
    torch.testing.assert_close(answer, alone)
    assert not lanes.usable() and "failed" in lanes.describe()


def test_a_morph_on_two_lanes_has_the_frames_of_one(tiny_model, two_threads, monkeypatch) -> None:
    monkeypatch.setattr(threads, "_governor", None)  # the budget stays the fixture's 2 threads
    one = Morpher(tiny_model, speed=SpeedSettings(compile="off", lanes=1))
    two = Morpher(tiny_model, speed=SpeedSettings(compile="off", lanes=2))
    two.accelerator.start_lanes()
    try:
        assert two.accelerator.lanes.ready.wait(120), two.accelerator.describe()
        sent = sends_counted(two.accelerator.lanes, monkeypatch)
        request = replace(REQUEST, batch_size=3)
        alone = [frame.image for frame in one.frames(request)]
        laned = [frame.image for frame in two.frames(request)]
        assert sent  # the rows went to the worker
        assert tiny_model.pipe.unet is one.model.pipe.unet and not isinstance(tiny_model.pipe.unet, LanedUNet)
    finally:
        two.accelerator.lanes.close()
    worst = min(metrics.psnr(np.asarray(a), np.asarray(b)) for a, b in zip(alone, laned))
    assert worst >= 40
    assert "2 lanes" in two.accelerator.describe()


# ---------------------------------------------------------------- the thread policy


def test_a_helper_process_cpu_time_counts_as_this_process_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_helper_pids", set())
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nend = time.process_time() + 0.3\n"
                               "while time.process_time() < end: pass\ntime.sleep(60)"])

    def others_counted_as_own() -> int:
        """The sample's own ticks minus this process's alone (read just after: at most a tick or two more)."""
        sample = threads.read_sample()
        return sample.own - threads._process_ticks(Path("/proc/self/stat"))

    try:
        while threads._process_ticks(Path(f"/proc/{burner.pid}/stat")) < 20:  # 0.2 s of CPU (100 Hz ticks)
            time.sleep(0.05)
        helper = threads._process_ticks(Path(f"/proc/{burner.pid}/stat"))  # now asleep: it stays
        assert -2 <= others_counted_as_own() <= 0
        threads.register_helper(burner.pid)
        assert helper - 2 <= others_counted_as_own() <= helper
        threads.unregister_helper(burner.pid)
        assert -2 <= others_counted_as_own() <= 0
    finally:
        burner.kill()
        burner.wait()


def test_a_compiled_worker_answers_with_its_eager_unet_rather_than_compile_again(tiny_model) -> None:
    from torch._dynamo.exc import RecompileError

    from pipelines.lane_worker import _noise

    unet = tiny_model.pipe.unet

    def would_recompile(*args, **kwargs):
        raise RecompileError("new shape")

    sample, timestep, context = unet_inputs(unet, 3)
    with torch.no_grad():
        expected = unet(sample, timestep, encoder_hidden_states=context).sample
    torch.testing.assert_close(_noise(unet, would_recompile, sample, timestep, context), expected)


# ---------------------------------------------------------------- orphans


PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, time
from pipelines.lane_worker import exit_with_parent
exit_with_parent(os.getppid())
print("watching", flush=True)
time.sleep(600)
'''], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan that exited may wait for the init process to reap it)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_ends_when_its_parent_is_killed() -> None:
    root = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        worker = int(parent.stdout.readline())
        assert _running(worker)
    finally:
        parent.kill()  # no stop message, no closed pipe read: only the parent watch can end the worker
        parent.wait()
    deadline = time.monotonic() + 60
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(worker)
