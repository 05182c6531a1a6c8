"""Walks: which points a morph visits and how the keys are mixed at each.

A walk is a small plug-in (like a diffusers scheduler): `plan(request)` lists the
points it visits, one per output frame in output order, and `recipe(point, request)`
says how that point mixes the keys, as a tiny expression over them (`Key`, `Blend`,
`Shift`: see recipes.py). The engine evaluates recipes (`mix`), renders, caches and writes files the same way
for every walk. Recipes are simplified (t = 0 is `a`, s = 0 is `base`), so two walks
that visit the same mixture (a chain's keyframe and a grid's corner, a chain's
in-between frame and a grid's edge tile) describe it alike and share a cached frame.

A new walk is one class here, registered in WALKS, plus its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

# the recipe vocabulary walks are written in (re-exported for the engine and the tests)
from pipelines.recipes import (  # noqa: F401
    Blend,
    Key,
    Node,
    Shift,
    blend,
    blends,
    describe,
    mix_embeds,
    mix_noise,
    nearest_key,
    shift,
)
from pipelines.timing import spaced

if TYPE_CHECKING:
    from pipelines.keys import EncodedKey
    from pipelines.request import MorphRequest


@dataclass(frozen=True)
class Point:
    """One frame's place on a walk: named coordinates (chain: segment, t; grid: row, column, u, v; direction: s)."""

    coords: tuple[tuple[str, float], ...]

    @staticmethod
    def of(**coords: float) -> "Point":
        return Point(tuple(coords.items()))

    def __getitem__(self, name: str) -> float:
        return dict(self.coords)[name]

    def get(self, name: str, default: float | None = None) -> float | None:
        return dict(self.coords).get(name, default)

    def as_dict(self) -> dict:
        return {name: (round(value, 6) if isinstance(value, float) else value) for name, value in self.coords}


# ---------------------------------------------------------------- the walks

@dataclass(frozen=True)
class Slot:
    """One key a walk takes, as the page and the API name it."""

    name: str  # API parameter, e.g. "prompt_a"
    label: str  # page label


class Walk:
    """Base of all walks: `plan` and `recipe` are the plug-in; `mix` is shared."""

    name: ClassVar[str]
    slots: ClassVar[tuple[Slot, ...]]  # the keys it takes, in order
    more_keys: ClassVar[bool] = False  # takes further keys after the slots
    still: ClassVar[str] = "strip"  # what a .png output is: "strip" or "grid"
    outputs: ClassVar[tuple[str, ...]] = ("gif", "strip", "mp4", "manifest")  # what the service returns
    reads: ClassVar[tuple[str, ...]] = ()  # the walk-specific request options it uses (Option.per_walk)
    endpoint: ClassVar[str]  # the service's API name for it (and its tab's id)
    title: ClassVar[str]  # its tab's title
    description: ClassVar[str]  # one paragraph for its tab

    def check(self, request: "MorphRequest") -> None:
        """Raise ValueError for what this walk cannot do."""
        count = len(request.prompts)
        if not self.more_keys and count != len(self.slots):
            raise ValueError(f"the {self.name} walk takes exactly {len(self.slots)} prompts, got {count}")

    def plan(self, request: "MorphRequest") -> list[Point]:
        raise NotImplementedError

    def recipe(self, point: Point, request: "MorphRequest") -> Node:
        raise NotImplementedError

    def caption(self, point: Point) -> str:
        return " ".join(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}"
                        for name, value in point.coords)

    def mix(self, keys: list["EncodedKey"], points: list[Point], request: "MorphRequest") -> dict[str, torch.Tensor]:
        """Latents and prompt embeddings of a batch of points (pipeline keyword arguments)."""
        recipes = [self.recipe(point, request) for point in points]
        noise = [key.noise for key in keys]
        embeds = [key.text.embeds for key in keys]
        mixed = {
            "latents": torch.cat([mix_noise(r, noise, request.noise_interp) for r in recipes]),
            "prompt_embeds": torch.cat([mix_embeds(r, embeds, request.interp) for r in recipes]),
        }
        if keys[0].text.pooled is not None:
            pooled = [key.text.pooled for key in keys]
            mixed["pooled_prompt_embeds"] = torch.cat([mix_embeds(r, pooled, request.interp) for r in recipes])
        return mixed


class PathWalk(Walk):
    """A walk along a 1-D path made of segments, each walked from t = 0 to 1 (spacing re-times t)."""

    def segments(self, request: "MorphRequest") -> int:
        raise NotImplementedError

    def at(self, request: "MorphRequest", segment: int, t: float) -> Point:
        raise NotImplementedError

    def where(self, point: Point) -> tuple[int, float]:
        """(segment, t) of a point of this walk."""
        return int(point["segment"]), float(point["t"])

    def closed(self, request: "MorphRequest") -> bool:
        """True when the path ends where it began (its last point is not repeated)."""
        return False

    def plan(self, request: "MorphRequest") -> list[Point]:
        """Points along the path; the gaps are shared out evenly, every segment end visited once."""
        segments, closed = self.segments(request), self.closed(request)
        gaps = request.frames if closed else request.frames - 1
        if segments < 1 or gaps < segments:
            raise ValueError(f"{request.frames} frames cannot hold {segments} segments of the {self.name} walk")
        points = []
        for segment in range(segments):
            count = gaps // segments + (1 if segment < gaps % segments else 0)
            # "even" starts from linear t and is re-timed from measured distances (spacing.py)
            for t in spaced(count, "ease" if request.spacing == "ease" else "linear").tolist():
                points.append(self.at(request, segment, float(t)))
        if not closed:
            points.append(self.at(request, segments - 1, 1.0))
        return points


