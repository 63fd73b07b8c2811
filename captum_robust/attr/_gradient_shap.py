"""A differentiable, seedable GradientShap.

Captum 0.9 computes GradientShap through a NoiseTunnel that runs under
``torch.no_grad``, so a create_graph gradient function alone does not make it
differentiable (its result has no graph). This is the same estimator, batched and
drawn from a ``torch.Generator``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import ExpansionTypes
from captum._utils.common import _expand_additional_forward_args
from captum._utils.common import _expand_target
from captum._utils.common import _format_additional_forward_args
from captum._utils.common import _run_forward
from torch import Tensor

from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_seed
from captum_robust._utils.validation import resolve_generator
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_forward_func
from captum_robust.attr._base import check_stdevs
from captum_robust.attr._base import create_graph_gradients
from captum_robust.attr._base import rand
from captum_robust.attr._base import randint
from captum_robust.attr._base import randn


def expand_target(target: Any, n: int) -> Any:
    return _expand_target(target, n, expansion_type=ExpansionTypes.repeat_interleave)


def expand_forward_args(additional_forward_args: Any, n: int) -> Any:
    args = _format_additional_forward_args(additional_forward_args)
    if args is None:
        return None
    return _expand_additional_forward_args(
        args, n, expansion_type=ExpansionTypes.repeat_interleave
    )


def format_baselines(
    baselines: object, inputs: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    if callable(baselines) and not isinstance(baselines, Tensor):
        if len(inspect.signature(baselines).parameters) == 0:
            baselines = baselines()
        else:
            baselines = baselines(inputs if len(inputs) > 1 else inputs[0])
    if isinstance(baselines, Tensor):
        baselines = (baselines,)
    if not isinstance(baselines, tuple) or not all(
        isinstance(b, Tensor) for b in baselines
    ):
        raise TypeError(
            "`baselines` must be a Tensor, a tuple of Tensors (one per input) or a "
            "callable returning them: GradientShap draws whole baseline samples, "
            f"got {type(baselines).__name__}."
        )
    if len(baselines) != len(inputs):
        raise ValueError(
            f"`baselines` has {len(baselines)} tensors but there are {len(inputs)} "
            "input tensors."
        )
    for i, (b, x) in enumerate(zip(baselines, inputs)):
        if b.dim() != x.dim() or b.shape[1:] != x.shape[1:] or b.shape[0] == 0:
            dims = ", ".join(map(str, x.shape[1:]))
            raise ValueError(
                f"`baselines[{i}]` must have shape (N, {dims}) with N >= 1 samples "
                f"to draw from, got {tuple(b.shape)}."
            )
        if b.device != x.device:
            raise ValueError(
                f"`baselines[{i}]` is on {b.device} but `inputs` is on {x.device}."
            )
    return baselines


class GradientShapAttribution(DifferentiableAttribution):
    """Differentiable GradientShap (the estimator of Captum's ``GradientShap``).

    For each example, ``n_samples`` triples are drawn: Gaussian noise
    ``e ~ N(0, stdevs^2)`` added to the input, a baseline ``b`` uniformly from the
    baseline distribution, and ``a ~ U(0, 1)``; the attribution is the mean over the
    samples of ``(x + e - b) * grad f(b + a (x + e - b))`` (without the first factor
    when ``multiply_by_inputs=False``). All samples go through one forward and one
    backward pass.

    Differences from Captum, where Captum's draws come from NumPy's and torch's
    global generators: the draws come from ``generator`` (or a fresh generator
    seeded with the wrapper's ``seed``, or torch's global generator), and one
    baseline index is drawn per sample for all input tensors of a tuple (Captum draws
    one per input tensor). With the same draws the results are equal.
    """

    method = "GradientShap"

    def __init__(
        self,
        forward_func: Callable[..., Any],
        *,
        multiply_by_inputs: bool = True,
        seed: int | None = None,
    ) -> None:
        check_forward_func(forward_func)
        super().__init__(forward_func)
        self.multiplies_by_inputs = bool(multiply_by_inputs)
        self.seed = check_seed(seed)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any,
        n_samples: int = 5,
        stdevs: float | tuple[float, ...] = 0.0,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        *,
        generator: torch.Generator | None = None,
    ) -> Any:
        """GradientShap attributions with an autograd graph.

        Parameters
        ----------
        inputs, baselines, n_samples, stdevs, target, additional_forward_args, \
return_convergence_delta
            As in ``captum.attr.GradientShap.attribute``.
        generator : torch.Generator or None
            Source of the random draws. ``None`` uses a fresh generator seeded with
            the wrapper's ``seed`` (the same draws on every call), or torch's global
            generator when no seed was given.

        Returns
        -------
        Tensor or tuple of Tensor, or (attributions, delta)
            Shaped like ``inputs``; ``delta`` (no graph) has one entry per example
            and sample, shape ``(B * n_samples,)``, as in Captum.
        """
        is_tuple = isinstance(inputs, tuple)
        xs = check_call(
            inputs, target, return_convergence_delta=return_convergence_delta
        )
        n = check_positive_int(n_samples, "n_samples")
        sds = check_stdevs(stdevs, len(xs))
        bases = format_baselines(baselines, xs)
        gen = resolve_generator(generator, self.seed, xs[0].device)
        batch = xs[0].shape[0]
        total = batch * n

        with torch.enable_grad():
            noisy = []
            for x, sd in zip(xs, sds):
                rep = x.repeat_interleave(n, dim=0)
                if sd > 0:
                    rep = rep + sd * randn(tuple(rep.shape), generator=gen, like=x)
                noisy.append(rep)
            index = randint(bases[0].shape[0], (total,), generator=gen, like=xs[0])
            drawn = [b.index_select(0, index) for b in bases]
            alpha = rand((total,), generator=gen, like=xs[0])
            scaled = []
            for x_n, b in zip(noisy, drawn):
                a = alpha.view((total,) + (1,) * (x_n.dim() - 1))
                s = a * x_n + (1.0 - a) * b
                scaled.append(s if s.requires_grad else s.detach().requires_grad_())
            exp_target = expand_target(target, n)
            exp_args = expand_forward_args(additional_forward_args, n)
            grads = create_graph_gradients(
                self.forward_func, tuple(scaled), exp_target, exp_args
            )
            if self.multiplies_by_inputs:
                per_sample = tuple(
                    g * (x_n - b) for g, x_n, b in zip(grads, noisy, drawn)
                )
            else:
                per_sample = grads
            attributions = tuple(
                a.reshape((batch, n) + tuple(a.shape[1:])).mean(dim=1)
                for a in per_sample
            )
        result: Any = attributions if is_tuple else attributions[0]
        if not return_convergence_delta:
            return result
        with torch.no_grad():
            attr_sum = sum(a.reshape(total, -1).sum(dim=1) for a in per_sample)
            end = _run_forward(self.forward_func, tuple(noisy), exp_target, exp_args)
            start = _run_forward(self.forward_func, tuple(drawn), exp_target, exp_args)
            delta = attr_sum - (
                end.reshape(total, -1).sum(1) - start.reshape(total, -1).sum(1)
            )
        return result, delta

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> GradientShapAttribution:
        """Same ``multiply_by_inputs`` and ``seed``, bound to ``forward_func``."""
        self._check_rebinding(forward_func, kwargs)
        return GradientShapAttribution(
            forward_func, multiply_by_inputs=self.multiplies_by_inputs, seed=self.seed
        )
