"""The engine on the tiny model: keyframes equal plain renders, determinism, batching, cancel, manifest.

Walk-specific behaviour (plans, recipes, grid, direction) is in test_pipelines_walks.py,
the request's declaration and checks in test_pipelines_request.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.engine import Morpher
from pipelines.keys import draw_noise
from pipelines.metrics import psnr
from pipelines.render import MorphCancelled, default_batch_size
from pipelines.request import MorphRequest

STEPS = 2
SIZE = 32
BASE = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=STEPS, size=(SIZE, SIZE))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


# ---- keys and batches --------------------------------------------------------------------


def test_noise_is_what_diffusers_randn_tensor_draws() -> None:
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, 4, 8, 8)
    expected = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(7), device=torch.device("cpu"))
    assert torch.equal(draw_noise(7, shape, torch.float32, torch.device("cpu")), expected)


def test_default_batch_size_fits_the_device() -> None:
    assert default_batch_size(torch.device("cpu"), 64, 64) == 8  # small: bigger batches feed larger matrices
    assert default_batch_size(torch.device("cpu"), 256, 256) == 4
    assert default_batch_size(torch.device("cpu"), 1024, 1024) == 1
    assert default_batch_size(torch.device("cuda"), 512, 512) == 8
    assert default_batch_size(torch.device("cuda"), 64, 64) == 16
    assert 1 <= default_batch_size(torch.device("mps"), 768, 768) <= 2


def test_the_size_defaults_to_the_models_own(morpher) -> None:
    resolved = morpher.resolve(replace(BASE, size=None))
    pipe = morpher.model.pipe
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert resolved.size == (side, side) and (resolved.width, resolved.height) == (side, side)
    with pytest.raises(ValueError, match="size"):
        replace(BASE, size=None).width  # an unresolved request has no width yet


# ---- correctness a user can check ---------------------------------------------------------


def test_first_and_last_frames_equal_plain_diffusers_renders(morpher, plain_render) -> None:
    frames = morpher.render(replace(BASE, batch_size=1)).frames
    pipe = morpher.model.pipe
    assert same(frames[0].image, plain_render(pipe, "a red circle", 1, BASE))
    assert same(frames[-1].image, plain_render(pipe, "a blue square", 2, BASE))


def test_keyframes_match_plain_renders_in_batches_and_chains(morpher, plain_render) -> None:
    request = replace(BASE, prompts=("a red circle", "a green star", "a blue square"), seeds=(1, 5, 2), frames=5,
                      batch_size=3)
    frames = morpher.render(request).frames
    pipe = morpher.model.pipe
    for index, prompt, seed in ((0, "a red circle", 1), (2, "a green star", 5), (4, "a blue square", 2)):
        assert frames[index].t in (0.0, 1.0)
        assert psnr(frames[index].image, plain_render(pipe, prompt, seed, request)) >= 40


def test_same_request_twice_gives_identical_pixels(morpher) -> None:
    first = morpher.render(BASE).frames
    second = Morpher(morpher.model).render(BASE).frames
    assert all(same(a.image, b.image) for a, b in zip(first, second))


def test_batched_equals_one_at_a_time(morpher) -> None:
    single = morpher.render(replace(BASE, batch_size=1)).frames
    batched = morpher.render(replace(BASE, batch_size=4)).frames
    for one, many in zip(single, batched):
        assert np.abs(pixels(one.image) - pixels(many.image)).max() <= 2


def test_frames_are_yielded_as_their_batch_finishes(morpher) -> None:
    steps_seen: list = []
    iterator = morpher.frames(replace(BASE, batch_size=2), on_step=steps_seen.append)
    first = next(iterator)
    assert first.index == 0 and first.point.as_dict() == {"segment": 0, "t": 0.0} and first.caption == "t=0.000"
    assert len(steps_seen) == STEPS  # only the first batch has been denoised
    assert steps_seen[-1].batch_frames == 2 and steps_seen[-1].steps_total == STEPS
    rest = list(iterator)
    assert [frame.index for frame in [first, *rest]] == list(range(BASE.frames))
    assert len(steps_seen) == STEPS * 3 and steps_seen[-1].frames_done == 4


def test_bad_request_fails_at_the_call_before_any_work(morpher) -> None:
    with pytest.raises(ValueError, match="frames"):
        morpher.frames(replace(BASE, frames=1))  # not only when the generator is first advanced


def test_each_prompt_and_the_negative_are_encoded_once(tiny_model) -> None:
    calls = []
    hook = tiny_model.pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        request = replace(BASE, prompts=("a red circle", "a blue square", "a red circle"), seeds=(3,), frames=5,
                          negative_prompt="blurry")
        list(Morpher(tiny_model).frames(request))  # the frames only: the manifest's inspector encodes landmarks
    finally:
        hook.remove()
    assert len(calls) == 3  # two distinct prompts + the negative prompt


def test_cancel_stops_at_a_step_and_leaves_the_pipeline_usable(morpher) -> None:
    request = replace(BASE, batch_size=2)
    reference = morpher.render(request).frames
    steps: list = []
    with pytest.raises(MorphCancelled):
        list(morpher.frames(request, on_step=steps.append, should_stop=lambda: len(steps) >= 3))
    assert len(steps) == 3  # stopped at the step boundary after the third step
    again = morpher.render(request).frames
    assert all(same(a.image, b.image) for a, b in zip(reference, again))


def test_cancel_before_any_work(morpher) -> None:
    steps: list = []
    with pytest.raises(MorphCancelled):
        morpher.render(BASE, on_step=steps.append, should_stop=lambda: True)
    assert steps == []


def test_loop_walks_back_without_repeating_the_first_frame(morpher) -> None:
    result = morpher.render(replace(BASE, frames=4, loop=True))
    assert [(frame.segment, frame.t) for frame in result.frames] == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    assert not same(result.frames[-1].image, result.frames[0].image)
    assert result.manifest["loop"] is True
    assert [(record["from"], record["to"]) for record in result.manifest["frames"]] == [(0, 1), (0, 1), (1, 0), (1, 0)]


def test_interp_and_seeds_change_the_in_between_frames(morpher) -> None:
    request = replace(BASE, frames=3, seeds=(1, 2))
    slerped = morpher.render(request).frames
    lerped = morpher.render(replace(request, interp="lerp")).frames
    assert same(slerped[0].image, lerped[0].image)
    assert not same(slerped[1].image, lerped[1].image)
    noise_lerped = morpher.render(replace(request, noise_interp="lerp")).frames
    assert same(slerped[2].image, noise_lerped[2].image) and not same(slerped[1].image, noise_lerped[1].image)
    one_seed = morpher.render(replace(request, seeds=(1,))).frames
    assert same(one_seed[0].image, slerped[0].image)
    assert not same(one_seed[2].image, slerped[2].image)


def test_the_walk_mixes_noise_and_embeddings_of_the_keys(morpher, denoise_calls) -> None:
    request = replace(BASE, frames=3, batch_size=3, interp="lerp", noise_interp="lerp")
    morpher.render(request)
    (inputs,) = denoise_calls
    shape = morpher.latent_shape(morpher.resolve(request))
    noise = [draw_noise(seed, shape, torch.float32, torch.device("cpu")) for seed in (1, 2)]
    torch.testing.assert_close(inputs["latents"], torch.cat([noise[0], (noise[0] + noise[1]) / 2, noise[1]]))
    embeds = inputs["prompt_embeds"]
    torch.testing.assert_close(embeds[1], (embeds[0] + embeds[2]) / 2)
    negative = inputs["negative_prompt_embeds"]  # guided: one unconditional embedding, repeated
    assert negative.shape == embeds.shape and torch.equal(negative[0], negative[2])


def test_no_guidance_skips_the_negative_prompt(morpher, plain_render, denoise_calls) -> None:
    request = replace(BASE, guidance=1.0, frames=3)
    result = morpher.render(request)
    assert len(result.frames) == 3
    assert all("negative_prompt_embeds" not in inputs for inputs in denoise_calls)
    assert same(result.frames[0].image, plain_render(morpher.model.pipe, "a red circle", 1, request))


def test_even_spacing_evens_out_the_gaps(morpher) -> None:
    request = replace(BASE, frames=6, seeds=(1, 9))
    linear = morpher.render(request).manifest["metrics"]
    steps: list = []
    even = morpher.render(replace(request, spacing="even"), on_step=steps.append)
    assert even.manifest["metrics"]["cv"] <= linear["cv"] + 1e-9
    assert [frame.index for frame in even.frames] == list(range(6))
    assert even.frames[0].t == 0.0 and even.frames[-1].t == 1.0
    # a pilot pass, then only the frames the re-timing asks for, within the budget
    assert 6 <= steps[-1].frames_total == even.manifest["render"]["frames_rendered"] <= 2 * 6


def test_flagged_frames_are_reported(morpher, monkeypatch) -> None:
    pipe = morpher.model.pipe

    def flag_every_other(image, device, dtype):
        return image, [index % 2 == 0 for index in range(image.shape[0])]

    monkeypatch.setattr(pipe, "run_safety_checker", flag_every_other)
    result = morpher.render(replace(BASE, batch_size=5))
    assert [frame.nsfw for frame in result.frames] == [True, False, True, False, True]
    assert result.manifest["nsfw_frames"] == [0, 2, 4]


def test_manifest_records_the_request_and_is_json(morpher) -> None:
    result = morpher.render(BASE)
    manifest = json.loads(json.dumps(result.manifest))
    for key in ("walk", "prompts", "seeds", "keys", "t", "model", "scheduler", "steps", "guidance", "size", "interp",
                "spacing", "loop", "timings", "metrics", "frames", "keyframes", "path", "render", "request"):
        assert key in manifest, key
    assert manifest["walk"] == "chain" and manifest["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert manifest["seeds"] == [1, 2] and manifest["size"] == [SIZE, SIZE]
    assert len(manifest["metrics"]["gaps"]) == BASE.frames - 1
    assert manifest["scheduler"] == "DDIMScheduler" and manifest["model"] == "tiny"
    assert [record["t"] for record in manifest["frames"]] == manifest["t"]
    assert [entry["index"] for entry in manifest["keyframes"]] == [0, 4]
    # a chain between two keys of equal norm stays on the sphere: slerp keeps the noise's norm
    assert manifest["path"]["noise_norm"][2] == pytest.approx(1.0, abs=0.05)


# ---- SDXL: a second text encoder and pooled embeddings ------------------------------------


@pytest.fixture(scope="module")
def sdxl_morpher(tmp_path_factory):
    from pipelines.loading import LoadedModel
    from pipelines.tiny import build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl-tokenizer"))
    return Morpher(LoadedModel(pipe, "tiny-sdxl", torch.device("cpu"), torch.float32))


def test_sdxl_keyframes_equal_plain_renders_and_pooled_embeds_are_walked(sdxl_morpher, plain_render,
                                                                          denoise_calls) -> None:
    request = replace(BASE, frames=3, batch_size=3)
    frames = sdxl_morpher.render(request).frames
    pipe = sdxl_morpher.model.pipe
    assert psnr(frames[0].image, plain_render(pipe, "a red circle", 1, request)) >= 40
    assert psnr(frames[-1].image, plain_render(pipe, "a blue square", 2, request)) >= 40
    pooled = denoise_calls[0]["pooled_prompt_embeds"]
    assert pooled.shape[0] == 3 and "negative_pooled_prompt_embeds" in denoise_calls[0]
    assert not torch.equal(pooled[1], pooled[0]) and not torch.equal(pooled[1], pooled[2])
    single = sdxl_morpher.render(replace(request, batch_size=1)).frames
    assert same(single[0].image, plain_render(pipe, "a red circle", 1, request))
