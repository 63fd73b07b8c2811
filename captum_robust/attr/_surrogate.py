"""Softplus surrogates of ReLU networks, for second-order gradients.

A ReLU network is piecewise linear, so the gradient of a gradient-based attribution
with respect to the input is zero almost everywhere. Attacks on attributions therefore
compute their direction on a copy in which every ReLU is replaced by a softplus
(REFERENCES section 1); the attack is then scored on the real network.
"""

from __future__ import annotations

import copy
import itertools
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from captum_robust._utils.validation import check_number

__all__ = [
    "FunctionalReLUWarning",
    "LeakySoftplus",
    "softplus_activations",
    "softplus_surrogate",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class FunctionalReLUWarning(UserWarning):
    """A model calls a ReLU as a function, which a module swap cannot replace.

    Issued on the first forward pass of a model returned by
    :func:`softplus_surrogate` (or inside :func:`softplus_activations`) when that
    forward pass calls ``torch.nn.functional.relu``, ``torch.relu``,
    ``Tensor.relu``, ``torch.nn.functional.leaky_relu`` or one of their in-place
    variants. Those calls stay piecewise linear, so second derivatives through them
    are zero almost everywhere.

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
    ...         return torch.relu(self.fc(x))  # functional: cannot be swapped
    >>> smooth = softplus_surrogate(Net())
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = smooth(torch.randn(2, 3))
    >>> [w.category.__name__ for w in caught]
    ['FunctionalReLUWarning']
    """


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
        return a * input + (1.0 - a) * F.softplus(
            input, beta=self.beta, threshold=self.threshold
        )

    def extra_repr(self) -> str:
        return (
            f"negative_slope={self.negative_slope}, beta={self.beta}, "
            f"threshold={self.threshold}"
        )


# Functions that a module swap cannot reach. F.relu and F.leaky_relu dispatch
# through __torch_function__ under their Python names; the rest are builtins.
_FUNCTIONAL_RELUS: dict[Any, str] = {
    F.relu: "torch.nn.functional.relu",
    F.relu_: "torch.nn.functional.relu_",
    torch.relu: "torch.relu",
    torch.relu_: "torch.relu_",
    Tensor.relu: "Tensor.relu",
    Tensor.relu_: "Tensor.relu_",
    F.leaky_relu: "torch.nn.functional.leaky_relu",
    F.leaky_relu_: "torch.nn.functional.leaky_relu_",
    torch._C._nn.leaky_relu: "torch._C._nn.leaky_relu",
    torch._C._nn.leaky_relu_: "torch._C._nn.leaky_relu_",
}


class _FunctionalReLURecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, None] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        try:
            name = _FUNCTIONAL_RELUS.get(func)
        except TypeError:  # unhashable callables cannot be ReLUs
            name = None
        if name is not None:
            self.seen[name] = None
        return func(*args, **(kwargs or {}))


def _report(model: nn.Module, names: list[str], strict: bool) -> None:
    calls = ", ".join(names)
    message = (
        f"`model` ({type(model).__name__}) calls {calls} in its forward pass. "
        "These functional calls cannot be replaced by swapping modules, so they "
        "stay piecewise linear and second derivatives through them vanish almost "
        "everywhere. Use nn.ReLU / nn.LeakyReLU modules instead of the functional "
        "forms to get a fully smooth surrogate."
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, FunctionalReLUWarning, stacklevel=4)


def _checked_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # Runs once: the instance attribute that points here is removed first, so that
    # later calls cost nothing; a forward pass that fails re-arms the check.
    strict = self.__dict__.get("_captum_robust_strict", False)
    _remove_check(self)
    recorder = _FunctionalReLURecorder()
    try:
        with recorder:
            # Not self(...): __call__ already ran the module's hooks once.
            out = type(self).forward(self, *args, **kwargs)
    except BaseException:
        _install_check(self, strict)
        raise
    if recorder.seen:
        _report(self, list(recorder.seen), strict)
    return out


def _install_check(module: nn.Module, strict: bool) -> bool:
    """Check the next forward pass of ``module`` for functional ReLUs.

    Returns False (and checks nothing) when the module already has an instance-level
    ``forward``, which this check must not overwrite.
    """
    if "forward" in module.__dict__:
        return False
    # A bound method rather than a closure so that deepcopy rebinds it to the copy.
    module.__dict__["forward"] = types.MethodType(_checked_forward, module)
    module.__dict__["_captum_robust_strict"] = strict
    return True


def _remove_check(module: nn.Module) -> None:
    forward = module.__dict__.get("forward")
    if isinstance(forward, types.MethodType) and forward.__func__ is _checked_forward:
        del module.__dict__["forward"]
    module.__dict__.pop("_captum_robust_strict", None)


