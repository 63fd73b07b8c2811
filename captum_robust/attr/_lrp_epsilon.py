"""The warning for a differentiable LRP map differentiated through a tiny epsilon.

On a softplus surrogate an ``EpsilonRule`` divides ``softplus(beta z) / beta`` by
``z + epsilon``, which near ``z = 0`` only epsilon bounds (see
:mod:`captum_robust.attr._lrp`). Which layers that concerns is found during the
plain pass of the model: those whose output goes into anything but another LRP
layer, an ``nn.ReLU`` or an ``nn.Tanh`` (where the stabiliser cancels).

"Every hidden layer" includes batch norms: Captum gives ``BatchNorm2d`` the same
``EpsilonRule(1e-9)``, and a batch norm's output, centred, has many ``z`` near 0.
Measured with ManipulationAttack (eps 0.3, 50 Adam steps of 0.02, output weight
1e8, default surrogate beta 10) on digits CNNs trained 4 epochs on scikit-learn's
digits at 16 px (two 3x3 convolutions with ReLU and 2x2 pooling, two linear
layers), ``EpsilonRule(1.0)`` on every convolution and linear layer: MSE of the
sum-1 map to a rotated other digit's map after the attack, against RandomAttack
with the same ball and steps (means of 3 seeds, 4 digits each; "closer" is
``1 - after / random``):

=============================================  ========  ========  =======
network                                        attack    random    closer
=============================================  ========  ========  =======
average pools                                  1.05e-5   3.78e-5   72%
max pools                                      1.11e-5   6.19e-5   82%
max pools, batch norms at Captum's 1e-9        5.40e-5   6.32e-5   15%
max pools, batch norms at epsilon 1          1.85e-5   7.35e-5   75%
=============================================  ========  ========  =======

Guided Backprop on the max-pool networks: 56% and 44% closer. The max pools are
not the cause: whatever their epsilon, their rule passes relevance to the input
they select with a ratio of at most 1 (and they are never named by the warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from captum.attr._utils.lrp_rules import EpsilonRule
from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["DirectUse", "LRPEpsilonWarning", "epsilon_warning", "small_epsilons"]

# Activations whose output over their input is at most 1 (and 0 at 0), so a tiny
# stabiliser of the layer before them bounds nothing that needs bounding.
_BOUNDED_RATIO = (nn.ReLU, nn.Tanh)
# A max pool's output z is the input it selects, a: the rule's a / (z + epsilon
# sign(z)) is at most 1 in size whatever epsilon is, so it never warns.
_SELECTING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


class LRPEpsilonWarning(UserWarning):
    """A differentiable LRP map is differentiated through a tiny epsilon.

    Issued once per differentiable LRP object (and the copies its
    ``with_forward_func`` makes, such as an attack's surrogate rebuilt at every
    step), the first time a loss on its map is back-propagated (an attack's
    step to the input, a regulariser's to the weights; computing the map alone,
    as Captum does, never warns), when some layer with an ``EpsilonRule``
    (Captum's default ``EpsilonRule(epsilon=1e-9)`` included) has an epsilon
    below ``threshold`` and its output goes into anything but another LRP
    layer or an ``nn.ReLU`` or ``nn.Tanh`` module: a softplus above all (the
    surrogate attacks compute their steps on), but also a functional call or
    an addition. There the rule divides the relevance ``softplus(beta z) /
    beta`` by ``z + epsilon``, which near ``z = 0`` only epsilon bounds:
    gradients of the map are dominated by those units, and a manipulation
    attack on such a map moved it no closer to its target than random noise
    did (see ``threshold``). The message names the layers; set a larger
    epsilon on them, e.g. ``layer.rule = EpsilonRule(epsilon=1.0)``, before the
    attribution, attack or surrogate is built (softplus copies carry the
    rules).

    Layers whose output goes unaltered (or only reshaped) into another LRP
    layer, as a pooling before a convolution does, the model's output layer,
    and layers before an ``nn.ReLU`` or ``nn.Tanh`` are not named: the next
    factor there is ``z`` itself, or at most ``|z|``, and the stabiliser
    cancels. Nor are max pools: their output is the input they select, so the
    rule's ratio is at most 1 whatever epsilon is. A ``BatchNorm2d`` is named
    like any other layer: its output is centred, so many of its ``z`` are
    near 0, and on a digits CNN with batch norms left at Captum's default the
    attack on the LRP map got no closer to its target than random noise (see
    the module docstring for the figures).

    Attributes
    ----------
    threshold : float
        ``1e-2``. At ``z = 0`` the surrogate's ratio ``softplus(beta z) /
        (beta (z + epsilon))`` is ``ln 2 / (beta epsilon)``: about 7 for
        ``epsilon = 1e-2`` at beta 10 (ManipulationAttack's default), where the
        ReLU network's ratio is at most 1, and 7e7 for Captum's 1e-9. It assumes
        pre-activations of order 1 (inputs in [0, 1] or standardised). Measured
        on a digits CNN: epsilon 1 let the attack move the map (PCC 0.41 ->
        0.87), 0.1 partly (0.54 -> 0.75), 1e-9 not (0.59 -> 0.60, random noise
        0.52).

    Examples
    --------
    >>> import warnings
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import LRP
    >>> from captum.attr._utils.lrp_rules import EpsilonRule
    >>> from captum_robust.attr import (
    ...     LRPEpsilonWarning, differentiable, softplus_surrogate)
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    >>> smooth = softplus_surrogate(model, beta=10.0)
    >>> x = torch.rand(2, 3, requires_grad=True)
    >>> def step(lrp):
    ...     with warnings.catch_warnings(record=True) as caught:
    ...         warnings.simplefilter("always")
    ...         torch.autograd.grad(lrp.attribute(x, target=0).pow(2).sum(), x)
    ...     return [w.category.__name__ for w in caught]
    >>> lrp = differentiable(LRP(model)).with_forward_func(smooth)
    >>> step(lrp), step(lrp)  # Captum's default epsilon on layer '0'; once
    (['LRPEpsilonWarning'], [])
    >>> smooth[0].rule = EpsilonRule(epsilon=1.0)
    >>> step(differentiable(LRP(model)).with_forward_func(smooth))
    []
    """

    threshold: float = 1e-2


class DirectUse:
    """Which layers' plain outputs are seen to go, unaltered, into another LRP
    layer, a ReLU or a Tanh, or out of the model (possibly reshaped by
    shape-only modules on the way): the layers whose stabiliser cancels.

    A tensor is known by its storage, so views (``flatten``, a slice) count as
    the output itself, and by its version, so an in-place operation in between
    (an in-place softplus, ``out +=``) does not.
    """

    def __init__(self, watched: dict[nn.Module, Any]) -> None:
        self.watched = watched
        # Keeping each tensor keeps its storage, so no other takes its address.
        self.outputs: dict[tuple[Any, int], tuple[nn.Module, int, Tensor]] = {}
        self.direct: set[nn.Module] = set()

    @staticmethod
    def _key(t: Tensor) -> tuple[Any, int]:
        return t.device, t.untyped_storage().data_ptr()

    def _producer(self, t: Any) -> nn.Module | None:
        if not isinstance(t, Tensor):
            return None
        entry = self.outputs.get(self._key(t))
        if entry is None or entry[1] != t._version:
            return None
        return entry[0]

    def produced(self, module: nn.Module, output: Any) -> None:
        if module in self.watched and isinstance(output, Tensor):
            self.outputs[self._key(output)] = (module, output._version, output)

    def read(self, args: tuple[Any, ...]) -> None:
        for a in args:
            producer = self._producer(a)
            if producer is not None:
                self.direct.add(producer)

    def relay(self, x: Any, output: Any) -> None:
        producer = self._producer(x)
        if producer is not None and isinstance(output, Tensor):
            self.outputs[self._key(output)] = (producer, output._version, output)

    def hook(
        self, passes: Iterable[nn.Module], shape_only: tuple[type[nn.Module], ...]
    ) -> list[RemovableHandle]:
        """Follow outputs through the pass-through layers: the ``shape_only``
        ones relay them, ReLU and Tanh read them."""
        handles = []
        for layer in passes:
            if isinstance(layer, shape_only):
                handles.append(layer.register_forward_hook(self._relay_hook))
            elif isinstance(layer, _BOUNDED_RATIO):
                handles.append(layer.register_forward_pre_hook(self._read_hook))
        return handles

    def _relay_hook(
        self, module: nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        if args:
            self.relay(args[0], output)

    def _read_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.read(args)

    def flagged(self) -> list[str]:
        """The watched layers whose output was not seen to be used directly."""
        return [v for m, v in self.watched.items() if m not in self.direct]


def small_epsilons(
    rules: dict[nn.Module, tuple[str, PropagationRule]],
) -> dict[nn.Module, str]:
    """The layers whose EpsilonRule's epsilon is below the warning's threshold,
    described for its message."""
    small: dict[nn.Module, str] = {}
    for layer, (name, rule) in rules.items():
        # Exact class: IdentityRule is an EpsilonRule that divides by nothing.
        eps = float(rule.STABILITY_FACTOR)
        if isinstance(layer, _SELECTING):
            continue
        if type(rule) is EpsilonRule and eps < LRPEpsilonWarning.threshold:
            small[layer] = f"{name!r} ({type(layer).__name__}, epsilon {eps:g})"
    return small


def epsilon_warning(layers: list[str], warned: list[bool]) -> Callable[..., None]:
    """A gradient hook for the map that issues LRPEpsilonWarning, once for all
    the objects sharing ``warned``."""

    def warn(grad: Tensor) -> None:
        if warned[0]:
            return
        warned[0] = True
        # Called by autograd, with no Python caller to point at: this line.
        warnings.warn(
            LRPEpsilonWarning(
                "A differentiable LRP map is being differentiated through layers "
                f"with an EpsilonRule epsilon below {LRPEpsilonWarning.threshold:g} "
                "whose output goes into a softplus (or anything but another LRP "
                f"layer, nn.ReLU or nn.Tanh): {', '.join(layers)}. Near z = 0 the "
                "rule's softplus(beta z) / (beta (z + epsilon)) is then bounded by "
                "epsilon alone and dominates the map's gradients: an attack on the "
                "map does no better than random noise. Set e.g. "
                "`layer.rule = EpsilonRule(epsilon=1.0)` on these layers before "
                "building the attribution, attack or surrogate (softplus copies "
                "carry the rules)."
            ),
            stacklevel=1,
        )

    return warn
