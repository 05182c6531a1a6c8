"""The request: every option declared once, parsed from its text form, checked with messages naming the field."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pipelines.__main__ import build_parser, request_from_args
from pipelines.request import (
    MorphRequest,
    check_request,
    default_of,
    format_value,
    options,
    parse_option,
    walk_reads,
)

BASE = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=2, size=(32, 32))
FOUR = ("a red circle", "a blue square", "a green star", "a yellow triangle")

# Each option's text forms (CLI argument, API string) and what they mean. A new option
# fails `test_every_option_is_covered` until it has a line here and in BAD.
TEXT = {
    "walk": [("grid", "grid"), ("direction", "direction")],
    "negative_prompt": [("blurry, dark", "blurry, dark"), ("", ""), (None, "")],
    "seeds": [("7", (7,)), ("1, 2 3", (1, 2, 3)), ("4;5", (4, 5)), (9, (9,)), ([1, "2"], (1, 2))],
    "frames": [("12", 12), (" 3 ", 3), ("4.0", 4), ("", 16)],
    "grid": [("2x3", (2, 3)), ("4 X 5", (4, 5)), ("3×3", (3, 3)), ((2, 2), (2, 2))],
    "scale": [("0 1.5", (0.0, 1.5)), ("-1, 2", (-1.0, 2.0)), ((0, 1), (0.0, 1.0))],
    "steps": [("20", 20), ("", 20)],
    "guidance": [("7.5", 7.5), ("1", 1.0), ("", 5.0)],
    "size": [("64x48", (64, 48)), ("32 x 32", (32, 32)), (None, None)],
    "interp": [("lerp", "lerp")],
    "spacing": [("even", "even"), ("ease", "ease")],
    "fps": [("12", 12.0), ("2.5", 2.5)],
    "loop": [("true", True), ("False", False), (True, True), (0, False)],
    "noise_interp": [("lerp", "lerp")],
    "attention": [("interpolate", "interpolate")],
    "speed": [("deepcache-2", "deepcache-2"), ("exact", "exact")],
    "batch_size": [("2", 2), (None, None)],
}
# A bad text form of each option; parsing it, or checking a request holding it, must name the field.
BAD = {
    "walk": "spiral",
    "negative_prompt": None,  # any text is a negative prompt (its length is a service limit)
    "seeds": "-1",
    "frames": "2.5",
    "grid": "1x3",
    "scale": "1",
    "steps": "0",
    "guidance": "nan",
    "size": "30x32",
    "interp": "cubic",
    "spacing": "random",
    "fps": "0",
    "loop": "maybe",
    "noise_interp": "cubic",
    "attention": "sideways",
    "speed": "ludicrous",
    "batch_size": "0",
}


def test_every_option_is_covered() -> None:
    assert set(TEXT) == set(options()) == set(BAD)


@pytest.mark.parametrize("name,text,value", [(name, text, value) for name, cases in TEXT.items()
                                             for text, value in cases])
def test_every_option_parses_its_text_form(name: str, text, value) -> None:
    parsed = parse_option(name, text)
    assert parsed == value and type(parsed) is type(value)
    if value is not None:  # and a request holding it is valid
        request = replace(BASE, **{"seeds": (1,), name: value})
        if name == "walk":
            request = replace(request, prompts={"grid": FOUR, "direction": FOUR[:3]}[value])
        if name == "seeds" and len(value) > 1:
            request = replace(request, prompts=FOUR[: len(value)])
        check_request(request)


@pytest.mark.parametrize("name", sorted(options()))
def test_defaults_round_trip_through_their_text_form(name: str) -> None:
    default = default_of(name)
    assert parse_option(name, format_value(default)) == default


@pytest.mark.parametrize("name", sorted(name for name, text in BAD.items() if text is not None))
def test_bad_values_raise_value_error_naming_the_field(name: str) -> None:
    # checked on a walk that reads the option (a chain does not care about a bad grid)
    walk = next(walk for walk in ("chain", "grid", "direction") if walk_reads(walk, name))
    base = replace(BASE, walk=walk, prompts={"chain": BASE.prompts, "grid": FOUR, "direction": FOUR[:3]}[walk])
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        check_request(replace(base, **{name: parse_option(name, BAD[name])}))


def test_an_option_the_walk_does_not_read_is_not_checked() -> None:
    check_request(replace(BASE, grid=(1, 1), scale=(1.0, 1.0)))  # a chain has no grid and no scale
    with pytest.raises(ValueError, match="grid"):
        check_request(replace(BASE, walk="grid", prompts=FOUR, grid=(1, 1)))


@pytest.mark.parametrize(
    "change,field",
    [({"prompts": ("only one",)}, "prompts"), ({"prompts": ["a", "b"]}, "prompts"),
     ({"prompts": ("a", "  ")}, "prompt"), ({"frames": 1}, "frames"), ({"prompts": ("a", "b", "c"), "seeds": (1,), "frames": 2}, "frames"),
     ({"steps": 0}, "steps"), ({"steps": 2.0}, "steps"), ({"size": (30, 32)}, "width"), ({"size": (32, 0)}, "height"),
     ({"guidance": -1.0}, "guidance"), ({"guidance": float("nan")}, "guidance"), ({"interp": "cubic"}, "interp"),
     ({"spacing": "random"}, "spacing"), ({"seeds": (1, 2, 3)}, "seeds"), ({"seeds": (-1,)}, "seeds"),
     ({"seeds": (True,)}, "seeds"), ({"batch_size": 0}, "batch_size"), ({"fps": 0.0}, "fps"),
     ({"negative_prompt": 5}, "negative_prompt"), ({"grid": (2, 1), "walk": "grid", "prompts": FOUR}, "grid"),
     ({"scale": (0.0, float("inf")), "walk": "direction", "prompts": FOUR[:3]}, "scale"), ({"walk": "spiral"}, "walk")],
)
def test_bad_requests_name_the_bad_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        check_request(replace(BASE, **change))
    check_request(BASE)


# ---- what each walk accepts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change,words",
    [({"walk": "grid"}, "the grid walk takes exactly 4 prompts, got 2"),
     ({"walk": "grid", "prompts": FOUR[:3]}, "exactly 4 prompts, got 3"),
     ({"walk": "grid", "prompts": FOUR + ("a white star",)}, "exactly 4 prompts, got 5"),
     ({"walk": "direction"}, "the direction walk takes exactly 3 prompts, got 2"),
     ({"walk": "direction", "prompts": FOUR}, "exactly 3 prompts, got 4"),
     ({"walk": "grid", "prompts": FOUR, "loop": True}, "loop"),
     ({"walk": "grid", "prompts": FOUR, "spacing": "even"}, "even"),
     ({"walk": "direction", "prompts": FOUR[:3], "loop": True}, "loop"),
     ({"walk": "direction", "prompts": FOUR[:3], "scale": (1.0, 1.0)}, "scale"),
     ({"walk": "grid", "prompts": FOUR, "seeds": (1, 2)}, "seeds")],
)
def test_walks_refuse_what_they_cannot_do(change: dict, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        check_request(replace(BASE, **{"seeds": (1,), **change}))


@pytest.mark.parametrize(
    "change",
    [{"walk": "grid", "prompts": FOUR}, {"walk": "grid", "prompts": FOUR, "seeds": (1, 2, 3, 4), "spacing": "ease"},
     {"walk": "grid", "prompts": FOUR, "grid": (2, 8), "frames": 2},  # a grid's frame count is rows x columns
     {"walk": "direction", "prompts": FOUR[:3], "scale": (1.0, -1.0), "spacing": "even"},
     {"prompts": FOUR, "seeds": (1, 2, 3, 4), "loop": True, "frames": 4}],
)
def test_walks_accept_what_they_can_do(change: dict) -> None:
    check_request(replace(BASE, **{"seeds": (1,), **change}))


# ---- surfaces generated from the declaration ---------------------------------------------


def test_the_cli_has_one_flag_per_option_with_its_help() -> None:
    parser = build_parser()
    by_dest = {action.dest: action for action in parser._actions}
    for name, spec in options().items():
        action = by_dest[name]
        assert action.option_strings == [spec.flag or "--" + name.replace("_", "-")]
        assert spec.help in action.help
        if spec.kind == "choice":
            assert tuple(action.choices) == spec.choices


def test_cli_arguments_make_the_request_they_spell() -> None:
    args = build_parser().parse_args([
        *FOUR, "--walk", "grid", "--seed", "1", "2", "3", "4", "--grid", "2x3", "--size", "64x48", "--steps", "3",
        "--guidance", "7.5", "--negative", "blurry", "--interp", "lerp", "--spacing", "ease", "--fps", "12",
        "--batch-size", "2",
    ])
    assert request_from_args(args) == MorphRequest(
        prompts=FOUR, walk="grid", seeds=(1, 2, 3, 4), grid=(2, 3), size=(64, 48), steps=3, guidance=7.5,
        negative_prompt="blurry", interp="lerp", spacing="ease", fps=12.0, batch_size=2,
    )
    direction = build_parser().parse_args(["a", "b", "c", "--walk", "direction", "--scale", "-1", "2", "--loop"])
    assert request_from_args(direction) == MorphRequest(prompts=("a", "b", "c"), walk="direction",
                                                        scale=(-1.0, 2.0), loop=True)
    assert request_from_args(build_parser().parse_args(["a", "b"])) == MorphRequest(prompts=("a", "b"))
