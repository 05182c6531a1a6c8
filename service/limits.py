"""Server-side limits for one morph, and the checks of single values against them.

Each check turns a loosely typed form value (the page's widgets, an API call's
JSON) into the engine's type or raises `LimitError` with a message that names the
value, the limit and the launch flag that sets it. `service.form` applies them to
every field of a request. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from pipelines.request import SEED_MAX, parse_flag, parse_scale

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
    max_grid_side: int = field(default=8, metadata={"help": "rows, and columns, of a grid walk"})
    max_scale: float = field(default=4.0, metadata={"help": "|s| of a direction walk's scale"})
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
        if self.max_grid_side < 2:
            raise ValueError(f"max_grid_side must be at least 2, got {self.max_grid_side}")
        if self.max_pixels < 64:
            raise ValueError(f"max_pixels must be at least 64 (8x8), got {self.max_pixels}")

    def sizes(self, candidates: tuple[int, ...] = (64, 128, 256, 384, 512, 768, 1024)) -> list[str]:
        """Square sizes within `max_pixels`, for the size menu (other sizes may be typed)."""
        return [f"{side}x{side}" for side in candidates if side * side <= self.max_pixels]


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
    try:
        return parse_flag(value)
    except ValueError:
        raise LimitError(f"{name} must be true or false; got {value!r}.") from None


def parse_grid(value: Any, limits: Limits) -> tuple[int, int]:
    """'RxC' -> (rows, columns), each from 2 to `limits.max_grid_side`."""
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise LimitError(f"grid must look like 3x3 (rows x columns); got {value!r}.")
    rows, columns = int(match.group(1)), int(match.group(2))
    for name, count in (("rows", rows), ("columns", columns)):
        if not 2 <= count <= limits.max_grid_side:
            raise LimitError(f"grid {name} must be between 2 and {limits.max_grid_side} (--max-grid-side); got {count}.")
    return rows, columns


def parse_scale_range(value: Any, limits: Limits) -> tuple[float, float]:
    """'S0 S1' -> (start, end), each within +-`limits.max_scale`, start != end."""
    try:
        start, end = parse_scale(value)
    except ValueError:
        raise LimitError(f"scale must be two numbers, start and end, e.g. '0 1.5'; got {value!r}.") from None
    for number in (start, end):
        _real("scale", number, -limits.max_scale, limits.max_scale, "--max-scale")
    if start == end:
        raise LimitError(f"scale start and end must differ; got {value!r}.")
    return start, end