def _smooth_replacement(
    module: nn.Module, beta: float, leaky_beta: float
) -> nn.Module | None:
    if isinstance(module, nn.ReLU):
        return nn.Softplus(beta=beta)
    if isinstance(module, nn.LeakyReLU):
        return LeakySoftplus(module.negative_slope, beta=leaky_beta)
    return None


def _swap_activations(
    model: nn.Module, beta: float, leaky_beta: float
) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace activations in place; return (parent, name, original) to undo it."""
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
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
            setattr(parent, name, replacements[id(child)])
            replaced.append((parent, name, child))
    return replaced


def _check_args(
    model: object, beta: object, leaky_beta: object, strict: object
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
    if not isinstance(strict, bool):
        raise TypeError(f"`strict` must be a bool, got {type(strict).__name__}.")
    if _smooth_replacement(model, beta_f, leaky_f) is not None:
        raise ValueError(
            f"`model` is itself a {type(model).__name__}; pass the network that "
            "contains it."
        )
    return beta_f, leaky_f


def softplus_surrogate(
    model: ModuleT,
    beta: float = 10.0,
    *,
    leaky_beta: float | None = None,
    check_functional: bool = True,
    strict: bool = False,
) -> ModuleT:
    r"""Copy of ``model`` with smooth activations, sharing its parameters and buffers.

    Every ``nn.ReLU`` becomes ``nn.Softplus(beta)`` and every
    ``nn.LeakyReLU(negative_slope=a)`` becomes :class:`LeakySoftplus`
    ``(a, beta=leaky_beta)``, i.e. ``a x + (1 - a) softplus(beta x) / beta``. The
    copy is a deep copy of the module tree in which every parameter and buffer is
    the original tensor object, so it costs no parameter memory, sees every later
    update of the weights, and gradients with respect to the surrogate's parameters
    are gradients with respect to the model's.

    Parameters
    ----------
    model : nn.Module
        The network. It is not modified.
    beta : float, default 10.0
        Softplus sharpness for replaced ``nn.ReLU`` modules; must be > 0. The papers
        use 1 to 100 (REFERENCES section 1); larger is closer to the ReLU network
        but has larger, more local second derivatives.
    leaky_beta : float or None, default None
        Sharpness for replaced ``nn.LeakyReLU`` modules; ``None`` uses ``beta``.
        Chen et al. and Sarkar et al. use ``leaky_beta=1`` with slope 0.1.
    check_functional : bool, default True
        On the surrogate's first forward pass, watch for ReLUs called as functions
        (``F.relu``, ``torch.relu``, ``Tensor.relu``, ``F.leaky_relu`` and in-place
        variants), which a module swap cannot replace, and issue a
        :class:`FunctionalReLUWarning` naming them.
    strict : bool, default False
        Raise a ``ValueError`` instead of warning when such calls are seen.

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
    (not registered as parameters or buffers) are copied, not shared. Other
    non-smooth modules (``nn.ReLU6``, ``nn.Hardtanh``, max pooling) are kept.

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
    beta_f, leaky_f = _check_args(model, beta, leaky_beta, strict)
    if not isinstance(check_functional, bool):
        raise TypeError(
            f"`check_functional` must be a bool, got {type(check_functional).__name__}."
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
    # A check left armed on the source (inside softplus_activations) is not ours.
    _remove_check(surrogate)
    _swap_activations(surrogate, beta_f, leaky_f)
    if check_functional:
        _install_check(surrogate, strict)
    return surrogate


@contextmanager
def softplus_activations(
    model: nn.Module,
    beta: float = 10.0,
    *,
    leaky_beta: float | None = None,
    check_functional: bool = True,
    strict: bool = False,
) -> Iterator[nn.Module]:
    """Swap the activations of ``model`` for smooth ones, in place, for a ``with`` body.

    The same replacement as :func:`softplus_surrogate`, but on the user's own model:
    useful when the model cannot be deep-copied or when other objects hold
    references to it. On exit, normal or by an exception, every original activation
    module is put back where it was.

    Parameters
    ----------
    model : nn.Module
        The network, modified only inside the ``with`` body.
    beta : float, default 10.0
        Softplus sharpness for ``nn.ReLU`` modules; must be > 0.
    leaky_beta : float or None, default None
        Sharpness for ``nn.LeakyReLU`` modules; ``None`` uses ``beta``.
    check_functional : bool, default True
        Warn (:class:`FunctionalReLUWarning`) if the first forward pass inside the
        body calls a functional ReLU that the swap cannot replace.
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
    beta_f, leaky_f = _check_args(model, beta, leaky_beta, strict)
    if not isinstance(check_functional, bool):
        raise TypeError(
            f"`check_functional` must be a bool, got {type(check_functional).__name__}."
        )
    replaced = _swap_activations(model, beta_f, leaky_f)
    installed = _install_check(model, strict) if check_functional else False
    try:
        yield model
    finally:
        if installed:
            _remove_check(model)
        for parent, name, original in reversed(replaced):
            setattr(parent, name, original)
