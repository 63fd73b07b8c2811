"""Softplus surrogates of piecewise-linear networks, for second-order gradients.

A ReLU network is piecewise linear, so the gradient of a gradient-based attribution
with respect to the input is zero almost everywhere. Attacks on attributions therefore
compute their direction on a copy in which every ReLU is replaced by a softplus
(REFERENCES section 1); the attack is then scored on the real network.

What becomes what, with ``sp(x) = softplus(beta * x) / beta`` (``nn.Softplus(beta)``)
and ``sp_l`` the same with ``leaky_beta``:

* ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``: ``sp(x)``.
* ``nn.LeakyReLU(a)``, ``F.leaky_relu``: ``a x + (1 - a) sp_l(x)``
  (:class:`LeakySoftplus`).
* ``nn.Hardtanh(lo, hi)``, ``F.hardtanh``: ``lo + sp(x - lo) - sp(x - hi)``
  (:class:`SmoothHardtanh`).
* ``nn.ReLU6``, ``F.relu6``: ``sp(x) - sp(x - 6)`` (``SmoothHardtanh(0, 6)``).
* ``nn.Hardsigmoid``, ``F.hardsigmoid``: ``(sp(x + 3) - sp(x - 3)) / 6``
  (:class:`SmoothHardsigmoid`).
* ``nn.Hardswish``, ``F.hardswish``: ``x (sp(x + 3) - sp(x - 3)) / 6``
  (:class:`SmoothHardswish`).

Each is ``relu(x) -> sp(x)`` applied to the identities
``hardtanh(x) = lo + relu(x - lo) - relu(x - hi)``, ``relu6(x) = hardtanh(x, 0, 6)``,
``hardsigmoid(x) = relu6(x + 3) / 6`` and ``hardswish(x) = x hardsigmoid(x)``, so it
tends to the original as ``beta -> inf`` and is twice differentiable everywhere.
Already smooth activations (SiLU, GELU, Sigmoid, Tanh, Softplus, ...) are kept.
"""

from __future__ import annotations

import copy
import itertools
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from captum_robust._utils.validation import check_number

