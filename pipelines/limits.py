"""What one morph may ask for, declared once, and the checks of single values against it.

`Limits` is the one declaration of the caps: the service's launch flags and the
CLI's flags of the same names (`--max-frames`, ...) are generated from its fields.
Each check turns a loosely typed value (a CLI argument, a widget's value, an API
call's JSON) into the engine's type or raises `LimitError` with a message that
names the value, the limit and the flag that sets it. `check_option` applies them
to one option of the request (declared in `pipelines/request.py`), so the CLI and
the service refuse the same values with the same words.
"""

from __future__ import annotations

import math
import re
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from pipelines.keys import is_image_spec
from pipelines.request import (
    MAX_DIGITS,
    SEED_MAX,
    options,
    parse_flag,
    parse_option,
    parse_scale,
    shown,
)

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[x×X*]\s*(\d+)\s*$")
_INTEGER_RE = re.compile(r"^\s*[+-]?\d+\s*$")
MIN_FPS = 1.0  # below one frame a second a morph is a slide show


class LimitError(ValueError):
    """A request that is refused; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class Limits:
    """What one job may ask for. Each field has a flag of the same name (`serving` ones: the service only)."""

    max_frames: int = field(default=48, metadata={"help": "frames of one morph, keyframes included"})
    max_steps: int = field(default=50, metadata={"help": "denoising steps per frame"})
    max_pixels: int = field(default=512 * 512, metadata={"help": "width x height of one frame"})
    max_prompt_chars: int = field(default=300, metadata={"help": "characters in one prompt or the negative prompt"})
    max_prompts: int = field(default=6, metadata={"help": "prompts in one chain"})
    max_grid_side: int = field(default=8, metadata={"help": "rows, and columns, of a grid walk"})
    max_scale: float = field(default=4.0, metadata={"help": "|s| of a direction walk's scale"})
    max_guidance: float = field(default=30.0, metadata={"help": "classifier-free guidance scale"})
    max_fps: float = field(default=30.0, metadata={"help": "frame rate of the GIF and MP4"})
    deadline_s: float = field(default=600.0, metadata={"help": "seconds one job may run once started",
                                                       "serving": True})
    queue_size: int = field(default=8, metadata={"help": "jobs waiting before new ones are refused", "serving": True})

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if not value > 0:
                raise ValueError(f"{limit.name} must be positive, got {shown(value)}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {self.max_frames}")
        if self.max_prompts < 2:
            raise ValueError(f"max_prompts must be at least 2, got {self.max_prompts}")
        if self.max_grid_side < 2:
            raise ValueError(f"max_grid_side must be at least 2, got {self.max_grid_side}")
        if self.max_pixels < 64:
            raise ValueError(f"max_pixels must be at least 64 (8x8), got {self.max_pixels}")

    def sizes(self, candidates: tuple[int, ...] = (64, 128, 256, 384, 512, 768, 1024)) -> list[str]:
        """Square sizes within `max_pixels`, for the size menu (other sizes may be typed)."""
        return [f"{side}x{side}" for side in candidates if side * side <= self.max_pixels]


def device_limits(device: str) -> Limits:
    """The default limits for models on `device` ("auto" is this machine's best): a CPU gets
    fewer frames and smaller frames than a GPU, whose defaults are `Limits()`."""
    if device == "auto":
        from pipelines.loading import resolve_device

        device = resolve_device("auto").type
    if device == "cpu":
        return replace(Limits(), max_frames=32, max_pixels=256 * 256)
    return Limits()


def request_limits() -> tuple[Field, ...]:
    """The fields of `Limits` that cap a request's content (not how the service queues and times jobs)."""
    return tuple(item for item in fields(Limits) if not item.metadata.get("serving"))


def limit_flag(name: str) -> str:
    """The flag that sets the limit `name`: max_frames -> --max-frames."""
    return "--" + name.replace("_", "-")


def _whole(name: str, value: Any, low: int, high: int, flag: str | None = None) -> int:
    """`value` as an int in [low, high], or LimitError naming `name` and the range."""
    limit = f" ({flag})" if flag else ""
    if isinstance(value, str) and _INTEGER_RE.match(value):
        # whole numbers in text are read exactly; far too many digits cannot be in range
        if len(value.strip().lstrip("+-")) > MAX_DIGITS:
            raise LimitError(f"{name} must be between {low} and {high}{limit}; got {shown(value)}.")
        number = int(value)
    else:
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value) if isinstance(value, str) else value
            if not isinstance(number, (int, float)) or not math.isfinite(number) or number != int(number):
                raise TypeError
            number = int(number)
        except (TypeError, ValueError, OverflowError):
            raise LimitError(
                f"{name} must be a whole number between {low} and {high}{limit}; got {shown(value)}."
            ) from None
    if number < low or number > high:
        raise LimitError(f"{name} must be between {low} and {high}{limit}; got {shown(number)}.")
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
        raise LimitError(
            f"{name} must be a number between {low:g} and {high:g}{limit}; got {shown(value)}."
        ) from None
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


def _choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise LimitError(f"{name} must be one of {', '.join(choices)}; got {shown(value)}.")
    return value


def _flag(name: str, value: Any) -> bool:
    try:
        return parse_flag(value)
    except ValueError:
        raise LimitError(f"{name} must be true or false; got {shown(value)}.") from None


