"""The manipulation attack of Dombrowski et al. (2019): make the explanation
match a target map while keeping the output, with Adam steps."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import check_number
from captum_robust.attacks._base import BASE_CRITERIA
from captum_robust.attacks._base import AttributionAttack
from captum_robust.attacks._batch import Batch
from captum_robust.attacks._batch import CallSettings
from captum_robust.attacks._result import AttackResult
from captum_robust.attacks._utils import TensorOrTuple
from captum_robust.attr import softplus_surrogate
from captum_robust.metrics._similarity import mean_squared_error
from captum_robust.metrics._similarity import pearson_correlation
from captum_robust.metrics._similarity import structural_similarity

__all__ = ["ManipulationAttack"]


class ManipulationAttack(AttributionAttack):
    """Make the explanation match a target map, keeping the output (Dombrowski et
    al., 2019).

    Minimises ``map_weight * MSE(S(x), S_T) + output_weight *
    MSE(softmax(f(x)), softmax(f(x0)))`` (both terms on the softplus surrogate
    ``f``, maps normalised to sum 1) with Adam steps on the input, projected onto
    the L-inf ball (or, with ``epsilon=None``, only onto the bounds). Iterates are
    selected on the real model by the MSE between the map and the target (lowest
    kept), or by another criterion. :meth:`dombrowski` builds the attack with the
    paper's settings.

    Parameters
    ----------
    forward_func : nn.Module or callable
        The classifier, returning logits (B, classes); its modes are restored
        after the attack, as in :class:`TopKAttack`.
    attribution : captum.attr.Attribution or callable
        The Captum attribution (or differentiable callable) attacked, made
        differentiable as in :class:`TopKAttack`; the user's object is never modified.
    epsilon : float, default 8/255 (None: no ball, only the bounds; see Notes)
        Radius of the L-inf ball around the input; >= 0.
    step_size : float, default None
        Adam learning rate; None uses ``4 * epsilon / n_steps`` (Joo et al.),
    or 2e-4 (Dombrowski et al.) when ``epsilon`` is None.
    n_steps : int, default 100
        Steps per restart.
    restarts : int, default 1
        Runs of the attack; the best iterate over all of them is kept (see
        :class:`TopKAttack`).
    random_start : bool, default False
        Start the first restart at a random point too.
    map_weight : float, default 1e11
        Weight of the map term (Dombrowski et al., for maps summing to 1).
    output_weight : float, default 1e6
        Weight of the output term (Dombrowski et al.). Adam is invariant to the
        scale of the loss, so only the ratio of the weights matters.
    criterion : {"target_mse", "topk", "kendall", "spearman", "center_shift"}, \
