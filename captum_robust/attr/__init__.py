"""Differentiable Captum attributions and smooth surrogates of ReLU networks.

Attacks on attributions and attribution regularizers need the gradient of an
attribution with respect to the input or the model's parameters.
:func:`differentiable` turns a Captum attribution object (or a plain callable) into
one whose result carries that graph, without modifying the user's object;
:func:`softplus_surrogate` and :func:`softplus_activations` replace ReLUs by
softplus so that the second derivatives do not vanish.
"""

from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._differentiable import differentiable, is_differentiable
from captum_robust.attr._smoothgrad import SmoothGrad
from captum_robust.attr._surrogate import (
    FunctionalReLUWarning,
    LeakySoftplus,
    softplus_activations,
    softplus_surrogate,
)

__all__ = [
    "DifferentiableAttribution",
    "FunctionalReLUWarning",
    "LeakySoftplus",
    "SmoothGrad",
    "differentiable",
    "is_differentiable",
    "softplus_activations",
    "softplus_surrogate",
]
