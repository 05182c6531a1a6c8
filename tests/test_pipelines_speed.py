"""Speed-ups: the compiled UNet keeps frames exact and reuses its on-disk cache in a new process;
the deep-feature cache skips the deep blocks on the steps it should, and its frames have their own keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import metrics
from pipelines.deepcache import DEEP_CACHE_INTERVALS, deep_blocks, deep_feature_cache
from pipelines.engine import Morpher
from pipelines.request import MorphRequest
from pipelines.compiling import COMPILE_CACHE_ENV, pays_to_compile
from pipelines.speed import Accelerator, SpeedSettings

ROOT = Path(__file__).resolve().parents[1]
BASE = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=4, steps=4, size=(64, 64))


# ---------------------------------------------------------------- torch.compile


@pytest.fixture(scope="module")
def two_compiling_processes(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The probe run twice in new processes sharing one empty compile cache folder."""
    cache = tmp_path_factory.mktemp("inductor-cache")
    env = {**os.environ, COMPILE_CACHE_ENV: str(cache), "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "compile_probe.py"), str(tiny_model_dir)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def test_the_compiled_unet_keeps_keyframes_exact_and_frames_equal_to_eager(two_compiling_processes) -> None:
    for run in two_compiling_processes:
        assert min(run["keyframes_db"]) >= 40, run
        assert run["worst_vs_eager_db"] >= 40, run
        assert run["unet_swapped_back"]  # the pipeline holds its own UNet again after the render
        assert run["graphs_compiled_after_other_modes"] == 0  # their processors and hooks go on a twin


def test_a_second_process_compiles_from_the_on_disk_cache(two_compiling_processes) -> None:
    first, second = two_compiling_processes
    assert first["fxgraph_cache_miss"] > 0 and first["fxgraph_cache_hit"] == 0  # an empty cache: compiled
    assert second["fxgraph_cache_hit"] > 0 and second["fxgraph_cache_miss"] == 0  # every graph from the cache


def test_compile_settings_per_device_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENT_MORPH_COMPILE", raising=False)
    monkeypatch.delenv("LATENT_MORPH_LANES", raising=False)
    assert SpeedSettings.for_device(torch.device("cpu")) == SpeedSettings(compile="auto", channels_last=False, lanes=1)
    assert SpeedSettings.for_device(torch.device("cuda")).channels_last
    assert SpeedSettings.for_device(torch.device("mps")).compile == "off"  # inductor does not target MPS
    monkeypatch.setenv("LATENT_MORPH_COMPILE", "on")
    assert SpeedSettings.for_device(torch.device("cpu")).compile == "on"
    with pytest.raises(ValueError, match="compile must be one of auto, on, off"):
        SpeedSettings.for_device(torch.device("cpu"), compile="fast")


def test_auto_compiles_a_long_render_but_not_a_short_one() -> None:
    assert not pays_to_compile(row_steps=16 * 20 * 2, latent_pixels=16 * 16, cache_warm=True)
    assert pays_to_compile(row_steps=10**6, latent_pixels=16 * 16, cache_warm=True)
    # with nothing cached, the compile costs more, so a render must be longer to pay for it
    row_steps = next(n for n in (10**k for k in range(2, 9)) if pays_to_compile(n, 16 * 16, cache_warm=True))
    assert not pays_to_compile(row_steps, 16 * 16, cache_warm=False)


def test_the_pipeline_calls_the_compiled_unet_only_once_it_is_ready(tiny_model) -> None:
    accelerator = Accelerator(tiny_model.pipe, tiny_model.device, SpeedSettings(compile="on"))
    unet = tiny_model.pipe.unet
    accelerator.compiled = stand_in = torch.nn.Identity()  # what `prepare` would put there
    with accelerator.applied() as accelerated:
        assert tiny_model.pipe.unet is unet and not accelerated  # not ready yet: the eager UNet renders
    accelerator.ready.set()
    with accelerator.applied() as accelerated:
        assert tiny_model.pipe.unet is stand_in and accelerated
    assert tiny_model.pipe.unet is unet


# ---------------------------------------------------------------- the deep-feature cache


def test_deep_blocks_run_on_one_call_in_every_interval_and_the_hooks_go_away(tiny_model) -> None:
    unet = tiny_model.pipe.unet
    runs = {"shallow": 0, "deep": 0}
    handles = [unet.down_blocks[0].register_forward_hook(lambda *_: runs.__setitem__("shallow", runs["shallow"] + 1)),
               unet.mid_block.resnets[0].register_forward_hook(lambda *_: runs.__setitem__("deep", runs["deep"] + 1))]
    sample = torch.randn(2, unet.config.in_channels, 8, 8)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    try:
        with torch.no_grad():
            exact = [unet(sample, step, encoder_hidden_states=context).sample for step in range(6)]
            runs.update(shallow=0, deep=0)
            with deep_feature_cache(unet, 3):
                cached = [unet(sample, step, encoder_hidden_states=context).sample for step in range(6)]
    finally:
        for handle in handles:
            handle.remove()
    assert runs == {"shallow": 6, "deep": 2}  # calls 1 and 4 run the whole UNet
    assert torch.equal(cached[0], exact[0]) and torch.equal(cached[3], exact[3])  # full calls are exact
    assert not torch.equal(cached[1], exact[1])  # reused deep features: close, not equal
    assert all("forward" not in vars(block) for block in [unet, *deep_blocks(unet)])  # hooks removed


def test_interval_one_is_the_exact_unet_and_a_bad_interval_is_refused(tiny_model) -> None:
    unet = tiny_model.pipe.unet
    with deep_feature_cache(unet, 1) as state:
        assert state is None and "forward" not in vars(unet)
    with pytest.raises(ValueError, match="deep cache interval must be one of 1, 2, 3, 4, got 7"):
        with deep_feature_cache(unet, 7):
            pass
    assert DEEP_CACHE_INTERVALS == {"exact": 1, "deepcache-2": 2, "deepcache-3": 3}


def test_deepcache_frames_are_close_to_exact_and_cached_apart(tiny_model) -> None:
    morpher = Morpher(tiny_model)
    exact = [frame.image for frame in morpher.frames(BASE)]
    fast = [frame.image for frame in morpher.frames(replace(BASE, speed="deepcache-2"))]
    psnr = [metrics.psnr(a, b) for a, b in zip(exact, fast)]
    assert all(value > 15 for value in psnr), psnr  # the same pictures, approximately
    assert any(np.isfinite(value) for value in psnr)  # and not the exact ones
    job = morpher.start_job(morpher.resolve(BASE), morpher_walk())
    point = job.walk.plan(job.request)[1]
    fast_job = morpher.start_job(morpher.resolve(replace(BASE, speed="deepcache-2")), morpher_walk())
    assert morpher.frame_key(point, job) != morpher.frame_key(point, fast_job)


def morpher_walk():
    from pipelines.walks import get_walk

    return get_walk("chain")