default "target_mse"
        How iterates are compared on the real model. ``target_mse`` is the mean
        squared difference between ``S`` and the normalised target map.
    surrogate_beta : float, (float, float) or None, default 10.0
        The attack direction is computed on
        :func:`~captum_robust.attr.softplus_surrogate` ``(forward_func, beta)``
        (ReLU -> Softplus(beta)), since second derivatives of a ReLU network
        vanish; the papers use 1 to 100. A pair ``(beta0, beta1)`` is Dombrowski
        et al.'s beta growth: at step ``t = 0, ..., T - 1`` of each restart
        (``T = n_steps``) the surrogate has ``beta_t = beta0 * (beta1 /
        beta0) ** (t / T)`` (paper: 10 -> 100), rebuilt from ``forward_func``
        for every step (the user's model is never touched; parameters and
        buffers are shared, so this costs a module-tree copy per step), and the
        output term compares with that same surrogate's output at ``x0``. None
        computes the direction on ``forward_func`` itself (for smooth models
        and for plain-callable attributions, which cannot be rebound).
    surrogate : callable or None, default None
        A smooth model to use instead of building one (not with a beta pair).
    lower_bound, upper_bound : float, default 0.0, 1.0
        Every iterate is clamped to this range (images in [0, 1] by default). Inputs
        outside it are refused: set the range of your (e.g. normalised) inputs.
    criterion_k : int, default 100
        k of the top-k intersection when ``criterion="topk"``.
    attribution_kwargs : dict or None, default None
        Passed to ``attribution.attribute`` on every call, as in
        :class:`TopKAttack`.
    seed : int or None, default 0
        Seeds a fresh generator on every ``perturb`` call, as in
        :class:`TopKAttack`; None uses torch's global generator.

    Notes
    -----
    The loop shared by every attack (the projection onto the ball and the
    bounds, the per-sample selection on the real model under the label
    constraint, skipped samples, the map ``S``, random steps where the gradient
    is zero, half precision, what is left untouched) is described in the Notes
    of :class:`TopKAttack`.

    ``epsilon=None`` is the box-only constraint of Dombrowski et al.: no ball,
    iterates are only clamped to ``[lower_bound, upper_bound]`` (stored as
    ``epsilon = inf``; ``perturb(epsilon=math.inf)`` does the same for one
    call). Random starts need a ball, so ``random_start`` and ``restarts > 1``
    are refused with it.

    Dombrowski et al. run 1500 Adam steps of 2e-4 clamped to the image range
    only, growing the softplus beta from 10 to 100 (:meth:`dombrowski`); Joo et
    al. run 100 steps of ``4 * eps / 100`` in an eps-ball. The defaults follow
    Joo et al. for the budget and Dombrowski et al. for the weights, with a
    fixed beta.

    With ``return_results=True`` the :class:`AttackResult` also holds
    ``similarity_before`` and ``similarity_after``: the MSE, PCC and SSIM
    (:func:`~captum_robust.metrics.mean_squared_error`,
    :func:`~captum_robust.metrics.pearson_correlation`,
    :func:`~captum_robust.metrics.structural_similarity`, Joo et al.'s SSIM
    settings) between the target map and the real model's map of the original
    and of the returned input. Both maps are ``S`` (channel-summed absolute
    attribution) normalised to sum 1, so the MSE is the ``target_mse``
    criterion; PCC and SSIM do not depend on that scale. SSIM is NaN when the
    attribution is not an image map of at least 7x7.

    Beta-smoothing, the defence of Dombrowski et al.: the manipulation exploits
    the large curvature of a ReLU network's explanation. Explaining the model
    through ``softplus_surrogate(model, beta)`` with a small ``beta`` (the
    paper: beta well below the growth's end) gives a smoother map, on which the
    same attack achieves much less. To measure it, attack the explanation of
    the smoothed model: ``ManipulationAttack(smooth, Saliency(smooth),
    surrogate_beta=None)`` with ``smooth = softplus_surrogate(model, beta)``,
    and compare ``similarity_after`` with the attack on ``model``. On a small
    digits CNN (``tests/attacks/test_manipulation_effect.py``), 50 steps in a
    0.3 ball close 56-86% of the MSE gap to the target without smoothing and
    27-34% with ``beta = 1`` (Saliency, InputXGradient, IG, Guided Backprop).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attacks import ManipulationAttack
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> frame = torch.ones(8, 8)
    >>> frame[2:-2, 2:-2] = 0  # Joo et al.'s frame target
    >>> attack = ManipulationAttack(model, Saliency(model), n_steps=5)
    >>> x_adv, result = attack.perturb(
    ...     torch.rand(2, 1, 8, 8), target_map=frame, return_results=True)
    >>> bool((result.criterion_after <= result.criterion_before).all())
    True
    >>> sorted(result.similarity_after)
    ['mse', 'pcc', 'ssim']
    >>> paper = ManipulationAttack.dombrowski(model, Saliency(model), n_steps=5)
    >>> paper.epsilon, paper.surrogate_beta, paper.step_size
    (inf, (10.0, 100.0), 0.0002)
    """

    _criteria = ("target_mse", *BASE_CRITERIA)
    _update_rule = "adam"

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attribution: Any,
        *,
        epsilon: float | None = 8 / 255,
        step_size: float | None = None,
        n_steps: int = 100,
        restarts: int = 1,
        random_start: bool = False,
        map_weight: float = 1e11,
        output_weight: float = 1e6,
        criterion: str = "target_mse",
        surrogate_beta: float | tuple[float, float] | None = 10.0,
        surrogate: Callable[..., Any] | None = None,
        lower_bound: float = 0.0,
        upper_bound: float = 1.0,
        criterion_k: int = 100,
        attribution_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
    ) -> None:
        self.map_weight = check_number(map_weight, "map_weight", minimum=0.0)
        self.output_weight = check_number(output_weight, "output_weight", minimum=0.0)
        schedule = _check_beta_schedule(surrogate_beta)
        if schedule is not None and surrogate is not None:
            raise ValueError(
                "`surrogate_beta` as a (beta0, beta1) growth rebuilds the softplus "
                "surrogate every step, so it cannot be combined with `surrogate`."
            )
        if epsilon is None:
            several = (
                isinstance(restarts, int)
                and not isinstance(restarts, bool)
                and restarts > 1
            )
            if random_start is True or several:
                name = "random_start" if random_start is True else "restarts"
                raise ValueError(
                    f"`{name}`: random starts are drawn in the epsilon ball, and "
                    "epsilon=None (box only) has none; use one restart without a "
                    "random start, or give epsilon."
                )
            epsilon = math.inf
        super().__init__(
            forward_func,
            attribution,
            epsilon=epsilon,
            step_size=step_size,
            n_steps=n_steps,
            restarts=restarts,
            random_start=random_start,
            surrogate_beta=surrogate_beta if schedule is None else schedule[0],
            surrogate=surrogate,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            criterion=criterion,
            criterion_k=criterion_k,
            attribution_kwargs=attribution_kwargs,
            seed=seed,
        )
        if schedule is None:
            # A plain number (or None) was checked above; the base keeps it.
            return
        if schedule[0] == schedule[1]:
            # A constant "growth" is a fixed beta: nothing to rebuild per step.
            self.surrogate_beta = schedule[0]
            return
        self.surrogate_beta = schedule  # type: ignore[assignment]
        self._schedule = schedule
        self._fixed = (self.surrogate, self._direction_attribution)

    _schedule: tuple[float, float] | None = None

    @classmethod
    def dombrowski(
        cls, forward_func: Callable[..., Any], attribution: Any, **overrides: Any
    ) -> ManipulationAttack:
        """The attack with the settings of Dombrowski et al. (2019).

        1500 Adam steps of learning rate 2e-4 (Adam's moments 0.9, 0.999,
        eps 1e-8), weights 1e11 on the map term and 1e6 on the output term (for
        maps summing to 1), the softplus beta grown from 10 to 100 over the
        steps, and no epsilon ball: iterates are only clamped to the bounds
        (REFERENCES section 8, the paper's code ``pankessel/adv_explanation_ref``).

        Parameters
        ----------
        forward_func, attribution
            As for :class:`ManipulationAttack`.
        **overrides
            Any other keyword of :class:`ManipulationAttack`, replacing the
            preset's value (e.g. ``n_steps=300`` for a quicker run, or
            ``lower_bound``/``upper_bound`` for normalised images).

        Returns
        -------
        ManipulationAttack

        Examples
        --------
        >>> from torch import nn
        >>> from captum.attr import Saliency
        >>> from captum_robust.attacks import ManipulationAttack
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> attack = ManipulationAttack.dombrowski(model, Saliency(model))
        >>> attack.n_steps, attack.step_size, attack.map_weight
        (1500, 0.0002, 100000000000.0)
        """
        settings: dict[str, Any] = {
            "epsilon": None,
            "step_size": 2e-4,
            "n_steps": 1500,
            "map_weight": 1e11,
            "output_weight": 1e6,
            "surrogate_beta": (10.0, 100.0),
        }
        settings.update(overrides)
        return cls(forward_func, attribution, **settings)

    def perturb(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        target_map: Tensor | None = None,
        mask: TensorOrTuple | None = None,
        epsilon: float | None = None,
        step_size: float | None = None,
        n_steps: int | None = None,
        restarts: int | None = None,
        attribution_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        return_results: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, AttackResult]:
        """Attack the attributions of ``inputs``.

        Parameters
        ----------
        inputs, target, additional_forward_args, mask, epsilon, step_size, n_steps, \
restarts, attribution_kwargs, generator, return_results
            As in :meth:`TopKAttack.perturb`.
        target_map : Tensor
            The map the explanation should become: non-negative, (H, W), (B, H, W) or
            (B, 1, H, W) matching the attribution map (1 in place of B to share one),
            normalised here to sum to 1 per sample like ``S``.

        Returns
        -------
        Tensor or tuple of Tensor, or (that, AttackResult)
            The perturbed inputs, in the structure of ``inputs``, detached. A sample
            where no iterate improved the criterion comes back unchanged.

        See :class:`ManipulationAttack` for an example.
        """
        eps = self.epsilon if epsilon is None else epsilon
        runs = self.restarts if restarts is None else restarts
        if isinstance(eps, float) and math.isinf(eps):
            if self.random_start:
                raise ValueError(
                    "`epsilon`: an infinite epsilon (box only) has no ball to draw "
                    "this attack's random start in; give a finite epsilon."
                )
            if isinstance(runs, int) and not isinstance(runs, bool) and runs > 1:
                raise ValueError(
                    "`restarts`: random starts are drawn in the epsilon ball, and "
                    "an infinite epsilon (box only) has none; use restarts=1."
                )
        return self._perturb(
            inputs,
            target,
            additional_forward_args,
            mask=mask,
            epsilon=epsilon,
            step_size=step_size,
            n_steps=n_steps,
            restarts=restarts,
            attribution_kwargs=attribution_kwargs,
            generator=generator,
            return_results=return_results,
            extras={"target_map": target_map},
        )

    def _effective_step_size(self, epsilon: float, n_steps: int) -> float:
        if self.step_size is not None:
            return self.step_size
        if math.isinf(epsilon):
            return _DOMBROWSKI_LR
        # An eps of 0 gives lr 0: the projection would undo any step anyway.
        return 4.0 * epsilon / n_steps if epsilon > 0 else 1e-12

    def _setup(self, b: Batch, extras: dict[str, Any]) -> None:
        target_map = extras["target_map"]
        if target_map is None:
            raise ValueError("`target_map` is required by ManipulationAttack.perturb.")
        t = b.map_like(target_map, "target_map")
        total = t.sum(dim=1)
        ok = torch.stack(
            (torch.isfinite(t).all(), (t >= 0).all(), (total > 0).all())
        ).tolist()
        if not (ok[0] and ok[1]):
            raise ValueError("`target_map` must be finite and non-negative.")
        if not ok[2]:
            raise ValueError(
                "`target_map` sums to zero for at least one sample; it is "
                "normalised to sum to 1, which needs some mass."
            )
        b.state["target_map"] = t / total.unsqueeze(1)
        self._output_reference(b)

    def _output_reference(self, b: Batch) -> None:
        with torch.no_grad():
            logits = self._surrogate_logits(b.x0, b).to(b.map0.dtype)
            b.state["output0"] = torch.softmax(logits, dim=1)

    def _surrogate_logits(self, x: tuple[Tensor, ...], b: Batch) -> Tensor:
        assert self.surrogate is not None
        return b.call(self.surrogate, x)

    def _loss(self, maps: Tensor, b: Batch, xg: tuple[Tensor, ...]) -> Tensor:
        target_map = b.state["target_map"].to(maps.dtype)
        map_term = (maps - target_map).square().mean(dim=1)
        # In the map's dtype: float32 for half-precision models, where the
        # weights (1e11, 1e6) would overflow float16.
        logits = self._surrogate_logits(xg, b).to(maps.dtype)
        probs = torch.softmax(logits, dim=1)
        output_term = (probs - b.state["output0"].to(probs.dtype)).square().mean(dim=1)
        return self.map_weight * map_term + self.output_weight * output_term

    # ------------------------------------------------------------ beta growth

    def _beta_at(self, step: int, n_steps: int) -> float:
        """Dombrowski's ``beta0 * (beta1 / beta0) ** (t / T)``, t = step - 1,
        T = n_steps."""
        assert self._schedule is not None
        beta0, beta1 = self._schedule
        return beta0 * (beta1 / beta0) ** ((step - 1) / n_steps)

    def _use_beta(self, beta: float) -> None:
        assert self._model is not None
        # The report and warning were given for the surrogate of the
        # constructor; the per-step copies differ from it only in beta.
        smooth = softplus_surrogate(
            self._model, beta=beta, check_functional=False
        ).eval()
        self.surrogate = (
            smooth
            if self.forward_func is self._model
            else getattr(smooth, self.forward_func.__name__)
        )
        self._direction_attribution = self._bind(self.surrogate)

    def _search(
        self,
        b: Batch,
        full: Batch,
        index: Tensor,
        best_crit: Tensor,
        settings: CallSettings,
    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor, Tensor, int, Tensor]:
        try:
            return super()._search(b, full, index, best_crit, settings)
        finally:
            if self._schedule is not None:
                self.surrogate, self._direction_attribution = self._fixed

    def _step(
        self,
        x: tuple[Tensor, ...],
        x0m: tuple[Tensor, ...],
        b: Batch,
        full: Batch,
        index: Tensor,
        settings: CallSettings,
        step: int,
        optimizer: dict[str, Any],
    ) -> tuple[Tensor, ...]:
        if self._schedule is not None:
            self._use_beta(self._beta_at(step, settings.n_steps))
            # The output term compares like with like: both at this step's beta.
            self._output_reference(b)
        return super()._step(x, x0m, b, full, index, settings, step, optimizer)

    # ------------------------------------------------------ similarity report

    def _report(
        self, result: AttackResult, x: tuple[Tensor, ...], full: Batch
    ) -> AttackResult:
        maps, _ = self._real_map(tuple(t.detach() for t in x), full)
        target_map = full.state["target_map"]
        return dataclasses.replace(
            result,
            similarity_before=_target_similarity(full.map0, target_map, full),
            similarity_after=_target_similarity(maps, target_map, full),
        )


# Dombrowski et al.'s Adam learning rate, used when there is no ball to scale by.
_DOMBROWSKI_LR = 2e-4

# SSIM's window (Joo et al.'s setting, the metric's default).
_SSIM_WINDOW = 7


def _check_beta_schedule(value: object) -> tuple[float, float] | None:
    """A (beta0, beta1) pair as floats; None for a plain number or None."""
    if not isinstance(value, (tuple, list)):
        return None
    if len(value) != 2:
        raise ValueError(
            "`surrogate_beta` must be a number, a pair (beta0, beta1) for the beta "
            f"growth, or None; got a sequence of length {len(value)}."
        )
    beta0 = check_number(value[0], "surrogate_beta", minimum=0.0, strict_minimum=True)
    beta1 = check_number(value[1], "surrogate_beta", minimum=0.0, strict_minimum=True)
    if math.isinf(beta0) or math.isinf(beta1):
        raise ValueError("`surrogate_beta` must be finite.")
    return beta0, beta1


def _target_similarity(maps: Tensor, target_map: Tensor, b: Batch) -> dict[str, Tensor]:
    """MSE, PCC and SSIM between the (B, N) maps and targets, both summing to 1."""
    target_map = target_map.to(maps.dtype)
    if b.shape is not None and min(b.shape) >= _SSIM_WINDOW:
        a, t = maps.view(-1, 1, *b.shape), target_map.view(-1, 1, *b.shape)
        ssim = structural_similarity(a, t, win_size=_SSIM_WINDOW)
    else:
        a, t = maps, target_map
        ssim = torch.full_like(maps[:, 0], math.nan)
    return {
        "mse": mean_squared_error(a, t),
        "pcc": pearson_correlation(a, t),
        "ssim": ssim,
    }
