"""Where the frames of a morph sit in t: linear and eased spacing, and the re-timing behind
`--spacing even` (a monotone cubic through the measured distances, frames shared among
segments by length, the output frames chosen for the lowest jump ratio).

Small pure torch functions, like `pipelines.interpolate`; the engine's even-spacing
rounds are `pipelines.spacing`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

SPACINGS = ("linear", "ease", "even")  # the request's --spacing choices


def ease(u: torch.Tensor) -> torch.Tensor:
    """Smoothstep 3u^2 - 2u^3: zero slope at both ends, so frames bunch up near keyframes."""
    return u * u * (3.0 - 2.0 * u)


def spaced(count: int, spacing: str = "linear") -> torch.Tensor:
    """`count` values of t in [0, 1) for one segment, start included, end excluded.

    The segment's end is the next segment's start (or the final keyframe), so a
    chain of segments holds every keyframe exactly once. "even" starts from linear
    spacing; it is re-timed later from measured frame distances (`retime_even`).
    """
    if count < 1:
        raise ValueError(f"a segment needs at least 1 frame, got {count}")
    u = torch.arange(count, dtype=torch.float64) / count
    if spacing in ("linear", "even"):
        return u
    if spacing == "ease":
        return ease(u)
    raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")


def monotone_cubic(x: torch.Tensor, y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Monotone piecewise-cubic (PCHIP) interpolation of increasing data (Fritsch & Carlson, SIAM J. Numer.
    Anal. 1980): through every point, never overshooting, so a cumulative distance stays monotone."""
    x, y, query = x.double(), y.double(), query.double()
    h = x.diff()
    slope = y.diff() / h
    d = torch.zeros_like(y)
    if x.numel() == 2:
        d[:] = slope[0]
    else:
        # Interior: weighted harmonic mean of the neighbouring slopes, 0 at a flat spot or a turn.
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        left, right = slope[:-1], slope[1:]
        same_sign = (left * right) > 0
        harmonic = (w1 + w2) / (w1 / left.where(same_sign, torch.ones_like(left))
                                + w2 / right.where(same_sign, torch.ones_like(right)))
        d[1:-1] = torch.where(same_sign, harmonic, torch.zeros_like(harmonic))
        # Ends: one-sided three-point estimate, clipped to keep the shape.
        for end, (h0, h1, s0, s1) in ((0, (h[0], h[1], slope[0], slope[1])), (-1, (h[-1], h[-2], slope[-1], slope[-2]))):
            value = ((2 * h0 + h1) * s0 - h0 * s1) / (h0 + h1)
            if value * s0 <= 0:
                value = torch.zeros_like(value)
            elif s0 * s1 <= 0 and value.abs() > 3 * s0.abs():
                value = 3 * s0
            d[end] = value
    index = torch.searchsorted(x, query, right=True).clamp(1, x.numel() - 1) - 1
    u = (query - x[index]) / h[index]
    h00, h10, h01, h11 = (2 * u**3 - 3 * u**2 + 1), (u**3 - 2 * u**2 + u), (-2 * u**3 + 3 * u**2), (u**3 - u**2)
    return h00 * y[index] + h10 * h[index] * d[index] + h01 * y[index + 1] + h11 * h[index] * d[index + 1]


# Resolution of the dense grid on which the smooth cumulative-distance curve is inverted.
RETIME_GRID = 4096


def retime_even(t: torch.Tensor, gaps: torch.Tensor, count: int | None = None, smooth: bool = False) -> torch.Tensor:
    """`count` new t values (default: as many as `t`) at equal steps of cumulative distance.

    `t` holds increasing values from t[0] to t[-1] (both kept as the ends) and
    `gaps[i]` the measured distance between the frames at t[i] and t[i+1]. Distance
    is taken as linear in t inside each gap (the re-timing of DiffMorpher, CVPR 2024,
    with a pixel distance), or, with `smooth`, as the monotone cubic through the
    measured points (closer to the truth where a change is concentrated in a few
    gaps). Returns evenly spaced t when all gaps are zero.
    """
    t = t.double()
    gaps = gaps.double().clamp_min(0.0)
    if t.ndim != 1 or gaps.shape != (t.numel() - 1,):
        raise ValueError("retime_even needs n values of t and n - 1 gaps")
    count = t.numel() if count is None else count
    if count < 2:
        raise ValueError(f"retime_even needs count >= 2, got {count}")
    total = gaps.sum()
    if total.item() <= 0.0:
        return torch.linspace(float(t[0]), float(t[-1]), count, dtype=torch.float64)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)]) / total
    if smooth and t.numel() > 2:
        # Invert the smooth curve by sampling it densely (the measured points kept exactly).
        grid = torch.cat([torch.linspace(float(t[0]), float(t[-1]), RETIME_GRID + 1, dtype=torch.float64), t])
        grid = grid.unique(sorted=True)
        cumulative = torch.cummax(monotone_cubic(t, cumulative, grid).clamp(0.0, 1.0), 0).values
        t = grid
    targets = torch.linspace(0.0, 1.0, count, dtype=torch.float64)
    # Piecewise-linear inverse of cumulative(t): find the gap each target falls in.
    steps = cumulative.diff()
    index = torch.searchsorted(cumulative, targets, right=True).clamp(1, t.numel() - 1) - 1
    start, width = cumulative[index], steps[index]
    fraction = torch.where(width > 0, (targets - start) / width.clamp_min(1e-300), torch.zeros_like(width))
    out = t[index] + fraction.clamp(0.0, 1.0) * (t[index + 1] - t[index])
    out[0], out[-1] = t[0], t[-1]
    return out


