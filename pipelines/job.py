"""What one morph in flight carries between the engine's stages (engine.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipelines.inversion import InversionCache
from pipelines.keys import EncodedKey, TextEmbeds, TextEncoder
from pipelines.render import Progress, RenderedFrame
from pipelines.request import MorphRequest
from pipelines.spacing import RenderStats
from pipelines.walks import Walk


@dataclass
class MorphResult:
    """All frames of a morph and its JSON-ready manifest."""

    frames: list[RenderedFrame]
    manifest: dict


@dataclass
class Job:
    """One morph in flight: the request, its walk and keys, and what it has cost so far."""

    request: MorphRequest
    walk: Walk
    keys: list  # PromptKey, ... (keys.py)
    encoded: list[EncodedKey]
    uncond: TextEmbeds | None
    batch_size: int
    progress: Progress
    stats: RenderStats


@dataclass(frozen=True)
class EncodeContext:
    """What keys need to encode themselves."""

    text: TextEncoder
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    device: torch.device
    pipe: object
    steps: int
    inversions: InversionCache
    check_stop: Callable[[], None]
