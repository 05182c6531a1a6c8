"""Attention interpolation: in-between frames attend to their keyframes too, so morphs have no cuts.

After AID (He et al., "AID: Attention Interpolation of Text-to-Image Diffusion",
NeurIPS 2024): an in-between frame's attention layers see, besides their own keys
and values, the keys and values of the keyframes it mixes, interpolated by its
weights ("inner interpolation", "fused" with its own):

    K' = [K_own ; sum_i w_i K_i]      V' = [V_own ; sum_i w_i V_i]

for self-attention (the keyframes' image features at the same layer and step) and
cross-attention (their prompt features). The keyframes are rendered in the same
batch ("anchors"), so their K/V are at hand; their own rows, and every frame whose
weights are all on one key, take the plain path: at t = 0 and 1 this is exactly
diffusers' `AttnProcessor2_0`.

The knobs below (module constants, read when the processor is installed) choose the
variant: fused or not, inner or outer (AID's two forms), which layers, which
classifier-free-guidance half, in which early part of denoising the anchors are
injected (DiffMorpher / FreeMorph inject the endpoints' self-attention early only),
and how much weight the anchors' tokens get. Their values were chosen by
`python -m benchmarks.attention_bench --tune` on the tuning pairs (BENCHMARKS.md,
"Attention interpolation"); each comment gives the measurement.

The processor is installed with `unet.set_attn_processor` for one pipeline call
and removed after it; the UNet is never forked.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

# Defaults chosen by `python -m benchmarks.attention_bench --tune` (8 tuning morphs on shapes64,
# 16 frames, linear spacing; plain attention there: median J 3.62, worst 4.29, 7 cuts). AID's
# fused inner interpolation on both layers and both halves gave 3.37 / 4.72 / 9 cuts; the
# defaults below gave 2.06 / 2.56 / 3 cuts, the best of the 16 variants tried.

# Keep the frame's own keys and values beside the anchors' (AID's "fused"); False replaces them
# by the anchors' interpolation, which ties the frame harder to its keyframes.
FUSED = True
# Outer interpolation (AID): attend to each anchor separately and mix the outputs by the weights,
# instead of attending to the weighted mix of the anchors' keys and values (inner).
# Alone it did worse than inner (3.35 / 5.36 / 9 cuts).
OUTER = False
# Outer interpolation with the anchors' own queries too: the frame's attention output is the
# weighted mix of its anchors' outputs (feature injection), its own queries unused. On the
# self-attention layers only, this is what keeps a frame on the path between its keyframes.
ANCHOR_QUERIES = True
# The attention layers that see the anchors: "self" (image features), "cross" (prompt features).
# The prompt side already moves with t through the interpolated embeddings.
LAYERS: tuple[str, ...] = ("self",)
# The classifier-free-guidance halves that mix: "cond" only (as AID does) or both. Mixing the
# unconditional half too pulled every frame towards the anchors' shared layout (median J 3.37
# against 2.45 with "cond").
HALVES = "cond"
# Inject the anchors while the denoising progress (1 - timestep / NOISE_LEVELS) is in
# [INJECT_FROM, INJECT_UNTIL); 0 and 1 are every step. Outside, plain attention.
# Early-only injection (DiffMorpher / FreeMorph) left the cuts in (until 0.5: 3.23 / 5.08 / 12).
INJECT_FROM = 0.0
INJECT_UNTIL = 1.0
# The anchors' tokens' attention weights are multiplied by this (their logits get + log of it),
# so that a frame's own tokens, which match its queries best, do not drown them out.
ANCHOR_BOOST = 1.0
# The timestep scale of Stable Diffusion's schedulers (num_train_timesteps).
NOISE_LEVELS = 1000


@dataclass(frozen=True)
class Mixing:
    """Which rows of a batch mix which anchors, per half of a classifier-free-guidance batch.

    `weights[j, a]` is row j's weight on anchor a; a row of zeros is rendered plainly
    (anchors themselves, and frames that show one key alone).
    """

    weights: torch.Tensor  # (rows, anchors), float32
    anchors: list[int]  # batch rows of the anchors, within one half


@dataclass(frozen=True)
class Knobs:
    """One variant of the interpolation (defaults: the module's constants when installed)."""

    fused: bool = FUSED
    outer: bool = OUTER
    anchor_queries: bool = ANCHOR_QUERIES
    layers: tuple[str, ...] = LAYERS
    halves: str = HALVES
    inject_from: float = INJECT_FROM
    inject_until: float = INJECT_UNTIL
    anchor_boost: float = ANCHOR_BOOST


def current_knobs() -> Knobs:
    """The knobs as the module's constants set them now (the benchmark's --tune overrides them)."""
    return Knobs(FUSED, OUTER, ANCHOR_QUERIES, tuple(LAYERS), HALVES, INJECT_FROM, INJECT_UNTIL, ANCHOR_BOOST)


class InterpolatedAttention(AttnProcessor2_0):
    """`AttnProcessor2_0` whose mixing rows also attend to their anchors' interpolated keys and values."""

    def __init__(self, mixing: Mixing, knobs: Knobs | None = None) -> None:
        super().__init__()
        self.mixing = mixing
        self.knobs = knobs or current_knobs()
        self.active = True  # False outside the injection steps (set per UNet call, see interpolated_attention)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        rows = self.mixing.weights.shape[0]
        layer = "self" if encoder_hidden_states is None else "cross"
        plain = (not self.active or layer not in self.knobs.layers or attention_mask is not None
                 or hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None
                 or hidden_states.shape[0] % rows)
        if plain:  # not a step, layer or layout this processor mixes: diffusers' own path
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        # The projections as in AttnProcessor2_0.__call__ (diffusers 0.42), for a UNet transformer block.
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch = hidden_states.shape[0]
        query, key, value = (_heads(attn, projection) for projection in
                             (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        mixing_rows, anchor_rows, chosen = self._rows(batch // rows, key.device)
        if mixing_rows.numel():
            out = out.clone()
            if self.knobs.anchor_queries:  # the anchors' own outputs, mixed by the weights
                shares = chosen.to(out.dtype)[:, :, None, None, None]
                out[mixing_rows] = (shares * out[anchor_rows]).sum(dim=1)
            else:
                out[mixing_rows] = mixed_attention(query[mixing_rows], key[mixing_rows], value[mixing_rows],
                                                   key[anchor_rows], value[anchor_rows], chosen.to(key.dtype),
                                                   self.knobs)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _rows(self, halves: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch rows that mix, (rows, anchors) batch rows of their anchors, (rows, anchors) weights).

        With classifier-free guidance the batch is [uncond ; cond] (diffusers' order); with
        HALVES = "cond" only the last half mixes.
        """
        weights = self.mixing.weights.to(device)
        rows = weights.shape[0]
        mixing = (weights.sum(dim=1) > 0).nonzero().flatten()
        used = range(halves) if self.knobs.halves == "both" else range(halves - 1, halves)
        anchors = torch.tensor(self.mixing.anchors, device=device, dtype=torch.long)
        frames = [mixing + half * rows for half in used]
        partners = [(anchors + half * rows).expand(len(mixing), -1) for half in used]
        return torch.cat(frames), torch.cat(partners), weights[mixing].repeat(len(frames), 1)


def mixed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, anchor_key: torch.Tensor,
                    anchor_value: torch.Tensor, weights: torch.Tensor, knobs: Knobs) -> torch.Tensor:
    """Attention of frames whose keys and values are mixed with their anchors' (AID, section 3).

    query, key, value: (m, heads, tokens, dim), the frames' own; anchor_key, anchor_value:
    (m, anchors, heads, tokens, dim); weights: (m, anchors), each row summing to 1.

    - inner, fused:   attend to [K ; sum_a w_a K_a] with values [V ; sum_a w_a V_a]
    - inner:          attend to sum_a w_a K_a with values sum_a w_a V_a
    - outer (fused):  sum_a w_a attention(Q, [K ; K_a], [V ; V_a]) (or (Q, K_a, V_a))
    The anchors' tokens' weights are multiplied by `knobs.anchor_boost` when fused.
    """
    def attend(extra_key: torch.Tensor, extra_value: torch.Tensor) -> torch.Tensor:
        if not knobs.fused:
            return F.scaled_dot_product_attention(query, extra_key, extra_value)
        bias = None
        if knobs.anchor_boost != 1.0:  # + log(boost) on the anchors' logits, 0 on the frame's own
            bias = torch.zeros((1, 1, 1, key.shape[-2] + extra_key.shape[-2]), dtype=query.dtype,
                               device=query.device)
            bias[..., key.shape[-2]:] = math.log(knobs.anchor_boost)
        return F.scaled_dot_product_attention(query, torch.cat([key, extra_key], dim=-2),
                                              torch.cat([value, extra_value], dim=-2), attn_mask=bias)

    if knobs.outer:
        shares = weights[:, :, None, None, None]
        return sum(shares[:, a] * attend(anchor_key[:, a], anchor_value[:, a]) for a in range(weights.shape[1]))
    return attend(torch.einsum("ma,mahld->mhld", weights, anchor_key),
                  torch.einsum("ma,mahld->mhld", weights, anchor_value))


def _heads(attn: Any, projected: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, heads * dim) -> (batch, heads, tokens, dim)."""
    batch, tokens, width = projected.shape
    return projected.view(batch, tokens, attn.heads, width // attn.heads).transpose(1, 2)


def injecting(timestep: Any, start: float, until: float) -> bool:
    """Whether a UNet call at `timestep` is inside [start, until) of denoising (progress by noise level)."""
    if (start <= 0.0 and until >= 1.0) or timestep is None:
        return True
    progress = 1.0 - float(torch.as_tensor(timestep).flatten()[0]) / NOISE_LEVELS
    return start <= progress < until


@contextlib.contextmanager
def interpolated_attention(unet: Any, mixing: Mixing | None) -> Iterator[None]:
    """Install the interpolating processor on every attention layer for one call, then restore the old ones.

    A pre-hook on the UNet tells the processor each call's timestep, so it can inject
    the anchors in the early steps only (INJECT_UNTIL).
    """
    if mixing is None:
        yield
        return
    original = unet.attn_processors
    processor = InterpolatedAttention(mixing)

    def note_step(_module: Any, args: tuple, kwargs: dict) -> None:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        processor.active = injecting(timestep, processor.knobs.inject_from, processor.knobs.inject_until)

    unet.set_attn_processor(processor)
    hook = unet.register_forward_pre_hook(note_step, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()
        unet.set_attn_processor(original)


def attention_mixing(shares: list[dict[int, float]]) -> tuple[Mixing | None, list[int]]:
    """The Mixing of a batch from each frame's key weights, and the keys to render as anchors.

    A frame that shows one key alone mixes nothing (plain attention, exactly the plain
    render); the others mix every key they hold. A key shown alone in the batch (a
    keyframe, a grid's corner) is its own anchor: that row is the key's plain render
    already. The other keys are returned to be rendered as anchors, after the frames.
    """
    held = [sorted(index for index, weight in share.items() if weight > 0) for share in shares]
    keys = sorted({index for indices in held if len(indices) > 1 for index in indices})
    if not keys:
        return None, []
    alone = {indices[0]: row for row, indices in enumerate(held) if len(indices) == 1}
    extra = [index for index in keys if index not in alone]
    rows = len(shares) + len(extra)
    weights = torch.zeros((rows, len(keys)), dtype=torch.float32)
    for row, (share, indices) in enumerate(zip(shares, held)):
        if len(indices) > 1:
            for index in indices:
                weights[row, keys.index(index)] = share[index]
    anchor_rows = [alone[index] if index in alone else len(shares) + extra.index(index) for index in keys]
    return Mixing(weights, anchor_rows), extra


def with_anchors(inputs: dict[str, torch.Tensor], anchors: list[Any]) -> dict[str, torch.Tensor]:
    """Pipeline inputs with the anchor keys' own latents and embeddings appended as extra rows."""
    if not anchors:
        return inputs
    extra = {
        "latents": [key.noise for key in anchors],
        "prompt_embeds": [key.text.embeds for key in anchors],
        "pooled_prompt_embeds": [key.text.pooled for key in anchors],
    }
    return {name: torch.cat([tensor, *[row.to(tensor.dtype) for row in extra[name]]]) if name in extra else tensor
            for name, tensor in inputs.items()}
