"""Relative stability of an explanation (Agarwal et al. 2022), per sample.

Relative input, output and representation stability: the relative change of
the explanation over the relative change of the input, of the logits, or of a
layer's output (read by a forward hook), under random perturbations batched
and seeded as :mod:`~captum_robust.metrics._perturbation` describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from typing import Literal

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.modes import eval_mode
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._perturbation import Distribution
from captum_robust.metrics._perturbation import Explanations
from captum_robust.metrics._perturbation import Norm
from captum_robust.metrics._perturbation import Perturbations
from captum_robust.metrics._perturbation import PerturbFunc
from captum_robust.metrics._perturbation import flat_map
from captum_robust.metrics._perturbation import reduce_rounds
from captum_robust.metrics._sensitivity import check_norm_ord
from captum_robust.metrics._sensitivity import lp_norm

PredictionChange = Literal["skip", "nan", "keep"]
PREDICTION_CHANGES = ("skip", "nan", "keep")


def _relative(change: Tensor, reference: Tensor, eps: float) -> Tensor:
    """Elementwise relative change; a zero reference value divides by ``eps``."""
    return change / (reference + (reference == 0).to(reference.dtype) * eps)


class _Capture:
    """Forward hook keeping the flattened output of one layer."""

    def __init__(self, module: nn.Module) -> None:
        self.value: Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        self.value = output.detach().flatten(1)


def _layer_module(model: nn.Module, layer: object) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("`layer` must be a submodule of `model`.")
        return layer
    if not isinstance(layer, str):
        raise TypeError(
            "`layer` must be a submodule name (str) or an nn.Module, got "
            f"{type(layer).__name__}."
        )
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"`layer` {layer!r} is not a submodule of `model`.") from None


def _stability(
    kind: str,
    *,
    explanation_func: object,
    model: object,
    inputs: object,
    layer: object = None,
    target: object,
    eps_min: object,
    norm_ord: object,
    on_prediction_change: object,
    attributions: object,
    explanation_kwargs: object,
    abs: object,
    channel_reduction: object,
    **perturbations: Any,
) -> Tensor:
    """Max over perturbations of the relative stability of ``kind`` ("input",
    "output" or "representation"); takes the public functions' arguments by
    name, ``perturbations`` holding those of :class:`Perturbations`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
    explanations = Explanations(explanation_func, inputs, target, explanation_kwargs)
    inputs = explanations.inputs
    check_map_options(abs, channel_reduction)
    eps = check_number(eps_min, "eps_min", minimum=0.0, strict_minimum=True)
    p = check_norm_ord(norm_ord)
    check_str_choice(on_prediction_change, PREDICTION_CHANGES, "on_prediction_change")
    plan = Perturbations(inputs, **perturbations)
    batch = explanations.batch
    capture = (
        _Capture(_layer_module(model, layer)) if kind == "representation" else None
    )
    try:

        def run(x: Tensor) -> tuple[Tensor, Tensor | None]:
            with eval_mode(model), torch.no_grad():
                logits = model(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ValueError(
                    "`model` must return (B, num_classes) logits, got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}."
                )
            hidden = capture.value if capture is not None else None
            return logits.detach(), hidden

        logits_ref, hidden_ref = run(inputs)
        reference = explanations.reference(attributions)
        flat_ref = flat_map(reference, abs, channel_reduction, "attributions")
        dtype = flat_ref.dtype
        flat_inputs = inputs.flatten(1).to(dtype)
        prediction = logits_ref.argmax(dim=1)
        scores, changed = [], []
        for index, copies in plan.chunks():
            expl = explanations(copies, index)
            flat = flat_map(expl, abs, channel_reduction, "explanation_func output")
            logits, hidden = run(copies)
            ref = flat_ref.index_select(0, index)
            numerator = lp_norm(_relative(ref - flat, ref, eps), p)
            if kind == "input":
                x = flat_inputs.index_select(0, index)
                change = _relative(x - copies.flatten(1).to(dtype), x, eps)
            elif kind == "output":
                change = (logits_ref.index_select(0, index) - logits).to(dtype)
            else:
                h = hidden_ref.index_select(0, index).to(dtype)
                change = _relative(h - hidden.to(dtype), h, eps)
            scores.append(numerator / lp_norm(change, p).clamp(min=eps))
            changed.append(logits.argmax(dim=1) != prediction.index_select(0, index))
    finally:
        if capture is not None:
            capture.handle.remove()
    scores_all = torch.cat(scores)
    changed_all = torch.cat(changed)
    if on_prediction_change != "keep":
        scores_all = scores_all.masked_fill(changed_all, math.nan)
    result = reduce_rounds(scores_all, batch, "max")
    if on_prediction_change == "nan":
        any_changed = changed_all.view(-1, batch).any(dim=0)
        result = result.masked_fill(any_changed, math.nan)
    return result


def relative_input_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative input stability, RIS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||(x - x') / x||_p, eps_min)``,
    relative changes taken elementwise (a zero reference value divides by
    ``eps_min``), over perturbations ``x'`` that keep the predicted class.
    Lower is more robust. Quantus 0.6 ``RelativeInputStability()`` computes the
    same with 200 draws of its ``batch_uniform_noise`` (``upper_bound=0.2``)
    and ``on_prediction_change="nan"``; its zero-denominator rule adds
    ``eps_min`` only to an exact zero, where this takes ``max(., eps_min)``
    as the paper writes.

    Parameters
    ----------
    explanation_func : Captum attribution, its ``attribute``, or callable
        As in :func:`max_sensitivity`.
    model : nn.Module
        The classifier, returning (B, num_classes) logits. It is run in eval
        mode for the predictions (and representations), and every submodule's
        mode is restored.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample for the explanations.
    eps_min : float, default 1e-6
        Floor of the denominator, and divisor of zero reference values.
    norm_ord : float, "fro" or "inf", default 2
        Order of the norms (Agarwal et al.'s p).
    on_prediction_change : {"skip", "nan", "keep"}, default "skip"
        Perturbations that change the predicted class are outside the
        neighbourhood of Agarwal et al.: "skip" leaves them out of the max (NaN
        when all of them change it), "nan" makes the sample NaN when any does
        (Quantus 0.6's default), "keep" uses them.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.2
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}, default "uniform"
        "gaussian" adds N(0, radius^2) to every coordinate (``norm`` unused).
    perturb_func : callable, optional
        Replaces the draws; its two accepted forms are described in
        :func:`max_sensitivity`.
    lower_bound, upper_bound : float, optional
        Clamp the perturbed inputs to the valid range.
    seed : int or None, default 0
        Seed of the draws' generator; None draws a fresh seed.
    max_examples_per_batch : int, optional
        Most perturbed copies explained in one call (default: all at once).
    explanation_kwargs : dict, optional
        Passed to every explanation call; tensors with B rows (baselines,
        additional_forward_args) are repeated for the copies.
    abs : bool, default False
        Magnitudes before comparing (Captum and Quantus compare raw values).
    channel_reduction : {"none", "sum", "mean", "max"}, default "none"
        Channel merge before comparing; "none" keeps the raw explanation.

    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_input_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_input_stability(Saliency(model), model, inputs, target=0).shape
    torch.Size([4])
    """
    return _stability("input", **locals())


def relative_output_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative output stability, ROS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||h(x) - h(x')||_p, eps_min)``
    with ``h`` the model's logits, over perturbations that keep the predicted
    class. Lower is more robust. Matches Quantus 0.6
    ``RelativeOutputStability()`` as :func:`relative_input_stability` matches
    RIS.

    Parameters
    ----------
    explanation_func : Captum attribution, its ``attribute``, or callable
        As in :func:`max_sensitivity`.
    model : nn.Module
        The classifier, returning (B, num_classes) logits. It is run in eval
        mode for the predictions (and representations), and every submodule's
        mode is restored.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample for the explanations.
    eps_min : float, default 1e-6
        Floor of the denominator, and divisor of zero reference values.
    norm_ord : float, "fro" or "inf", default 2
        Order of the norms (Agarwal et al.'s p).
    on_prediction_change : {"skip", "nan", "keep"}, default "skip"
        Perturbations that change the predicted class are outside the
        neighbourhood of Agarwal et al.: "skip" leaves them out of the max (NaN
        when all of them change it), "nan" makes the sample NaN when any does
        (Quantus 0.6's default), "keep" uses them.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.2
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}, default "uniform"
        "gaussian" adds N(0, radius^2) to every coordinate (``norm`` unused).
    perturb_func : callable, optional
        Replaces the draws; its two accepted forms are described in
        :func:`max_sensitivity`.
    lower_bound, upper_bound : float, optional
        Clamp the perturbed inputs to the valid range.
    seed : int or None, default 0
        Seed of the draws' generator; None draws a fresh seed.
    max_examples_per_batch : int, optional
        Most perturbed copies explained in one call (default: all at once).
    explanation_kwargs : dict, optional
        Passed to every explanation call; tensors with B rows (baselines,
        additional_forward_args) are repeated for the copies.
    abs : bool, default False
        Magnitudes before comparing (Captum and Quantus compare raw values).
    channel_reduction : {"none", "sum", "mean", "max"}, default "none"
        Channel merge before comparing; "none" keeps the raw explanation.

    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_output_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_output_stability(Saliency(model), model, inputs, target=0).shape
    torch.Size([4])
    """
    return _stability("output", **locals())


def relative_representation_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    layer: str | nn.Module,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative representation stability, RRS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||(L_x - L_x') / L_x||_p,
    eps_min)`` with ``L`` the flattened output of ``layer``, over perturbations
    that keep the predicted class. Lower is more robust. Matches Quantus 0.6
    ``RelativeRepresentationStability(layer_names=[layer])`` as
    :func:`relative_input_stability` matches RIS.

    Parameters
    ----------
    layer : str or nn.Module
        The layer (a submodule name of ``model``, or the module) whose output
        is the representation.
    explanation_func : Captum attribution, its ``attribute``, or callable
        As in :func:`max_sensitivity`.
    model : nn.Module
        The classifier, returning (B, num_classes) logits. It is run in eval
        mode for the predictions (and representations), and every submodule's
        mode is restored.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample for the explanations.
    eps_min : float, default 1e-6
        Floor of the denominator, and divisor of zero reference values.
    norm_ord : float, "fro" or "inf", default 2
        Order of the norms (Agarwal et al.'s p).
    on_prediction_change : {"skip", "nan", "keep"}, default "skip"
        Perturbations that change the predicted class are outside the
        neighbourhood of Agarwal et al.: "skip" leaves them out of the max (NaN
        when all of them change it), "nan" makes the sample NaN when any does
        (Quantus 0.6's default), "keep" uses them.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.2
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}, default "uniform"
        "gaussian" adds N(0, radius^2) to every coordinate (``norm`` unused).
    perturb_func : callable, optional
        Replaces the draws; its two accepted forms are described in
        :func:`max_sensitivity`.
    lower_bound, upper_bound : float, optional
        Clamp the perturbed inputs to the valid range.
    seed : int or None, default 0
        Seed of the draws' generator; None draws a fresh seed.
    max_examples_per_batch : int, optional
        Most perturbed copies explained in one call (default: all at once).
    explanation_kwargs : dict, optional
        Passed to every explanation call; tensors with B rows (baselines,
        additional_forward_args) are repeated for the copies.
    abs : bool, default False
        Magnitudes before comparing (Captum and Quantus compare raw values).
    channel_reduction : {"none", "sum", "mean", "max"}, default "none"
        Channel merge before comparing; "none" keeps the raw explanation.

    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_representation_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_representation_stability(
    ...     Saliency(model), model, inputs, layer="2", target=0).shape
    torch.Size([4])
    """
    return _stability("representation", **locals())
