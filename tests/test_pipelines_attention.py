"""Attention interpolation: plain at the keyframes, weights that follow t, its own cache entries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from pipelines import attention
from pipelines.attention import (
    InterpolatedAttention, Knobs, Mixing, attention_mixing, injecting, interpolated_attention,
)
from pipelines.engine import Morpher
from pipelines.recipes import weights
from pipelines.request import MorphRequest
from pipelines.walks import get_walk

BASE = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=3, size=(32, 32))
# AID's fused inner interpolation on every layer, half and step (the first implementation)
AID = Knobs(fused=True, outer=False, anchor_queries=False, layers=("self", "cross"), halves="both",
            inject_from=0.0, inject_until=1.0, anchor_boost=1.0)
VARIANTS = [AID, replace(AID, fused=False), replace(AID, outer=True), replace(AID, outer=True, fused=False),
            replace(AID, anchor_queries=True), replace(AID, anchor_boost=4.0), replace(AID, halves="cond")]


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_mixing_weights_follow_t_and_anchors_follow_the_frames() -> None:
    walk = get_walk("chain")
    points = walk.plan(BASE)  # t = 0, 1/4, 1/2, 3/4, 1
    mixing, anchors = attention_mixing([weights(walk.recipe(point, BASE)) for point in points[1:4]])
    assert anchors == [0, 1] and mixing.anchors == [3, 4]  # rendered after the frames
    expected = [[0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 0], [0, 0]]
    assert mixing.weights.tolist() == expected  # anchors: all zeros (plain attention)


def test_keyframes_in_the_batch_are_their_own_anchors() -> None:
    walk = get_walk("chain")
    shares = [weights(walk.recipe(point, BASE)) for point in walk.plan(BASE)]
    mixing, anchors = attention_mixing(shares)  # both keyframes in the batch: no extra rows
    assert anchors == [] and mixing.anchors == [0, 4]
    assert mixing.weights.tolist() == [[0, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 0]]
    mixing, anchors = attention_mixing(shares[:3])  # only the first: the second is appended
    assert anchors == [1] and mixing.anchors == [0, 3] and mixing.weights.shape == (4, 2)


def test_a_batch_of_keyframes_alone_needs_no_anchors() -> None:
    assert attention_mixing([{0: 1.0}, {1: 1.0}]) == (None, [])


def test_grid_tiles_mix_their_corners_bilinearly() -> None:
    request = MorphRequest(prompts=("a", "b", "c", "d"), walk="grid", grid=(3, 3))
    walk = get_walk("grid")
    centre = next(point for point in walk.plan(request) if point["row"] == 1 and point["column"] == 1)
    mixing, anchors = attention_mixing([weights(walk.recipe(centre, request))])
    assert anchors == [0, 1, 2, 3] and mixing.weights[0].tolist() == [0.25, 0.25, 0.25, 0.25]


def _layer(cross: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, cross_attention_dim=8 if cross else None, heads=2, dim_head=8)


@pytest.mark.parametrize("knobs", VARIANTS, ids=lambda knobs: str(VARIANTS.index(knobs)))
@pytest.mark.parametrize("cross", [False, True])
def test_rows_that_mix_nothing_get_exactly_plain_attention(cross: bool, knobs: Knobs) -> None:
    layer = _layer(cross)
    hidden = torch.randn(6, 10, 16)  # 3 rows x 2 halves (classifier-free guidance)
    context = torch.randn(6, 7, 8) if cross else None
    plain = AttnProcessor2_0()(layer, hidden, context)
    mixing = Mixing(torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]]), anchors=[0, 2])
    mixed = InterpolatedAttention(mixing, knobs)(layer, hidden, context)
    for row in (0, 2, 3, 5):  # the anchors in both halves
        assert torch.equal(mixed[row], plain[row])
    assert not torch.allclose(mixed[4], plain[4])  # the conditional half's in-between mixes
    if knobs.halves == "cond":
        assert torch.equal(mixed[1], plain[1])
    else:
        assert not torch.allclose(mixed[1], plain[1])


def test_a_weight_of_one_on_an_anchor_is_that_anchors_attention_when_not_fused() -> None:
    # the limit t -> 0 of a non-fused frame: its attention is its keyframe's keys and values
    layer = _layer(False)
    hidden = torch.randn(3, 4, 16)
    mixing = Mixing(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), anchors=[0, 2])
    for knobs in (replace(AID, fused=False), replace(AID, fused=False, outer=True)):
        mixed = InterpolatedAttention(mixing, knobs)(layer, hidden)
        heads = lambda x: x.view(3, 4, 2, 8).transpose(1, 2)  # noqa: E731
        query, key, value = heads(layer.to_q(hidden)), heads(layer.to_k(hidden)), heads(layer.to_v(hidden))
        out = torch.nn.functional.scaled_dot_product_attention(query[1:2], key[0:1], value[0:1])
        assert torch.allclose(mixed[1:2], layer.to_out[0](out.transpose(1, 2).reshape(1, 4, 16)), atol=1e-6)


def test_a_mixing_row_attends_to_its_own_and_the_anchors_interpolated_keys() -> None:
    layer = _layer(False)
    hidden = torch.randn(3, 4, 16)
    mixing = Mixing(torch.tensor([[0.0, 0.0], [0.25, 0.75], [0.0, 0.0]]), anchors=[0, 2])
    mixed = InterpolatedAttention(mixing, AID)(layer, hidden)
    # by hand: keys and values of row 1 followed by 0.25 * anchor 0's + 0.75 * anchor 2's
    heads = lambda x: x.view(3, 4, 2, 8).transpose(1, 2)  # noqa: E731
    query, key, value = heads(layer.to_q(hidden)), heads(layer.to_k(hidden)), heads(layer.to_v(hidden))
    fused_key = torch.cat([key[1], 0.25 * key[0] + 0.75 * key[2]], dim=-2)
    fused_value = torch.cat([value[1], 0.25 * value[0] + 0.75 * value[2]], dim=-2)
    out = torch.nn.functional.scaled_dot_product_attention(query[1:2], fused_key[None], fused_value[None])
    expected = layer.to_out[0](out.transpose(1, 2).reshape(1, 4, 16))
    assert torch.allclose(mixed[1:2], expected, atol=1e-6)


def _by_hand(layer: Attention, hidden: torch.Tensor):
    heads = lambda x: x.view(3, 4, 2, 8).transpose(1, 2)  # noqa: E731
    return heads(layer.to_q(hidden)), heads(layer.to_k(hidden)), heads(layer.to_v(hidden))


def _output(layer: Attention, out: torch.Tensor) -> torch.Tensor:
    return layer.to_out[0](out.transpose(1, 2).reshape(out.shape[0], 4, 16))


SHARES = Mixing(torch.tensor([[0.0, 0.0], [0.25, 0.75], [0.0, 0.0]]), anchors=[0, 2])


def test_outer_interpolation_mixes_the_attention_to_each_anchor() -> None:
    layer, hidden = _layer(False), torch.randn(3, 4, 16)
    query, key, value = _by_hand(layer, hidden)
    attend = torch.nn.functional.scaled_dot_product_attention
    to_anchor = [attend(query[1:2], torch.cat([key[1], key[a]], dim=-2)[None],
                        torch.cat([value[1], value[a]], dim=-2)[None]) for a in (0, 2)]
    expected = _output(layer, 0.25 * to_anchor[0] + 0.75 * to_anchor[1])
    mixed = InterpolatedAttention(SHARES, replace(AID, outer=True))(layer, hidden)
    assert torch.allclose(mixed[1:2], expected, atol=1e-6)


def test_anchor_queries_give_the_anchors_outputs_mixed_by_the_weights() -> None:
    layer, hidden = _layer(False), torch.randn(3, 4, 16)
    plain = AttnProcessor2_0()(layer, hidden)
    mixed = InterpolatedAttention(SHARES, replace(AID, anchor_queries=True))(layer, hidden)
    # the output projection is affine: mixing before it (weights summing to 1) is mixing after it
    assert torch.allclose(mixed[1], 0.25 * plain[0] + 0.75 * plain[2], atol=1e-6)


def test_an_anchor_boost_of_two_counts_the_anchors_tokens_twice() -> None:
    layer, hidden = _layer(False), torch.randn(3, 4, 16)
    query, key, value = _by_hand(layer, hidden)
    mixed_key, mixed_value = 0.25 * key[0] + 0.75 * key[2], 0.25 * value[0] + 0.75 * value[2]
    out = torch.nn.functional.scaled_dot_product_attention(
        query[1:2], torch.cat([key[1], mixed_key, mixed_key], dim=-2)[None],
        torch.cat([value[1], mixed_value, mixed_value], dim=-2)[None])
    mixed = InterpolatedAttention(SHARES, replace(AID, anchor_boost=2.0))(layer, hidden)
    assert torch.allclose(mixed[1:2], _output(layer, out), atol=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_layers_left_out_are_plain(cross: bool) -> None:
    layer, hidden = _layer(cross), torch.randn(3, 4, 16)
    context = torch.randn(3, 7, 8) if cross else None
    knobs = replace(AID, layers=("cross",) if not cross else ("self",))
    assert torch.equal(InterpolatedAttention(SHARES, knobs)(layer, hidden, context),
                       AttnProcessor2_0()(layer, hidden, context))


def test_injection_follows_the_noise_level() -> None:
    assert injecting(999, 0.0, 1.0) and injecting(None, 0.2, 0.5)
    assert injecting(torch.tensor([999]), 0.0, 0.5) and not injecting(torch.tensor([400]), 0.0, 0.5)
    assert not injecting(900, 0.5, 1.0) and injecting(100, 0.5, 1.0)


def test_frames_outside_the_injection_steps_are_rendered_plainly(tiny_model, monkeypatch) -> None:
    morpher = Morpher(tiny_model)
    plain = morpher.render(BASE).frames
    monkeypatch.setattr(attention, "INJECT_FROM", 0.5)
    monkeypatch.setattr(attention, "INJECT_UNTIL", 0.5)  # an empty window: never inject
    never = morpher.render(replace(BASE, attention="interpolate")).frames
    for a, b in zip(never, plain):  # anchors in the batch change float rounding at most
        assert np.abs(pixels(a.image) - pixels(b.image)).max() <= 1
    monkeypatch.setattr(attention, "INJECT_FROM", 0.0)  # the first half of the steps: the pictures change
    early = morpher.render(replace(BASE, attention="interpolate")).frames
    assert any(np.abs(pixels(a.image) - pixels(b.image)).max() > 1 for a, b in zip(early[1:-1], plain[1:-1]))


def test_processors_are_restored_after_the_call(tiny_model) -> None:
    unet = tiny_model.pipe.unet
    before = {name: type(processor) for name, processor in unet.attn_processors.items()}
    with interpolated_attention(unet, Mixing(torch.zeros((1, 1)), [0])):
        assert {type(processor) for processor in unet.attn_processors.values()} == {InterpolatedAttention}
    assert {name: type(processor) for name, processor in unet.attn_processors.items()} == before


def test_keyframes_stay_the_plain_renders_and_in_betweens_change(tiny_model) -> None:
    morpher = Morpher(tiny_model)
    plain = morpher.render(BASE).frames
    interpolated = morpher.render(replace(BASE, attention="interpolate"))
    frames = interpolated.frames
    assert np.array_equal(pixels(frames[0].image), pixels(plain[0].image))
    assert np.array_equal(pixels(frames[-1].image), pixels(plain[-1].image))
    assert any(not np.array_equal(pixels(a.image), pixels(b.image)) for a, b in zip(frames[1:-1], plain[1:-1]))
    assert interpolated.manifest["request"]["attention"] == "interpolate"


def test_the_attention_mode_is_part_of_an_in_betweens_cache_key(tiny_model) -> None:
    from pipelines.cache import FrameCache

    morpher = Morpher(tiny_model, cache=FrameCache())
    first = morpher.render(BASE).manifest["render"]
    again = morpher.render(replace(BASE, attention="interpolate")).manifest["render"]
    assert first["frames_rendered"] == 5
    assert again["cache_hits"] == 2 and again["frames_rendered"] == 3  # the keyframes are shared
