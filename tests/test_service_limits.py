"""The service's request checks (`service.form.check_form` over `service.limits`): fast, no model, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.request import MorphRequest
from service.form import check_form, inputs_for
from service.limits import SEED_MAX, LimitError, Limits, parse_grid, parse_scale_range, parse_seeds, parse_size

LIMITS = Limits(max_frames=24, max_steps=30, max_pixels=128 * 128, max_prompt_chars=50, max_prompts=4,
                max_grid_side=5, max_scale=3.0)
MODELS = ["tiny", "other"]
PROMPTS = {
    "chain": {"prompt_a": "a red circle", "prompt_b": "a blue square"},
    "grid": {"prompt_a": "a red circle", "prompt_b": "a blue circle", "prompt_c": "a red square",
             "prompt_d": "a blue square"},
    "direction": {"prompt_a": "a red circle", "prompt_b": "a red square", "prompt_c": "a blue square"},
}


def form(walk: str = "chain", limits: Limits = LIMITS, **overrides):
    return check_form(limits, MODELS, walk, **{**PROMPTS[walk], **overrides})


def test_defaults_pass_and_map_onto_request_fields() -> None:
    checked = form(more_prompts="a green star\n\n  a yellow triangle  ", seeds="1, 2 3 4", size="128x64")
    request = checked.request
    assert isinstance(request, MorphRequest) and request.walk == "chain"
    assert request.prompts == ("a red circle", "a blue square", "a green star", "a yellow triangle")
    assert request.seeds == (1, 2, 3, 4)
    assert (request.width, request.height) == (128, 64)
    assert checked.model == "tiny"
    # options not sent keep the request's own defaults; the size stays the model's to decide
    plain = form().request
    assert plain.size is None and plain.frames == MorphRequest.__dataclass_fields__["frames"].default


def test_each_walk_takes_its_own_prompts_and_options() -> None:
    grid = form("grid", grid="2x4", seeds="1 2 3 4").request
    assert (grid.walk, grid.prompts, grid.grid, grid.seeds) == (
        "grid", ("a red circle", "a blue circle", "a red square", "a blue square"), (2, 4), (1, 2, 3, 4),
    )
    direction = form("direction", scale="-1 2.5", frames=5).request
    assert (direction.walk, direction.scale, direction.frames) == ("direction", (-1.0, 2.5), 5)
    # what an endpoint takes comes from the request's declaration, per walk
    names = {walk: [item.name for item in inputs_for(walk)] for walk in PROMPTS}
    # the first release's parameters keep their places (positional callers keep working) ...
    assert names["chain"][:14] == [
        "prompt_a", "prompt_b", "more_prompts", "negative_prompt", "seeds", "frames", "steps",
        "guidance", "size", "interp", "spacing", "fps", "loop", "model",
    ]
    assert "grid" in names["grid"] and "frames" not in names["grid"] and "prompt_d" in names["grid"]
    assert "scale" in names["direction"] and "interp" not in names["direction"]
    # ... and the pictures come last, one per key that is shown (a direction's B and C only steer)
    assert names["chain"][-2:] == ["image_a", "image_b"]
    assert names["grid"][-4:] == ["image_a", "image_b", "image_c", "image_d"]
    assert names["direction"][-1:] == ["image_a"] and "image_b" not in names["direction"]
    for walk, listed in names.items():
        assert listed.index("model") < listed.index("image_a"), walk


def test_api_values_may_come_as_strings_or_numbers() -> None:
    request = form(frames="12", steps=4.0, guidance="7.5", seeds=5, loop="true", fps="12").request
    assert (request.frames, request.steps, request.guidance, request.seeds, request.loop, request.fps) == (
        12, 4, 7.5, (5,), True, 12.0,
    )
    assert form("grid", grid=" 3 x 2 ").request.grid == (3, 2)
    assert form("direction", scale=[0, 1]).request.scale == (0.0, 1.0)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"prompt_a": "   "}, "prompt A is empty: every keyframe of the chain walk needs a prompt or a picture"),
        ({"prompt_b": ""}, "prompt B is empty"),
        ({"prompt_b": None}, "prompt B is empty"),
        ({"prompt_a": 12}, "prompt A must be text"),
        ({"prompt_a": "x" * 51}, "limit is 50 characters (--max-prompt-chars)"),
        ({"negative_prompt": "y" * 60}, "negative prompt is 60 characters"),
        ({"more_prompts": "c\nd\ne"}, "at most 4 prompts (--max-prompts); got 5"),
        ({"more_prompts": 7}, "more_prompts must be text with one prompt per line"),
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
        ({"grid": "3x3"}, "unknown parameter 'grid' for the chain walk"),
        ({"prompt_c": "a green star"}, "unknown parameter 'prompt_c' for the chain walk"),
        ({"batch_size": 64}, "unknown parameter 'batch_size'"),  # not offered by the service
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(overrides: dict, needle: str) -> None:
    with pytest.raises(LimitError) as caught:
        form(**overrides)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"grid": "9x3"}, "grid rows must be between 2 and 5 (--max-grid-side); got 9"),
        ({"grid": "3x6"}, "grid columns must be between 2 and 5 (--max-grid-side); got 6"),
        ({"grid": "1x3"}, "grid rows must be between 2 and 5"),
        ({"grid": "3"}, "grid must look like 3x3 (rows x columns)"),
        ({"grid": 9}, "grid must look like 3x3"),
        ({"prompt_d": ""}, "prompt D is empty: every keyframe of the grid walk needs a prompt or a picture"),
        ({"prompt_d": None}, "prompt D is empty"),
        ({"more_prompts": "a green star"}, "unknown parameter 'more_prompts' for the grid walk"),
        ({"frames": 9}, "unknown parameter 'frames' for the grid walk"),
        ({"scale": "0 1"}, "unknown parameter 'scale' for the grid walk"),
        ({"loop": True}, "unknown parameter 'loop' for the grid walk"),
        ({"seeds": "1 2"}, "one seed for all prompts or one per prompt (4); got 2"),
        # spacing re-times a path; the service offers it for chains and directions only
        ({"spacing": "even"}, "unknown parameter 'spacing' for the grid walk"),
    ],
)
def test_bad_grid_values_are_refused(overrides: dict, needle: str) -> None:
    with pytest.raises(LimitError) as caught:
        form("grid", **overrides)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"scale": "0 4"}, "scale must be between -3 and 3 (--max-scale); got 4"),
        ({"scale": "-3.5 1"}, "scale must be between -3 and 3 (--max-scale); got -3.5"),
        ({"scale": "1 1"}, "scale start and end must differ"),
        ({"scale": "1"}, "scale must be two numbers, start and end"),
        ({"scale": "0 1 2"}, "scale must be two numbers"),
        ({"scale": "0 nan"}, "scale must be a number between -3 and 3"),
        ({"scale": "big small"}, "scale must be two numbers"),
        ({"prompt_c": " "}, "prompt C is empty: every prompt of the direction walk needs some text"),
        ({"prompt_d": "a green star"}, "unknown parameter 'prompt_d' for the direction walk"),
        ({"interp": "lerp"}, "unknown parameter 'interp' for the direction walk"),
        ({"frames": 2, "scale": "0 1"}, None),  # two frames are enough for a direction: accepted
        ({"frames": 25}, "frames must be between 2 and 24 (--max-frames); got 25"),
    ],
)
def test_bad_direction_values_are_refused(overrides: dict, needle: str | None) -> None:
    if needle is None:
        assert form("direction", **overrides).request.frames == overrides["frames"]
        return
    with pytest.raises(LimitError) as caught:
        form("direction", **overrides)
    assert needle in str(caught.value)


def test_a_grid_needs_its_four_prompts_even_when_chains_are_capped_lower() -> None:
    """--max-prompts caps the chain's prompts; a grid always has four, a direction three."""
    capped = Limits(max_prompts=2)
    assert len(form("grid", limits=capped).request.prompts) == 4
    assert len(form("direction", limits=capped).request.prompts) == 3
    with pytest.raises(LimitError, match=r"at most 2 prompts \(--max-prompts\); got 3"):
        form(limits=capped, more_prompts="a green star")


