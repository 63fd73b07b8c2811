"""Captum gradient methods made differentiable by a create_graph gradient function."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_positive_int
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_input_tuple
from captum_robust.attr._base import check_target
from captum_robust.attr._base import concat_rows
from captum_robust.attr._base import create_graph_gradients
from captum_robust.attr._base import rows_of
from captum_robust.attr._base import tracked_inputs

_BOOL_ARGUMENTS = ("abs", "return_convergence_delta")


class CaptumGradientAttribution(DifferentiableAttribution):
    """Saliency, InputXGradient or IntegratedGradients with a create_graph gradient.

    Captum computes these methods through the instance attribute ``gradient_func``;
    a shallow copy of the user's object gets a ``create_graph=True`` version of it,
    so the user's object is never modified and Captum's own argument handling
    (baselines, ``n_steps``, ``method``, ``return_convergence_delta``) is kept.
    ``internal_batch_size`` splits the samples rather than the path (see
    :meth:`attribute`). Convergence deltas are computed by Captum under
    ``torch.no_grad`` and carry no graph.
    """

    def __init__(self, attribution: Attribution) -> None:
        super().__init__(attribution.forward_func)
        self._captum = copy.copy(attribution)
        self._captum.gradient_func = create_graph_gradients
        self.method = type(attribution).__name__

    def attribute(self, inputs: TensorOrTuple, *args: Any, **kwargs: Any) -> Any:
        """Captum's ``attribute`` with the same arguments, differentiable.

        See the Captum documentation of the wrapped method (``self.method``) for the
        arguments; positional order is Captum's. For Integrated Gradients,
        ``internal_batch_size`` bounds the model evaluations per forward pass by
        attributing ``max(1, internal_batch_size // n_steps)`` samples at a time
        (Captum's own batching splits the path instead, and detaches every part
        but the first, which would silently drop most of the gradient).

        The forward and backward passes run under ``second_order_safe()``, so the
        result can be differentiated again on MobileNetV3 (hardsigmoid,
        hardswish) and attention models. ``target`` is checked before Captum sees
        it (integer class indices, one per sample, below the model's class count),
        as are ``n_steps`` (a positive int) and the bool flags.
        """
        xs = check_input_tuple(inputs)
        try:
            bound = inspect.signature(self._captum.attribute).bind(
                inputs, *args, **kwargs
            )
        except TypeError as exc:
            raise TypeError(f"{self.method}.attribute(): {exc}") from None
        arguments = bound.arguments
        check_target(arguments.get("target"), xs)
        for flag in _BOOL_ARGUMENTS:
            if flag in arguments:
                check_bool(arguments[flag], flag)
        if "n_steps" in arguments:
            check_positive_int(arguments["n_steps"], "n_steps")
        with torch.enable_grad():
            if self.method == "IntegratedGradients":
                return self._integrated_gradients(inputs, args, kwargs)
            return self._captum.attribute(tracked_inputs(inputs), *args, **kwargs)

    def _integrated_gradients(
        self, inputs: TensorOrTuple, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        bound = inspect.signature(self._captum.attribute).bind(inputs, *args, **kwargs)
        arguments = dict(bound.arguments)
        chunk = arguments.pop("internal_batch_size", None)
        batch = as_tensor_tuple(inputs, "inputs")[0].shape[0]
        rows = batch
        if chunk is not None:
            chunk = check_positive_int(chunk, "internal_batch_size")
            n_steps = arguments.get("n_steps", 50)
            if isinstance(n_steps, int) and n_steps > 0:
                rows = max(1, chunk // n_steps)
        if rows >= batch:
            arguments["inputs"] = tracked_inputs(inputs)
            return self._captum.attribute(**arguments)
        parts = []
        for start in range(0, batch, rows):
            part = {
                name: rows_of(value, start, start + rows, batch)
                for name, value in arguments.items()
            }
            part["inputs"] = tracked_inputs(part["inputs"])
            parts.append(self._captum.attribute(**part))
        return concat_rows(parts)

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> CaptumGradientAttribution:
        """The same method and settings, bound to ``forward_func``."""
        self._check_rebinding(forward_func, kwargs)
        rebound = copy.copy(self._captum)
        rebound.forward_func = forward_func
        return CaptumGradientAttribution(rebound)
