"""Differentiable Captum attributions and smooth surrogates of ReLU networks.

Attacks on attributions and attribution regularizers need the gradient of an
attribution with respect to the input or the model's parameters.
:func:`differentiable` turns a Captum attribution object (or a plain callable) into
one whose result carries that graph, without modifying the user's object;
:func:`softplus_surrogate` and :func:`softplus_activations` replace ReLUs (and
leaky ReLU, ReLU6, Hardtanh, Hardsigmoid, Hardswish, as modules or functional
calls) by softplus forms so that the second derivatives do not vanish, and
:func:`surrogate_report` says what was replaced and what stays piecewise linear.
"""

from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._differentiable import differentiable
from captum_robust.attr._differentiable import is_differentiable
from captum_robust.attr._lrp_epsilon import LRPEpsilonWarning
from captum_robust.attr._smooth_activations import LeakySoftplus
from captum_robust.attr._smooth_activations import SmoothHardsigmoid
from captum_robust.attr._smooth_activations import SmoothHardswish
from captum_robust.attr._smooth_activations import SmoothHardtanh
from captum_robust.attr._smoothgrad import SmoothGrad
from captum_robust.attr._sparsified_smoothgrad import SparsifiedSmoothGrad
from captum_robust.attr._sparsified_smoothgrad import relaxed_top_indicator
from captum_robust.attr._surrogate import softplus_activations
from captum_robust.attr._surrogate import softplus_surrogate
from captum_robust.attr._surrogate_report import FunctionalReLUWarning
from captum_robust.attr._surrogate_report import PiecewiseLinearWarning
from captum_robust.attr._surrogate_report import SurrogateReport
from captum_robust.attr._surrogate_report import surrogate_report

__all__ = [
    "DifferentiableAttribution",
    "FunctionalReLUWarning",
    "LRPEpsilonWarning",
    "LeakySoftplus",
    "PiecewiseLinearWarning",
    "SmoothGrad",
    "SmoothHardsigmoid",
    "SmoothHardswish",
    "SmoothHardtanh",
    "SparsifiedSmoothGrad",
    "SurrogateReport",
    "differentiable",
    "is_differentiable",
    "relaxed_top_indicator",
    "softplus_activations",
    "softplus_surrogate",
    "surrogate_report",
]
