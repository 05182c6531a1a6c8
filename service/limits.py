"""Server-side limits for one morph, checked before any work is done.

Every value that reaches the service (from the page or from an API call) goes
through `check_form`, which turns loosely typed form values into a `MorphForm`
or raises `LimitError` with a message that names the value and the limit, and
the launch flag that sets it. Nothing here imports torch or gradio, so the
checks are cheap and unit-testable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

INTERP_CHOICES = ("slerp", "lerp")
SPACING_CHOICES = ("linear", "ease", "even")
# torch.Generator accepts 64-bit seeds, numpy's legacy seeding only 32-bit ones:
# 32 bits is plenty of variety and stays portable.
SEED_MAX = 2**32 - 1
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[x×X*]\s*(\d+)\s*$")


class LimitError(ValueError):
    """A request the service refuses; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class Limits:
    """What one job may ask for. Each field has a launch flag of the same name."""

    max_frames: int = field(default=48, metadata={"help": "frames of one morph, keyframes included"})
    max_steps: int = field(default=50, metadata={"help": "denoising steps per frame"})
    max_pixels: int = field(default=512 * 512, metadata={"help": "width x height of one frame"})
    max_prompt_chars: int = field(default=300, metadata={"help": "characters in one prompt or the negative prompt"})
    max_prompts: int = field(default=6, metadata={"help": "prompts in one chain"})
    max_guidance: float = field(default=30.0, metadata={"help": "classifier-free guidance scale"})
    max_fps: float = field(default=30.0, metadata={"help": "frame rate of the GIF and MP4"})
    deadline_s: float = field(default=600.0, metadata={"help": "seconds one job may run once started"})
    queue_size: int = field(default=8, metadata={"help": "jobs waiting before new ones are refused"})

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if not value > 0:
                raise ValueError(f"{limit.name} must be positive, got {value!r}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {self.max_frames}")
        if self.max_prompts < 2:
            raise ValueError(f"max_prompts must be at least 2, got {self.max_prompts}")
        if self.max_pixels < 64:
            raise ValueError(f"max_pixels must be at least 64 (8x8), got {self.max_pixels}")

    def sizes(self, candidates: tuple[int, ...] = (64, 128, 256, 384, 512, 768, 1024)) -> list[str]:
        """Square sizes within `max_pixels`, for the size menu (other sizes may be typed)."""
        return [f"{side}x{side}" for side in candidates if side * side <= self.max_pixels]


