"""Properties of slerp, lerp and the spacing schedules."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.interpolate import PARALLEL_THRESHOLD, interpolate, lerp, slerp
from pipelines.timing import ease, retime_even, spaced

SEEDS = range(5)


def _pair(seed: int, shape=(4, 8, 8), dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator).to(dtype), torch.randn(shape, generator=generator).to(dtype))


def _angle(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    return math.acos(float((x @ y / (x.norm() * y.norm())).clamp(-1, 1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("function", [slerp, lerp])
def test_exact_endpoints_and_dtype_kept(function, dtype) -> None:
    a, b = _pair(0, dtype=dtype)
    assert torch.equal(function(a, b, 0.0), a)
    assert torch.equal(function(a, b, 1.0), b)
    many = function(a, b, torch.tensor([0.0, 0.3, 1.0]))
    assert torch.equal(many[0], a) and torch.equal(many[2], b)
    assert many.dtype == dtype and many.device == a.device
    assert function(a, b, 0.5).dtype == dtype


@pytest.mark.parametrize("seed", SEEDS)
def test_batched_t_matches_one_at_a_time(seed: int) -> None:
    a, b = _pair(seed)
    ts = torch.linspace(0, 1, 7)
    many = slerp(a, b, ts)
    assert many.shape == (7, *a.shape)
    for row, t in zip(many, ts):
        torch.testing.assert_close(row, slerp(a, b, float(t)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_slerp_keeps_norm_between_equal_norm_inputs(seed: int) -> None:
    a, b = _pair(seed)
    b = b * (a.norm() / b.norm())
    norms = slerp(a, b, torch.linspace(0, 1, 11)).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, float(a.norm())), rtol=1e-5, atol=0)
    # lerp, by contrast, shrinks the norm mid-way: that is why noise is slerped.
    assert lerp(a, b, 0.5).norm() < 0.9 * a.norm()


@pytest.mark.parametrize("seed", SEEDS)
def test_slerp_takes_equal_angular_steps(seed: int) -> None:
    a, b = _pair(seed)
    b = b * (a.norm() / b.norm())  # on one sphere, as Gaussian noise nearly is
    points = slerp(a.double(), b.double(), torch.linspace(0, 1, 9))
    steps = [_angle(x, y) for x, y in zip(points, points[1:])]
    assert max(steps) - min(steps) < 1e-5
    assert sum(steps) == pytest.approx(_angle(a, b), abs=1e-5)


def test_slerp_is_global_over_the_flattened_tensor() -> None:
    a, b = _pair(1, shape=(2, 3, 5))
    b[0] = a[0] * 3  # one row parallel, the other not: per-row slerp would treat them differently
    flat = slerp(a.flatten(), b.flatten(), 0.3)
    torch.testing.assert_close(slerp(a, b, 0.3).flatten(), flat)


def test_fallback_region_uses_lerp_with_the_right_weights() -> None:
    a, _ = _pair(2)
    nearly = a + 1e-3 * torch.ones_like(a)  # cos above the threshold
    cos = float((a.flatten() @ nearly.flatten()) / (a.norm() * nearly.norm()))
    assert cos > PARALLEL_THRESHOLD
    for t in (0.1, 0.25, 0.9):
        torch.testing.assert_close(slerp(a, nearly, t), (1 - t) * a + t * nearly)
    # Far from parallel, slerp is not lerp.
    _, b = _pair(2)
    assert not torch.allclose(slerp(a, b, 0.25), lerp(a, b, 0.25))


@pytest.mark.parametrize(
    "make_b", [lambda a: a.clone(), lambda a: -a, lambda a: 2 * a, lambda a: torch.zeros_like(a)],
    ids=["identical", "opposite", "parallel", "zero"],
)
def test_degenerate_inputs_stay_finite(make_b) -> None:
    a, _ = _pair(3)
    b = make_b(a)
    out = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, lerp(a, b, torch.linspace(0, 1, 5)))
    assert torch.isfinite(slerp(torch.zeros_like(a), a, 0.5)).all()


def test_identical_inputs_give_the_input_everywhere() -> None:
    a, _ = _pair(4)
    for t in (0.0, 0.37, 1.0):
        torch.testing.assert_close(slerp(a, a.clone(), t), a, rtol=0, atol=1e-6)


def test_half_precision_is_computed_in_float32() -> None:
    a, b = _pair(5)
    half = slerp(a.half(), b.half(), 0.5)
    torch.testing.assert_close(half.float(), slerp(a.half().float(), b.half().float(), 0.5), atol=2e-3, rtol=0)


def test_shape_mismatch_and_bad_method_are_refused() -> None:
    a, b = _pair(0)
    with pytest.raises(ValueError):
        slerp(a, b[:2], 0.5)
    with pytest.raises(ValueError):
        interpolate(a, b, 0.5, "cubic")
    torch.testing.assert_close(interpolate(a, b, 0.5, "lerp"), lerp(a, b, 0.5))


def test_linear_spacing_starts_at_zero_and_excludes_the_end() -> None:
    assert spaced(4, "linear").tolist() == [0.0, 0.25, 0.5, 0.75]
    assert spaced(1, "linear").tolist() == [0.0]
    with pytest.raises(ValueError):
        spaced(0)
    with pytest.raises(ValueError):
        spaced(3, "wobbly")


def test_ease_is_monotone_and_slow_near_keyframes() -> None:
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    eased = ease(u)
    assert eased[0] == 0 and eased[-1] == 1 and eased[50] == pytest.approx(0.5)
    steps = eased.diff()
    assert (steps > 0).all()
    assert steps[0] < steps[50] / 10 and steps[-1] < steps[50] / 10
    values = spaced(8, "ease")
    assert values[0] == 0 and (values.diff() > 0).all() and values[-1] < 1


def test_retime_even_makes_equal_steps_of_cumulative_distance() -> None:
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    gaps = torch.tensor([3.0, 1.0, 1.0, 1.0])  # the first quarter holds half the change
    new = retime_even(t, gaps)
    assert new[0] == 0 and new[-1] == 1 and (new.diff() > 0).all()
    # Distance is linear inside each gap, so cumulative distance at the new t is even.
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)]) / gaps.sum()
    distance_at = torch.tensor([torch_interp(x, t, cumulative) for x in new], dtype=torch.float64)
    torch.testing.assert_close(distance_at, torch.linspace(0, 1, 5, dtype=torch.float64))
    torch.testing.assert_close(retime_even(t, torch.zeros(4)), t)
    torch.testing.assert_close(retime_even(t, torch.ones(4)), t)


def torch_interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """np.interp for one value."""
    import numpy as np

    return float(np.interp(float(x), xs.numpy(), ys.numpy()))
