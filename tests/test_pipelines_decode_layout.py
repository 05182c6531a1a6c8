"""On a CPU the engine hands the VAE its last latents channels-last (faster oneDNN convolutions):
only at the last step, the same values, and the decoder sees that layout in a real render."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pipelines.render import decoding_channels_last
from pipelines.request import MorphRequest


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


def test_a_render_decodes_channels_last_latents(morpher, tiny_model) -> None:
    layouts: list[bool] = []

    def record(module, args) -> None:
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    handle = tiny_model.pipe.vae.post_quant_conv.register_forward_pre_hook(record)
    try:
        frames = list(morpher.frames(MorphRequest(prompts=("a green circle, layout", "a pink square, layout"), frames=3, steps=2,
                                                  seeds=(1, 2))))
    finally:
        handle.remove()
    assert len(frames) == 3 and layouts and all(layouts)