@dataclass(frozen=True)
class MorphForm:
    """The checked values of one request: the fields of `MorphRequest` plus fps and model."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    frames: int
    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str
    interp: str
    spacing: str
    loop: bool
    fps: float
    model: str

    def request_fields(self) -> dict[str, Any]:
        """Keyword arguments for `pipelines.morph.MorphRequest`."""
        return {
            "prompts": self.prompts,
            "seeds": self.seeds,
            "frames": self.frames,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "negative_prompt": self.negative_prompt,
            "interp": self.interp,
            "spacing": self.spacing,
            "loop": self.loop,
        }


def _whole(name: str, value: Any, low: int, high: int, flag: str | None = None) -> int:
    """`value` as an int in [low, high], or LimitError naming `name` and the range."""
    limit = f" ({flag})" if flag else ""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not math.isfinite(number) or number != int(number):
            raise TypeError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise LimitError(f"{name} must be a whole number between {low} and {high}{limit}; got {value!r}.") from None
    if number < low or number > high:
        raise LimitError(f"{name} must be between {low} and {high}{limit}; got {number}.")
    return number


def _real(name: str, value: Any, low: float, high: float, flag: str | None = None) -> float:
    """`value` as a finite float in [low, high], or LimitError naming `name` and the range."""
    limit = f" ({flag})" if flag else ""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise LimitError(f"{name} must be a number between {low:g} and {high:g}{limit}; got {value!r}.") from None
    if number < low or number > high:
        raise LimitError(f"{name} must be between {low:g} and {high:g}{limit}; got {number:g}.")
    return number


def _text(name: str, value: Any, max_chars: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LimitError(f"{name} must be text; got {type(value).__name__}.")
    text = value.strip()
    if len(text) > max_chars:
        raise LimitError(
            f"{name} is {len(text)} characters long; the limit is {max_chars} characters (--max-prompt-chars)."
        )
    return text


def split_prompts(prompt_a: Any, prompt_b: Any, more_prompts: Any) -> list[Any]:
    """Prompt A, prompt B and the extra prompts (one per line; blank lines ignored) as one chain."""
    extra: list[Any] = []
    if isinstance(more_prompts, str):
        extra = [line for line in more_prompts.splitlines() if line.strip()]
    elif isinstance(more_prompts, (list, tuple)):
        extra = list(more_prompts)
    elif more_prompts is not None:
        raise LimitError(f"more_prompts must be text with one prompt per line; got {type(more_prompts).__name__}.")
    return [prompt_a, prompt_b, *extra]


def parse_seeds(value: Any, prompt_count: int) -> tuple[int, ...]:
    """'7' or '1, 2, 3' (or a number, or a list) -> seeds: one for all keyframes or one per prompt."""
    if isinstance(value, bool):
        raise LimitError(f"seeds must be whole numbers between 0 and {SEED_MAX}; got {value!r}.")
    if isinstance(value, (int, float)):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [item for item in re.split(r"[\s,;]+", value.strip()) if item]
    elif value is None:
        items = []
    else:
        raise LimitError(f"seeds must be whole numbers between 0 and {SEED_MAX}; got {type(value).__name__}.")
    if not items:
        raise LimitError("seeds is empty: give one seed for all prompts or one per prompt, e.g. '0' or '1 2'.")
    seeds = tuple(_whole("seed", item, 0, SEED_MAX) for item in items)
    if len(seeds) not in (1, prompt_count):
        raise LimitError(
            f"seeds: give one seed for all prompts or one per prompt ({prompt_count}); got {len(seeds)}."
        )
    return seeds


def parse_size(value: Any, limits: Limits) -> tuple[int, int]:
    """'WxH' -> (width, height): multiples of 8, at most `limits.max_pixels` pixels."""
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise LimitError(f"size must look like 64x64 (width x height in pixels); got {value!r}.")
    width, height = int(match.group(1)), int(match.group(2))
    for name, side in (("width", width), ("height", height)):
        if side < 8 or side % 8:
            raise LimitError(f"size: {name} must be a positive multiple of 8; got {side}.")
    if width * height > limits.max_pixels:
        raise LimitError(
            f"size {width}x{height} is {width * height} pixels; the limit is {limits.max_pixels} "
            f"pixels per frame (--max-pixels)."
        )
    return width, height


def _choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise LimitError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise LimitError(f"{name} must be true or false; got {value!r}.")


def check_form(
    limits: Limits,
    models: list[str] | tuple[str, ...],
    *,
    prompt_a: Any,
    prompt_b: Any,
    more_prompts: Any = "",
    negative_prompt: Any = "",
    seeds: Any = "0",
    frames: Any = 16,
    steps: Any = 20,
    guidance: Any = 5.0,
    size: Any = "64x64",
    interp: Any = "slerp",
    spacing: Any = "linear",
    loop: Any = False,
    fps: Any = 8.0,
    model: Any = None,
) -> MorphForm:
    """Check every value of one request against `limits`; raise LimitError on the first bad one.

    `models` is the allow-list configured at launch; `model=None` picks the first.
    Cheap and side-effect free: it runs before any model work.
    """
    # 1. the chain of prompts
    raw_prompts = split_prompts(prompt_a, prompt_b, more_prompts)
    if len(raw_prompts) > limits.max_prompts:
        raise LimitError(
            f"A chain has at most {limits.max_prompts} prompts (--max-prompts); got {len(raw_prompts)}."
        )
    prompts = []
    for index, raw in enumerate(raw_prompts):
        name = f"prompt {chr(ord('A') + index)}"
        text = _text(name, raw, limits.max_prompt_chars)
        if not text:
            raise LimitError(f"{name} is empty: every prompt in the chain needs some text.")
        prompts.append(text)
    negative = _text("the negative prompt", negative_prompt, limits.max_prompt_chars)

    # 2. numbers with their limits
    frames_n = _whole("frames", frames, 2, limits.max_frames, "--max-frames")
    keyframes = len(prompts)
    if frames_n < keyframes:
        raise LimitError(f"frames must be at least the number of prompts ({keyframes}); got {frames_n}.")
    steps_n = _whole("steps", steps, 1, limits.max_steps, "--max-steps")
    guidance_x = _real("guidance", guidance, 0.0, limits.max_guidance, "--max-guidance")
    fps_x = _real("fps", fps, 1.0, limits.max_fps, "--max-fps")
    width, height = parse_size(size, limits)
    seed_tuple = parse_seeds(seeds, len(prompts))

    # 3. choices
    interp_s = _choice("interp", interp, INTERP_CHOICES)
    spacing_s = _choice("spacing", spacing, SPACING_CHOICES)
    loop_b = _flag("loop", loop)
    if not models:
        raise LimitError("No model is configured on this server.")
    model_s = models[0] if model in (None, "") else _choice("model", model, list(models))

    return MorphForm(
        prompts=tuple(prompts),
        seeds=seed_tuple,
        frames=frames_n,
        steps=steps_n,
        guidance=guidance_x,
        width=width,
        height=height,
        negative_prompt=negative,
        interp=interp_s,
        spacing=spacing_s,
        loop=loop_b,
        fps=fps_x,
        model=model_s,
    )