__all__ = [
    "FunctionalReLUWarning",
    "LeakySoftplus",
    "PiecewiseLinearWarning",
    "SmoothHardsigmoid",
    "SmoothHardswish",
    "SmoothHardtanh",
    "SurrogateReport",
    "softplus_activations",
    "softplus_surrogate",
    "surrogate_report",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class PiecewiseLinearWarning(UserWarning):
    """A softplus surrogate stays piecewise linear somewhere.

    Issued once per surrogate, after its first forward pass, when the network
    still holds piecewise-linear activations that the surrogate does not smooth:
    modules such as ``nn.PReLU``, ``nn.Threshold`` or ``nn.Hardshrink``, or
    functional calls such as ``torch.clamp`` or ``torch.maximum``. Second
    derivatives through them vanish almost everywhere. The message lists them;
    :func:`surrogate_report` returns the same facts as data. Max pooling is
    reported but does not warn: it selects, and second derivatives through a
    network whose activations are smooth do not vanish because of it.

    Examples
    --------
    >>> import warnings
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import PiecewiseLinearWarning, softplus_surrogate
    >>> net = nn.Sequential(nn.Linear(3, 3), nn.PReLU(), nn.Linear(3, 2))
    >>> smooth = softplus_surrogate(net)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = smooth(torch.randn(2, 3))
    >>> [w.category.__name__ for w in caught]
    ['PiecewiseLinearWarning']
    """


class FunctionalReLUWarning(PiecewiseLinearWarning):
    """A surrogate's forward pass calls a piecewise-linear function it cannot smooth.

    The :class:`PiecewiseLinearWarning` issued when functional calls are among
    the parts that stay piecewise linear: ``torch.clamp`` / ``clamp_min`` /
    ``clip``, ``torch.maximum`` / ``minimum``, ``F.threshold``, ``F.prelu``, ...,
    and the ReLU family itself (``F.relu``, ``torch.relu``, ``Tensor.relu``,
    ``F.leaky_relu``, ``F.relu6``, ``F.hardtanh``, ``F.hardsigmoid``,
    ``F.hardswish`` and their in-place forms) when the surrogate was built with
    ``smooth_functional=False``. By default those ReLU-family calls are smoothed
    and not reported as piecewise.

    Examples
    --------
    >>> import warnings
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import FunctionalReLUWarning, softplus_surrogate
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(3, 3)
    ...     def forward(self, x):
    ...         return torch.clamp(self.fc(x), min=0.0)  # a ReLU in disguise
    >>> smooth = softplus_surrogate(Net())
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = smooth(torch.randn(2, 3))
    >>> [w.category.__name__ for w in caught]
    ['FunctionalReLUWarning']
    """


def _softplus(x: Tensor, beta: float, threshold: float) -> Tensor:
    return F.softplus(x, beta=beta, threshold=threshold)


class LeakySoftplus(nn.Module):
    r"""Smooth version of ``nn.LeakyReLU``.

    .. math::
        f(x) = a\,x + (1 - a)\,\frac{\operatorname{softplus}(\beta x)}{\beta}

    with ``a = negative_slope``. For ``x -> -inf`` the slope tends to ``a``, for
    ``x -> +inf`` to 1, and ``f`` tends to ``LeakyReLU(a)`` as ``beta -> inf``.
    With ``negative_slope=0.1, beta=1`` this is ``0.1 x + 0.9 softplus(x)``, the
    surrogate used by Chen et al. (GTSRB) and Sarkar et al.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Slope ``a`` for negative inputs, as in ``nn.LeakyReLU``.
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        Above ``beta * x > threshold`` the softplus is computed as the identity, as
        in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import LeakySoftplus
    >>> act = LeakySoftplus(0.1, beta=1.0)
    >>> x = torch.tensor([-2.0, 0.0, 3.0])
    >>> torch.allclose(act(x), 0.1 * x + 0.9 * torch.nn.functional.softplus(x))
    True
    """

    def __init__(
        self, negative_slope: float = 0.01, beta: float = 10.0, threshold: float = 20.0
    ) -> None:
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope")
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        a = self.negative_slope
        return a * input + (1.0 - a) * _softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return (
            f"negative_slope={self.negative_slope}, beta={self.beta}, "
            f"threshold={self.threshold}"
        )


class SmoothHardtanh(nn.Module):
    r"""Smooth version of ``nn.Hardtanh`` (and of ``nn.ReLU6``).

    .. math::
        f(x) = l + \mathrm{sp}(x - l) - \mathrm{sp}(x - h),
        \qquad \mathrm{sp}(x) = \operatorname{softplus}(\beta x) / \beta,

    with ``l = min_val`` and ``h = max_val``: the identity
    ``hardtanh(x) = l + relu(x - l) - relu(x - h)`` with each ReLU replaced by a
    softplus. It tends to ``l`` for ``x -> -inf`` and to ``h`` for ``x -> +inf``,
    and to ``Hardtanh(l, h)`` as ``beta -> inf``.
    ``SmoothHardtanh(0, 6)`` replaces ``nn.ReLU6``.

    Parameters
    ----------
    min_val, max_val : float, default -1.0, 1.0
        The bounds ``l < h``, as in ``nn.Hardtanh``.
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        As in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardtanh
    >>> relu6 = SmoothHardtanh(0.0, 6.0, beta=100.0)
    >>> x = torch.tensor([-3.0, 2.0, 9.0])
    >>> torch.allclose(relu6(x), torch.nn.functional.relu6(x), atol=1e-6)
    True
    """

    def __init__(
        self,
        min_val: float = -1.0,
        max_val: float = 1.0,
        beta: float = 10.0,
        threshold: float = 20.0,
    ) -> None:
        super().__init__()
        self.min_val = check_number(min_val, "min_val")
        self.max_val = check_number(max_val, "max_val")
        if not self.max_val > self.min_val:
            raise ValueError(
                f"`max_val` must be > `min_val`, got {self.max_val} <= {self.min_val}."
            )
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        return _smooth_hardtanh(
            input, self.min_val, self.max_val, self.beta, self.threshold
        )

    def extra_repr(self) -> str:
        return (
            f"min_val={self.min_val}, max_val={self.max_val}, beta={self.beta}, "
            f"threshold={self.threshold}"
        )


def _smooth_hardtanh(
    x: Tensor, lo: float, hi: float, beta: float, threshold: float = 20.0
) -> Tensor:
    return lo + _softplus(x - lo, beta, threshold) - _softplus(x - hi, beta, threshold)


def _smooth_hardsigmoid(x: Tensor, beta: float, threshold: float = 20.0) -> Tensor:
    return _smooth_hardtanh(x, -3.0, 3.0, beta, threshold).add(3.0).div(6.0)


class SmoothHardsigmoid(nn.Module):
    r"""Smooth version of ``nn.Hardsigmoid``.

    .. math::
        f(x) = \frac{\mathrm{sp}(x + 3) - \mathrm{sp}(x - 3)}{6},
        \qquad \mathrm{sp}(x) = \operatorname{softplus}(\beta x) / \beta,

    i.e. ``hardsigmoid(x) = relu6(x + 3) / 6`` with :class:`SmoothHardtanh` for
    the ``relu6``. MobileNetV3's squeeze-excitation gates use it; unlike
    ``nn.Hardsigmoid`` it has a double backward.

    Parameters
    ----------
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        As in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardsigmoid
    >>> x = torch.tensor([-5.0, 0.0, 1.5, 5.0])
    >>> torch.allclose(SmoothHardsigmoid(beta=100.0)(x), torch.nn.Hardsigmoid()(x))
    True
    """

    def __init__(self, beta: float = 10.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        return _smooth_hardsigmoid(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class SmoothHardswish(SmoothHardsigmoid):
    r"""Smooth version of ``nn.Hardswish``: ``x`` times :class:`SmoothHardsigmoid`.

    .. math::
        f(x) = x\,\frac{\mathrm{sp}(x + 3) - \mathrm{sp}(x - 3)}{6}

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardswish
    >>> x = torch.tensor([-5.0, -1.0, 0.5, 5.0])
    >>> torch.allclose(SmoothHardswish(beta=100.0)(x), torch.nn.Hardswish()(x))
    True
    """

    def forward(self, input: Tensor) -> Tensor:
        return input * _smooth_hardsigmoid(input, self.beta, self.threshold)


# --------------------------------------------------------------------- report


@dataclass(frozen=True)
class SurrogateReport:
    """What :func:`softplus_surrogate` / :func:`softplus_activations` did to a model.

    Every field maps a name to a count. Module counts are per module instance
    (a shared activation counts once); call counts are the calls seen during the
    surrogate's first forward pass.

    Attributes
    ----------
    replaced : dict of str to int
        Activation modules replaced, by original type (``{"ReLU": 3, ...}``).
    smoothed_calls : dict of str to int
        Functional ReLU-family calls smoothed on the first forward pass
        (``{"torch.nn.functional.relu": 5}``: DenseNet, GoogLeNet, Inception).
    kept_smooth : dict of str to int
        Activation modules kept because their second derivatives do not vanish
        (SiLU, GELU, Sigmoid, Tanh, Softplus, Mish, ELU, ...).
    piecewise_modules : dict of str to int
        Piecewise-linear activation modules kept as they are (PReLU, RReLU,
        Threshold, Hardshrink, Softshrink).
    piecewise_calls : dict of str to int
        Piecewise-linear functional calls seen on the first forward pass and kept
        (``torch.clamp``, ``torch.maximum``, ``F.threshold``, ..., and the ReLU
        family when ``smooth_functional=False``); calls made inside the modules
        of ``piecewise_modules`` are not counted again.
    max_pooling : dict of str to int
        Max-pooling modules and functional calls: piecewise linear, but a
        selection; reported without a warning.
    checked : bool
        Whether a forward pass has been observed; the call fields are empty until
        then (and stay empty with ``check_functional=False``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import softplus_surrogate, surrogate_report
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2),
    ...                     nn.Flatten(), nn.Linear(2, 2), nn.SiLU())
    >>> smooth = softplus_surrogate(net)
    >>> _ = smooth(torch.randn(1, 1, 4, 4))
    >>> report = surrogate_report(smooth)
    >>> report.replaced, report.kept_smooth, report.max_pooling
    ({'ReLU': 1}, {'SiLU': 1}, {'MaxPool2d': 1})
    >>> report.is_smooth
    True
    """

    replaced: dict[str, int] = field(default_factory=dict)
    smoothed_calls: dict[str, int] = field(default_factory=dict)
    kept_smooth: dict[str, int] = field(default_factory=dict)
    piecewise_modules: dict[str, int] = field(default_factory=dict)
    piecewise_calls: dict[str, int] = field(default_factory=dict)
    max_pooling: dict[str, int] = field(default_factory=dict)
    checked: bool = False

    @property
    def is_smooth(self) -> bool:
        """No piecewise-linear activation left (max pooling does not count)."""
        return not self.piecewise_modules and not self.piecewise_calls

    def summary(self) -> str:
        """One line per non-empty field."""

        def fmt(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} x{v}" for k, v in counts.items())

        lines = []
        for label, counts in (
            ("replaced modules", self.replaced),
            ("smoothed calls", self.smoothed_calls),
            ("kept (smooth)", self.kept_smooth),
            ("piecewise-linear modules kept", self.piecewise_modules),
            ("piecewise-linear calls kept", self.piecewise_calls),
            ("max pooling", self.max_pooling),
        ):
            if counts:
                lines.append(f"{label}: {fmt(counts)}")
        if not self.checked:
            lines.append("no forward pass checked yet")
        return "\n".join(lines)


_REPORT = "_captum_robust_surrogate"

_KEPT_SMOOTH = (
    nn.Softplus,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.GLU,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    LeakySoftplus,
    SmoothHardtanh,
    SmoothHardsigmoid,
)
_PIECEWISE_MODULES = (nn.PReLU, nn.RReLU, nn.Threshold, nn.Hardshrink, nn.Softshrink)
_MAX_POOLING_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
)


def surrogate_report(model: nn.Module) -> SurrogateReport:
    """The :class:`SurrogateReport` of a surrogate.

    Parameters
    ----------
    model : nn.Module
        A model returned by :func:`softplus_surrogate`, or the model inside a
        :func:`softplus_activations` body.

    Returns
    -------
    SurrogateReport
        Module fields are filled when the surrogate is built, call fields after
        its first forward pass.

    Raises
    ------
    TypeError
        If ``model`` is not an nn.Module.
    ValueError
        If ``model`` is not a surrogate.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import softplus_surrogate, surrogate_report
    >>> smooth = softplus_surrogate(nn.Sequential(nn.Linear(2, 2), nn.Hardswish()))
    >>> surrogate_report(smooth).replaced
    {'Hardswish': 1}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    state = model.__dict__.get(_REPORT)
    if not isinstance(state, _SurrogateState):
        raise ValueError(
            "`model` is not a softplus surrogate: build one with softplus_surrogate() "
            "or ask inside a softplus_activations() body."
        )
    return state.report


# ------------------------------------------------------- functional smoothing


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
    def smooth(state: _SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        inplace = inplace_always or bool(_arg(args, kwargs, 1, "inplace", False))
        if inplace:
            return _in_place(x, _softplus(x.clone(), state.beta, 20.0))
        return _softplus(x, state.beta, 20.0)

    return smooth


def _leaky_like(inplace_always: bool) -> Callable[..., Tensor]:
    def smooth(state: _SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        a = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        inplace = inplace_always or bool(_arg(args, kwargs, 2, "inplace", False))
        src = x.clone() if inplace else x
        value = a * src + (1.0 - a) * _softplus(src, state.leaky_beta, 20.0)
        return _in_place(x, value) if inplace else value

    return smooth


def _hardtanh_like(inplace_always: bool, relu6: bool = False) -> Callable[..., Tensor]:
    def smooth(state: _SurrogateState, args: tuple, kwargs: dict) -> Tensor:
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
        value = _smooth_hardtanh(src, lo, hi, state.beta)
        return _in_place(x, value) if inplace else value

    return smooth


def _hard_gate(inplace_always: bool, swish: bool) -> Callable[..., Tensor]:
    def smooth(state: _SurrogateState, args: tuple, kwargs: dict) -> Tensor:
        x = args[0]
        inplace = inplace_always or bool(_arg(args, kwargs, 1, "inplace", False))
        src = x.clone() if inplace else x
        value = _smooth_hardsigmoid(src, state.beta)
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


class _SurrogateState:
    """Per-surrogate settings and report, kept in the module's ``__dict__``.

    A plain object (no closures), so that ``copy.deepcopy`` of a surrogate gives
    the copy its own state.
    """

    def __init__(
        self,
        *,
        beta: float,
        leaky_beta: float,
        smooth_functional: bool,
        check: bool,
        strict: bool,
        report: SurrogateReport,
        inner_forward: Any,
    ) -> None:
        self.beta = beta
        self.leaky_beta = leaky_beta
        self.smooth_functional = smooth_functional
        self.check = check
        self.strict = strict
        self.report = report
        self.inner_forward = inner_forward


class _FunctionalMode(TorchFunctionMode):
    """Smooths ReLU-family calls and, when recording, counts the others."""

    def __init__(self, state: _SurrogateState, record: bool) -> None:
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


def _kept_piecewise(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(m, _PIECEWISE_MODULES + _MAX_POOLING_MODULES)
    ]


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _warn_or_raise(model: nn.Module, report: SurrogateReport, strict: bool) -> None:
    parts = []
    if report.piecewise_modules:
        mods = ", ".join(f"{k} x{v}" for k, v in report.piecewise_modules.items())
        parts.append(f"modules {mods}")
    if report.piecewise_calls:
        calls = ", ".join(f"{k} x{v}" for k, v in report.piecewise_calls.items())
        parts.append(f"functional calls {calls} (on the first forward pass)")
    message = (
        f"`model` ({type(model).__name__}) stays piecewise linear in its softplus "
        f"surrogate: {'; '.join(parts)}. Second derivatives through these vanish "
        "almost everywhere. Replace them by smooth modules (or nn.ReLU / "
        "nn.LeakyReLU, which the surrogate smooths"
    )
    relu_family = {name for name, _ in _SMOOTHABLE.values()}
    if any(name in relu_family for name in report.piecewise_calls):
        message += "; or build it with smooth_functional=True"
    message += "); surrogate_report() lists everything the surrogate did."
    if strict:
        raise ValueError(message)
    category = (
        FunctionalReLUWarning if report.piecewise_calls else PiecewiseLinearWarning
    )
    warnings.warn(message, category, stacklevel=5)


def _smooth_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    state: _SurrogateState = self.__dict__[_REPORT]
    record = state.check
    mode = _FunctionalMode(state, record)
    handles = []
    if record:
        state.check = False  # re-armed below if this forward pass fails

        def enter(*_: Any) -> None:
            mode.depth += 1

        def leave(*_: Any) -> None:
            mode.depth -= 1

        for m in _kept_piecewise(self):
            handles.append(m.register_forward_pre_hook(enter))
            handles.append(m.register_forward_hook(leave, always_call=True))
    try:
        with mode:
            # Not self(...): __call__ already ran the module's hooks once.
            if state.inner_forward is not None:
                out = state.inner_forward(*args, **kwargs)
            else:
                out = type(self).forward(self, *args, **kwargs)
    except BaseException:
        if record:
            state.check = True
        raise
    finally:
        for h in handles:
            h.remove()
    if record:
        old = state.report
        state.report = SurrogateReport(
            replaced=old.replaced,
            smoothed_calls=mode.smoothed,
            kept_smooth=old.kept_smooth,
            piecewise_modules=old.piecewise_modules,
            piecewise_calls=mode.piecewise,
            max_pooling=_merge(old.max_pooling, mode.pooling),
            checked=True,
        )
        if not state.report.is_smooth:
            _warn_or_raise(self, state.report, state.strict)
    if not state.smooth_functional and not state.check:
        # Nothing left to do on later passes: they run the plain forward.
        _uninstall(self)
    return out


def _install(module: nn.Module, state: _SurrogateState) -> None:
    existing = module.__dict__.get("forward")
    if existing is not None:
        state.inner_forward = existing
    # A bound method rather than a closure so that deepcopy rebinds it to the copy.
    module.__dict__["forward"] = types.MethodType(_smooth_forward, module)
    module.__dict__[_REPORT] = state


def _uninstall(module: nn.Module, *, keep_report: bool = True) -> None:
    """Remove the forward wrapper (restoring an instance-level forward)."""
    state = module.__dict__.get(_REPORT)
    forward = module.__dict__.get("forward")
    if isinstance(forward, types.MethodType) and forward.__func__ is _smooth_forward:
        del module.__dict__["forward"]
        if isinstance(state, _SurrogateState) and state.inner_forward is not None:
            module.__dict__["forward"] = state.inner_forward
    if not keep_report:
        module.__dict__.pop(_REPORT, None)
    elif isinstance(state, _SurrogateState):
        state.inner_forward = None


def _smooth_replacement(
    module: nn.Module, beta: float, leaky_beta: float
) -> nn.Module | None:
    if isinstance(module, nn.ReLU):
        return nn.Softplus(beta=beta)
    if isinstance(module, nn.LeakyReLU):
        return LeakySoftplus(module.negative_slope, beta=leaky_beta)
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
        return SmoothHardtanh(module.min_val, module.max_val, beta=beta)
    if isinstance(module, nn.Hardswish):
        return SmoothHardswish(beta=beta)
    if isinstance(module, nn.Hardsigmoid):
        return SmoothHardsigmoid(beta=beta)
    return None


def _count(counts: dict[str, int], module: nn.Module) -> None:
    name = type(module).__name__
    counts[name] = counts.get(name, 0) + 1


def _swap_activations(
    model: nn.Module, beta: float, leaky_beta: float
) -> tuple[list[tuple[nn.Module, str, nn.Module]], SurrogateReport]:
    """Replace activations in place; return (parent, name, original) to undo it,
    and the module part of the report."""
    kept_smooth: dict[str, int] = {}
    piecewise: dict[str, int] = {}
    pooling: dict[str, int] = {}
    for m in model.modules():  # unique instances, before the swap
        if isinstance(m, _KEPT_SMOOTH):
            _count(kept_smooth, m)
        elif isinstance(m, _PIECEWISE_MODULES):
            _count(piecewise, m)
        elif isinstance(m, _MAX_POOLING_MODULES):
            _count(pooling, m)
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    replaced_counts: dict[str, int] = {}
    # One replacement per original instance keeps shared activations shared.
    replacements: dict[int, nn.Module] = {}
    parents = list(model.modules())
    for parent in parents:
        # _modules, not named_children(): the latter skips repeated instances.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in replacements:
                new = _smooth_replacement(child, beta, leaky_beta)
                if new is None:
                    continue
                replacements[id(child)] = new
                _count(replaced_counts, child)
            setattr(parent, name, replacements[id(child)])
            replaced.append((parent, name, child))
    report = SurrogateReport(
        replaced=replaced_counts,
        kept_smooth=kept_smooth,
        piecewise_modules=piecewise,
        max_pooling=pooling,
    )
    return replaced, report


def _check_args(
    model: object,
    beta: object,
    leaky_beta: object,
    smooth_functional: object,
    check_functional: object,
    strict: object,
) -> tuple[float, float]:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    beta_f = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
    if leaky_beta is None:
        leaky_f = beta_f
    else:
        leaky_f = check_number(
            leaky_beta, "leaky_beta", minimum=0.0, strict_minimum=True
        )
    for name, flag in (
        ("smooth_functional", smooth_functional),
        ("check_functional", check_functional),
        ("strict", strict),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool, got {type(flag).__name__}.")
    if _smooth_replacement(model, beta_f, leaky_f) is not None:
        raise ValueError(
            f"`model` is itself a {type(model).__name__}; pass the network that "
            "contains it."
        )
    return beta_f, leaky_f


def _arm(
    model: nn.Module,
    report: SurrogateReport,
    *,
    beta: float,
    leaky_beta: float,
    smooth_functional: bool,
    check_functional: bool,
    strict: bool,
) -> None:
    state = _SurrogateState(
        beta=beta,
        leaky_beta=leaky_beta,
        smooth_functional=smooth_functional,
        check=check_functional,
        strict=strict,
        report=report,
        inner_forward=None,
    )
    if report.piecewise_modules and strict:
        _warn_or_raise(model, report, strict)
    _install(model, state)
    if not smooth_functional and not check_functional:
        _uninstall(model)  # keeps the report, costs nothing per forward


def softplus_surrogate(
    model: ModuleT,
    beta: float = 10.0,
    *,
    leaky_beta: float | None = None,
    smooth_functional: bool = True,
    check_functional: bool = True,
    strict: bool = False,
) -> ModuleT:
    r"""Copy of ``model`` with smooth activations, sharing its parameters and buffers.

    Every ``nn.ReLU`` becomes ``nn.Softplus(beta)``, every
    ``nn.LeakyReLU(negative_slope=a)`` becomes :class:`LeakySoftplus`
    ``(a, beta=leaky_beta)``, i.e. ``a x + (1 - a) softplus(beta x) / beta``;
    ``nn.Hardtanh`` / ``nn.ReLU6`` become :class:`SmoothHardtanh`,
    ``nn.Hardsigmoid`` :class:`SmoothHardsigmoid` and ``nn.Hardswish``
    :class:`SmoothHardswish` (module docstring: the exact formulas). With
    ``smooth_functional`` the same replacements apply to the functional calls
    that a module swap cannot reach (``F.relu``, ``torch.relu``, ``Tensor.relu``,
    ``F.leaky_relu``, ``F.relu6``, ``F.hardtanh``, ``F.hardsigmoid``,
    ``F.hardswish`` and in-place forms) inside the surrogate's forward pass, so
    DenseNet, GoogLeNet and Inception surrogates are smooth too.

    The copy is a deep copy of the module tree in which every parameter and
    buffer is the original tensor object, so it costs no parameter memory, sees
    every later update of the weights, and gradients with respect to the
    surrogate's parameters are gradients with respect to the model's.

    What was replaced, kept and left piecewise linear is recorded in a
    :class:`SurrogateReport` (:func:`surrogate_report`). After the first forward
    pass, if piecewise-linear activations remain (``nn.PReLU``, ``torch.clamp``,
    ``torch.maximum``, ...), one :class:`PiecewiseLinearWarning` (a
    :class:`FunctionalReLUWarning` when functional calls are among them) lists
    them; nothing is issued when everything is smooth.

    Parameters
    ----------
    model : nn.Module
        The network. It is not modified.
    beta : float, default 10.0
        Softplus sharpness for everything but the leaky ReLUs; must be > 0. The
        papers use 1 to 100 (REFERENCES section 1); larger is closer to the
        original network but has larger, more local second derivatives.
    leaky_beta : float or None, default None
        Sharpness for ``nn.LeakyReLU`` modules and ``F.leaky_relu`` calls;
        ``None`` uses ``beta``. Chen et al. and Sarkar et al. use
        ``leaky_beta=1`` with slope 0.1.
    smooth_functional : bool, default True
        Smooth the ReLU-family functional calls of the forward pass (through a
        ``TorchFunctionMode`` around ``forward``; calls that bypass ``forward``,
        e.g. another method of the model, are not covered). In-place calls write
        the smooth value in place, as the original did. False leaves them
        piecewise linear and reports them.
    check_functional : bool, default True
        On the first forward pass, record the functional calls for the report and
        issue the warning described above.
    strict : bool, default False
        Raise a ``ValueError`` instead of warning (for piecewise-linear modules,
        already when the surrogate is built).

    Returns
    -------
    nn.Module
        The surrogate, in the same training/eval mode as ``model`` was.

    Notes
    -----
    The surrogate's module tree (and its ``training`` flags) is a snapshot: later
    calls to ``model.eval()`` do not reach it. Because buffers are shared, a forward
    pass of the surrogate in training mode updates the model's BatchNorm running
    statistics; put it in eval mode for attacks. Tensors stored as plain attributes
    (not registered as parameters or buffers) are copied, not shared. Max pooling
    is kept (and reported).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import softplus_surrogate
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> smooth = softplus_surrogate(model, beta=20.0)
    >>> smooth[1]
    Softplus(beta=20.0, threshold=20.0)
    >>> smooth[0].weight is model[0].weight
    True
    >>> isinstance(model[1], nn.ReLU)  # the original is untouched
    True
    """
    beta_f, leaky_f = _check_args(
        model, beta, leaky_beta, smooth_functional, check_functional, strict
    )
    # Parameters and buffers map to themselves: the copy shares them, and their
    # .grad fields, with the original.
    shared = itertools.chain(
        model.named_parameters(remove_duplicate=False),
        model.named_buffers(remove_duplicate=False),
    )
    memo: dict[int, Any] = {id(t): t for _, t in shared}
    try:
        surrogate = copy.deepcopy(model, memo)
    except Exception as exc:  # pragma: no cover - depends on the user's model
        raise TypeError(
            f"`model` ({type(model).__name__}) cannot be deep-copied, so no surrogate "
            f"can be built; use softplus_activations() instead. Cause: {exc}"
        ) from exc
    # A wrapper left on the source (inside softplus_activations) is not ours.
    _uninstall(surrogate, keep_report=False)
    _, report = _swap_activations(surrogate, beta_f, leaky_f)
    _arm(
        surrogate,
        report,
        beta=beta_f,
        leaky_beta=leaky_f,
        smooth_functional=smooth_functional,
        check_functional=check_functional,
        strict=strict,
    )
    return surrogate


@contextmanager
def softplus_activations(
    model: nn.Module,
    beta: float = 10.0,
    *,
    leaky_beta: float | None = None,
    smooth_functional: bool = True,
    check_functional: bool = True,
    strict: bool = False,
) -> Iterator[nn.Module]:
    """Swap the activations of ``model`` for smooth ones, in place, for a ``with`` body.

    The same replacements as :func:`softplus_surrogate` (modules, and with
    ``smooth_functional`` the functional calls of ``model``'s forward pass), but
    on the user's own model: useful when the model cannot be deep-copied or when
    other objects hold references to it. Inside the body :func:`surrogate_report`
    gives the report. On exit, normal or by an exception, every original
    activation module (and the original ``forward``) is put back.

    Parameters
    ----------
    model : nn.Module
        The network, modified only inside the ``with`` body.
    beta : float, default 10.0
        Softplus sharpness for all but the leaky ReLUs; must be > 0.
    leaky_beta : float or None, default None
        Sharpness for leaky ReLUs; ``None`` uses ``beta``.
    smooth_functional : bool, default True
        Smooth ReLU-family functional calls in ``model``'s forward pass.
    check_functional : bool, default True
        Record the first forward pass inside the body and warn
        (:class:`PiecewiseLinearWarning`) if it stays piecewise linear somewhere.
    strict : bool, default False
        Raise a ``ValueError`` instead of warning.

    Yields
    ------
    nn.Module
        ``model`` itself, with smooth activations.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import softplus_activations
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with softplus_activations(model, beta=5.0) as smooth:
    ...     type(smooth[1]).__name__
    'Softplus'
    >>> type(model[1]).__name__
    'ReLU'
    """
    beta_f, leaky_f = _check_args(
        model, beta, leaky_beta, smooth_functional, check_functional, strict
    )
    replaced, report = _swap_activations(model, beta_f, leaky_f)
    previous_state = model.__dict__.get(_REPORT)
    previous_forward = model.__dict__.get("forward")
    try:
        _arm(
            model,
            report,
            beta=beta_f,
            leaky_beta=leaky_f,
            smooth_functional=smooth_functional,
            check_functional=check_functional,
            strict=strict,
        )
        yield model
    finally:
        model.__dict__.pop("forward", None)
        model.__dict__.pop(_REPORT, None)
        if previous_forward is not None:
            model.__dict__["forward"] = previous_forward
        if previous_state is not None:
            model.__dict__[_REPORT] = previous_state
        for parent, name, original in reversed(replaced):
            setattr(parent, name, original)
