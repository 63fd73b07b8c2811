"""The random baseline: sign steps of Gaussian noise with an attack's budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from captum_robust.attacks._base import AttributionAttack

__all__ = ["RandomAttack"]


class RandomAttack(AttributionAttack):
    """Random sign perturbations with an attack's budget: the baseline.

    Takes the same steps as the other attacks, in the direction of the sign of
    Gaussian noise (Ghorbani et al.'s random baseline), inside the same ball,
    and keeps each sample's best iterate by the same criterion on the real
    model. An attack is only meaningful where it beats this at the same
    ``epsilon``.

    Parameters
    ----------
    forward_func : nn.Module or callable
        The classifier, returning logits (B, classes); its modes are restored
        after the attack, as in :class:`TopKAttack`.
    attribution : captum.attr.Attribution or callable
        The Captum attribution (or differentiable callable) attacked, made
        differentiable as in :class:`TopKAttack`; the user's object is never modified.
    epsilon : float, default 8/255
        Radius of the L-inf ball around the input; >= 0.
    step_size : float, default 1/255
        Step per iteration: ``x <- x + step_size * sign(N(0, I))``.
    n_steps : int, default 50
        Steps per restart.
    restarts : int, default 1
        Runs of the attack; the best iterate over all of them is kept (see
        :class:`TopKAttack`).
    random_start : bool, default False
        Start the first restart at a random point too.
    criterion : {"topk", "kendall", "spearman", "center_shift"}, default "topk"
        How iterates are compared with the original map.
    lower_bound, upper_bound : float, default 0.0, 1.0
        Every iterate is clamped to this range.
    criterion_k : int, default 100
        k of the top-k intersection when ``criterion="topk"``.
    attribution_kwargs : dict or None, default None
        Passed to ``attribution.attribute`` on every call.
    seed : int or None, default 0
        Seeds a fresh generator on every ``perturb`` call; None uses torch's
        global generator.

    Notes
    -----
    The loop shared by every attack (the projection onto the ball and the
    bounds, the per-sample selection on the real model under the label
    constraint, skipped samples, the map ``S``, random steps where the gradient
    is zero, half precision, what is left untouched) is described in the Notes
    of :class:`TopKAttack`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attacks import RandomAttack
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> attack = RandomAttack(model, Saliency(model), criterion_k=8, n_steps=5)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> a, b = attack.perturb(x), attack.perturb(x)  # same seed, same draws
    >>> torch.equal(a, b)
    True
    """

    _update_rule = "random"
    _needs_surrogate = False

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attribution: Any,
        *,
        epsilon: float = 8 / 255,
        step_size: float = 1 / 255,
        n_steps: int = 50,
        restarts: int = 1,
        random_start: bool = False,
        criterion: str = "topk",
        lower_bound: float = 0.0,
        upper_bound: float = 1.0,
        criterion_k: int = 100,
        attribution_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            forward_func,
            attribution,
            epsilon=epsilon,
            step_size=step_size,
            n_steps=n_steps,
            restarts=restarts,
            random_start=random_start,
            surrogate_beta=None,
            surrogate=None,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            criterion=criterion,
            criterion_k=criterion_k,
            attribution_kwargs=attribution_kwargs,
            seed=seed,
        )

    # The shared perturb, listed here so that the class's page documents it.
    perturb = AttributionAttack.perturb
