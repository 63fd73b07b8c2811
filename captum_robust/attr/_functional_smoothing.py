"""Smoothing of functional ReLU-family calls inside a surrogate's forward pass.

A module swap cannot reach ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their
relatives called in a ``forward`` (DenseNet, GoogLeNet, Inception). A
``TorchFunctionMode`` around the surrogate's forward pass replaces them by the
smooth forms of :mod:`captum_robust.attr._smooth_activations` and, on the first
pass, counts the piecewise-linear and max-pooling calls it leaves for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from captum_robust.attr._smooth_activations import smooth_hardsigmoid
from captum_robust.attr._smooth_activations import smooth_hardtanh
from captum_robust.attr._smooth_activations import softplus
from captum_robust.attr._surrogate_report import SurrogateState

__all__ = ["FunctionalMode", "RELU_FAMILY"]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _in_place(x: Tensor, value: Tensor) -> Tensor:
    # The original call wrote into x and callers may ignore the return value, so
    # the smooth value is written there too. It is computed from a clone: the
    # softplus saves its input for backward, which the write would invalidate.
    return x.copy_(value)


def _relu_like(inplace_always: bool) -> Callable[..., Tensor]:
    def smooth(state: SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        inplace = inplace_always or bool(_arg(args, kwargs, 1, "inplace", False))
        if inplace:
            return _in_place(x, softplus(x.clone(), state.beta, 20.0))
        return softplus(x, state.beta, 20.0)

    return smooth


def _leaky_like(inplace_always: bool) -> Callable[..., Tensor]:
    def smooth(state: SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        a = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        inplace = inplace_always or bool(_arg(args, kwargs, 2, "inplace", False))
        src = x.clone() if inplace else x
        value = a * src + (1.0 - a) * softplus(src, state.leaky_beta, 20.0)
        return _in_place(x, value) if inplace else value

    return smooth


def _hardtanh_like(inplace_always: bool, relu6: bool = False) -> Callable[..., Tensor]:
    def smooth(state: SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        if relu6:
            lo, hi = 0.0, 6.0
            inplace = bool(_arg(args, kwargs, 1, "inplace", False))
        else:
            lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
            hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
            inplace = bool(_arg(args, kwargs, 3, "inplace", False))
        inplace = inplace or inplace_always
        src = x.clone() if inplace else x
        value = smooth_hardtanh(src, lo, hi, state.beta)
        return _in_place(x, value) if inplace else value

    return smooth


def _hard_gate(inplace_always: bool, swish: bool) -> Callable[..., Tensor]:
    def smooth(state: SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        inplace = inplace_always or bool(_arg(args, kwargs, 1, "inplace", False))
        src = x.clone() if inplace else x
        value = smooth_hardsigmoid(src, state.beta)
        if swish:
            value = src * value
        return _in_place(x, value) if inplace else value

    return smooth


_nn = torch._C._nn

# ReLU-family functions: smoothed with smooth_functional=True, else reported.
# F.relu, F.leaky_relu, ... dispatch through __torch_function__ under their
# Python names; the rest are builtins (F.leaky_relu_ is _nn.leaky_relu_).
_SMOOTHABLE: dict[Any, tuple[str, Callable[..., Tensor]]] = {
    F.relu: ("torch.nn.functional.relu", _relu_like(False)),
    F.relu_: ("torch.nn.functional.relu_", _relu_like(True)),
    torch.relu: ("torch.relu", _relu_like(False)),
    torch.relu_: ("torch.relu_", _relu_like(True)),
    Tensor.relu: ("Tensor.relu", _relu_like(False)),
    Tensor.relu_: ("Tensor.relu_", _relu_like(True)),
    F.leaky_relu: ("torch.nn.functional.leaky_relu", _leaky_like(False)),
    _nn.leaky_relu: ("torch._C._nn.leaky_relu", _leaky_like(False)),
    _nn.leaky_relu_: ("torch.nn.functional.leaky_relu_", _leaky_like(True)),
    F.relu6: ("torch.nn.functional.relu6", _hardtanh_like(False, relu6=True)),
    _nn.relu6: ("torch._C._nn.relu6", _hardtanh_like(False, relu6=True)),
    _nn.relu6_: ("torch._C._nn.relu6_", _hardtanh_like(True, relu6=True)),
    F.hardtanh: ("torch.nn.functional.hardtanh", _hardtanh_like(False)),
    _nn.hardtanh: ("torch._C._nn.hardtanh", _hardtanh_like(False)),
    _nn.hardtanh_: ("torch.nn.functional.hardtanh_", _hardtanh_like(True)),
    F.hardsigmoid: ("torch.nn.functional.hardsigmoid", _hard_gate(False, False)),
    _nn.hardsigmoid: ("torch._C._nn.hardsigmoid", _hard_gate(False, False)),
    _nn.hardsigmoid_: ("torch._C._nn.hardsigmoid_", _hard_gate(True, False)),
    F.hardswish: ("torch.nn.functional.hardswish", _hard_gate(False, True)),
    _nn.hardswish: ("torch._C._nn.hardswish", _hard_gate(False, True)),
    _nn.hardswish_: ("torch._C._nn.hardswish_", _hard_gate(True, True)),
}


def _names(owner: Any, prefix: str, names: tuple[str, ...]) -> dict[Any, str]:
    found = {}
    for name in names:
        func = getattr(owner, name, None)
        if func is not None:
            found[func] = f"{prefix}.{name}"
    return found


_CLAMPS = ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_")
_CLAMPS += ("clamp_max", "clamp_max_", "maximum", "minimum", "fmax", "fmin")
_PIECEWISE_CALLS: dict[Any, str] = {
    **_names(torch, "torch", _CLAMPS + ("threshold", "threshold_", "prelu")),
    **_names(torch, "torch", ("hardshrink", "rrelu", "rrelu_")),
    **_names(Tensor, "Tensor", _CLAMPS + ("hardshrink", "prelu")),
    **_names(
        F,
        "torch.nn.functional",
        ("threshold", "threshold_", "prelu", "rrelu", "rrelu_", "hardshrink"),
    ),
    **_names(F, "torch.nn.functional", ("softshrink",)),
}
_MAX_POOLING_CALLS: dict[Any, str] = {
    **_names(
        F,
        "torch.nn.functional",
        tuple(
            f"{kind}{d}d{suffix}"
            for kind in ("max_pool", "adaptive_max_pool")
            for d in (1, 2, 3)
            for suffix in ("", "_with_indices")
        )
        + tuple(
            f"fractional_max_pool{d}d{suffix}"
            for d in (2, 3)
            for suffix in ("", "_with_indices")
        ),
    ),
    **_names(
        torch,
        "torch",
        ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices"),
    ),
}


class FunctionalMode(TorchFunctionMode):
    """Smooths ReLU-family calls and, when recording, counts the others."""

    def __init__(self, state: SurrogateState, record: bool) -> None:
        super().__init__()
        self.state = state
        self.record = record
        self.depth = 0  # > 0 inside a kept piecewise module: its calls are counted
        self.smoothed: dict[str, int] = {}
        self.piecewise: dict[str, int] = {}
        self.pooling: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            entry = _SMOOTHABLE.get(func)
        except TypeError:  # unhashable callables are never activations
            return func(*args, **kwargs)
        if entry is not None:
            name, smooth = entry
            if self.state.smooth_functional:
                if self.record:
                    self.smoothed[name] = self.smoothed.get(name, 0) + 1
                return smooth(self.state, args, kwargs)
            if self.record and self.depth == 0:
                self.piecewise[name] = self.piecewise.get(name, 0) + 1
        elif self.record and self.depth == 0:
            name = _PIECEWISE_CALLS.get(func)
            if name is not None:
                self.piecewise[name] = self.piecewise.get(name, 0) + 1
            else:
                name = _MAX_POOLING_CALLS.get(func)
                if name is not None:
                    self.pooling[name] = self.pooling.get(name, 0) + 1
        return func(*args, **kwargs)


# The names of the ReLU-family calls, which smooth_functional=True would smooth.
RELU_FAMILY = frozenset(name for name, _ in _SMOOTHABLE.values())
