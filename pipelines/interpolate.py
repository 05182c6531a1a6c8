"""Interpolation between latents and embeddings (how t is placed: `pipelines.timing`).

Small pure torch functions: tensors in, tensors out, no global state. Arithmetic is
done in float32 (half precision loses the angle between nearly parallel vectors;
float64 inputs stay float64) and the result is cast back to the input's dtype on
the input's device.

slerp follows Shoemake, "Animating rotation with quaternion curves" (SIGGRAPH 1985),
applied globally to the whole flattened tensor: a diffusion latent is one point on a
high-dimensional sphere, so normalising rows separately would bend the path.
"""

from __future__ import annotations

import torch

# Above this |cos(angle)| the inputs are treated as parallel (or opposite) and slerp
# falls back to lerp: sin(angle) is then too small to divide by safely.
PARALLEL_THRESHOLD = 0.9995


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_t(t: float | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """t as a tensor of shape () or (n,)."""
    t = torch.as_tensor(t).to(dtype)
    if t.ndim > 1:
        raise ValueError(f"t must be a number or a 1-D tensor, got shape {tuple(t.shape)}")
    return t


def _broadcast(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weights of shape () or (n,) -> shape () or (n, 1, 1, ...) to scale tensors like `like`."""
    return weights.reshape(weights.shape + (1,) * like.ndim)


def _fix_endpoints(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Make t == 0 return exactly `a` and t == 1 exactly `b`, whatever float rounding did."""
    if t.ndim == 0:
        if t.item() == 0.0:
            return a.clone()
        if t.item() == 1.0:
            return b.clone()
        return out
    out = out.clone()
    out[t == 0.0] = a
    out[t == 1.0] = b
    return out


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 - t) * a + t * b.

    `t` is a number (result shaped like `a`) or a 1-D tensor of n values (result
    shaped (n, *a.shape)). Computed in float32, returned in `a`'s dtype and device.
    """
    if a.shape != b.shape:
        raise ValueError(f"lerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    work = _work_dtype(a.dtype)
    t = _as_t(t, work).to(a.device)
    a32, b32 = a.to(work), b.to(work)
    tt = _broadcast(t, a32)
    out = ((1.0 - tt) * a32 + tt * b32).to(a.dtype)
    return _fix_endpoints(out, a, b, t)


def slerp(
    a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, threshold: float = PARALLEL_THRESHOLD
) -> torch.Tensor:
    """Spherical linear interpolation over the whole flattened tensor.

    Moves along the great circle from `a` to `b` at constant angular speed; with
    equal-norm inputs the norm is kept all along (Gaussian noise stays Gaussian-
    looking, where lerp would shrink it mid-way). When the inputs are nearly
    parallel or opposite (|cos| > threshold), or one is zero, the angle is
    ill-defined and the result is lerp with the weights (1 - t) on `a` and t on `b`.

    `t` is a number (result shaped like `a`) or a 1-D tensor of n values (result
    shaped (n, *a.shape)). Exact at t = 0 and t = 1. Computed in float32, returned
    in `a`'s dtype and device.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    work = _work_dtype(a.dtype)
    t = _as_t(t, work).to(a.device)
    a32, b32 = a.to(work), b.to(work)
    norm_a, norm_b = a32.norm(), b32.norm()
    denominator = norm_a * norm_b
    if denominator.item() == 0.0:
        return lerp(a, b, t)
    cos = ((a32 * b32).sum() / denominator).clamp(-1.0, 1.0)
    if cos.abs().item() > threshold:
        return lerp(a, b, t)
    theta = torch.acos(cos)
    sin_theta = torch.sin(theta)
    weight_a = _broadcast(torch.sin((1.0 - t) * theta) / sin_theta, a32)
    weight_b = _broadcast(torch.sin(t * theta) / sin_theta, a32)
    out = (weight_a * a32 + weight_b * b32).to(a.dtype)
    return _fix_endpoints(out, a, b, t)


def interpolate(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, method: str) -> torch.Tensor:
    """`slerp` or `lerp` by name."""
    if method == "slerp":
        return slerp(a, b, t)
    if method == "lerp":
        return lerp(a, b, t)
    raise ValueError(f"interp must be 'slerp' or 'lerp', got {method!r}")
