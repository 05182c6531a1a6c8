"""Attention interpolation: plain at the keyframes, weights that follow t, its own cache entries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from pipelines.attention import InterpolatedAttention, Mixing, attention_mixing, interpolated_attention
from pipelines.engine import Morpher
from pipelines.recipes import weights
from pipelines.request import MorphRequest
from pipelines.walks import get_walk

BASE = MorphRequest(prompts=("a red circle", "a blue square"), seeds=(1, 2), frames=5, steps=3, size=(32, 32))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_mixing_weights_follow_t_and_anchors_follow_the_frames() -> None:
    walk = get_walk("chain")
    points = walk.plan(BASE)  # t = 0, 1/4, 1/2, 3/4, 1
    mixing, anchors = attention_mixing([weights(walk.recipe(point, BASE)) for point in points])
    assert anchors == [0, 1] and mixing.anchors == [5, 6]
    expected = [[0, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 0], [0, 0], [0, 0]]
    assert mixing.weights.tolist() == expected  # keyframes and anchors: all zeros (plain attention)


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


@pytest.mark.parametrize("cross", [False, True])
def test_rows_that_mix_nothing_get_exactly_plain_attention(cross: bool) -> None:
    layer = _layer(cross)
    hidden = torch.randn(6, 10, 16)  # 3 rows x 2 halves (classifier-free guidance)
    context = torch.randn(6, 7, 8) if cross else None
    plain = AttnProcessor2_0()(layer, hidden, context)
    mixing = Mixing(torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]]), anchors=[0, 2])
    mixed = InterpolatedAttention(mixing)(layer, hidden, context)
    for row in (0, 2, 3, 5):  # the anchors in both halves
        assert torch.equal(mixed[row], plain[row])
    assert not torch.allclose(mixed[1], plain[1]) and not torch.allclose(mixed[4], plain[4])


def test_a_mixing_row_attends_to_its_own_and_the_anchors_interpolated_keys() -> None:
    layer = _layer(False)
    hidden = torch.randn(3, 4, 16)
    mixing = Mixing(torch.tensor([[0.0, 0.0], [0.25, 0.75], [0.0, 0.0]]), anchors=[0, 2])
    mixed = InterpolatedAttention(mixing)(layer, hidden)
    # by hand: keys and values of row 1 followed by 0.25 * anchor 0's + 0.75 * anchor 2's
    heads = lambda x: x.view(3, 4, 2, 8).transpose(1, 2)  # noqa: E731
    query, key, value = heads(layer.to_q(hidden)), heads(layer.to_k(hidden)), heads(layer.to_v(hidden))
    fused_key = torch.cat([key[1], 0.25 * key[0] + 0.75 * key[2]], dim=-2)
    fused_value = torch.cat([value[1], 0.25 * value[0] + 0.75 * value[2]], dim=-2)
    out = torch.nn.functional.scaled_dot_product_attention(query[1:2], fused_key[None], fused_value[None])
    expected = layer.to_out[0](out.transpose(1, 2).reshape(1, 4, 16))
    assert torch.allclose(mixed[1:2], expected, atol=1e-6)


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
