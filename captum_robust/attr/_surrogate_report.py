"""What a softplus surrogate did to a model: its report and its warnings.

The report, with the surrogate's settings, is kept in the surrogate module's
``__dict__`` (:class:`SurrogateState`), where :func:`surrogate_report` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from torch import nn

__all__ = [
    "FunctionalReLUWarning",
    "PiecewiseLinearWarning",
    "SurrogateReport",
    "surrogate_report",
]


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


REPORT_KEY = "_captum_robust_surrogate"


@dataclass(eq=False, kw_only=True)
class SurrogateState:
    """Per-surrogate settings and report, kept in the module's ``__dict__``.

    A plain object (no closures), so that ``copy.deepcopy`` of a surrogate gives
    the copy its own state.
    """

    beta: float
    leaky_beta: float
    smooth_functional: bool
    check: bool
    strict: bool
    report: SurrogateReport
    inner_forward: Any = None


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
    state = model.__dict__.get(REPORT_KEY)
    if not isinstance(state, SurrogateState):
        raise ValueError(
            "`model` is not a softplus surrogate: build one with softplus_surrogate() "
            "or ask inside a softplus_activations() body."
        )
    return state.report
