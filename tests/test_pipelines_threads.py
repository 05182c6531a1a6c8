"""The thread policy: torch uses the cores other processes leave free, or a fixed count.

The contention itself (render time with busy cores) is measured by
`benchmarks/threads_bench.py`, never timed here; these tests check the decisions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from pipelines import threads
from pipelines.request import MorphRequest
from pipelines.threads import CpuSample, ThreadGovernor, busy_elsewhere, parse_threads, read_sample, threads_for


@pytest.fixture(autouse=True)
def torch_threads_restored(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(threads, "_helper_pids", set())  # no lane worker of another test counts here
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._governor = None


@pytest.mark.parametrize(("cores", "others", "expected"), [
    (2, 0.0, 2),   # quiet: both cores
    (2, 0.2, 2),   # a shell or a log writer is not a busy core
    (2, 0.7, 1),   # a neighbour squeezed by our two spinning threads still holds a core
    (2, 1.0, 1),
    (2, 2.0, 1),   # never fewer than one
    (8, 2.9, 5),
])
def test_threads_are_the_cores_other_processes_leave_free(cores: int, others: float, expected: int) -> None:
    assert threads_for(cores, others) == expected


def test_cpu_used_elsewhere_is_the_machine_s_busy_time_minus_this_process_s() -> None:
    before = CpuSample(wall_s=10.0, machine_busy=1000, own=400)
    # 2 s later at 100 ticks/s: the machine was busy 300 ticks, 100 of them this process's
    after = CpuSample(wall_s=12.0, machine_busy=1300, own=500)
    assert busy_elsewhere(before, after, ticks_per_s=100) == pytest.approx(1.0)
    assert busy_elsewhere(before, before, ticks_per_s=100) == 0.0


def test_the_counters_are_read_from_proc_stat_format(tmp_path: Path) -> None:
    stat, own = tmp_path / "stat", tmp_path / "self_stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n")
    own.write_text("1234 (python (weird) name) R 1 1 1 0 -1 4194304 10 0 0 0 " "70 30 0 0 20 0 3 0\n")
    sample = read_sample(stat, own)
    assert sample is not None
    assert sample.machine_busy == 100 + 5 + 50 + 1 + 2 + 3  # guest time is already inside user
    assert sample.own == 70 + 30
    assert read_sample(tmp_path / "missing", own) is None


def test_this_machine_reports_its_counters() -> None:
    sample = read_sample()
    if sample is None:
        pytest.skip("no /proc on this system")
    assert sample.machine_busy > 0 and sample.own >= 0


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", "99999", "x" * 5000])
def test_a_bad_thread_count_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="threads must be 'auto' or a whole number") as error:
        parse_threads(text)
    assert len(str(error.value)) < 120  # a long value is echoed as a short prefix


def test_auto_and_numbers_parse() -> None:
    assert parse_threads("auto") is None and parse_threads("") is None and parse_threads(None) is None
    assert parse_threads(" 3 ") == 3


def test_a_fixed_count_is_applied_in_the_rendering_thread() -> None:
    governor = ThreadGovernor(fixed=1)
    seen = []

    def render() -> None:
        governor.rebalance()
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=render)
    worker.start()
    worker.join()
    assert seen == [1]


def test_auto_follows_the_load_of_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    # other processes: one core busy for the first second, then nothing
    samples = iter([CpuSample(0.0, 0, 0), CpuSample(1.0, 200, 100), CpuSample(2.0, 400, 300)])
    monkeypatch.setattr(threads, "read_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "busy_elsewhere", lambda a, b: busy_elsewhere(a, b, ticks_per_s=100))
    governor = ThreadGovernor(cores=2)
    governor.rebalance()
    assert governor.current == 1 and torch.get_num_threads() == 1
    governor.rebalance()
    assert governor.current == 2 and torch.get_num_threads() == 2


def test_the_engine_rebalances_before_a_render_and_at_every_step(morpher, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(threads, "rebalance", lambda *told: calls.append(told))
    request = MorphRequest(prompts=("a red circle", "a blue square"), frames=3, steps=2, batch_size=4,
                           size=(32, 32), seeds=(71,))
    morpher.render(request)
    # the render's start, told the size of its work, then each of the 2 steps of its one batch
    channels = morpher.model.pipe.unet.config.block_out_channels[0]
    latent_side = 32 // morpher.model.pipe.vae_scale_factor
    assert calls == [(latent_side * latent_side * channels,), (), ()]


def test_heavy_work_uses_every_core_and_light_work_the_free_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads_for(2, 1.0, heavy=True) == 2 and threads_for(2, 1.0, heavy=False) == 1
    sd15_at_512 = 64 * 64 * 320
    bundled = 16 * 16 * 64
    assert threads.is_heavy(sd15_at_512) and not threads.is_heavy(bundled)
    # one core busy elsewhere all along
    clock = iter(range(100))
    monkeypatch.setattr(threads, "read_sample", lambda: (lambda t: CpuSample(float(t), 200 * t, 100 * t))(next(clock)))
    monkeypatch.setattr(threads, "busy_elsewhere", lambda a, b: busy_elsewhere(a, b, ticks_per_s=100))
    governor = threads.configure(None)
    governor.cores = 2
    threads.rebalance(bundled)
    assert governor.current == 1
    threads.rebalance(sd15_at_512)  # a heavy render decides again at once
    assert governor.current == 2


def test_the_service_takes_threads_from_its_flag_or_environment() -> None:
    from service.config import parse_config

    assert parse_config([], environ={}).threads is None
    assert parse_config(["--threads", "3"], environ={}).threads == 3
    assert parse_config([], environ={"LATENT_MORPH_THREADS": "2"}).threads == 2
    with pytest.raises(SystemExit) as exited:
        parse_config(["--threads", "0"], environ={})
    assert exited.value.code == 2


def test_auto_never_goes_above_omp_num_threads() -> None:
    assert threads.usable_cores({"OMP_NUM_THREADS": "1"}) == 1
    assert threads.usable_cores({}) == threads.usable_cores({"OMP_NUM_THREADS": "not a number"}) >= 1
