"""Recipes: how a point of a walk mixes the keys, as a tiny expression over them.

    Key(i)               key i itself
    Blend(a, b, t)       noise mixed with the request's noise_interp, embeddings with its interp
    Shift(base, i, j, s) base's noise; embeddings base + s * (key j - key i)

`blend` and `shift` simplify at the ends (t = 0 is `a`, s = 0 is `base`; interpolation is
exact there), so two walks that visit the same mixture describe it alike (`describe`)
and share a cached frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from pipelines.interpolate import interpolate


@dataclass(frozen=True)
class Key:
    index: int


@dataclass(frozen=True)
class Blend:
    a: "Node"
    b: "Node"
    t: float


@dataclass(frozen=True)
class Shift:
    base: "Node"
    start: int  # embeddings move along (key end - key start)
    end: int
    s: float


Node = Union[Key, Blend, Shift]


def blend(a: Node, b: Node, t: float) -> Node:
    """Blend(a, b, t), simplified at the ends (interpolation is exact there)."""
    if t == 0.0 or a == b:
        return a
    if t == 1.0:
        return b
    return Blend(a, b, float(t))


def shift(base: Node, start: int, end: int, s: float) -> Node:
    """Shift(base, start, end, s), simplified at s = 0 or when the direction is empty."""
    return base if s == 0.0 or start == end else Shift(base, start, end, float(s))


def mix_noise(node: Node, noise: list[torch.Tensor], method: str) -> torch.Tensor:
    """The noise latent a recipe gives."""
    if isinstance(node, Key):
        return noise[node.index]
    if isinstance(node, Blend):
        return interpolate(mix_noise(node.a, noise, method), mix_noise(node.b, noise, method), node.t, method)
    return mix_noise(node.base, noise, method)


def mix_embeds(node: Node, embeds: list[torch.Tensor], method: str) -> torch.Tensor:
    """The prompt embedding a recipe gives (token embeddings or SDXL's pooled vector)."""
    if isinstance(node, Key):
        return embeds[node.index]
    if isinstance(node, Blend):
        return interpolate(mix_embeds(node.a, embeds, method), mix_embeds(node.b, embeds, method), node.t, method)
    base = mix_embeds(node.base, embeds, method)
    return base + node.s * (embeds[node.end] - embeds[node.start])


def nearest_key(node: Node) -> int:
    """The key a point is closest to (its seed drives stochastic samplers' extra noise)."""
    if isinstance(node, Key):
        return node.index
    if isinstance(node, Blend):
        return nearest_key(node.a if node.t < 0.5 else node.b)
    return nearest_key(node.base)


def describe(node: Node, digests: list[dict], text_digests: list[dict]) -> dict:
    """A recipe with the keys written out: what a frame's cache key hashes."""
    if isinstance(node, Key):
        return {"key": digests[node.index]}
    if isinstance(node, Blend):
        return {"blend": [describe(node.a, digests, text_digests), describe(node.b, digests, text_digests)],
                "t": node.t}
    return {"shift": describe(node.base, digests, text_digests), "from": text_digests[node.start],
            "to": text_digests[node.end], "s": node.s}


def blends(node: Node) -> bool:
    """True when the recipe interpolates (so the interpolation methods decide its pixels)."""
    if isinstance(node, Blend):
        return True
    return isinstance(node, Shift) and blends(node.base)


def weights(node: Node) -> dict[int, float]:
    """How much of each key a recipe holds (blends split by t; a shift keeps its base's)."""
    if isinstance(node, Key):
        return {node.index: 1.0}
    if isinstance(node, Blend):
        mixed: dict[int, float] = {}
        for part, share in ((node.a, 1.0 - node.t), (node.b, node.t)):
            for index, weight in weights(part).items():
                mixed[index] = mixed.get(index, 0.0) + share * weight
        return mixed
    return weights(node.base)
