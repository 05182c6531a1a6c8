"""The OpenVINO UNet stands in for the torch UNet: same noise for any rows, latent size and timestep
form, the same frames from a stock pipeline render, one conversion per weights (kept on disk), and
clear refusals of what it cannot run. Needs the optional `openvino` package."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

openvino = pytest.importorskip("openvino")

from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput  # noqa: E402

from pipelines import metrics  # noqa: E402
from pipelines.openvino_unet import (  # noqa: E402
    OpenVINOUNet, OpenVINOUnavailable, cache_dir, openvino_available, openvino_unet, unet_key,
)

TOLERANCE = 1e-4  # float32 throughout; measured differences are ~1e-6


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory):
    """An empty cache folder for this module's conversions (XDG_CACHE_HOME points at it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield cache_dir()


@pytest.fixture(scope="module")
def unet(tiny_model):
    return tiny_model.pipe.unet


@pytest.fixture(scope="module")
def one_stream(unet, ov_cache: Path) -> OpenVINOUNet:
    """The tiny UNet converted (the module's one conversion) and run as one request."""
    return openvino_unet(unet, threads=2, streams=1)


@pytest.fixture(scope="module")
def two_streams(unet, one_stream: OpenVINOUNet) -> OpenVINOUNet:
    """The same converted graph, its rows split over two streams."""
    return openvino_unet(unet, threads=2, streams=2)


def inputs(unet, rows: int, height: int | None = None, width: int | None = None, seed: int = 0) -> tuple:
    generator = torch.Generator("cpu").manual_seed(seed)
    side = unet.config.sample_size
    sample = torch.randn(rows, unet.config.in_channels, height or side, width or side, generator=generator)
    context = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=generator)
    return sample, context


def eager(unet, sample: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(sample, timestep, encoder_hidden_states=context).sample


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 16, 32])
def test_matches_eager_for_any_rows_with_one_conversion(unet, one_stream, two_streams, rows: int) -> None:
    sample, context = inputs(unet, rows, seed=rows)
    reference = eager(unet, sample, torch.tensor(500), context)
    for stand_in in (one_stream, two_streams):
        noise = stand_in(sample, torch.tensor(500), encoder_hidden_states=context).sample
        assert noise.shape == reference.shape and noise.dtype == reference.dtype
        assert (noise - reference).abs().max().item() < TOLERANCE
    assert one_stream.path == two_streams.path
    assert one_stream.shapes.model.input(0).get_partial_shape()[0].is_dynamic  # one graph for any rows


@pytest.mark.parametrize("timestep", [torch.tensor(321), 321, 321.5, torch.tensor([10.0, 400.0, 999.0]),
                                      torch.tensor([777])], ids=["0-d", "int", "float", "one-a-row", "one-row"])
def test_timestep_forms(unet, two_streams, timestep) -> None:
    sample, context = inputs(unet, 3)
    reference = eager(unet, sample, timestep, context)
    noise = two_streams(sample, timestep, encoder_hidden_states=context).sample
    assert (noise - reference).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (12, 6)])
def test_any_latent_size_including_odd_ones(unet, one_stream, size: tuple[int, int]) -> None:
    sample, context = inputs(unet, 2, *size)
    reference = eager(unet, sample, 250, context)
    noise = one_stream(sample, 250, encoder_hidden_states=context).sample
    assert noise.shape == reference.shape
    assert (noise - reference).abs().max().item() < TOLERANCE


def test_return_dict_both_ways(unet, one_stream) -> None:
    sample, context = inputs(unet, 2)
    as_tuple = one_stream(sample, 10, encoder_hidden_states=context, return_dict=False)
    as_output = one_stream(sample, 10, encoder_hidden_states=context)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert isinstance(as_output, UNet2DConditionOutput)
    assert torch.equal(as_tuple[0], as_output.sample)


def test_reads_what_the_pipeline_reads_from_the_torch_unet(unet, one_stream) -> None:
    assert one_stream.config is unet.config
    assert one_stream.dtype == unet.dtype and one_stream.device == unet.device
    assert one_stream.in_channels == unet.in_channels
    assert one_stream.config.time_cond_proj_dim is None
    with pytest.raises(AttributeError):
        one_stream.no_such_attribute  # noqa: B018


def test_runs_float32_with_float32_weights(unet, one_stream) -> None:
    sample, context = inputs(unet, 2)
    one_stream(sample, 500, encoder_hidden_states=context)
    assert one_stream.shapes.last_compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    model = openvino.Core().read_model(str(one_stream.path))
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert weights and not any(op.get_element_type() in (openvino.Type.f16, openvino.Type.bf16) for op in weights)


