"""`--compile openvino` through the engine: refused clearly without the package; with it, a morph's
frames match the eager UNet's and no CPU lanes start (OpenVINO splits rows over its own streams)."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines import compiling, metrics
from pipelines.engine import Morpher
from pipelines.request import MorphRequest
from pipelines.speed import SpeedSettings

REQUEST = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=4, size=(64, 64))


def test_the_flag_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipelines.openvino_unet.openvino_available", lambda: False)
    parser = argparse.ArgumentParser()
    compiling.add_compile_flag(parser, environ={})
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "openvino"])
    with pytest.raises(argparse.ArgumentTypeError, match="pip install openvino"):
        parser._option_string_actions["--compile"].type("openvino")


def test_openvino_runs_on_the_cpu_only(tiny_model) -> None:
    with pytest.raises(ValueError, match="--compile openvino runs the UNet on the CPU; this model is on cuda"):
        compiling.accelerated_unet(tiny_model.pipe.unet, torch.device("cuda"), compiling.OPENVINO)


def test_auto_picks_openvino_on_a_cpu_when_it_is_installed(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.speed import Accelerator

    pipe = tiny_model.pipe
    monkeypatch.setattr("pipelines.openvino_unet.openvino_available", lambda: True)
    assert Accelerator(pipe, torch.device("cpu"), SpeedSettings(compile="auto")).mode == compiling.OPENVINO
    assert Accelerator(pipe, torch.device("cpu"), SpeedSettings(compile="on")).mode == "on"  # asked: torch.compile
    assert Accelerator(pipe, torch.device("cuda"), SpeedSettings(compile="auto")).mode == "auto"
    monkeypatch.setattr("pipelines.openvino_unet.openvino_available", lambda: False)
    assert Accelerator(pipe, torch.device("cpu"), SpeedSettings(compile="auto")).mode == "auto"


def test_a_cli_render_converts_only_when_it_pays(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    unet = tiny_model.pipe.unet
    monkeypatch.setattr("pipelines.openvino_unet.is_converted", lambda unet: True)
    morph_32 = 2 * 32 * 20  # rows x steps of a 32-frame morph (the CPU's frame limit)
    assert compiling.pays_to_convert(unet, morph_32, 16 * 16)  # from the disk: quick
    assert not compiling.pays_to_convert(unet, 2 * 2 * 4, 16 * 16)
    monkeypatch.setattr("pipelines.openvino_unet.is_converted", lambda unet: False)
    assert not compiling.pays_to_convert(unet, morph_32, 16 * 16)  # converting first costs more
    assert compiling.pays_to_convert(unet, 100 * morph_32, 16 * 16)


def test_a_morph_on_openvino_has_the_eager_frames(tiny_model, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # its converted model goes to a fresh cache
    eager = Morpher(tiny_model, speed=SpeedSettings(compile="off", lanes=1))
    converted = Morpher(tiny_model, speed=SpeedSettings(compile="openvino", lanes=2))
    assert converted.accelerator.wanted() and converted.accelerator.lanes_wanted() == 1
    converted.accelerator.prepare_in_background().join(timeout=300)
    assert converted.accelerator.describe() == "OpenVINO UNet"
    converted.accelerator.compiled = counted = CountedCalls(converted.accelerator.compiled)
    request = replace(REQUEST, batch_size=3)
    plain = [frame.image for frame in eager.frames(request)]
    fast = [frame.image for frame in converted.frames(request)]
    assert counted.calls  # the pipeline called the OpenVINO stand-in
    assert tiny_model.pipe.unet is eager.model.pipe.unet and isinstance(tiny_model.pipe.unet, torch.nn.Module)
    assert min(metrics.psnr(np.asarray(a), np.asarray(b)) for a, b in zip(plain, fast)) >= 40


class CountedCalls:
    """The stand-in, counting the pipeline's calls."""

    def __init__(self, wrapped) -> None:
        self.wrapped, self.calls = wrapped, 0

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.wrapped(*args, **kwargs)
