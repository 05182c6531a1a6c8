"""Keys: what a keyframe is made of, encoded once into (noise latent, prompt embedding).

A key today is a prompt and a seed. Encoding it gives the noise latent that
diffusers' `randn_tensor` draws from `torch.Generator("cpu").manual_seed(seed)` and
the embeddings of `pipe.encode_prompt`, so a key rendered alone is exactly the plain
pipeline's picture for that prompt and seed. A new kind of key is one class here
with `digest()`, `text_digest()`, `seed` and `encode()`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import torch

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

    def encode(self, context: EncodeContext) -> EncodedKey:
        noise = draw_noise(self.seed, context.shape, context.dtype, context.device)
        embeds, _ = context.text.encode(self.prompt, False, None)
        return EncodedKey(noise=noise, text=embeds)


def keys_for(prompts: tuple[str, ...], seeds: tuple[int, ...]) -> list[PromptKey]:
    """One key per keyframe; a single seed is shared by all of them."""
    per_key = list(seeds) * len(prompts) if len(seeds) == 1 else list(seeds)
    return [PromptKey(prompt, seed) for prompt, seed in zip(prompts, per_key)]
