"""Landmark prompts: a small vocabulary per bundled model, to say which prompts a walk passes near.

Each frame's pooled text embedding (the keys' pooled vectors mixed by the frame's
recipe) is compared by cosine similarity with the landmarks' pooled embeddings
(the text encoder's own pooled output, as CLIP defines it). The vocabularies list
what the bundled models were trained on; other models get both, plus a few common
prompts.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

SHAPE_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star")
SCENE_TIMES = ("a sunrise over", "a sunset over", "noon over", "night over", "dusk over", "morning over")
SCENE_PLACES = ("the ocean", "a lake", "mountains", "snowy mountains", "hills", "the desert", "a forest",
                "fields", "a city skyline")
COMMON = ("a photo of a cat", "a photo of a dog", "a portrait of a person", "a city street", "a bowl of fruit")

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "bundled:shapes64": tuple(f"a {colour} {shape}" for colour in SHAPE_COLOURS for shape in SHAPES),
    "bundled:scenes": tuple(f"{time} {place}" for time in SCENE_TIMES for place in SCENE_PLACES),
}
NEAREST = 3  # landmarks listed per frame


def vocabulary_for(model_name: str) -> tuple[str, ...]:
    """The landmarks of a model: its own vocabulary if it is a bundled one, else all of them."""
    if model_name in VOCABULARIES:
        return VOCABULARIES[model_name]
    return tuple(dict.fromkeys(prompt for words in VOCABULARIES.values() for prompt in words)) + COMMON


@torch.no_grad()
def pooled_embeddings(pipe: Any, prompts: list[str]) -> torch.Tensor:
    """(n, width) pooled text embeddings: the CLIP text encoder's pooled output (SDXL: its second encoder's)."""
    tokenizer = getattr(pipe, "tokenizer_2", None) or pipe.tokenizer
    encoder = getattr(pipe, "text_encoder_2", None) or pipe.text_encoder
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(encoder.device)
    out = encoder(ids)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return pooled.float().cpu()


# A model's landmark embeddings never change while it is loaded: encode its vocabulary once
# (on a real model's CPU text encoder, that is minutes), keyed weakly by the encoder module.
_VOCABULARY_CACHE: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], torch.Tensor]]" = weakref.WeakKeyDictionary()


def vocabulary_embeddings(pipe: Any, vocabulary: tuple[str, ...]) -> torch.Tensor:
    """`pooled_embeddings` of a vocabulary, computed once per loaded text encoder."""
    encoder = getattr(pipe, "text_encoder_2", None) or pipe.text_encoder
    known = _VOCABULARY_CACHE.setdefault(encoder, {})
    if vocabulary not in known:
        known[vocabulary] = pooled_embeddings(pipe, list(vocabulary))
    return known[vocabulary]


def nearest(frames: torch.Tensor, landmarks: torch.Tensor, names: tuple[str, ...], count: int = NEAREST) -> list:
    """For each frame, the `count` closest landmarks by cosine similarity: [[(name, cosine), ...], ...]."""
    similarity = torch.nn.functional.normalize(frames, dim=-1) @ torch.nn.functional.normalize(landmarks, dim=-1).T
    best = similarity.topk(min(count, len(names)), dim=-1)
    return [[(names[int(index)], round(float(value), 4)) for value, index in zip(values, indices)]
            for values, indices in zip(best.values, best.indices)]
