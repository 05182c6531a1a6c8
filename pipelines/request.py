"""The request: every option of a morph declared once, with its type, default, limit and help.

`MorphRequest` is the only place that lists a morph's options. Each field's
metadata (`Option`) says how it is written as text (CLI flags, API strings), which
walks read it, which service limit caps it and what it means; the CLI's flags
(`pipelines.__main__`), the page's inputs and the API's parameters (`service/`)
are generated from it. A new option is one field here plus the code that uses it.

The keyframes (`prompts`) are the one field every surface lays out its own way
(positional CLI arguments, one text box per key slot of the chosen walk).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from pipelines.timing import SPACINGS
from pipelines.walks import WALKS as WALK_REGISTRY, get_walk

INTERPS = ("slerp", "lerp")
NOISE_INTERPS = ("slerp", "lerp")
ATTENTION_MODES = ("plain", "interpolate")
SPEED_MODES = ("exact", "deepcache-2", "deepcache-3")  # pipelines/deepcache.py reads N from the name
# torch.Generator takes 64-bit seeds; every surface takes 32 bits (plenty, and portable).
SEED_MAX = 2**32 - 1
WALKS = tuple(WALK_REGISTRY)  # the walks' names, from their registry (pipelines/walks.py)
_PAIR_RE = re.compile(r"^\s*(\d+)\s*[x×X*]\s*(\d+)\s*$")
MAX_DIGITS = 30  # more than any limit has; int() refuses text of over 4300 digits with a message of its own
SHOWN_CHARS = 40  # how much of a bad value a message echoes


# ---------------------------------------------------------------- text forms of the values
def shown(value: Any, chars: int = SHOWN_CHARS) -> str:
    """How a message echoes a value: its repr, cut to `chars` characters with the full length said."""
    if isinstance(value, str) and len(value) > chars:
        return f"{value[:chars]!r}…({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int of over 4300 digits has no repr
        return f"a whole number of {value.bit_length()} bits"
    return text if len(text) <= chars else f"{text[:chars]}…({len(text)} characters)"


def parse_seeds(text: Any) -> tuple[int, ...]:
    """'7' or '1, 2 3' (or a number, or a list) -> a tuple of whole numbers."""
    if isinstance(text, bool):
        raise ValueError(f"seeds must be whole numbers, got {shown(text)}")
    items = text if isinstance(text, (list, tuple)) else re.split(r"[\s,;]+", str(text).strip())
    items = [item for item in items if str(item).strip() != ""]
    if not items:
        raise ValueError("seeds is empty: give one seed for all prompts or one per prompt, e.g. '0' or '1 2'")
    return tuple(_whole_number("seed", item) for item in items)


def _whole_number(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a whole number, got {shown(value)}") from None
    return int(number)


def parse_pair(name: str, example: str) -> Callable[[Any], tuple[int, int]]:
    """A parser of 'AxB' (or a pair of numbers) for the option `name`."""

    def parse(value: Any) -> tuple[int, int]:
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return _whole_number(name, value[0]), _whole_number(name, value[1])
        match = _PAIR_RE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{name} must look like {example}, got {shown(value)}")
        if max(len(digits) for digits in match.groups()) > MAX_DIGITS:
            raise ValueError(f"{name} {shown(value)} is far too large")
        return int(match.group(1)), int(match.group(2))

    return parse


def parse_scale(value: Any) -> tuple[float, float]:
    """'0 1.5' (or a pair of numbers) -> (start, end)."""
    items = value if isinstance(value, (tuple, list)) else re.split(r"[\s,;]+", str(value).strip())
    try:
        start, end = (float(item) for item in items)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be two numbers (start and end, e.g. '0 1.5'), got {shown(value)}") from None
    return start, end


def parse_flag(value: Any) -> bool:
    """True/False, 1/0 or 'true'/'false'."""
    if isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, got {shown(value)}")


def format_value(value: Any, kind: str | None = None) -> Any:
    """The text form of a tuple-valued option (the inverse of its parser); other values unchanged.

    `kind` (an Option's) decides between "WxH" (size, grid) and space-separated (seeds,
    scale); without it, a pair of whole numbers is taken for "WxH".
    """
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple):
        return value
    pair = len(value) == 2 and all(isinstance(item, int) for item in value)
    if kind in ("size", "grid") or (kind is None and pair):
        return f"{value[0]}x{value[1]}"
    return " ".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)


# ---------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class Option:
    """How one request field is offered and checked outside Python."""

    help: str
    label: str  # what the page calls it
    kind: str  # "int" | "float" | "text" | "choice" | "flag" | "seeds" | "size" | "grid" | "scale"
    choices: tuple[str, ...] = ()
    low: float | None = None  # the smallest value that makes sense anywhere
    limit: str | None = None  # the limit (a `pipelines.limits.Limits` field) that caps it
    per_walk: bool = False  # read only by the walks that list it in their `reads` (else by every walk)
    flag: str | None = None  # the CLI flag, when it is not "--" + the field name
    api: bool = True  # offered by the page and the API (else CLI and Python only)
    advanced: bool = False  # the page shows it under "More settings"
    appended: bool = False  # added after the API's first release: its parameter goes after `model`


PARSERS: dict[str, Callable[[Any], Any]] = {
    "int": lambda value: _whole_number("value", value),
    "float": float,
    "text": lambda value: "" if value is None else str(value),
    "choice": str,
    "flag": parse_flag,
    "seeds": parse_seeds,
    "size": parse_pair("size", "64x64 (width x height)"),
    "grid": parse_pair("grid", "3x3 (rows x columns)"),
    "scale": parse_scale,
}


def option(default: Any, **meta: Any) -> Any:
    """A dataclass field carrying its `Option`."""
    return field(default=default, metadata={"option": Option(**meta)})


@dataclass(frozen=True)
class MorphRequest:
    """Everything that decides a morph's frames and files; surfaces generate their inputs from it.

    The order of the fields is the order of the API's parameters: `/morph`'s must not change,
    so a new option goes after the last one the API offers.
    """

    prompts: tuple[str, ...]  # the keyframes, in the walk's order (chain: A -> B -> ...; see walks.py)
    walk: str = option("chain", kind="choice", choices=WALKS, label="Walk", api=False,
                       help="chain: A -> B -> ...; grid: a map among 4 prompts; direction: A + s * (C - B)")
    negative_prompt: str = option("", kind="text", flag="--negative", limit="max_prompt_chars",
                                  label="Negative prompt", help="what every frame steers away from")
    seeds: tuple[int, ...] = option((0,), kind="seeds", flag="--seed", label="Seeds", low=0,
                                    help="one seed for every keyframe, or one per prompt")
    frames: int = option(16, kind="int", low=2, limit="max_frames", per_walk=True, label="Frames",
                         help="total frames in the output, each keyframe exactly once")
    grid: tuple[int, int] = option((3, 3), kind="grid", low=2, limit="max_grid_side", per_walk=True, label="Grid (rows x columns)", help="rows x columns of the grid walk")
    scale: tuple[float, float] = option((0.0, 1.5), kind="scale", limit="max_scale", per_walk=True, label="Scale (start end)", help="s from start to end in A + s * (C - B)")
    steps: int = option(20, kind="int", low=1, limit="max_steps", label="Steps", help="denoising steps per frame")
    guidance: float = option(5.0, kind="float", low=0.0, limit="max_guidance", label="Guidance",
                             help="classifier-free guidance scale (<= 1 turns guidance off)")
    size: tuple[int, int] | None = option(None, kind="size", low=8, limit="max_pixels", label="Size (WxH)",
                                          help="width x height, multiples of 8 (default: the model's own size)")
    interp: str = option("slerp", kind="choice", choices=INTERPS, per_walk=True, advanced=True,
                         label="Embedding interpolation", help="how prompt embeddings are mixed")
    spacing: str = option("linear", kind="choice", choices=SPACINGS, per_walk=True, advanced=True,
                          label="Spacing",
                          help="linear, ease (slow near keyframes) or even (equal visual steps; "
                               "denoises up to twice the frames)")
    fps: float = option(8.0, kind="float", limit="max_fps", advanced=True, label="FPS",
                        help="frames per second of GIF, WebP and MP4")
    loop: bool = option(False, kind="flag", per_walk=True, advanced=True, label="Loop back to prompt A",
                        help="walk back to the first prompt at the end (it is not repeated)")
    noise_interp: str = option("slerp", kind="choice", choices=NOISE_INTERPS, per_walk=True, advanced=True,
                               appended=True, label="Noise interpolation",
                               help="how seed noise is mixed (lerp shrinks the noise between keys: washed-out middles)")
    attention: str = option("plain", kind="choice", choices=ATTENTION_MODES, per_walk=True, advanced=True,
                            appended=True, label="Attention",
                            help="interpolate: in-between frames also attend to their keyframes' attention keys "
                                 "and values (AID), so a morph has no cuts; renders the keyframes in every batch")
    speed: str = option("exact", kind="choice", choices=SPEED_MODES, advanced=True, appended=True, label="Speed",
                        help="exact, or deepcache-N: the UNet's deep features reused on N-1 of N steps (approximate)")
    batch_size: int | None = option(None, kind="int", low=1, api=False, label="Batch size",
                                    help="frames per pipeline call (default: sensible for the device)")

    @property
    def width(self) -> int:
        return self._size()[0]

    @property
    def height(self) -> int:
        return self._size()[1]

    def _size(self) -> tuple[int, int]:
        if self.size is None:
            raise ValueError("the size is decided by the model: resolve the request first")
        return self.size


def options() -> dict[str, Option]:
    """Field name -> Option, in declaration order (the keyframes excluded)."""
    return {item.name: item.metadata["option"] for item in fields(MorphRequest) if "option" in item.metadata}


def walk_reads(walk: str, name: str) -> bool:
    """True when the walk uses the option `name` (common options are read by every walk)."""
    return not options()[name].per_walk or name in get_walk(walk).reads


def default_of(name: str) -> Any:
    """The declared default of a field."""
    item = next(item for item in fields(MorphRequest) if item.name == name)
    return None if item.default is MISSING else item.default


def parse_option(name: str, value: Any) -> Any:
    """A field's value from its text form (CLI argument, API string), ValueError naming the field."""
    spec = options()[name]
    if value is None and default_of(name) is None:
        return None
    if spec.kind in ("int", "float") and isinstance(value, str) and value.strip() == "":
        return default_of(name)
    try:
        return PARSERS[spec.kind](value)
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ValueError(message if name in message else f"{name}: {message}") from None


