"""Server-side limits for one morph, and the checks of single values against them.

The limits are declared once, in `pipelines.limits` (the CLI applies the same ones
with the same messages); this module is where the service takes them from. Each
check turns a loosely typed form value (the page's widgets, an API call's JSON)
into the engine's type or raises `LimitError` with a message that names the value,
the limit and the launch flag that sets it. `service.form` applies them to every
field of a request.
"""

from __future__ import annotations

from pipelines.limits import (  # noqa: F401  (re-exported: the service and its tests import them from here)
    MIN_FPS,
    LimitError,
    Limits,
    _choice,
    _flag,
    _real,
    _text,
    _whole,
    check_option,
    check_pixels,
    check_prompts,
    parse_grid,
    parse_scale_range,
    parse_seeds,
    parse_size,
    request_limits,
)
from pipelines.request import SEED_MAX, shown  # noqa: F401