def test_an_unknown_walk_is_refused() -> None:
    with pytest.raises(ValueError, match="walk must be one of chain, grid, direction"):
        check_form(LIMITS, MODELS, "spiral", prompt_a="a", prompt_b="b")


def test_no_model_configured_is_refused() -> None:
    with pytest.raises(LimitError, match="No model is configured"):
        check_form(LIMITS, [], "chain", **PROMPTS["chain"])


def test_parsers_accept_the_usual_spellings() -> None:
    assert parse_seeds("1,2", 2) == (1, 2)
    assert parse_seeds([3, "4"], 2) == (3, 4)
    assert parse_seeds(SEED_MAX, 2) == (SEED_MAX,)
    assert parse_size(" 64 x 128 ", LIMITS) == (64, 128)
    assert parse_size("64X64", LIMITS) == (64, 64)
    assert parse_grid("2×5", LIMITS) == (2, 5)
    assert parse_scale_range("-1, 2", LIMITS) == (-1.0, 2.0)
    assert parse_scale_range("1.5 -3", LIMITS) == (1.5, -3.0)  # a sweep may run backwards


def test_limits_themselves_are_checked() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)
    with pytest.raises(ValueError, match="max_prompts must be at least 2"):
        Limits(max_prompts=1)
    with pytest.raises(ValueError, match="max_scale must be positive"):
        Limits(max_scale=0)
    with pytest.raises(ValueError, match="max_grid_side must be at least 2"):
        Limits(max_grid_side=1)
    assert Limits(max_pixels=128 * 128).sizes() == ["64x64", "128x128"]


