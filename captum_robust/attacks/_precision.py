"""Half-precision inputs in the attack loop: loss-scaled backward passes, and
iterates rounded to the input's dtype without leaving the ball."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Per-sample loss scaling of float16 backward passes (see input_gradients).
_SCALE_TRIES = 6
_SCALE_JUMP = 256.0
# A largest scaled gradient below this is (partly) in float16's subnormal range,
# where precision is lost: the sample is retried at a larger scale.
_SCALE_FLOOR = 2.0**-4
_MIN_SCALE, _MAX_SCALE = 2.0**-100, 2.0**100


def input_gradients(
    loss: Tensor, xg: tuple[Tensor, ...], optimizer: dict[str, Any]
) -> tuple[Tensor, ...]:
    """Gradient of the per-sample ``loss`` (n,) with respect to ``xg``.

    A float16 backward pass overflows above 65504 and flushes below 6e-8,
    which zeroed every update of the manipulation attack (its weights are
    1e11 and 1e6). There each sample's loss is scaled by its own power of two
    before the backward pass and the gradient unscaled after it, in float32,
    as mixed-precision training does: a sample whose gradient overflowed is
    retried at a 256x smaller scale, one whose largest gradient fell below
    2^-4 (towards the subnormal range, or to zero) at a 256x larger one, and
    after each step the scale is set so that the largest scaled gradient is
    about 2^10. Sign and Adam steps depend only on the unscaled gradient, so
    the scale changes the attack only through float16 rounding. The scale is
    kept in ``optimizer["scale"]`` from one step to the next.
    """
    if not any(t.dtype == torch.float16 for t in xg):
        grads = torch.autograd.grad(loss.sum(), xg, allow_unused=True)
        return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, xg))
    n = loss.shape[0]
    scale = optimizer.get("scale")
    if scale is None:
        scale = torch.ones(n, dtype=torch.float32, device=loss.device)
    loss = loss.float()
    kept: tuple[Tensor, ...] | None = None
    peak = scale
    retry = torch.ones(n, dtype=torch.bool, device=loss.device)
    for _ in range(_SCALE_TRIES):
        raw = torch.autograd.grad(
            (loss * scale).sum(), xg, allow_unused=True, retain_graph=True
        )
        raw = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(raw, xg))
        grads = tuple(g.float() / scale.view(-1, *([1] * (g.dim() - 1))) for g in raw)
        amax = torch.stack([g.float().abs().flatten(1).amax(dim=1) for g in raw]).amax(
            dim=0
        )
        if kept is None:
            kept, peak = grads, amax
        else:
            kept = tuple(
                torch.where(retry.view(-1, *([1] * (g.dim() - 1))), g, k)
                for g, k in zip(grads, kept)
            )
            peak = torch.where(retry, amax, peak)
        overflow = ~torch.isfinite(amax)
        vanished = (amax < _SCALE_FLOOR) & (scale < _MAX_SCALE)
        retry = retry & (overflow | vanished)
        scale = torch.where(
            overflow,
            scale / _SCALE_JUMP,
            torch.where(vanished, scale * _SCALE_JUMP, scale),
        ).clamp(_MIN_SCALE, _MAX_SCALE)
        if not bool(retry.any()):
            break
    assert kept is not None
    # Aim the next step's largest scaled gradient at 2^10, by a power of two
    # (exact to unscale), at most 2^8 per step.
    finite = torch.isfinite(peak) & (peak > 0)
    shift = (10 - torch.log2(peak.clamp_min(1e-30))).floor().clamp(-8, 8)
    optimizer["scale"] = torch.where(finite, scale * torch.exp2(shift), scale).clamp(
        _MIN_SCALE, _MAX_SCALE
    )
    # A sample that still overflowed makes no move this step.
    bad = ~torch.isfinite(peak)
    return tuple(g.masked_fill(bad.view(-1, *([1] * (g.dim() - 1))), 0.0) for g in kept)


def in_input_dtype(
    x: tuple[Tensor, ...],
    x0: tuple[Tensor, ...],
    eps: float,
    lower: float,
    upper: float,
) -> tuple[Tensor, ...]:
    """Iterates cast to the input's dtype, still inside the ball and bounds.

    Rounding to half precision can land one spacing outside the ball or the
    bounds; such entries move one representable value towards the input.
    """
    out = []
    for t, t0 in zip(x, x0):
        if t.dtype == t0.dtype:
            out.append(t)
            continue
        cast = t.to(t0.dtype)
        wide = cast.to(t.dtype)
        outside = (
            ((wide - t0.to(t.dtype)).abs() > eps) | (wide < lower) | (wide > upper)
        )
        out.append(torch.where(outside, torch.nextafter(cast, t0), cast))
    return tuple(out)