class ChainWalk(PathWalk):
    """A -> B -> C ...: each segment blends two neighbouring keys (the last back to A when looping)."""

    name = "chain"
    slots = (Slot("prompt_a", "Prompt A"), Slot("prompt_b", "Prompt B"))
    more_keys = True
    reads = ("frames", "interp", "spacing", "loop", "noise_interp", "attention")
    endpoint, title = "morph", "Morph (chain)"  # "/morph": the first endpoint, kept for its clients
    description = ("Type two prompts (or more), press **Render**: the frames walk the model's latent space "
                   "from one prompt to the next, with the seed noise slerped between keyframes.")

    def check(self, request: "MorphRequest") -> None:
        super().check(request)
        if request.frames < len(request.prompts):
            raise ValueError(
                f"frames must be >= 2 and >= the number of prompts ({len(request.prompts)}), got {request.frames}"
            )

    def segments(self, request: "MorphRequest") -> int:
        return len(request.prompts) if request.loop else len(request.prompts) - 1

    def closed(self, request: "MorphRequest") -> bool:
        return request.loop

    def ends(self, request: "MorphRequest", segment: int) -> tuple[int, int]:
        return segment, (segment + 1) % len(request.prompts)

    def at(self, request: "MorphRequest", segment: int, t: float) -> Point:
        return Point.of(segment=segment, t=t)

    def recipe(self, point: Point, request: "MorphRequest") -> Node:
        start, end = self.ends(request, int(point["segment"]))
        return blend(Key(start), Key(end), float(point["t"]))

    def caption(self, point: Point) -> str:
        return f"t={point['t']:.3f}"


class DirectionWalk(PathWalk):
    """A + s * (C - B) for s from the scale's start to its end, on A's noise: one segment."""

    name = "direction"
    slots = (Slot("prompt_a", "Prompt A (start)"), Slot("prompt_b", "Prompt B (from)"),
             Slot("prompt_c", "Prompt C (to)"))
    reads = ("frames", "scale", "spacing")
    endpoint, title = "direction", "Direction"
    description = ("A direction in prompt space: frames render A + s (C - B) on A's seed, for s from start to "
                   "end. With A = a red circle, B = a red square, C = a blue square, the circle keeps its shape "
                   "and turns blue.")

    def check(self, request: "MorphRequest") -> None:
        super().check(request)
        if request.loop:
            raise ValueError("loop applies to the chain walk only")
        if request.scale[0] == request.scale[1]:
            raise ValueError(f"scale start and end must differ, got {request.scale}")

    def segments(self, request: "MorphRequest") -> int:
        return 1

    def at(self, request: "MorphRequest", segment: int, t: float) -> Point:
        start, end = request.scale
        s = start if t == 0.0 else end if t == 1.0 else start + t * (end - start)
        return Point.of(segment=0, t=t, s=float(s))

    def recipe(self, point: Point, request: "MorphRequest") -> Node:
        return shift(Key(0), 1, 2, float(point["s"]))

    def caption(self, point: Point) -> str:
        return f"s={point['s']:.3f}"


class GridWalk(Walk):
    """A map among four keys: A top-left, B top-right, C bottom-left, D bottom-right.

    Tile (row, column) sits at u = column / (columns - 1), v = row / (rows - 1) and
    mixes the keys bilinear-spherically: along the rows first (A..B and C..D at u),
    then down the column (at v). Frames come in serpentine order (left to right, then
    right to left), so an animation only ever steps between neighbouring tiles.
    """

    name = "grid"
    slots = (Slot("prompt_a", "Prompt A (top left)"), Slot("prompt_b", "Prompt B (top right)"),
             Slot("prompt_c", "Prompt C (bottom left)"), Slot("prompt_d", "Prompt D (bottom right)"))
    still = "grid"
    outputs = ("grid", "gif", "mp4", "manifest")
    reads = ("grid", "interp", "noise_interp", "attention")
    endpoint, title = "grid", "Grid"
    description = ("Four prompts at the corners of a map: every tile mixes them by its place (slerp along the "
                   "rows, then down the columns). Neighbouring tiles are neighbours in latent space.")

    def check(self, request: "MorphRequest") -> None:
        super().check(request)
        if request.loop:
            raise ValueError("loop applies to the chain walk only")
        if request.spacing == "even":
            raise ValueError("spacing 'even' needs a 1-D walk (chain or direction); a grid is spaced linear or ease")

    def plan(self, request: "MorphRequest") -> list[Point]:
        rows, columns = request.grid
        spacing = "ease" if request.spacing == "ease" else "linear"
        us = spaced(columns - 1, spacing).tolist() + [1.0]
        vs = spaced(rows - 1, spacing).tolist() + [1.0]
        points = []
        for row in range(rows):
            order = range(columns) if row % 2 == 0 else reversed(range(columns))
            points.extend(Point.of(row=row, column=column, u=float(us[column]), v=float(vs[row])) for column in order)
        return points

    def recipe(self, point: Point, request: "MorphRequest") -> Node:
        u, v = float(point["u"]), float(point["v"])
        return blend(blend(Key(0), Key(1), u), blend(Key(2), Key(3), u), v)

    def caption(self, point: Point) -> str:
        return f"r{int(point['row'])} c{int(point['column'])}"


WALKS: dict[str, Walk] = {walk.name: walk for walk in (ChainWalk(), GridWalk(), DirectionWalk())}


def get_walk(name: str) -> Walk:
    """The walk registered under `name`, or ValueError naming the known ones."""
    if name not in WALKS:
        raise ValueError(f"walk must be one of {', '.join(WALKS)}, got {name!r}")
    return WALKS[name]
