"""The service's request checks: fast, no model, no server."""

from __future__ import annotations

import pytest

from service.limits import SEED_MAX, LimitError, Limits, check_form, parse_seeds, parse_size

LIMITS = Limits(max_frames=24, max_steps=30, max_pixels=128 * 128, max_prompt_chars=50, max_prompts=4)
MODELS = ["tiny", "other"]


def form(**overrides):
    values = {"prompt_a": "a red circle", "prompt_b": "a blue square"}
    values.update(overrides)
    return check_form(LIMITS, MODELS, **values)


def test_defaults_pass_and_map_onto_request_fields() -> None:
    checked = form(more_prompts="a green star\n\n  a yellow triangle  ", seeds="1, 2 3 4", size="128x64")
    assert checked.prompts == ("a red circle", "a blue square", "a green star", "a yellow triangle")
    assert checked.seeds == (1, 2, 3, 4)
    assert (checked.width, checked.height) == (128, 64)
    assert checked.model == "tiny"
    fields = checked.request_fields()
    assert set(fields) == {
        "prompts", "seeds", "frames", "steps", "guidance", "width", "height",
        "negative_prompt", "interp", "spacing", "loop",
    }


def test_api_values_may_come_as_strings_or_numbers() -> None:
    checked = form(frames="12", steps=4.0, guidance="7.5", seeds=5, loop="true", fps="12")
    assert (checked.frames, checked.steps, checked.guidance, checked.seeds, checked.loop, checked.fps) == (
        12, 4, 7.5, (5,), True, 12.0,
    )


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"prompt_a": "   "}, "prompt A is empty"),
        ({"prompt_b": ""}, "prompt B is empty"),
        ({"prompt_b": None}, "prompt B is empty"),
        ({"prompt_a": 12}, "prompt A must be text"),
        ({"prompt_a": "x" * 51}, "limit is 50 characters (--max-prompt-chars)"),
        ({"negative_prompt": "y" * 60}, "negative prompt is 60 characters"),
        ({"more_prompts": "c\nd\ne"}, "at most 4 prompts (--max-prompts); got 5"),
        ({"frames": 25}, "frames must be between 2 and 24 (--max-frames); got 25"),
        ({"frames": 1}, "frames must be between 2 and 24"),
        ({"frames": 2.5}, "frames must be a whole number"),
        ({"frames": "many"}, "frames must be a whole number"),
        ({"frames": True}, "frames must be a whole number"),
        ({"frames": 2, "more_prompts": "c"}, "at least the number of prompts (3)"),
        ({"steps": 0}, "steps must be between 1 and 30 (--max-steps)"),
        ({"steps": 31}, "(--max-steps); got 31"),
        ({"guidance": 31}, "guidance must be between 0 and 30 (--max-guidance)"),
        ({"guidance": float("nan")}, "guidance must be a number"),
        ({"fps": 0}, "fps must be between 1 and 30"),
        ({"size": "64"}, "size must look like 64x64"),
        ({"size": "60x64"}, "width must be a positive multiple of 8; got 60"),
        ({"size": "64x0"}, "height must be a positive multiple of 8; got 0"),
        ({"size": "256x256"}, "limit is 16384 pixels per frame (--max-pixels)"),
        ({"size": "../etc/passwd"}, "size must look like 64x64"),
        ({"seeds": "-1"}, f"seed must be between 0 and {SEED_MAX}; got -1"),
        ({"seeds": str(SEED_MAX + 1)}, f"seed must be between 0 and {SEED_MAX}"),
        ({"seeds": "1e400"}, "seed must be a whole number"),
        ({"seeds": "lucky"}, "seed must be a whole number"),
        ({"seeds": ""}, "seeds is empty"),
        ({"seeds": "1 2 3"}, "one seed for all prompts or one per prompt (2); got 3"),
        ({"interp": "cubic"}, "interp must be one of slerp, lerp"),
        ({"spacing": "random"}, "spacing must be one of linear, ease, even"),
        ({"loop": "maybe"}, "loop must be true or false"),
        ({"model": "/root/secret.safetensors"}, "model must be one of tiny, other"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(overrides: dict, needle: str) -> None:
    with pytest.raises(LimitError) as caught:
        form(**overrides)
    assert needle in str(caught.value)


def test_seed_and_size_parsers_accept_the_usual_spellings() -> None:
    assert parse_seeds("1,2", 2) == (1, 2)
    assert parse_seeds([3, "4"], 2) == (3, 4)
    assert parse_seeds(SEED_MAX, 2) == (SEED_MAX,)
    assert parse_size(" 64 x 128 ", LIMITS) == (64, 128)
    assert parse_size("64X64", LIMITS) == (64, 64)


def test_limits_themselves_are_checked() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)
    with pytest.raises(ValueError, match="max_prompts must be at least 2"):
        Limits(max_prompts=1)
    assert Limits(max_pixels=128 * 128).sizes() == ["64x64", "128x128"]
