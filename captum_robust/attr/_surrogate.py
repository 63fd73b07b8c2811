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

Each tends to the original as ``beta -> inf`` and is twice differentiable
everywhere (:mod:`captum_robust.attr._smooth_activations` says why). Already smooth
activations (SiLU, GELU, Sigmoid, Tanh, Softplus, ...) are kept. The functional
calls are smoothed by :mod:`captum_robust.attr._functional_smoothing`; what was
replaced is reported as in :mod:`captum_robust.attr._surrogate_report`.
"""

from __future__ import annotations

import copy
import itertools
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from typing import TypeVar

from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number
from captum_robust.attr._functional_smoothing import RELU_FAMILY
from captum_robust.attr._functional_smoothing import FunctionalMode
from captum_robust.attr._smooth_activations import LeakySoftplus
from captum_robust.attr._smooth_activations import SmoothHardsigmoid
from captum_robust.attr._smooth_activations import SmoothHardswish
from captum_robust.attr._smooth_activations import SmoothHardtanh
from captum_robust.attr._surrogate_report import REPORT_KEY
from captum_robust.attr._surrogate_report import FunctionalReLUWarning
from captum_robust.attr._surrogate_report import PiecewiseLinearWarning
from captum_robust.attr._surrogate_report import SurrogateReport
from captum_robust.attr._surrogate_report import SurrogateState

__all__ = ["softplus_activations", "softplus_surrogate"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

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
    if any(name in RELU_FAMILY for name in report.piecewise_calls):
        message += "; or build it with smooth_functional=True"
    message += "); surrogate_report() lists everything the surrogate did."
    if strict:
        raise ValueError(message)
    category = (
        FunctionalReLUWarning if report.piecewise_calls else PiecewiseLinearWarning
    )
    warnings.warn(message, category, stacklevel=5)


def _smooth_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    state: SurrogateState = self.__dict__[REPORT_KEY]
    record = state.check
    mode = FunctionalMode(state, record)
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


def _install(module: nn.Module, state: SurrogateState) -> None:
    existing = module.__dict__.get("forward")
    if isinstance(existing, types.MethodType) and existing.__func__ is _smooth_forward:
        # A block nested in another on the same model (a checkpoint recomputed in
        # a backward pass inside it): both wrappers read the state the module
        # holds, so wrapping the outer one would call itself without end. Wrap
        # what the outer one wraps.
        existing = module.__dict__[REPORT_KEY].inner_forward
    if existing is not None:
        state.inner_forward = existing
    # A bound method rather than a closure so that deepcopy rebinds it to the copy.
    module.__dict__["forward"] = types.MethodType(_smooth_forward, module)
    module.__dict__[REPORT_KEY] = state


def _uninstall(module: nn.Module, *, keep_report: bool = True) -> None:
    """Remove the forward wrapper (restoring an instance-level forward)."""
    state = module.__dict__.get(REPORT_KEY)
    forward = module.__dict__.get("forward")
    if isinstance(forward, types.MethodType) and forward.__func__ is _smooth_forward:
        del module.__dict__["forward"]
        if isinstance(state, SurrogateState) and state.inner_forward is not None:
            module.__dict__["forward"] = state.inner_forward
    if not keep_report:
        module.__dict__.pop(REPORT_KEY, None)
    elif isinstance(state, SurrogateState):
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


def _checked_state(
    model: object,
    beta: object,
    leaky_beta: object,
    smooth_functional: object,
    check_functional: object,
    strict: object,
) -> SurrogateState:
    """The arguments of softplus_surrogate / softplus_activations, checked, as the
    state of a surrogate whose report is still empty."""
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
    smooth = check_bool(smooth_functional, "smooth_functional")
    check = check_bool(check_functional, "check_functional")
    strict_b = check_bool(strict, "strict")
    if _smooth_replacement(model, beta_f, leaky_f) is not None:
        raise ValueError(
            f"`model` is itself a {type(model).__name__}; pass the network that "
            "contains it."
        )
    return SurrogateState(
        beta=beta_f,
        leaky_beta=leaky_f,
        smooth_functional=smooth,
        check=check,
        strict=strict_b,
        report=SurrogateReport(),
    )


def _arm(model: nn.Module, state: SurrogateState) -> None:
    if state.report.piecewise_modules and state.strict:
        _warn_or_raise(model, state.report, state.strict)
    _install(model, state)
    if not state.smooth_functional and not state.check:
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
    state = _checked_state(
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
    _, state.report = _swap_activations(surrogate, state.beta, state.leaky_beta)
    _arm(surrogate, state)
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
    state = _checked_state(
        model, beta, leaky_beta, smooth_functional, check_functional, strict
    )
    replaced, state.report = _swap_activations(model, state.beta, state.leaky_beta)
    previous_state = model.__dict__.get(REPORT_KEY)
    previous_forward = model.__dict__.get("forward")
    try:
        _arm(model, state)
        yield model
    finally:
        model.__dict__.pop("forward", None)
        model.__dict__.pop(REPORT_KEY, None)
        if previous_forward is not None:
            model.__dict__["forward"] = previous_forward
        if previous_state is not None:
            model.__dict__[REPORT_KEY] = previous_state
        for parent, name, original in reversed(replaced):
            setattr(parent, name, original)