def test_streams_compile_as_asked(unet, one_stream, two_streams) -> None:
    for stand_in, streams in ((one_stream, 1), (two_streams, 2)):
        sample, context = inputs(unet, 4)
        stand_in(sample, 500, encoder_hidden_states=context)
        assert stand_in.shapes.last_compiled.get_property("NUM_STREAMS") == streams
        # unpinned: two shapes' first streams run at once (see openvino_shapes.run_parts)
        assert stand_in.shapes.last_compiled.get_property("ENABLE_CPU_PINNING") is False


def test_stock_pipeline_render_matches_eager(tiny_model, two_streams) -> None:
    pipe = tiny_model.pipe
    positive, negative = pipe.encode_prompt(["a red circle", "a blue square"], "cpu", 1, True)
    side = pipe.unet.config.sample_size
    latents = torch.randn(2, 4, side, side, generator=torch.Generator("cpu").manual_seed(3))
    call = dict(prompt_embeds=positive, negative_prompt_embeds=negative, latents=latents,
                num_inference_steps=4, guidance_scale=7.5)
    reference = pipe(**call).images
    torch_unet = pipe.unet
    pipe.unet = two_streams
    try:
        frames = pipe(**call).images
    finally:
        pipe.unet = torch_unet
    assert pipe.unet is torch_unet and pipe.config.unet[1] == "UNet2DConditionModel"
    assert all(metrics.psnr(a, b) >= 40 for a, b in zip(reference, frames))


def test_second_preparation_reads_the_disk_cache(unet, one_stream, ov_cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert one_stream.path.is_file() and one_stream.path.parent.parent == ov_cache

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cached graph")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    again = openvino_unet(unet, threads=1)
    assert again.path == one_stream.path
    sample, context = inputs(unet, 4)
    assert (again(sample, 40, encoder_hidden_states=context).sample - eager(unet, sample, 40, context)).abs().max() \
        < TOLERANCE


def test_cache_key_covers_every_weight(unet) -> None:
    changed = copy.deepcopy(unet)
    with torch.no_grad():
        next(iter(changed.parameters())).view(-1)[0] += 1e-3
    assert unet_key(changed, "v") != unet_key(unet, "v") == unet_key(copy.deepcopy(unet), "v")


@pytest.mark.parametrize("name, value", [
    ("timestep_cond", torch.zeros(2, 8)),
    ("cross_attention_kwargs", {"scale": 0.5}),
    ("added_cond_kwargs", {"text_embeds": torch.zeros(2, 32), "time_ids": torch.zeros(2, 6)}),
    ("class_labels", torch.zeros(2)),
    ("down_block_additional_residuals", (torch.zeros(2, 32, 8, 8),)),
])
def test_refuses_inputs_it_cannot_take(unet, one_stream, name: str, value) -> None:
    sample, context = inputs(unet, 2)
    with pytest.raises(ValueError, match=name):
        one_stream(sample, 10, encoder_hidden_states=context, **{name: value})


def test_takes_empty_extras_and_refuses_mismatched_rows(unet, one_stream) -> None:
    sample, context = inputs(unet, 2)
    noise = one_stream(sample, 10, encoder_hidden_states=context, cross_attention_kwargs={},
                       added_cond_kwargs=None, timestep_cond=None).sample
    assert noise.shape == sample.shape
    with pytest.raises(ValueError, match="timestep"):
        one_stream(sample, torch.tensor([1, 2, 3]), encoder_hidden_states=context)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        one_stream(sample, 10, encoder_hidden_states=context[:1])
    with pytest.raises(TypeError):
        one_stream(sample, 10, context, None)  # the torch UNet's fourth argument is class_labels


def test_unavailable_says_how_to_install(unet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert openvino_available() is False
    with pytest.raises(OpenVINOUnavailable, match="pip install openvino"):
        openvino_unet(unet, threads=1)


def test_two_stand_ins_called_at_once_from_two_threads_both_answer(unet, one_stream, two_streams) -> None:
    import threading

    sample, context = inputs(unet, 8)
    answers: dict[str, torch.Tensor] = {}

    def call(name: str, stand_in: OpenVINOUNet) -> None:
        for _ in range(3):
            answers[name] = stand_in(sample, torch.tensor(500), context, return_dict=False)[0]

    workers = [threading.Thread(target=call, args=(name, stand_in), daemon=True)
               for name, stand_in in (("one", one_stream), ("two", two_streams))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers)  # no hang (two models prepared at once did)
    torch.testing.assert_close(answers["one"], answers["two"], rtol=TOLERANCE, atol=TOLERANCE)
