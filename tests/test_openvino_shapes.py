"""The OpenVINO UNet compiles each input shape it meets, keeps the latest few, answers the same
as the torch UNet whichever shapes a call's parts have, and runs big UNets on the one dynamic
graph; two UNets convert at once from two threads. Needs the optional `openvino` package."""

from __future__ import annotations

import pytest
import torch

openvino = pytest.importorskip("openvino")

from pipelines import openvino_unet  # noqa: E402
from pipelines.openvino_shapes import MAX_STATIC_SHAPES  # noqa: E402
from pipelines.openvino_unet import OpenVINOUNet  # noqa: E402

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def unet(tiny_model, tmp_path_factory: pytest.TempPathFactory):
    """The tiny UNet, converted once for this module into an empty cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield tiny_model.pipe.unet


def call(stand_in: OpenVINOUNet, unet, rows: int, side: int | None = None) -> None:
    """One call of `rows` rows, checked against the torch UNet."""
    generator = torch.Generator("cpu").manual_seed(rows)
    side = side or unet.config.sample_size
    sample = torch.randn(rows, unet.config.in_channels, side, side, generator=generator)
    context = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        reference = unet(sample, 500, encoder_hidden_states=context).sample
    noise = stand_in(sample, 500, encoder_hidden_states=context).sample
    assert (noise - reference).abs().max().item() < TOLERANCE


def test_a_shape_is_compiled_once_and_static(unet) -> None:
    stand_in = openvino_unet.openvino_unet(unet, threads=2, streams=2)
    assert stand_in.shapes.static
    for _ in range(3):
        call(stand_in, unet, 8)  # two parts of 4 rows: one shape
    assert stand_in.shapes.compiles == 1
    compiled = stand_in.shapes.last_compiled
    assert not any(port.get_partial_shape().is_dynamic for port in compiled.inputs)
    assert compiled.input(0).get_shape()[0] == 4


def test_parts_of_two_shapes_run_together(unet) -> None:
    stand_in = openvino_unet.openvino_unet(unet, threads=2, streams=2)
    call(stand_in, unet, 7)  # parts of 4 and 3 rows
    assert stand_in.shapes.compiles == 2 and len(stand_in.shapes.cached_shapes()) == 2


def test_the_least_recently_used_shape_goes_first(unet) -> None:
    stand_in = openvino_unet.openvino_unet(unet, threads=1, streams=1)
    for rows in range(1, MAX_STATIC_SHAPES + 1):
        call(stand_in, unet, rows)
    call(stand_in, unet, 1)  # the oldest, used again: now the newest
    call(stand_in, unet, MAX_STATIC_SHAPES + 1)  # evicts rows=2, the least recently used
    kept = [shapes[0][0] for shapes in stand_in.shapes.cached_shapes()]
    assert len(kept) == MAX_STATIC_SHAPES and 2 not in kept and 1 in kept
    compiles = stand_in.shapes.compiles
    call(stand_in, unet, 2)  # compiled again
    assert stand_in.shapes.compiles == compiles + 1


def test_a_big_unet_runs_the_dynamic_graph(unet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_unet, "STATIC_WEIGHTS_LIMIT", 0)  # the tiny UNet counts as big
    stand_in = openvino_unet.openvino_unet(unet, threads=2, streams=2)
    assert not stand_in.shapes.static
    for rows, side in ((5, None), (2, None), (3, 12)):
        call(stand_in, unet, rows, side)
    assert stand_in.shapes.compiles == 1 and stand_in.shapes.cached_shapes() == []
    assert stand_in.shapes.last_compiled.input(0).get_partial_shape().is_dynamic


def test_two_unets_converted_at_once_from_two_threads_both_convert(tiny_model, tmp_path) -> None:
    """A service prepares both bundled models on background threads; tracing two at once failed."""
    import copy
    import threading

    first = copy.deepcopy(tiny_model.pipe.unet)
    second = copy.deepcopy(tiny_model.pipe.unet)
    with torch.no_grad():
        next(iter(second.parameters())).view(-1)[0] += 1e-3  # another weight: its own conversion
    paths: dict[int, object] = {}
    errors: list[BaseException] = []

    def convert(index: int, unet) -> None:
        try:
            paths[index] = openvino_unet.converted_path(unet, tmp_path)
        except BaseException as error:  # reported below by the test thread
            errors.append(error)

    workers = [threading.Thread(target=convert, args=(index, unet)) for index, unet in enumerate((first, second))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert not errors, errors
    assert len(paths) == 2 and paths[0] != paths[1] and all(path.is_file() for path in paths.values())
