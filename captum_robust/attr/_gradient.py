"""Captum gradient methods made differentiable by a create_graph gradient function."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust.attr._base import (
    DifferentiableAttribution,
    TensorOrTuple,
    check_forward_func,
    create_graph_gradients,
    tracked_inputs,
)


class CaptumGradientAttribution(DifferentiableAttribution):
    """Saliency, InputXGradient or IntegratedGradients with a create_graph gradient.

    Captum computes these methods through the instance attribute ``gradient_func``;
    a shallow copy of the user's object gets a ``create_graph=True`` version of it,
    so the user's object is never modified and all of Captum's own argument handling
    (baselines, ``n_steps``, ``method``, ``internal_batch_size``,
    ``return_convergence_delta``) is kept. Convergence deltas are computed by Captum
    under ``torch.no_grad`` and carry no graph.
    """

    def __init__(self, attribution: Attribution) -> None:
        super().__init__(attribution.forward_func)
        self._captum = copy.copy(attribution)
        self._captum.gradient_func = create_graph_gradients
        self.method = type(attribution).__name__

    def attribute(self, inputs: TensorOrTuple, *args: Any, **kwargs: Any) -> Any:
        """Captum's ``attribute`` with the same arguments, differentiable.

        See the Captum documentation of the wrapped method (``self.method``) for the
        arguments; positional order is Captum's.
        """
        as_tensor_tuple(inputs, "inputs")
        with torch.enable_grad():
            return self._captum.attribute(tracked_inputs(inputs), *args, **kwargs)

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> CaptumGradientAttribution:
        """The same method and settings, bound to ``forward_func``."""
        if kwargs:
            raise TypeError(
                f"with_forward_func() of {self.method} takes no keyword arguments, "
                f"got {sorted(kwargs)}."
            )
        check_forward_func(forward_func)
        rebound = copy.copy(self._captum)
        rebound.forward_func = forward_func
        return CaptumGradientAttribution(rebound)
