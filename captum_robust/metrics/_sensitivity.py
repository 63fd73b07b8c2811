"""Sensitivity of an explanation to random input perturbations, per sample.

Max- and average sensitivity (Yeh et al. 2019; Captum's ``sensitivity_max``),
the local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018) and random
perturbation similarity (RPS, Joo et al. 2023), batched and seeded as
:mod:`~captum_robust.metrics._perturbation` describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._maps import spatial_attribution
from captum_robust.metrics._perturbation import Distribution
from captum_robust.metrics._perturbation import Explanations
from captum_robust.metrics._perturbation import Norm
from captum_robust.metrics._perturbation import Perturbations
from captum_robust.metrics._perturbation import PerturbFunc
from captum_robust.metrics._perturbation import flat_map
from captum_robust.metrics._perturbation import reduce_rounds
from captum_robust.metrics._similarity import cosine_flat
from captum_robust.metrics._similarity import mse_flat
from captum_robust.metrics._similarity import pearson_flat
from captum_robust.metrics._similarity import ssim_spatial

Score = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _sensitivity(
    how: str,
    score: Score,
    *,
    explanation_func: object,
    inputs: object,
    target: object,
    attributions: object,
    explanation_kwargs: object,
    abs: object,
    channel_reduction: object,
    **perturbations: Any,
) -> Tensor:
    """max / mean over perturbations of ``score(e, e_pert, x, x_pert)`` rows.

    Takes the public functions' arguments by name; ``perturbations`` holds
    those of :class:`Perturbations`.
    """
    explanations = Explanations(explanation_func, inputs, target, explanation_kwargs)
    inputs = explanations.inputs
    check_map_options(abs, channel_reduction)
    plan = Perturbations(inputs, **perturbations)
    reference = explanations.reference(attributions)
    flat_ref = flat_map(reference, abs, channel_reduction, "attributions")
    flat_inputs = inputs.flatten(1).to(flat_ref.dtype)
    scores = []
    for index, copies in plan.chunks():
        expl = explanations(copies, index)
        flat = flat_map(expl, abs, channel_reduction, "explanation_func output")
        if flat.shape[1] != flat_ref.shape[1]:
            raise ValueError(
                "`explanation_func` returned explanations of "
                f"{flat.shape[1]} features for perturbed inputs but "
                f"{flat_ref.shape[1]} for `inputs`."
            )
        scores.append(
            score(
                flat_ref.index_select(0, index),
                flat,
                flat_inputs.index_select(0, index),
                copies.flatten(1).to(flat.dtype),
            )
        )
    return reduce_rounds(torch.cat(scores), explanations.batch, how)


def lp_norm(values: Tensor, p: float) -> Tensor:
    """L-p norm of each row of a (B, N) tensor."""
    return torch.linalg.vector_norm(values, ord=p, dim=1)


def check_norm_ord(norm_ord: object) -> float:
    """The order of a ``norm_ord`` argument as a number ("fro" is 2)."""
    if norm_ord == "fro":
        return 2.0
    if norm_ord == "inf":
        return math.inf
    return check_number(norm_ord, "norm_ord", minimum=1.0)


def _sensitivity_score(norm_ord: object, normalize: object) -> Score:
    p = check_norm_ord(norm_ord)
    normalize = check_bool(normalize, "normalize")

    def score(ref: Tensor, pert: Tensor, x: Tensor, x_pert: Tensor) -> Tensor:
        change = lp_norm(ref - pert, p)
        if not normalize:
            return change
        scale = lp_norm(ref, p)
        # Captum divides by 1 where the explanation at x is zero.
        return change / torch.where(scale == 0, torch.ones_like(scale), scale)

    return score


def _lipschitz_score(ref: Tensor, pert: Tensor, x: Tensor, x_pert: Tensor) -> Tensor:
    return lp_norm(ref - pert, 2.0) / (lp_norm(x - x_pert, 2.0) + 1e-10)


def max_sensitivity(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.02,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    norm_ord: float | str = "fro",
    normalize: bool = True,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Max-sensitivity of an explanation (Yeh et al. 2019), per sample.

    ``max_j ||e(x) - e(x + d_j)|| / ||e(x)||`` over random perturbations
    ``d_j``. Lower is more robust; 0 for an explanation that does not move.

    The defaults are those of ``captum.metrics.sensitivity_max`` (10 draws
    uniform in the L-inf ball of radius 0.02, Frobenius norm, divided by
    ``||e(x)||``, taken as 1 where it is zero), and given the same perturbations
    the values are equal. Quantus 0.6 ``MaxSensitivity()`` computes the same
    quantity with ``radius=0.2`` (its ``lower_bound``), ``n_perturbations=200``
    and no clamp; its default ``return_nan_when_prediction_changes=False`` is
    what is done here.

    Parameters
    ----------
    explanation_func : Captum attribution, its ``attribute``, or callable
        Called as ``f(perturbed, target=..., **explanation_kwargs)``; returns
        one Tensor with a row per input.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample, repeated for its copies; not passed when None.
    norm_ord : float, "fro" or "inf", default "fro"
        Order of the vector norm of the explanation change ("fro" is 2).
    normalize : bool, default True
        Divide by ``||e(x)||`` (Captum, Quantus); False gives the raw change.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.02
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
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import max_sensitivity
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> inputs = torch.rand(4, 1, 4, 4)
    >>> max_sensitivity(Saliency(model), inputs, target=0)  # linear: no change
    tensor([0., 0., 0., 0.])
    """
    # The arguments go on by name; norm_ord and normalize make the score.
    arguments = dict(locals())
    score = _sensitivity_score(arguments.pop("norm_ord"), arguments.pop("normalize"))
    return _sensitivity("max", score, **arguments)


