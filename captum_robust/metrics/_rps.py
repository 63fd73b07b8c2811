"""Random perturbation similarity, RPS (Joo et al. 2023), per sample.

The similarity of an explanation to the explanations of randomly perturbed
copies of its input, batched and seeded as
:mod:`~captum_robust.metrics._perturbation` describes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from captum_robust.metrics._maps import (
    ChannelReduction,
    check_map_options,
    check_option,
    spatial_attribution,
)
from captum_robust.metrics._perturbation import (
    Distribution,
    Explanations,
    Norm,
    Perturbations,
    PerturbFunc,
    flat_map,
    reduce_rounds,
)
from captum_robust.metrics._similarity import (
    cosine_flat,
    mse_flat,
    pearson_flat,
    ssim_spatial,
)

SIMILARITIES = ("pearson", "cosine", "ssim", "mse")
_FLAT_SIMILARITIES = {"pearson": pearson_flat, "cosine": cosine_flat, "mse": mse_flat}


def _similarity_fn(similarity: object) -> str | Callable[[Tensor, Tensor], Tensor]:
    if callable(similarity):
        return similarity
    if not isinstance(similarity, str):
        raise TypeError(
            "`similarity` must be one of 'pearson', 'cosine', 'ssim', 'mse' or a "
            f"callable, got {type(similarity).__name__}."
        )
    check_option(similarity, SIMILARITIES, "similarity")
    return similarity


def random_perturbation_similarity(
    explanation_func: object,
    inputs: Tensor,
    *,
    similarity: str | Callable[[Tensor, Tensor], Tensor] = "pearson",
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 4 / 255,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = 0.0,
    upper_bound: float | None = 1.0,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Random perturbation similarity, RPS (Joo et al. 2023), per sample.

    The mean over draws of ``similarity(map(x), map(clamp(x + U(-eps,
    eps))))``: Joo et al. use eps = 4/255 in pixel space, 10 draws, and report
    PCC, SSIM, MSE and cosine. Higher is more robust (lower for "mse"). Draws
    whose similarity is NaN (a degenerate map, see :mod:`captum_robust.metrics`)
    are left out of the mean; NaN when all are.

    Parameters
    ----------
    similarity : {"pearson", "cosine", "ssim", "mse"} or callable
        A named similarity of this package (with ``abs`` and
        ``channel_reduction``, SSIM with Joo's settings), or
        ``f(attr_a, attr_b) -> (n,)`` on the raw explanations, e.g.
        ``functools.partial(structural_similarity, sigma=1.0)``.
    explanation_func, inputs, target, attributions
        As in :func:`max_sensitivity`.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 4 / 255
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}, default "uniform"
        "gaussian" adds N(0, radius^2) to every coordinate (``norm`` unused).
    perturb_func : callable, optional
        Replaces the draws: it gets the (B, ...) batch once per perturbation
        round and returns its perturbed copy. Two forms, told apart by the
        signature:

        * ``perturb_func(inputs, generator)``: draws from the
          ``torch.Generator`` that ``seed`` seeds;
        * Captum's ``perturb_func(inputs, perturb_radius)``, as
          ``captum.metrics.sensitivity_max`` calls it (e.g. Captum's
          ``default_perturb_func``), given ``radius``; or
          ``perturb_func(inputs)``. It may return a tuple of one Tensor. Its
          draws from torch's global generator are seeded by ``seed`` too (the
          caller's global random state is left as it was); ``seed=None``
          continues the global stream, as Captum does.

        A second parameter named ``generator``, or annotated
        ``torch.Generator``, selects the first form; one named
        ``perturb_radius``, ``radius`` or ``eps``, annotated ``float`` or with
        a float default, the second. A signature that says neither is called
        in the first form (a TypeError from that call names both forms).
    lower_bound, upper_bound : float or None, default 0.0 and 1.0
        Clamp the perturbed inputs to the valid range (None: no clamp).
    seed : int or None, default 0
        Seed of the draws' generator; None draws a fresh seed.
    max_examples_per_batch : int, optional
        Most perturbed copies explained in one call (default: all at once).
    explanation_kwargs : dict, optional
        Passed to every explanation call; tensors with B rows (baselines,
        additional_forward_args) are repeated for the copies.
    abs : bool, default True
        Compare magnitudes, as every map metric does.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        Channel merge before comparing.

    Returns
    -------
    Tensor
        Shape (B,).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import random_perturbation_similarity
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.Softplus(),
    ...     torch.nn.Linear(8, 2))
    >>> inputs = torch.rand(3, 1, 8, 8)
    >>> rps = random_perturbation_similarity(Saliency(model), inputs, target=0)
    >>> bool((rps > 0.9).all())
    True
    """
    explanations = Explanations(explanation_func, inputs, target, explanation_kwargs)
    check_map_options(abs, channel_reduction)
    measure = _similarity_fn(similarity)
    plan = Perturbations(
        explanations.inputs,
        n_perturbations=n_perturbations,
        radius=radius,
        norm=norm,
        distribution=distribution,
        perturb_func=perturb_func,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        seed=seed,
        max_examples_per_batch=max_examples_per_batch,
    )
    reference = explanations.reference(attributions)
    if measure == "ssim":
        prepared = spatial_attribution(
            reference, abs=abs, channel_reduction=channel_reduction, name="attributions"
        )
    elif isinstance(measure, str):
        prepared = flat_map(reference, abs, channel_reduction, "attributions")
    else:
        prepared = reference
    scores = []
    for index, copies in plan.chunks():
        expl = explanations(copies, index)
        ref = prepared.index_select(0, index)
        if measure == "ssim":
            pert = spatial_attribution(
                expl, abs=abs, channel_reduction=channel_reduction, validate=False
            )
            if pert.shape != ref.shape or min(ref.shape[1:]) < 7:
                raise ValueError(
                    "`explanation_func` must give (H, W) maps of one shape, at "
                    "least 7 pixels a side, for similarity='ssim'."
                )
            value = ssim_spatial(ref, pert)
        elif isinstance(measure, str):
            pert = flat_map(expl, abs, channel_reduction, "explanation_func output")
            value = _FLAT_SIMILARITIES[measure](ref, pert)
        else:
            value = measure(ref, expl)
            if not isinstance(value, Tensor) or value.shape != (len(index),):
                raise ValueError(
                    "`similarity` must return a Tensor of shape (n,) for n pairs, "
                    f"got {getattr(value, 'shape', type(value).__name__)}."
                )
        scores.append(value)
    return reduce_rounds(torch.cat(scores).double(), explanations.batch, "mean").to(
        prepared.dtype if prepared.is_floating_point() else torch.float32
    )