def parse_seeds(value: Any, prompt_count: int) -> tuple[int, ...]:
    """'7' or '1, 2, 3' (or a number, or a list) -> seeds: one for all keyframes or one per prompt."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, list, tuple, type(None))):
        raise LimitError(f"seeds must be whole numbers between 0 and {SEED_MAX}; got {type(value).__name__}.")
    if isinstance(value, (int, float)):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [item for item in re.split(r"[\s,;]+", (value or "").strip()) if item]
    if not items:
        raise LimitError("seeds is empty: give one seed for all prompts or one per prompt, e.g. '0' or '1 2'.")
    seeds = tuple(_whole("seed", item, 0, SEED_MAX) for item in items)
    if len(seeds) not in (1, prompt_count):
        raise LimitError(
            f"seeds: give one seed for all prompts or one per prompt ({prompt_count}); got {len(seeds)}."
        )
    return seeds


def check_pixels(width: int, height: int, limits: Limits) -> None:
    """LimitError unless a width x height frame is within `limits.max_pixels`."""
    if width * height > limits.max_pixels:
        raise LimitError(
            f"size {width}x{height} is {width * height} pixels; the limit is {limits.max_pixels} "
            f"pixels per frame (--max-pixels)."
        )


def parse_size(value: Any, limits: Limits) -> tuple[int, int]:
    """'WxH' -> (width, height): multiples of 8, at most `limits.max_pixels` pixels."""
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise LimitError(f"size must look like 64x64 (width x height in pixels); got {shown(value)}.")
    if max(len(digits) for digits in match.groups()) > MAX_DIGITS:
        raise LimitError(f"size {shown(value)} is over the limit of {limits.max_pixels} pixels per frame "
                         "(--max-pixels).")
    width, height = int(match.group(1)), int(match.group(2))
    for name, side in (("width", width), ("height", height)):
        if side < 8 or side % 8:
            raise LimitError(f"size: {name} must be a positive multiple of 8; got {side}.")
    check_pixels(width, height, limits)
    return width, height


def parse_grid(value: Any, limits: Limits) -> tuple[int, int]:
    """'RxC' -> (rows, columns), each from 2 to `limits.max_grid_side`."""
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise LimitError(f"grid must look like 3x3 (rows x columns); got {shown(value)}.")
    for name, digits in zip(("rows", "columns"), match.groups()):
        count = int(digits) if len(digits) <= MAX_DIGITS else None
        if count is None or not 2 <= count <= limits.max_grid_side:
            raise LimitError(f"grid {name} must be between 2 and {limits.max_grid_side} (--max-grid-side); "
                             f"got {shown(count if count is not None else digits)}.")
    return int(match.group(1)), int(match.group(2))


def parse_scale_range(value: Any, limits: Limits) -> tuple[float, float]:
    """'S0 S1' -> (start, end), each within +-`limits.max_scale`, start != end."""
    try:
        start, end = parse_scale(value)
    except ValueError:
        raise LimitError(f"scale must be two numbers, start and end, e.g. '0 1.5'; got {shown(value)}.") from None
    for number in (start, end):
        _real("scale", number, -limits.max_scale, limits.max_scale, "--max-scale")
    if start == end:
        raise LimitError(f"scale start and end must differ; got {shown(value)}.")
    return start, end


def check_option(name: str, value: Any, limits: Limits, prompt_count: int) -> Any:
    """One request option from its loose form (text, number, list), converted and checked against its limit."""
    spec = options()[name]
    cap = getattr(limits, spec.limit) if spec.limit else None
    flag = limit_flag(spec.limit) if spec.limit else None
    if spec.kind == "seeds":
        return parse_seeds(value, prompt_count)
    if spec.kind == "choice":
        return _choice(name, value, spec.choices)
    if spec.kind == "flag":
        return _flag(name, value)
    if cap is None:  # nothing to cap: the request's own parser (check_request still applies)
        try:
            return parse_option(name, value)
        except ValueError as error:
            raise LimitError(str(error)) from None
    if spec.kind == "int":
        return _whole(name, value, int(spec.low or 0), int(cap), flag)
    if spec.kind == "float":
        return _real(name, value, MIN_FPS if name == "fps" else spec.low or 0.0, cap, flag)
    if spec.kind == "text":
        return _text(name.replace("_", " ").replace("negative prompt", "the negative prompt"), value, cap)
    if spec.kind == "size":
        return None if value in (None, "") else parse_size(value, limits)
    if spec.kind == "grid":
        return parse_grid(value, limits)
    if spec.kind == "scale":
        return parse_scale_range(value, limits)
    raise LimitError(f"{name}: no check for options of kind {spec.kind!r}")


def check_prompts(prompts: tuple[str, ...] | list[str], chain: bool, limits: Limits) -> None:
    """A chain's count of prompts, and each prompt's text (a picture key's text after '|'), against `limits`."""
    if chain and len(prompts) > limits.max_prompts:  # other walks take a fixed number of prompts
        raise LimitError(f"A chain has at most {limits.max_prompts} prompts (--max-prompts); got {len(prompts)}.")
    for index, prompt in enumerate(prompts):
        text = prompt.partition("|")[2] if is_image_spec(prompt) else prompt
        _text(f"prompt {chr(ord('A') + index) if index < 26 else index + 1}", text, limits.max_prompt_chars)
