"""On a CPU, batches on an accelerated UNet hand the VAE their last latents channels-last (faster
oneDNN convolutions): only at the last step, the same values. Eager batches keep the default
layout, so their keyframes stay plain diffusers' pixels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipelines.engine import Morpher
from pipelines.render import decoding_channels_last
from pipelines.request import MorphRequest
from pipelines.speed import SpeedSettings


def test_only_the_last_step_changes_the_layout_and_never_the_values() -> None:
    seen: list[int] = []

    def progress(pipe, step: int, timestep, tensors: dict) -> dict:
        seen.append(step)
        return {}

    callback = decoding_channels_last(progress)
    pipe = SimpleNamespace(num_timesteps=3)
    latents = torch.randn(2, 4, 8, 8)
    assert callback(pipe, 0, 999, {"latents": latents}) == {}
    assert callback(pipe, 1, 500, {"latents": latents}) == {}
    last = callback(pipe, 2, 1, {"latents": latents})["latents"]
    assert seen == [0, 1, 2]
    assert last.is_contiguous(memory_format=torch.channels_last) and not latents.is_contiguous(
        memory_format=torch.channels_last)
    assert torch.equal(last, latents)


class PassThroughUNet:
    """Stands where a compiled UNet would: calls the eager one, reads everything else from it."""

    def __init__(self, unet) -> None:
        self.unet = unet

    def __call__(self, *args, **kwargs):
        return self.unet(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.unet, name)


def decoded_layouts(morpher: Morpher, prompts: tuple[str, str]) -> list[bool]:
    """Whether each VAE decode of a fresh 3-frame render got channels-last latents."""
    layouts: list[bool] = []

    def record(module, args) -> None:
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    handle = morpher.model.pipe.vae.post_quant_conv.register_forward_pre_hook(record)
    try:
        frames = list(morpher.frames(MorphRequest(prompts=prompts, frames=3, steps=2, seeds=(1, 2))))
    finally:
        handle.remove()
    assert len(frames) == 3 and layouts
    return layouts


@pytest.mark.parametrize("accelerated", [False, True])
def test_only_accelerated_renders_decode_channels_last(tiny_model, accelerated: bool) -> None:
    morpher = Morpher(tiny_model, speed=SpeedSettings(compile="on" if accelerated else "off"))
    if accelerated:  # what `prepare` leaves once a compiled UNet is ready
        morpher.accelerator.compiled = PassThroughUNet(tiny_model.pipe.unet)
        morpher.accelerator.ready.set()
    layouts = decoded_layouts(morpher, (f"a green circle, {accelerated}", f"a pink square, {accelerated}"))
    assert all(layouts) if accelerated else not any(layouts)
