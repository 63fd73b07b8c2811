"""Second-order passes through torchvision models.

Attacks and regularizers differentiate an input gradient a second time. Two things
in torchvision models have no double backward in torch 2.x:

- ``hardsigmoid`` / ``hardswish`` (MobileNetV3's activations and squeeze-excitation
  gates): ``aten::hardsigmoid_backward`` has no derivative. ``relu6(x + 3) / 6`` is
  the same function and is twice differentiable almost everywhere.
- the fused scaled-dot-product attention kernels (ViT, Swin's attention goes
  through ``F.scaled_dot_product_attention`` in ``nn.MultiheadAttention``): only
  the math kernel has a double backward.

:func:`second_order_safe` handles both for the body of a ``with`` statement
without touching the user's model: the activations are rerouted at the
``__torch_function__`` level (so module and functional calls alike are covered),
and the attention backend is pinned to the math kernel; both are restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend
from torch.nn.attention import sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.overrides import _get_current_function_mode_stack

__all__ = ["second_order_safe", "twice_differentiable_hardsigmoid"]


def twice_differentiable_hardsigmoid(x: Tensor) -> Tensor:
    """``hardsigmoid(x)`` as ``relu6(x + 3) / 6``, which has a double backward."""
    return F.relu6(x + 3.0) / 6.0


def _hardsigmoid(x: Tensor, inplace: bool = False) -> Tensor:
    # Out of place even when asked in place: an in-place write would overwrite the
    # input that the double backward needs. nn.Hardsigmoid uses the return value.
    return twice_differentiable_hardsigmoid(x)


def _hardswish(x: Tensor, inplace: bool = False) -> Tensor:
    return x * twice_differentiable_hardsigmoid(x)


_REPLACEMENTS: dict[Any, Any] = {
    F.hardsigmoid: _hardsigmoid,
    F.hardswish: _hardswish,
}


class _TwiceDifferentiableActivations(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        try:
            replacement = _REPLACEMENTS.get(func)
        except TypeError:  # unhashable callables are never replaced
            replacement = None
        if replacement is not None:
            return replacement(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextmanager
def second_order_safe() -> Iterator[None]:
    """Run the body with double-differentiable activations and math attention.

    Nothing of the user's model changes; the global attention backend selection is
    restored on exit, normal or by an exception.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust._utils.second_order import second_order_safe
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Hardswish(), nn.Linear(4, 1))
    >>> x = torch.randn(2, 3, requires_grad=True)
    >>> with second_order_safe():
    ...     (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    ...     (h,) = torch.autograd.grad(g.square().sum(), x)
    >>> h.shape
    torch.Size([2, 3])
    """
    if any(
        isinstance(mode, _TwiceDifferentiableActivations)
        for mode in _get_current_function_mode_stack()
    ):
        # Already active (an attack's direction around a differentiable
        # attribution): a second mode would route every op through Python twice.
        # The check is on the live stack, not on lexical nesting: inside a mode's
        # handler (e.g. a custom Function's backward run by a rerouted
        # ``torch.autograd.grad``) the mode is off and must be pushed again.
        yield
        return
    with _TwiceDifferentiableActivations(), sdpa_kernel(SDPBackend.MATH):
        yield
