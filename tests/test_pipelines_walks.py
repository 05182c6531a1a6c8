"""Walks: chain, grid and direction plans, their recipes, and what they render on the tiny model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.cache import FrameCache
from pipelines.engine import Morpher
from pipelines.interpolate import slerp
from pipelines.keys import draw_noise
from pipelines.inspect import NORM_DRIFT_WARNING
from pipelines.metrics import psnr
from pipelines.request import WALKS as WALK_NAMES
from pipelines.request import MorphRequest
from pipelines.walks import (
    WALKS,
    Blend,
    ChainWalk,
    DirectionWalk,
    GridWalk,
    Key,
    Point,
    Shift,
    blend,
    blends,
    get_walk,
    nearest_key,
    shift,
)

FOUR = ("a red circle", "a blue square", "a green star", "a yellow triangle")
CHAIN = MorphRequest(prompts=FOUR[:2], seeds=(1, 2), frames=5, steps=2, size=(32, 32))
GRID = MorphRequest(prompts=FOUR, walk="grid", grid=(3, 3), seeds=(1, 2, 3, 4), steps=2, size=(32, 32))
# "a red circle" + s * ("a blue square" - "a red square"): the README's example
DIRECTION = MorphRequest(prompts=("a red circle", "a red square", "a blue square"), walk="direction",
                         scale=(0.0, 1.0), frames=3, seeds=(1,), steps=2, size=(32, 32))


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# ---- the registry and recipes -------------------------------------------------------------


def test_the_registry_holds_the_walks_the_request_offers() -> None:
    assert tuple(WALKS) == WALK_NAMES == ("chain", "grid", "direction")
    assert [type(get_walk(name)) for name in WALK_NAMES] == [ChainWalk, GridWalk, DirectionWalk]
    assert [len(get_walk(name).slots) for name in WALK_NAMES] == [2, 4, 3]
    with pytest.raises(ValueError, match="walk must be one of chain, grid, direction, got 'spiral'"):
        get_walk("spiral")


def test_recipes_simplify_where_interpolation_is_exact() -> None:
    a, b = Key(0), Key(1)
    assert blend(a, b, 0.0) == a and blend(a, b, 1.0) == b and blend(a, a, 0.3) == a
    assert blend(a, b, 0.25) == Blend(a, b, 0.25)
    assert shift(a, 1, 2, 0.0) == a and shift(a, 2, 2, 1.5) == a
    assert shift(a, 1, 2, -0.5) == Shift(a, 1, 2, -0.5)
    assert blend(blend(a, b, 0.0), blend(Key(2), Key(3), 0.0), 1.0) == Key(2)
    assert nearest_key(Blend(a, b, 0.49)) == 0 and nearest_key(Blend(a, b, 0.5)) == 1
    assert nearest_key(Shift(Blend(a, b, 0.9), 2, 3, 1.0)) == 1
    assert blends(Blend(a, b, 0.5)) and blends(Shift(Blend(a, b, 0.5), 0, 1, 1.0))
    assert not blends(a) and not blends(Shift(a, 1, 2, 1.0))


def test_the_same_mixture_has_the_same_recipe_in_every_walk() -> None:
    chain = replace(CHAIN, prompts=FOUR[:3], seeds=(1,))
    walk = ChainWalk()
    assert walk.recipe(Point.of(segment=0, t=1.0), chain) == walk.recipe(Point.of(segment=1, t=0.0), chain) == Key(1)
    grid = GridWalk()
    corners = [grid.recipe(Point.of(row=r, column=c, u=float(c), v=float(r)), GRID) for r in (0, 1) for c in (0, 1)]
    assert corners == [Key(0), Key(1), Key(2), Key(3)]
    top_edge = grid.recipe(Point.of(row=0, column=1, u=0.5, v=0.0), GRID)
    assert top_edge == walk.recipe(Point.of(segment=0, t=0.5), CHAIN) == Blend(Key(0), Key(1), 0.5)
    assert grid.recipe(Point.of(row=1, column=0, u=0.0, v=0.5), GRID) == Blend(Key(0), Key(2), 0.5)
    assert DirectionWalk().recipe(Point.of(segment=0, t=0.0, s=0.0), DIRECTION) == Key(0)


# ---- chain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keyframes,frames,loop", [(2, 2, False), (2, 9, False), (3, 8, False), (4, 4, False),
                                                   (2, 2, True), (3, 10, True), (3, 3, True)])
def test_every_keyframe_appears_exactly_once(keyframes: int, frames: int, loop: bool) -> None:
    request = replace(CHAIN, prompts=FOUR[:keyframes], seeds=(1,), frames=frames, loop=loop)
    plan = ChainWalk().plan(request)
    assert len(plan) == frames
    positions = [point["segment"] + point["t"] for point in plan]
    assert positions == sorted(positions) and len(set(positions)) == frames
    assert [p for p in positions if p == int(p)] == [float(k) for k in range(keyframes)]
    if loop:
        assert positions[-1] < keyframes  # walks back towards the first prompt, never repeats it


def test_gaps_are_shared_evenly_between_segments() -> None:
    walk = ChainWalk()
    plan = walk.plan(replace(CHAIN, prompts=FOUR[:3], seeds=(1,), frames=8))
    per_segment = [sum(1 for point in plan if point["segment"] == s and point["t"] < 1) for s in range(2)]
    assert sorted(per_segment) == [3, 4]
    assert walk.plan(replace(CHAIN, frames=4, spacing="ease"))[1]["t"] < 1 / 3  # eased: slow away from the keyframe
    with pytest.raises(ValueError, match="2 frames cannot hold 2 segments"):
        walk.plan(replace(CHAIN, prompts=FOUR[:3], seeds=(1,), frames=2))


# ---- grid ----------------------------------------------------------------------------------


def test_grid_plan_is_serpentine_with_row_column_u_v() -> None:
    plan = GridWalk().plan(replace(GRID, grid=(3, 4)))
    cells = [(point["row"], point["column"]) for point in plan]
    assert cells == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (1, 2), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]
    for point in plan:
        assert [name for name, _ in point.coords] == ["row", "column", "u", "v"]
        assert point["u"] == pytest.approx(point["column"] / 3) and point["v"] == pytest.approx(point["row"] / 2)
    # every step of the animation is between neighbouring tiles
    assert all(abs(r1 - r2) + abs(c1 - c2) == 1 for (r1, c1), (r2, c2) in zip(cells, cells[1:]))
    corners = {(r, c): (point["u"], point["v"]) for (r, c), point in zip(cells, plan) if r in (0, 2) and c in (0, 3)}
    assert corners == {(0, 0): (0.0, 0.0), (0, 3): (1.0, 0.0), (2, 0): (0.0, 1.0), (2, 3): (1.0, 1.0)}
    eased = GridWalk().plan(replace(GRID, grid=(2, 4), spacing="ease"))
    assert 0 < eased[1]["u"] < 1 / 3 and eased[-1]["v"] == 1.0
    assert GridWalk().caption(plan[5]) == "r1 c2"


@pytest.mark.parametrize("seeds", [(7,), (1, 2, 3, 4)], ids=["one seed", "seed per prompt"])
def test_grid_corners_are_the_plain_renders_of_a_b_c_d(morpher, plain_render, seeds: tuple) -> None:
    request = replace(GRID, grid=(2, 3), seeds=seeds)
    frames = morpher.render(request).frames
    tiles = {(int(frame.point["row"]), int(frame.point["column"])): frame.image for frame in frames}
    assert len(tiles) == 6
    per_key = seeds * 4 if len(seeds) == 1 else seeds
    for key, cell in enumerate([(0, 0), (0, 2), (1, 0), (1, 2)]):
        assert psnr(tiles[cell], plain_render(morpher.model.pipe, FOUR[key], per_key[key], request)) >= 40, cell


def test_grid_mixes_rows_first_then_columns_spherically(morpher, denoise_calls) -> None:
    request = replace(GRID, batch_size=9)
    morpher.render(request)
    (inputs,) = denoise_calls
    shape = morpher.latent_shape(request)
    noise = [draw_noise(seed, shape, torch.float32, torch.device("cpu")) for seed in (1, 2, 3, 4)]
    centre = slerp(slerp(noise[0], noise[1], 0.5), slerp(noise[2], noise[3], 0.5), 0.5)
    # serpentine: (0,0) (0,1) (0,2) (1,2) (1,1) ...; the fifth frame is the centre tile
    torch.testing.assert_close(inputs["latents"][4:5], centre)
    torch.testing.assert_close(inputs["latents"][1:2], slerp(noise[0], noise[1], 0.5))
    assert torch.equal(inputs["latents"][0:1], noise[0]) and torch.equal(inputs["latents"][6:7], noise[2])


def test_grid_edges_share_the_cache_with_chains_between_the_same_keys(tiny_model) -> None:
    morpher = Morpher(tiny_model, cache=FrameCache())
    grid = morpher.render(GRID)
    assert grid.manifest["render"]["frames_rendered"] == 9
    for ends in ((0, 1), (2, 3), (0, 2), (1, 3)):  # top, bottom, left and right edges
        chain = replace(CHAIN, prompts=tuple(FOUR[i] for i in ends), seeds=tuple(GRID.seeds[i] for i in ends),
                        frames=3)
        record = morpher.render(chain).manifest["render"]
        assert (record["cache_hits"], record["frames_rendered"]) == (3, 0), ends
    diagonal = replace(CHAIN, prompts=(FOUR[0], FOUR[3]), seeds=(1, 4), frames=3)
    record = morpher.render(diagonal).manifest["render"]
    assert (record["cache_hits"], record["frames_rendered"]) == (2, 1)  # only the corners are on the grid
    again = morpher.render(replace(GRID, grid=(2, 2))).manifest["render"]
    assert again["cache_hits"] == 4


def test_grid_manifest_lists_each_tile(morpher) -> None:
    result = morpher.render(replace(GRID, grid=(2, 3)))
    manifest = result.manifest
    assert manifest["walk"] == "grid" and manifest["grid"] == {"rows": 2, "columns": 3, "order": "serpentine"}
    assert [(tile["row"], tile["column"], tile["u"], tile["v"]) for tile in manifest["frames"]] == [
        (0, 0, 0.0, 0.0), (0, 1, 0.5, 0.0), (0, 2, 1.0, 0.0), (1, 2, 1.0, 1.0), (1, 1, 0.5, 1.0), (1, 0, 0.0, 1.0)]
    assert [(entry["index"], entry["key"]) for entry in manifest["keyframes"]] == [(0, 0), (2, 1), (3, 3), (5, 2)]
    assert "t" not in manifest and len(manifest["metrics"]["gaps"]) == 5
    assert [frame.caption for frame in result.frames][:2] == ["r0 c0", "r0 c1"]


# ---- direction -----------------------------------------------------------------------------


def test_direction_s_runs_evenly_from_start_to_end() -> None:
    walk = DirectionWalk()
    assert [point["s"] for point in walk.plan(replace(DIRECTION, scale=(0.0, 1.5), frames=4))] == pytest.approx(
        [0.0, 0.5, 1.0, 1.5])
    backwards = [point["s"] for point in walk.plan(replace(DIRECTION, scale=(1.0, -1.0), frames=5))]
    assert backwards == pytest.approx([1.0, 0.5, 0.0, -0.5, -1.0]) and backwards[0] == 1.0 and backwards[-1] == -1.0
    assert walk.caption(Point.of(segment=0, t=0.5, s=0.25)) == "s=0.250"


def test_direction_at_s_0_is_the_plain_render_of_a(morpher, plain_render) -> None:
    request = replace(DIRECTION, seeds=(5, 6, 7), batch_size=1)
    frames = morpher.render(request).frames
    assert frames[0].point["s"] == 0.0
    assert same(frames[0].image, plain_render(morpher.model.pipe, DIRECTION.prompts[0], 5, request))
    assert not same(frames[-1].image, frames[0].image)


def test_direction_keeps_the_noise_and_moves_only_the_embedding(morpher, denoise_calls) -> None:
    request = replace(DIRECTION, seeds=(5, 6, 7), scale=(-1.0, 2.0), frames=4, batch_size=4)
    morpher.render(request)
    (inputs,) = denoise_calls
    noise = draw_noise(5, morpher.latent_shape(request), torch.float32, torch.device("cpu"))  # A's seed only
    assert all(torch.equal(latent[None], noise) for latent in inputs["latents"])
    a, b, c = (morpher.text.encode(prompt, False, None)[0].embeds for prompt in request.prompts)
    for embeds, s in zip(inputs["prompt_embeds"], (-1.0, 0.0, 1.0, 2.0)):
        torch.testing.assert_close(embeds[None], a + s * (c - b))
    negative = inputs["negative_prompt_embeds"]  # the unconditional embedding does not move
    assert all(torch.equal(row, negative[0]) for row in negative)


def test_direction_manifest_flags_embeddings_far_from_the_keys(morpher) -> None:
    near = morpher.render(DIRECTION).manifest
    assert near["walk"] == "direction" and [frame["s"] for frame in near["frames"]] == [0.0, 0.5, 1.0]
    path = near["path"]
    assert len(path["embed_norm"]) == 3 and path["embed_norm"][0] == pytest.approx(1.0, abs=NORM_DRIFT_WARNING)
    assert path["embed_norm_drift"] == [] and path["noise_norm"] == [1.0, 1.0, 1.0]
    far = morpher.render(replace(DIRECTION, scale=(0.0, 40.0))).manifest["path"]
    assert far["embed_norm_drift"] == [1, 2] and far["embed_norm"][2] > 1 + NORM_DRIFT_WARNING
    assert far["drift_threshold"] == NORM_DRIFT_WARNING
