"""Keys: what a keyframe is made of, encoded once into (noise latent, prompt embedding).

A key is a prompt and a seed, or a picture (`image:PATH`, optionally `image:PATH|a prompt
describing it`). A prompt key's noise is what diffusers' `randn_tensor` draws from
`torch.Generator("cpu").manual_seed(seed)` and its embeddings come from
`pipe.encode_prompt`, so rendered alone it is exactly the plain pipeline's picture. A
picture key's noise is the picture inverted (inversion.py), so rendered alone at
guidance 1 it gives the picture back. A new kind of key is one class here with
`digest()`, `text_digest()`, `describe()`, `seed`, `guidance()` and `encode()`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from pipelines.pictures import Picture, read_picture

# Bumped when inversion changes, so cached frames and latents of picture keys are not reused.
INVERSION_VERSION = 1

# Encoded prompts kept across requests (a re-render with other frames re-encodes nothing).
TEXT_CACHE_SIZE = 64


@dataclass(frozen=True)
class TextEmbeds:
    """What `encode_prompt` gives for one text: token embeddings, and SDXL's pooled vector."""

    embeds: torch.Tensor  # (1, tokens, width)
    pooled: torch.Tensor | None = None  # (1, width) for SDXL, None for SD 1.x/2.x


@dataclass(frozen=True)
class EncodedKey:
    """A key as the walk mixes it."""

    noise: torch.Tensor  # (1, C, h, w) on the device
    text: TextEmbeds


def uses_guidance(pipe: Any, guidance: float) -> bool:
    """Mirror of the pipeline's `do_classifier_free_guidance` (guidance-distilled UNets never use it)."""
    return guidance > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def draw_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Keyframe noise exactly as diffusers' `randn_tensor` draws it from a CPU generator.

    Drawn on the CPU, then moved, so a seed gives the same frame on any device.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


class TextEncoder:
    """`pipe.encode_prompt`, one call per distinct (prompt, guidance, negative), remembered (LRU)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._cache: OrderedDict[tuple, tuple[TextEmbeds, TextEmbeds | None]] = OrderedDict()

    @torch.no_grad()
    def encode(self, prompt: str, guided: bool, negative: str | None) -> tuple[TextEmbeds, TextEmbeds | None]:
        """(prompt's embeds, the negative prompt's or None without guidance)."""
        key = (prompt, guided, negative)
        if not guided:  # the prompt's own embeds do not depend on the negative prompt
            key = next((known for known in self._cache if known[0] == prompt), key)
        if key in self._cache:
            self._cache.move_to_end(key)
            found = self._cache[key]
            return found if guided else (found[0], None)
        pipe = self.pipe
        out = pipe.encode_prompt(
            prompt=prompt,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative,
        )
        if len(out) == 4:  # SDXL: (embeds, negative, pooled, negative pooled)
            result = TextEmbeds(out[0], out[2]), (TextEmbeds(out[1], out[3]) if guided else None)
        else:
            result = TextEmbeds(out[0]), (TextEmbeds(out[1]) if guided else None)
        self._cache[key] = result
        if len(self._cache) > TEXT_CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def negative(self, prompt: str, guidance: float, negative_prompt: str) -> TextEmbeds | None:
        """The negative prompt's embeds, encoded alongside `prompt` exactly as a plain call does."""
        guided = uses_guidance(self.pipe, guidance)
        # An empty negative prompt is passed as None, as in a plain call: SDXL then uses
        # zeros (force_zeros_for_empty_prompt), SD 1.x/2.x encodes "" either way.
        return self.encode(prompt, guided, negative_prompt or None)[1] if guided else None


class EncodeContext(Protocol):
    """What a key needs to encode itself (the engine provides it)."""

    text: TextEncoder
    shape: tuple[int, int, int, int]  # one frame's latent
    dtype: torch.dtype
    device: torch.device
    pipe: Any
    steps: int  # the render's steps: an inversion walks back over the same ones
    inversions: Any  # InversionCache: inverted latents by key digest
    check_stop: Any  # raises when the caller asked to stop


@dataclass(frozen=True)
class PromptKey:
    """A keyframe made of a prompt and a seed."""

    prompt: str
    seed: int

    def digest(self) -> dict:
        """Everything that decides this key's noise and embedding (part of every frame's cache key)."""
        return {"prompt": self.prompt, "seed": self.seed}

    def text_digest(self) -> dict:
        """What decides the embedding alone (a direction's ends use only that)."""
        return {"prompt": self.prompt}

    def describe(self) -> dict:
        """The key as the manifest lists it."""
        return {"kind": "prompt", "prompt": self.prompt, "seed": self.seed}

    def guidance(self, requested: float) -> float:
        """The guidance this key renders at: the request's."""
        return requested

    def encode(self, context: EncodeContext) -> EncodedKey:
        noise = draw_noise(self.seed, context.shape, context.dtype, context.device)
        embeds, _ = context.text.encode(self.prompt, False, None)
        return EncodedKey(noise=noise, text=embeds)


IMAGE_PREFIX = "image:"


@dataclass(frozen=True)
class ImageKey:
    """A keyframe made of a picture (and an optional prompt describing it), by inversion."""

    picture: Picture
    prompt: str = ""
    seed: int = 0  # only drives a stochastic sampler's extra noise near this key

    def digest(self) -> dict:
        """Identity by pixels (not file name), its prompt and how it is inverted."""
        return {"image": self.picture.digest, "prompt": self.prompt, "inversion": INVERSION_VERSION}

    def text_digest(self) -> dict:
        return {"prompt": self.prompt}

    def describe(self) -> dict:
        return {"kind": "image", "prompt": self.prompt, **self.picture.record}

    def guidance(self, requested: float) -> float:
        """Guidance 1: what the inversion assumed (a higher guidance would not give the picture back)."""
        return 1.0

    def encode(self, context: EncodeContext) -> EncodedKey:
        embeds, _ = context.text.encode(self.prompt, False, None)
        noise = context.inversions.invert(self, embeds.embeds, context)
        return EncodedKey(noise=noise.to(device=context.device, dtype=context.dtype), text=embeds)


def parse_key(spec: str, seed: int, size: tuple[int, int] | None) -> PromptKey | ImageKey:
    """'a prompt' or 'image:PATH[|a prompt]' as a key; a picture is read (and checked) at once."""
    if not spec.startswith(IMAGE_PREFIX):
        return PromptKey(spec, seed)
    path, _, prompt = spec[len(IMAGE_PREFIX):].partition("|")
    if size is None:
        raise ValueError("a picture keyframe needs the render size: resolve the request first")
    return ImageKey(read_picture(path.strip(), size), prompt.strip(), seed)


def is_image_spec(spec: str) -> bool:
    return spec.startswith(IMAGE_PREFIX)


def keys_for(prompts: tuple[str, ...], seeds: tuple[int, ...], size: tuple[int, int] | None = None) -> list:
    """One key per keyframe; a single seed is shared by all of them."""
    per_key = list(seeds) * len(prompts) if len(seeds) == 1 else list(seeds)
    return [parse_key(prompt, seed, size) for prompt, seed in zip(prompts, per_key)]