# ---------------------------------------------------------------- checks (the limits are in pipelines/limits.py)
def check_request(request: MorphRequest) -> None:
    """Raise ValueError naming the first bad field, its value and the rule it breaks."""
    prompts = request.prompts
    if not isinstance(prompts, tuple) or len(prompts) < 2:
        raise ValueError(f"prompts must be a tuple of at least 2 prompts, got {shown(prompts)}")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"every prompt must be non-empty text, got {shown(prompt)}")
    if request.walk not in WALK_REGISTRY:
        raise ValueError(f"walk must be one of {', '.join(WALK_REGISTRY)}, got {shown(request.walk)}")
    for name, spec in options().items():
        if walk_reads(request.walk, name):  # an option the walk does not read is not its concern
            _check_value(name, spec, getattr(request, name))
    if len(request.seeds) not in (1, len(prompts)):
        raise ValueError(f"seeds must hold 1 seed or one per prompt ({len(prompts)}), got {len(request.seeds)}")
    get_walk(request.walk).check(request)


def _check_value(name: str, spec: Option, value: Any) -> None:
    if value is None and default_of(name) is None:
        return
    if spec.kind == "choice" and value not in spec.choices:
        raise ValueError(f"{name} must be one of {', '.join(spec.choices)}, got {shown(value)}")
    if spec.kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < spec.low):
        raise ValueError(f"{name} must be a whole number >= {spec.low:g}, got {shown(value)}")
    if spec.kind == "float" and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                 or (spec.low is not None and value < spec.low)):
        raise ValueError(f"{name} must be a finite number{_at_least(spec)}, got {shown(value)}")
    if name == "fps" and not value > 0:
        raise ValueError(f"fps must be a positive number, got {shown(value)}")
    if spec.kind == "seeds":
        for seed in value:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
                raise ValueError(f"seeds must be whole numbers between 0 and {SEED_MAX}, got {shown(seed)}")
    if spec.kind == "size":
        for side_name, side in zip(("width", "height"), value):
            if not isinstance(side, int) or side < 8 or side % 8:
                raise ValueError(f"size: {side_name} must be a positive multiple of 8, got {shown(side)}")
    if spec.kind == "grid" and (len(value) != 2 or min(value) < spec.low):
        raise ValueError(f"grid must have at least {spec.low:g} rows and {spec.low:g} columns, got {shown(value)}")
    if spec.kind == "scale" and (len(value) != 2 or not all(math.isfinite(item) for item in value)):
        raise ValueError(f"scale must be two finite numbers, got {shown(value)}")
    if spec.kind == "text" and not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")


def _at_least(spec: Option) -> str:
    return "" if spec.low is None else f" >= {spec.low:g}"