# ---------------------------------------------------------------- pictures as keyframes

def disc(path: Path, size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (220, 30, 30)) -> Path:
    """A disc of `colour` on grey, drawn here (no picture of unknown origin in the tests)."""
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (128, 128, 128))
    width, height = size
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=colour)
    image.save(path)
    return path


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    """Stands for Gradio's upload folder: one sub-folder per upload, as Gradio makes them."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def picture_form(uploads: Path | None, walk: str = "chain", **overrides):
    return check_form(LIMITS, MODELS, walk, uploads=uploads, **{**PROMPTS[walk], **overrides})


def test_an_uploaded_picture_with_no_prompt_becomes_an_image_key(uploads: Path) -> None:
    picture = disc(uploads / "3f2a" / "disc.png")
    request = picture_form(uploads, prompt_a="", image_a=str(picture)).request
    assert request.prompts == (f"image:{picture.resolve()}|", "a blue square")
    # the prompt, when given, describes the picture
    described = picture_form(uploads, prompt_b=" a red disc ", image_b=str(picture)).request
    assert described.prompts == ("a red circle", f"image:{picture.resolve()}|a red disc")


def test_a_gradio_file_payload_is_taken_by_its_path(uploads: Path) -> None:
    """With preprocessing off, the handlers receive Gradio's FileData dicts, not plain paths."""
    picture = disc(uploads / "9c" / "odd.png", size=(37, 53))  # any size: fitted later by the engine
    payload = {"path": str(picture), "url": None, "orig_name": "odd.png", "meta": {"_type": "gradio.FileData"}}
    request = picture_form(uploads, "grid", prompt_d=None, image_d=payload).request
    assert request.prompts[3] == f"image:{picture.resolve()}|"
    assert request.prompts[:3] == ("a red circle", "a blue circle", "a red square")


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink", "no_uploads_folder"])
def test_a_picture_outside_the_upload_folder_is_refused(uploads: Path, tmp_path: Path, where: str) -> None:
    outside = disc(tmp_path / "elsewhere" / "disc.png")
    path = {
        "outside": str(outside),
        "dotdot": str(uploads / ".." / "elsewhere" / "disc.png"),
        "symlink": str(uploads / "link.png"),
        "no_uploads_folder": str(disc(uploads / "1" / "disc.png")),
    }[where]
    if where == "symlink":
        (uploads / "link.png").symlink_to(outside)
    folder = None if where == "no_uploads_folder" else uploads
    with pytest.raises(LimitError, match=r"^picture A: only pictures uploaded to this server are read\.$"):
        picture_form(folder, image_a=path)
    with pytest.raises(LimitError, match="only pictures uploaded to this server are read"):
        picture_form(folder, image_a={"path": path, "meta": {"_type": "gradio.FileData"}})