def avg_sensitivity(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.02,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    norm_ord: float | str = "fro",
    normalize: bool = True,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Average sensitivity of an explanation (Yeh et al. 2019), per sample.

    The mean instead of the max of :func:`max_sensitivity`:
    ``mean_j ||e(x) - e(x + d_j)|| / ||e(x)||``. Lower is more robust. Quantus
    0.6 ``AvgSensitivity()`` is the same with ``radius=0.2`` and
    ``n_perturbations=200``.

    Parameters
    ----------
    explanation_func, inputs, target, norm_ord, normalize, attributions
        As in :func:`max_sensitivity`.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.02
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
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import avg_sensitivity
    >>> def explain(x):  # e(x) = x**2: the change grows with the radius
    ...     return x**2
    >>> x = torch.ones(2, 8)
    >>> bool((avg_sensitivity(explain, x, radius=0.1) < 0.21).all())
    True
    """
    # The arguments go on by name; norm_ord and normalize make the score.
    arguments = dict(locals())
    score = _sensitivity_score(arguments.pop("norm_ord"), arguments.pop("normalize"))
    return _sensitivity("mean", score, **arguments)


def local_lipschitz_estimate(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.1,
    norm: Norm = "linf",
    distribution: Distribution = "gaussian",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018), per sample.

    ``max_j ||e(x) - e(x_j)||_2 / (||x - x_j||_2 + 1e-10)`` over random
    neighbours ``x_j``. Lower is more robust. The defaults follow Quantus 0.6
    ``LocalLipschitzEstimate``: Gaussian noise of standard deviation 0.1
    (``radius``); Quantus draws 200 neighbours and by default normalises the
    explanations by their maximum (``normalise=True``), which is not done here
    (pass normalised explanations to compare).

    Parameters
    ----------
    explanation_func, inputs, target, attributions
        As in :func:`max_sensitivity`.
    n_perturbations : int, default 10
        Perturbed copies per sample.
    radius : float, default 0.1
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}, default "gaussian"
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
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import local_lipschitz_estimate
    >>> def explain(x):  # 3-Lipschitz
    ...     return 3 * x
    >>> local_lipschitz_estimate(explain, torch.zeros(2, 5))
    tensor([3.0000, 3.0000])
    """
    return _sensitivity("max", _lipschitz_score, **locals())


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
    check_str_choice(similarity, SIMILARITIES, "similarity")
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
        Replaces the draws; its two accepted forms are described in
        :func:`max_sensitivity`.
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
    >>> _ = torch.manual_seed(0)
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
