"""Training-time regularizers for robust and well-placed attributions.

Each regularizer is configured once and called inside an ordinary training loop:
``term = reg(model, inputs, target)`` returns a scalar to add to the task loss, and
``reg.loss(model, inputs, target)`` returns the paper's whole objective (task loss
plus term, sharing forward passes where the method allows).
:class:`IGSumNorm` and :class:`EnhancedAttributionRegularizer` replace the clean
task loss by the loss at an adversarial input, so use their ``loss`` in place of
the task loss. :class:`ExplanationConsistencyWeights` returns per-sample weights
instead of a term, and :class:`TopGAP` is a pooling layer, not a loss.

Every pass that differentiates an input gradient runs with double-differentiable
hardsigmoid / hardswish and the math attention kernel, so MobileNetV3 and vision
transformers train as other models do.

Example: a training step with local gradient alignment::

    reg = LocalGradientAlignment(eps=4 / 255, seed=0)
    for x, y in loader:
        loss = reg.loss(model, x, y)  # cross-entropy + alignment term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""

from captum_robust.regularizers._consistency import ExplanationConsistencyWeights
from captum_robust.regularizers._gradient_alignment import HessianNorm
from captum_robust.regularizers._gradient_alignment import LocalGradientAlignment
from captum_robust.regularizers._integrated_gradients import (
    EnhancedAttributionRegularizer,
)
from captum_robust.regularizers._integrated_gradients import IGNorm
from captum_robust.regularizers._integrated_gradients import IGSumNorm
from captum_robust.regularizers._masked import MaskedGradientPenalty
from captum_robust.regularizers._top_gap import TopGAP
from captum_robust.regularizers._top_gap import global_pool_names
from captum_robust.regularizers._top_gap import replace_global_pool
from captum_robust.regularizers._top_gap import top_gap_penalty

__all__ = [
    "EnhancedAttributionRegularizer",
    "ExplanationConsistencyWeights",
    "HessianNorm",
    "IGNorm",
    "IGSumNorm",
    "LocalGradientAlignment",
    "MaskedGradientPenalty",
    "TopGAP",
    "global_pool_names",
    "replace_global_pool",
    "top_gap_penalty",
]