def share_frames(lengths: list[float], gaps: int) -> list[int]:
    """Split `gaps` frame-to-frame steps between segments in proportion to their lengths.

    Every segment gets at least one step (its start keyframe); the rest follow the
    largest-remainder rule, so a segment twice as long gets about twice the steps.
    Zero or unknown lengths share equally.
    """
    count = len(lengths)
    if gaps < count:
        raise ValueError(f"{gaps} steps cannot cover {count} segments")
    weights = [max(0.0, float(length)) for length in lengths]
    total = sum(weights)
    if total <= 0.0:
        weights, total = [1.0] * count, float(count)
    ideal = [gaps * weight / total for weight in weights]
    shares = [max(1, int(value)) for value in ideal]
    # Hand out or take back single steps where the rounding error is largest.
    while sum(shares) < gaps:
        shares[max(range(count), key=lambda i: ideal[i] - shares[i])] += 1
    while sum(shares) > gaps:
        shares[max((i for i in range(count) if shares[i] > 1), key=lambda i: shares[i] - ideal[i])] -= 1
    return shares


def select_even(
    distance: Callable[[int, int], float], samples: int, count: int, forced: set[int], window: int = 8,
    thresholds: int = 32,
) -> list[int]:
    """Pick `count` of `samples` ordered frames so the picks' jump ratio (largest gap / mean gap) is lowest.

    The first and last sample and every index in `forced` (keyframes) are always
    picked; a step may skip at most `window - 1` samples and never a forced one.
    `distance(i, j)` is the gap between samples i < j; it need not be additive (a
    walk that wanders has D(i, k) < D(i, j) + D(j, k)), which is why picks are judged
    by their own gaps, not by distances summed along the samples.

    J = max / mean is not a sum over steps, so it is minimised in two parts: for a cap
    T on the largest gap, dynamic programming finds the picks with the longest total
    (the largest mean) whose gaps all stay under T; T runs over the measured gaps from
    the smallest cap that is feasible (found by bisection: feasibility only grows with
    T) upwards, `thresholds` values in all, and the picks with the lowest J win.
    """
    if not 2 <= count <= samples:
        raise ValueError(f"cannot pick {count} of {samples} samples")
    forced = set(forced) | {0, samples - 1}
    if len(forced) > count:
        raise ValueError(f"{len(forced)} forced samples do not fit in {count}")
    next_forced = [0] * samples  # the first forced index >= i
    upcoming = samples - 1
    for index in range(samples - 1, -1, -1):
        if index in forced:
            upcoming = index
        next_forced[index] = upcoming
    # gaps[j, w]: distance from sample j - w to sample j (nan where that step is not allowed).
    gaps = np.full((samples, window + 1), np.nan)
    for j in range(1, samples):
        for w in range(1, min(window, j) + 1):
            if next_forced[j - w + 1] >= j:  # the step skips no forced sample
                gaps[j, w] = float(distance(j - w, j))

    def longest(cap: float) -> list[int] | None:
        """Picks with all gaps <= cap and the longest total, or None if there are none."""
        value = np.where(np.nan_to_num(gaps, nan=np.inf) <= cap, np.nan_to_num(gaps), -np.inf)
        total = np.full(samples, -np.inf)
        total[0] = 0.0
        came = np.zeros((count, samples), dtype=np.int64)
        for k in range(1, count):
            best, step = np.full(samples, -np.inf), np.zeros(samples, dtype=np.int64)
            for w in range(1, window + 1):
                candidate = np.full(samples, -np.inf)
                candidate[w:] = total[:-w] + value[w:, w]
                better = candidate > best
                best, step = np.where(better, candidate, best), np.where(better, w, step)
            total, came[k] = best, step
        if not np.isfinite(total[-1]):
            return None
        picks = [samples - 1]
        for k in range(count - 1, 0, -1):
            picks.append(picks[-1] - int(came[k][picks[-1]]))
        return picks[::-1]

    caps = np.unique(gaps[np.isfinite(gaps)])
    low, high = 0, len(caps) - 1
    if caps.size == 0 or longest(caps[high]) is None:
        raise ValueError(f"no way to pick {count} of {samples} samples within a window of {window}")
    while low < high:  # the smallest feasible cap
        middle = (low + high) // 2
        low, high = (low, middle) if longest(caps[middle]) is not None else (middle + 1, high)
    best_picks, best_j = None, np.inf
    for index in np.unique(np.linspace(low, len(caps) - 1, thresholds).round().astype(int)):
        picks = longest(caps[index])
        steps = [float(gaps[j, j - i]) for i, j in zip(picks, picks[1:])]
        mean = sum(steps) / len(steps)
        jump = max(steps) / mean if mean > 0 else 1.0
        if jump < best_j - 1e-12:
            best_picks, best_j = picks, jump
    return best_picks
