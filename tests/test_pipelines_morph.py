"""The morph on the tiny model: keyframes equal plain renders, determinism, batching, cancel."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.morph import (
    MorphCancelled,
    Morpher,
    MorphRequest,
    check_request,
    default_batch_size,
    draw_noise,
    plan_frames,
)

STEPS = 2
SIZE = 32
BASE = MorphRequest(
    prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=STEPS, width=SIZE, height=SIZE
)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def plain_render(pipe, prompt: str, seed: int, request: MorphRequest = BASE) -> np.ndarray:
    """What a user gets from diffusers directly for one prompt and seed."""
    output = pipe(
        prompt=prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        height=request.height,
        width=request.width,
    )
    return pixels(output.images[0])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- the plan: where frames sit --------------------------------------------------------


@pytest.mark.parametrize("keyframes,frames,loop", [(2, 2, False), (2, 9, False), (3, 8, False), (4, 4, False),
                                                   (2, 2, True), (3, 10, True), (3, 3, True)])
def test_every_keyframe_appears_exactly_once(keyframes: int, frames: int, loop: bool) -> None:
    plan = plan_frames(keyframes, frames, loop)
    assert len(plan) == frames
    assert [spec.index for spec in plan] == list(range(frames))
    positions = [spec.segment + spec.t for spec in plan]
    assert positions == sorted(positions) and len(set(positions)) == frames
    assert [p for p in positions if p == int(p)] == [float(k) for k in range(keyframes)]
    if loop:
        assert positions[-1] < keyframes  # walks back towards the first prompt, never repeats it


def test_gaps_are_shared_evenly_between_segments() -> None:
    plan = plan_frames(3, 8, False)
    per_segment = [sum(1 for spec in plan if spec.segment == s and spec.t < 1) for s in range(2)]
    assert sorted(per_segment) == [3, 4]
    assert plan_frames(2, 4, False, "ease")[1].t < 1 / 3  # eased: slow away from the keyframe
    with pytest.raises(ValueError):
        plan_frames(3, 2, False)


@pytest.mark.parametrize(
    "change,field",
    [({"prompts": ("only one",)}, "prompts"), ({"prompts": ("a", "  ")}, "prompt"), ({"frames": 1}, "frames"),
     ({"prompts": ("a", "b", "c"), "seeds": (1,), "frames": 2}, "frames"), ({"steps": 0}, "steps"),
     ({"width": 30}, "width"), ({"height": 0}, "height"), ({"guidance": -1.0}, "guidance"),
     ({"guidance": float("nan")}, "guidance"),
     ({"interp": "cubic"}, "interp"), ({"spacing": "random"}, "spacing"), ({"seeds": (1, 2, 3)}, "seeds"),
     ({"seeds": (-1,)}, "seed"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_requests_name_the_bad_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        check_request(replace(BASE, **change))
    check_request(BASE)


def test_noise_is_what_diffusers_randn_tensor_draws() -> None:
    from diffusers.utils.torch_utils import randn_tensor

    shape = (1, 4, 8, 8)
    expected = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(7), device=torch.device("cpu"))
    assert torch.equal(draw_noise(7, shape, torch.float32, torch.device("cpu")), expected)


def test_default_batch_size_fits_the_device() -> None:
    assert default_batch_size(torch.device("cpu"), 64, 64) == 4
    assert default_batch_size(torch.device("cpu"), 1024, 1024) == 1
    assert default_batch_size(torch.device("cuda"), 512, 512) == 8
    assert default_batch_size(torch.device("cuda"), 64, 64) == 16
    assert 1 <= default_batch_size(torch.device("mps"), 768, 768) <= 2


# ---- correctness a user can check ---------------------------------------------------------


def test_first_and_last_frames_equal_plain_diffusers_renders(morpher) -> None:
    request = replace(BASE, batch_size=1)
    frames = morpher.render(request).frames
    pipe = morpher.model.pipe
    assert np.array_equal(pixels(frames[0].image), plain_render(pipe, "a red circle", 1))
    assert np.array_equal(pixels(frames[-1].image), plain_render(pipe, "a blue square", 2))


def test_keyframes_match_plain_renders_in_batches_and_chains(morpher) -> None:
    request = replace(BASE, prompts=("a red circle", "a green star", "a blue square"), seeds=(1, 5, 2), frames=5,
                      batch_size=3)
    frames = morpher.render(request).frames
    pipe = morpher.model.pipe
    for index, prompt, seed in ((0, "a red circle", 1), (2, "a green star", 5), (4, "a blue square", 2)):
        assert frames[index].t in (0.0, 1.0)
        assert psnr(pixels(frames[index].image), plain_render(pipe, prompt, seed)) >= 40


def test_same_request_twice_gives_identical_pixels(morpher) -> None:
    first = [pixels(frame.image) for frame in morpher.render(BASE).frames]
    second = [pixels(frame.image) for frame in Morpher(morpher.model).render(BASE).frames]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_batched_equals_one_at_a_time(morpher) -> None:
    single = morpher.render(replace(BASE, batch_size=1)).frames
    batched = morpher.render(replace(BASE, batch_size=4)).frames
    for one, many in zip(single, batched):
        assert np.abs(pixels(one.image) - pixels(many.image)).max() <= 2


def test_frames_are_yielded_as_their_batch_finishes(morpher) -> None:
    steps_seen: list = []
    iterator = morpher.frames(replace(BASE, batch_size=2), on_step=steps_seen.append)
    first = next(iterator)
    assert first.index == 0
    assert len(steps_seen) == STEPS  # only the first batch has been denoised
    assert steps_seen[-1].batch_frames == 2 and steps_seen[-1].steps_total == STEPS
    rest = list(iterator)
    assert [frame.index for frame in [first, *rest]] == list(range(BASE.frames))
    assert len(steps_seen) == STEPS * 3 and steps_seen[-1].frames_done == 4


def test_each_prompt_and_the_negative_are_encoded_once(tiny_model) -> None:
    calls = []
    hook = tiny_model.pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        request = replace(BASE, prompts=("a red circle", "a blue square", "a red circle"), seeds=(3,), frames=5,
                          negative_prompt="blurry")
        Morpher(tiny_model).render(request)
    finally:
        hook.remove()
    assert len(calls) == 3  # two distinct prompts + the negative prompt


def test_cancel_stops_at_a_step_and_leaves_the_pipeline_usable(morpher) -> None:
    request = replace(BASE, batch_size=2)
    reference = [pixels(frame.image) for frame in morpher.render(request).frames]
    steps: list = []
    with pytest.raises(MorphCancelled):
        list(morpher.frames(request, on_step=steps.append, should_stop=lambda: len(steps) >= 3))
    assert len(steps) == 3  # stopped at the step boundary after the third step
    again = [pixels(frame.image) for frame in morpher.render(request).frames]
    assert all(np.array_equal(a, b) for a, b in zip(reference, again))


def test_cancel_before_any_work(morpher) -> None:
    steps: list = []
    with pytest.raises(MorphCancelled):
        morpher.render(BASE, on_step=steps.append, should_stop=lambda: True)
    assert steps == []


def test_loop_walks_back_without_repeating_the_first_frame(morpher) -> None:
    result = morpher.render(replace(BASE, frames=4, loop=True))
    assert [(frame.segment, frame.t) for frame in result.frames] == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    assert not np.array_equal(pixels(result.frames[-1].image), pixels(result.frames[0].image))
    assert result.manifest["loop"] is True


def test_interp_and_seeds_change_the_in_between_frames(morpher) -> None:
    request = replace(BASE, frames=3, seeds=(1, 2))
    slerped = morpher.render(request).frames
    lerped = morpher.render(replace(request, interp="lerp")).frames
    assert np.array_equal(pixels(slerped[0].image), pixels(lerped[0].image))
    assert not np.array_equal(pixels(slerped[1].image), pixels(lerped[1].image))
    one_seed = morpher.render(replace(request, seeds=(1,))).frames
    assert np.array_equal(pixels(one_seed[0].image), pixels(slerped[0].image))
    assert not np.array_equal(pixels(one_seed[2].image), pixels(slerped[2].image))


def test_no_guidance_skips_the_negative_prompt(morpher) -> None:
    result = morpher.render(replace(BASE, guidance=1.0, frames=3))
    assert len(result.frames) == 3
    assert np.array_equal(pixels(result.frames[0].image),
                          plain_render(morpher.model.pipe, "a red circle", 1, replace(BASE, guidance=1.0)))


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
    for key in ("prompts", "seeds", "t", "model", "scheduler", "steps", "guidance", "size", "interp", "spacing",
                "loop", "timings", "metrics", "frames"):
        assert key in manifest, key
    assert manifest["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert manifest["seeds"] == [1, 2] and manifest["size"] == [SIZE, SIZE]
    assert len(manifest["metrics"]["gaps"]) == BASE.frames - 1
    assert manifest["scheduler"] == "DDIMScheduler" and manifest["model"] == "tiny"


# ---- SDXL: a second text encoder and pooled embeddings ------------------------------------


@pytest.fixture(scope="module")
def sdxl_morpher(tmp_path_factory):
    from pipelines.loading import LoadedModel
    from pipelines.tiny import build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl-tokenizer"))
    return Morpher(LoadedModel(pipe, "tiny-sdxl", torch.device("cpu"), torch.float32))


def test_sdxl_keyframes_equal_plain_renders_and_pooled_embeds_are_walked(sdxl_morpher) -> None:
    walked = []
    original = sdxl_morpher.walk
    sdxl_morpher.walk = lambda *args: walked.append(original(*args)) or walked[-1]
    try:
        frames = sdxl_morpher.render(replace(BASE, frames=3, batch_size=3)).frames
    finally:
        del sdxl_morpher.walk
    pipe = sdxl_morpher.model.pipe
    assert psnr(pixels(frames[0].image), plain_render(pipe, "a red circle", 1)) >= 40
    assert psnr(pixels(frames[-1].image), plain_render(pipe, "a blue square", 2)) >= 40
    pooled = walked[0]["pooled_prompt_embeds"]
    assert pooled.shape[0] == 3 and "negative_pooled_prompt_embeds" in walked[0]
    assert not torch.equal(pooled[1], pooled[0]) and not torch.equal(pooled[1], pooled[2])
    single = sdxl_morpher.render(replace(BASE, frames=3, batch_size=1)).frames
    assert np.array_equal(pixels(single[0].image), plain_render(pipe, "a red circle", 1))
