"""L-inf balls: radii and bounds checked, projection, and sign-gradient ascent.

Shared by the regularizers' inner maximisations and the prediction adversary of
:mod:`captum_robust.attacks`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_robust._utils.validation import check_number

Radius = float | Tensor
Bounds = tuple[float | Tensor, float | Tensor]


def check_radius(value: object, name: str) -> Radius:
    """A non-negative number, or a non-negative Tensor broadcast against the inputs."""
    if isinstance(value, Tensor):
        if not value.dtype.is_floating_point:
            raise TypeError(f"`{name}` must be a float or a floating Tensor.")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"`{name}` must be finite and non-negative.")
        return value.detach()
    value = check_number(value, name, minimum=0.0)
    if value == float("inf"):
        raise ValueError(f"`{name}` must be finite.")
    return value


def check_bounds_pair(value: object) -> Bounds | None:
    """``bounds``: None, or a pair (low, high) of numbers or floating Tensors."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            "`bounds` must be None or a pair (low, high) of numbers or Tensors, got "
            f"{value!r}."
        )
    low, high = value
    for i, b in enumerate((low, high)):
        if isinstance(b, Tensor):
            if not b.dtype.is_floating_point:
                raise TypeError(f"`bounds[{i}]` must be a float or a floating Tensor.")
        else:
            check_number(b, f"bounds[{i}]")
    if not isinstance(low, Tensor) and not isinstance(high, Tensor) and low > high:
        raise ValueError(f"`bounds` must have low <= high, got {tuple(value)}.")
    if isinstance(low, Tensor) or isinstance(high, Tensor):
        if bool((torch.as_tensor(low) > torch.as_tensor(high)).any()):
            raise ValueError("`bounds` must have low <= high everywhere.")
    return (
        low.detach() if isinstance(low, Tensor) else float(low),
        high.detach() if isinstance(high, Tensor) else float(high),
    )


def as_like(value: Radius, like: Tensor) -> float | Tensor:
    """Numbers stay numbers (cheapest in arithmetic); Tensors move to `like`."""
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=like.dtype)
    return value


def project(
    adv: Tensor, x: Tensor, eps: float | Tensor, bounds: Bounds | None
) -> Tensor:
    """Into the L-inf ball of radius eps around x, then into the bounds."""
    adv = torch.clamp(adv, x - eps, x + eps)
    if bounds is not None:
        low, high = bounds
        if isinstance(low, Tensor) or isinstance(high, Tensor):
            adv = torch.clamp(adv, as_like(low, x), as_like(high, x))
        else:
            adv = adv.clamp(low, high)
    return adv


def pgd_ascent(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    bounds: Bounds | None,
    random_start: Tensor | None,
    step_mask: Tensor | None = None,
) -> Tensor:
    """Sign-gradient ascent of ``objective(adv)`` (a scalar) in the eps-ball.

    ``random_start`` holds U[0, 1) draws shaped like ``x`` (None: start at x).
    Only gradients with respect to ``adv`` are taken, so no parameter's ``.grad``
    is touched.
    """
    if random_start is not None:
        start = (2.0 * random_start - 1.0) * eps
        if step_mask is not None:
            start = start * step_mask
        adv = project(x + start, x, eps, bounds)
    else:
        adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(adv), adv)
        step = grad.sign()
        if step_mask is not None:
            step = step * step_mask
        adv = project(adv.detach() + step_size * step, x, eps, bounds)
    return adv.detach()


__all__ = [
    "Bounds",
    "Radius",
    "as_like",
    "check_bounds_pair",
    "check_radius",
    "pgd_ascent",
    "project",
]