@pytest.mark.parametrize("typed", ["image:/etc/passwd", "image:disc.png|a red disc", "  image:/tmp/x.png  "])
def test_a_picture_typed_as_text_is_refused(uploads: Path, typed: str) -> None:
    with pytest.raises(LimitError, match=r"prompt A: pictures are uploaded, not typed as image:PATH"):
        picture_form(uploads, prompt_a=typed)
    with pytest.raises(LimitError, match=r"prompt D: pictures are uploaded, not typed"):
        picture_form(uploads, more_prompts=f"a green star\n{typed}")
    with pytest.raises(LimitError, match=r"prompt B: pictures are uploaded, not typed"):  # even beside a picture
        picture_form(uploads, prompt_b=typed, image_b=str(disc(uploads / "2" / "disc.png")))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("notes.png", b"hello, not a picture", "picture A: image 'notes.png' is not a picture PIL can read"),
        ("notes.txt", b"hello", "picture A: image 'notes.txt' is not a picture"),
        ("cut.png", None, "picture A: image 'cut.png' could not be decoded"),
        ("anim.gif", "gif", "picture A: image 'anim.gif' is GIF; use PNG, JPEG or WebP"),
        ("gone.png", "missing", "picture A: image 'gone.png': no such file"),
    ],
)
def test_an_unreadable_upload_is_refused_naming_the_file(uploads: Path, name: str, content, needle: str) -> None:
    from PIL import Image

    path = uploads / "7e" / name
    path.parent.mkdir()
    if content is None:  # a PNG cut short in its pixel data
        whole = disc(uploads / "whole.png", size=(96, 96)).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "gif":
        Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    elif content != "missing":
        path.write_bytes(content)
    with pytest.raises(LimitError) as caught:
        picture_form(uploads, image_a=str(path))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_picture_payload_that_is_not_a_file_is_refused(uploads: Path) -> None:
    with pytest.raises(LimitError, match="picture A must be an uploaded picture file; got int"):
        picture_form(uploads, image_a=12)
    with pytest.raises(LimitError, match="picture B must be an uploaded picture file; got dict"):
        picture_form(uploads, image_b={"url": "https://example.com/x.png"})


def test_an_empty_picture_means_none(uploads: Path) -> None:
    assert picture_form(uploads, image_a=None, image_b="").request.prompts == ("a red circle", "a blue square")
    with pytest.raises(LimitError, match="prompt A is empty: every keyframe of the chain walk needs a prompt or a "
                                         "picture"):
        picture_form(uploads, prompt_a="", image_a=None)


def test_a_direction_takes_a_picture_for_its_start_only(uploads: Path) -> None:
    picture = disc(uploads / "5" / "disc.png")
    request = picture_form(uploads, "direction", prompt_a="", image_a=str(picture)).request
    assert request.prompts[0] == f"image:{picture.resolve()}|"
    with pytest.raises(LimitError, match="unknown parameter 'image_b' for the direction walk"):
        picture_form(uploads, "direction", image_b=str(picture))


# ---------------------------------------------------------------- one declaration, short echoes

def test_the_service_takes_its_limits_from_the_one_declaration_in_pipelines() -> None:
    import pipelines.limits
    from service.config import build_parser

    assert Limits is pipelines.limits.Limits and LimitError is pipelines.limits.LimitError
    flags = {action.dest for action in build_parser({})._actions}
    assert {item.name for item in pipelines.limits.request_limits()} <= flags


HUGE = "y" * 100_000


@pytest.mark.parametrize(
    ("walk", "name"),
    [("chain", "frames"), ("chain", "steps"), ("chain", "guidance"), ("chain", "fps"), ("chain", "size"),
     ("chain", "seeds"), ("chain", "interp"), ("chain", "loop"), ("chain", "model"), ("grid", "grid"),
     ("direction", "scale")],
)
def test_a_huge_value_is_echoed_as_a_short_prefix(walk: str, name: str) -> None:
    with pytest.raises(LimitError) as caught:
        form(walk, **{name: HUGE})
    message = str(caught.value)
    assert len(message) < 200 and f"'{'y' * 40}'…(100000 characters)" in message


@pytest.mark.parametrize(
    ("walk", "overrides", "needle"),
    [("chain", {"size": "9" * 5000 + "x64"}, "is over the limit of 16384 pixels per frame (--max-pixels)."),
     ("chain", {"size": "64x" + "8" * 5000}, "is over the limit of 16384 pixels per frame (--max-pixels)."),
     ("grid", {"grid": "9" * 5000 + "x3"}, "grid rows must be between 2 and 5 (--max-grid-side)"),
     ("chain", {"frames": "9" * 5000}, "frames must be between 2 and 24 (--max-frames)"),
     ("chain", {"seeds": "9" * 5000}, f"seed must be between 0 and {SEED_MAX}")],
)
def test_thousands_of_digits_get_the_named_limit(walk: str, overrides: dict, needle: str) -> None:
    """int() of over 4300 digits raises its own ValueError; the digits are counted first."""
    with pytest.raises(LimitError) as caught:
        form(walk, **overrides)
    assert needle in str(caught.value) and "4300" not in str(caught.value) and len(str(caught.value)) < 200
