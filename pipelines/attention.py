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

The processor is installed with `unet.set_attn_processor` for one pipeline call
and removed after it; the UNet is never forked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

@dataclass(frozen=True)
class Mixing:
    """Which rows of a batch mix which anchors, per half of a classifier-free-guidance batch.

    `weights[j, a]` is row j's weight on anchor a; a row of zeros is rendered plainly
    (anchors themselves, and frames that show one key alone).
    """

    weights: torch.Tensor  # (rows, anchors), float32
    anchors: list[int]  # batch rows of the anchors, within one half


class InterpolatedAttention(AttnProcessor2_0):
    """`AttnProcessor2_0` whose mixing rows also attend to their anchors' interpolated keys and values."""

    def __init__(self, mixing: Mixing) -> None:
        super().__init__()
        self.mixing = mixing

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        rows = self.mixing.weights.shape[0]
        plain = (attention_mask is not None or hidden_states.ndim != 3 or attn.spatial_norm is not None
                 or attn.group_norm is not None or hidden_states.shape[0] % rows)
        if plain:  # not a layout this processor handles: diffusers' own path
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
        mixing_rows, mixed_key, mixed_value = self._mixed(key, value, batch // rows)
        if mixing_rows.numel():
            fused_key = torch.cat([key[mixing_rows], mixed_key], dim=-2)
            fused_value = torch.cat([value[mixing_rows], mixed_value], dim=-2)
            out = out.clone()
            out[mixing_rows] = F.scaled_dot_product_attention(query[mixing_rows], fused_key, fused_value,
                                                              dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _mixed(self, key: torch.Tensor, value: torch.Tensor, halves: int):
        """(rows that mix, their interpolated anchor keys, values), over every half of the batch."""
        weights = self.mixing.weights.to(device=key.device, dtype=key.dtype)
        rows = weights.shape[0]
        mixing = (weights.sum(dim=1) > 0).nonzero().flatten()
        if not mixing.numel():
            empty = key[:0]
            return mixing, empty, empty
        keys, values, indices = [], [], []
        for half in range(halves):
            anchors = torch.tensor([half * rows + anchor for anchor in self.mixing.anchors], device=key.device)
            chosen = weights[mixing]  # (m, anchors)
            keys.append(torch.einsum("ma,ahld->mhld", chosen, key[anchors]))
            values.append(torch.einsum("ma,ahld->mhld", chosen, value[anchors]))
            indices.append(mixing + half * rows)
        return torch.cat(indices), torch.cat(keys), torch.cat(values)


def _heads(attn: Any, projected: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, heads * dim) -> (batch, heads, tokens, dim)."""
    batch, tokens, width = projected.shape
    return projected.view(batch, tokens, attn.heads, width // attn.heads).transpose(1, 2)


@contextlib.contextmanager
def interpolated_attention(unet: Any, mixing: Mixing | None) -> Iterator[None]:
    """Install the interpolating processor on every attention layer for one call, then restore the old ones."""
    if mixing is None:
        yield
        return
    original = unet.attn_processors
    unet.set_attn_processor(InterpolatedAttention(mixing))
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def attention_mixing(shares: list[dict[int, float]]) -> tuple[Mixing | None, list[int]]:
    """The Mixing of a batch from each frame's key weights, and the keys to render as anchors.

    A frame that shows one key alone mixes nothing (plain attention, exactly the plain
    render); the others mix every key they hold. Anchors follow the frames in the batch.
    """
    mixed = [share for share in shares if sum(1 for weight in share.values() if weight > 0) > 1]
    anchors = sorted({index for share in mixed for index, weight in share.items() if weight > 0})
    if not anchors:
        return None, []
    rows = len(shares) + len(anchors)
    weights = torch.zeros((rows, len(anchors)), dtype=torch.float32)
    for row, share in enumerate(shares):
        if share in mixed:
            for index, weight in share.items():
                if weight > 0:
                    weights[row, anchors.index(index)] = weight
    return Mixing(weights, list(range(len(shares), rows))), anchors


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
