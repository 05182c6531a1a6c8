"""The path inspector: where a walk goes through the model's space, measured without denoising.

For every frame, from the encoded keys and the frame's recipe (no UNet call):
- the noise latent's and the prompt embedding's norm, relative to the keys' mean norm
  (1.0 = as far from the origin as a real sample), and what the other interpolation
  would have given (lerp between two independent Gaussians dips to about 0.71 of their
  norm half-way: the "hole" that washes middles out; slerp stays near 1);
- the angle between consecutive frames' noises and embeddings;
- the pixel gap to the next frame, with cuts (a gap over CUT_FACTOR x the median) marked;
- the nearest landmark prompts by cosine similarity of pooled text embeddings, and a
  2-D PCA map of frames and landmarks.
`plot.py` draws it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from pipelines import metrics
from pipelines.landmarks import nearest, pooled_embeddings, vocabulary_embeddings, vocabulary_for
from pipelines.recipes import mix_embeds, mix_noise
from pipelines.walks import get_walk

if TYPE_CHECKING:
    from pipelines.keys import EncodedKey
    from pipelines.render import RenderedFrame
    from pipelines.request import MorphRequest

CUT_FACTOR = 3.0  # a gap more than this many times the median gap is a cut
NORM_DRIFT_WARNING = 0.25  # an embedding this far (relative) from the keys' norm is listed as drifted


def _norm(tensor: torch.Tensor) -> float:
    return float(tensor.float().norm())


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Degrees between two tensors seen as flat vectors."""
    cos = torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).clamp(-1, 1)
    return round(math.degrees(float(torch.acos(cos))), 3)


def cuts(gaps: list[float]) -> list[int]:
    """Indices i of the gaps (frame i -> i + 1) larger than CUT_FACTOR x the median gap."""
    if not gaps:
        return []
    median = sorted(gaps)[len(gaps) // 2] if len(gaps) % 2 else sum(sorted(gaps)[len(gaps) // 2 - 1:][:2]) / 2
    return [index for index, gap in enumerate(gaps) if median > 0 and gap > CUT_FACTOR * median]


def path_record(request: "MorphRequest", frames: list["RenderedFrame"], encoded: list["EncodedKey"],
                keys: list, pipe: Any, model_name: str) -> dict:
    """The measured path of a walk (see the module docstring), JSON-ready."""
    walk = get_walk(request.walk)
    recipes = [walk.recipe(frame.point, request) for frame in frames]
    noise = [key.noise for key in encoded]
    embeds = [key.text.embeds for key in encoded]
    other = "lerp" if request.noise_interp == "slerp" else "slerp"
    noise_ref = sum(_norm(item) for item in noise) / len(noise)
    embed_ref = sum(_norm(item) for item in embeds) / len(embeds)
    frame_noise = [mix_noise(recipe, noise, request.noise_interp) for recipe in recipes]
    frame_embeds = [mix_embeds(recipe, embeds, request.interp) for recipe in recipes]
    embed_norm = [round(_norm(item) / embed_ref, 4) for item in frame_embeds]
    gaps = metrics.frame_gaps([frame.image for frame in frames]) if len(frames) > 1 else []
    record = {
        "noise_interp": request.noise_interp,
        "noise_norm": [round(_norm(item) / noise_ref, 4) for item in frame_noise],
        "noise_norm_" + other: [round(_norm(mix_noise(r, noise, other)) / noise_ref, 4) for r in recipes],
        "embed_norm": embed_norm,
        "noise_angle_deg": [_angle(a, b) for a, b in zip(frame_noise, frame_noise[1:])],
        "embed_angle_deg": [_angle(a, b) for a, b in zip(frame_embeds, frame_embeds[1:])],
        "gap": [round(gap, 6) for gap in gaps],
        "cuts": cuts(gaps),
        "cut_factor": CUT_FACTOR,
        "embed_norm_drift": [frame.index for frame, norm in zip(frames, embed_norm)
                             if abs(norm - 1.0) > NORM_DRIFT_WARNING],
        "drift_threshold": NORM_DRIFT_WARNING,
        "inverted_latents": _inverted_statistics(keys, encoded),
    }
    record.update(_landmarks(pipe, model_name, keys, recipes, request))
    return record


def _inverted_statistics(keys: list, encoded: list["EncodedKey"]) -> dict:
    """Mean, std and relative norm of each picture key's inverted latent (a fresh seed's: 0, 1, 1)."""
    figures = {}
    for index, (key, item) in enumerate(zip(keys, encoded)):
        if getattr(key, "picture", None) is not None:
            latent = item.noise.float()
            figures[str(index)] = {"mean": round(float(latent.mean()), 4), "std": round(float(latent.std()), 4),
                                   "norm_vs_gaussian": round(_norm(latent) / math.sqrt(latent.numel()), 4)}
    return figures


def _landmarks(pipe: Any, model_name: str, keys: list, recipes: list, request: "MorphRequest") -> dict:
    """Nearest landmark prompts of every frame and a 2-D PCA map of frames, keys and those landmarks."""
    vocabulary = vocabulary_for(model_name)
    key_pooled = pooled_embeddings(pipe, [key.prompt for key in keys])
    frame_pooled = torch.stack([mix_embeds(recipe, list(key_pooled[:, None]), request.interp)[0]
                                for recipe in recipes])
    landmark_pooled = vocabulary_embeddings(pipe, vocabulary)
    closest = nearest(frame_pooled, landmark_pooled, vocabulary)
    shown = list(dict.fromkeys(name for row in closest for name, _ in row))
    points = torch.cat([frame_pooled, key_pooled, landmark_pooled[[vocabulary.index(name) for name in shown]]])
    centred = points - points.mean(dim=0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    flat = (centred @ basis[:2].T).tolist()
    count = len(frame_pooled)
    return {
        "nearest": [[{"prompt": name, "cosine": cosine} for name, cosine in row] for row in closest],
        "map": {
            "frames": [[round(x, 4), round(y, 4)] for x, y in flat[:count]],
            "keys": [[round(x, 4), round(y, 4)] for x, y in flat[count: count + len(keys)]],
            "landmarks": {name: [round(x, 4), round(y, 4)] for name, (x, y) in zip(shown, flat[count + len(keys):])},
        },
    }
