"""Explanation-consistency sample weights (Wu et al., IEEE TMM 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.ball import Bounds
from captum_robust._utils.ball import Radius
from captum_robust._utils.ball import as_like
from captum_robust._utils.ball import check_bounds_pair
from captum_robust._utils.ball import check_radius
from captum_robust._utils.ball import project
from captum_robust._utils.second_order import second_order_safe
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust.attr import differentiable
from captum_robust.metrics._maps import flatten_attribution
from captum_robust.regularizers._base import Regularizer
from captum_robust.regularizers._checks import check_class_scores
from captum_robust.regularizers._checks import check_mask
from captum_robust.regularizers._gradients import input_gradient
from captum_robust.regularizers._gradients import per_sample_ce
from captum_robust.regularizers._gradients import target_logit
from captum_robust.regularizers._state import SeededMixin
from captum_robust.regularizers._state import SmoothMixin
from captum_robust.regularizers._state import frozen_running_stats

__all__ = ["ExplanationConsistencyWeights"]

SIMILARITIES = ("cosine", "pearson")
BACKGROUNDS = ("quantile", "mask")


def _similarity(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Per-row similarity of (B, N) maps; 0 where a map is constant (Pearson) or
    zero (cosine), i.e. where the similarity is undefined."""
    if kind == "pearson":
        a = a - a.mean(dim=1, keepdim=True)
        b = b - b.mean(dim=1, keepdim=True)
    return F.cosine_similarity(a, b, dim=1, eps=1e-12)


class ExplanationConsistencyWeights(Regularizer, SeededMixin, SmoothMixin):
    r"""Per-sample loss weights from the consistency of a sample's explanation.

    Wu et al. (IEEE TMM 2024) weight each training sample by how much its heatmap
    changes when only the image *background* is perturbed adversarially while
    the prediction is kept:

    .. math::
        v_i = 1 - E(x_i, \hat x_i), \qquad
        E = \operatorname{sim}(S(x), S(\hat x)),

    and train on :math:`\operatorname{mean}_i v_i\, \ell_i`. Samples whose
    explanation is easy to move by background changes get more weight.
    :math:`\hat x` is found by sign-gradient descent of the similarity inside the
    L-inf ball of radius ``eps``, moving background pixels only; per sample the
    iterate with the lowest similarity whose predicted class (on the real model)
    equals the prediction at :math:`x` is kept (:math:`x` itself, with
    similarity 1, if none is).

    The paper leaves the similarity, the background and the attack settings
    open; they are parameters here.

    Parameters
    ----------
    attribution : Captum attribution, DifferentiableAttribution, callable or None
        The heatmap method. None (default): the gradient of the target logit,
        absolute value summed over channels (saliency). Otherwise anything
        :func:`~captum_robust.attr.differentiable` accepts, bound to the model that
        is passed to each call; the attribution after ``abs`` and a channel sum
        must have the input's spatial size (e.g. ``LayerGradCam`` needs
        ``upsample_to_input=True``).
    similarity : {"cosine", "pearson"}, default "cosine"
        Similarity of the two flattened heatmaps. For the non-negative saliency
        maps the cosine lies in [0, 1], so ``v`` lies in [0, 1]; Pearson's r lies
        in [-1, 1] and ``v`` in [0, 2]. Where it is undefined (an all-zero map
        for the cosine, a constant map for Pearson) the similarity counts as 0
        (weight 1).
    background : {"quantile", "mask"}, default "quantile"
        Which pixels may be perturbed. "quantile": the ``quantile`` share of the
        pixels with the lowest heatmap values at ``x``. "mask": the pixels outside
        the object mask passed to the call.
    quantile : float in (0, 1], default 0.5
        Share of pixels treated as background for ``background="quantile"``.
    eps : float or Tensor, default 8/255
        L-inf radius of the background perturbation, in input units.
    attack_steps : int, default 10
        Sign-gradient steps.
    attack_step_size : float or Tensor, default 2/255
        Step size.
    random_start : bool, default True
        Start from a uniform draw in the ball (background only).
    bounds : (low, high) or None, default (0.0, 1.0)
        Valid input range.
    normalize : bool, default False
        Divide the weights by their batch mean (all ones if they are all zero),
        so that the weighted loss keeps the scale of the plain loss.
    softplus_beta : float or None, default 10.0
        The attack direction is the gradient of a gradient, which vanishes for
        ReLU networks; it is taken on the model with ReLU modules swapped for
        softplus(beta) (similarities and predictions are measured on the real
        model). None uses the model as it is.
    seed, generator
        Source of the random start; see
        :class:`~captum_robust.regularizers.LocalGradientAlignment`.

    Attributes
    ----------
    last_perturbed : Tensor or None
        :math:`\hat x` of the last call (detached).
    last_similarity : Tensor or None
        :math:`E` of the last call, shape (B,).

    Notes
    -----
    The weights are detached: they re-weight the loss, they are not trained
    through. The paper alternates training with re-assessment of the weights; a
    schedule (how often to recompute) is left to the caller, e.g. compute the
    weights every few epochs and keep them per sample index. Forward passes made
    here do not update the running statistics of normalisation layers.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> from captum_robust.regularizers import ExplanationConsistencyWeights
    >>> model = nn.Sequential(
    ...     nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ... )
    >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 2])
    >>> reweight = ExplanationConsistencyWeights(attack_steps=2, seed=0)
    >>> v = reweight(model, x, y)
    >>> v.shape, v.requires_grad, bool(((v >= 0) & (v <= 1)).all())
    (torch.Size([2]), False, True)
    >>> loss = (v * F.cross_entropy(model(x), y, reduction="none")).mean()
    >>> mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    >>> mask[:, 1:3, 1:3] = True  # object pixels; the rest may be perturbed
    >>> by_mask = ExplanationConsistencyWeights(background="mask", attack_steps=2)
    >>> by_mask(model, x, y, mask).shape
    torch.Size([2])
    """

    def __init__(
        self,
        attribution: Any = None,
        *,
        similarity: str = "cosine",
        background: str = "quantile",
        quantile: float = 0.5,
        eps: Radius = 8 / 255,
        attack_steps: int = 10,
        attack_step_size: Radius = 2 / 255,
        random_start: bool = True,
        bounds: Bounds | None = (0.0, 1.0),
        normalize: bool = False,
        softplus_beta: float | None = 10.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.attribution = None if attribution is None else differentiable(attribution)
        check_choice(similarity, SIMILARITIES, "similarity")
        self.similarity = similarity
        check_choice(background, BACKGROUNDS, "background")
        self.background = background
        self.quantile = check_number(
            quantile, "quantile", minimum=0.0, maximum=1.0, strict_minimum=True
        )
        self.eps = check_radius(eps, "eps")
        self.attack_steps = check_positive_int(attack_steps, "attack_steps", minimum=0)
        self.attack_step_size = check_radius(attack_step_size, "attack_step_size")
        self.random_start = check_bool(random_start, "random_start")
        self.bounds = check_bounds_pair(bounds)
        self.normalize = check_bool(normalize, "normalize")
        self._init_smooth(softplus_beta)
        self._init_random(seed, generator)
        self.last_perturbed: Tensor | None = None
        self.last_similarity: Tensor | None = None

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor | int,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Per-sample weights ``v = 1 - E(x, x_hat)``, shape (B,), detached.

        Parameters
        ----------
        model : nn.Module
            Classifier returning (B, num_classes) scores.
        inputs : Tensor
            (B, C, H, W) images (or (B, ...) features).
        target : Tensor or int
            (B,) classes whose heatmaps are compared.
        mask : Tensor or None
            Object mask, (B, H, W), (B, 1, H, W) or shaped like ``inputs``;
            required for ``background="mask"`` and refused otherwise.
        """
        return self._run(model, inputs, target, mask)

    def loss(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor | int,
        mask: Tensor | None = None,
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The weighted loss ``mean_i v_i * loss_fn(model(inputs), target)_i``.

        ``loss_fn`` must return per-sample losses of shape (B,); the default is
        cross-entropy with ``reduction="none"``.
        """
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"`loss_fn` must be callable, got {type(loss_fn).__name__}."
            )
        return self._run(model, inputs, target, mask, loss_fn=loss_fn or per_sample_ce)

    # ----------------------------------------------------------------- internals

    def _term_and_task(
        self,
        model: nn.Module,
        x: Tensor,
        t: Tensor,
        mask: Tensor | None,
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
    ) -> tuple[Tensor, Tensor | None]:
        if self.background == "mask":
            if mask is None:
                raise ValueError(
                    '`mask` is required with background="mask" (the object mask; '
                    "pixels outside it are perturbed)."
                )
            background = ~check_mask(mask, x)
        elif mask is not None:
            raise ValueError(
                '`mask` is only used with background="mask"; this object chooses '
                "the background by heatmap quantile. Construct it with "
                'background="mask".'
            )
        else:
            background = None
        attribution = self._bound_attribution(model)
        # The attack differentiates a heatmap (an input gradient): second order.
        with frozen_running_stats(model), second_order_safe():
            weights = self._weights(model, attribution, x, t, background)
        if loss_fn is None:
            return weights, None
        per_sample = loss_fn(check_class_scores(model(x), t), t)
        if not isinstance(per_sample, Tensor) or tuple(per_sample.shape) != (
            x.shape[0],
        ):
            raise ValueError(
                "`loss_fn` must return per-sample losses of shape "
                f"({x.shape[0]},), e.g. cross_entropy(..., reduction='none')."
            )
        return weights, per_sample

    def _objective(self, term: Tensor, task: Tensor) -> Tensor:
        # The term is the sample weights, the task loss per sample.
        return (term * task).mean()

    def _bound_attribution(self, model: nn.Module) -> Any:
        attr = self.attribution
        if attr is not None and attr.forward_func is not None:
            if attr.forward_func is not model:
                raise ValueError(
                    "`model` is not the model that `attribution` was built on; pass "
                    "the same model, or build the attribution on it."
                )
        return attr

    def _heatmap(
        self,
        model: nn.Module,
        attr: Any,
        x: Tensor,
        t: Tensor,
        *,
        create_graph: bool,
        check: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(B, N) heatmap and the logits at x; graph to x only if it requires grad.

        ``check`` validates the logits and the target before they are used.
        """
        if attr is None:
            heat, logits, _ = input_gradient(
                model, x, t, target_logit, create_graph=create_graph, check=check
            )
        else:
            with torch.no_grad():
                logits = model(x.detach())
            if check:
                check_class_scores(logits, t)
            heat = attr.attribute(x, target=t)
            if not isinstance(heat, Tensor):
                raise TypeError(
                    f"`attribution` must return one Tensor, got {type(heat).__name__}."
                )
            if not create_graph:
                heat = heat.detach()
        flat = flatten_attribution(heat, abs=True, validate=False)
        return flat, logits.detach()

    def _to_input(self, flat: Tensor, x: Tensor) -> Tensor:
        shape = (x.shape[0], 1) + tuple(x.shape[2:]) if x.dim() >= 4 else x.shape
        numel = 1
        for s in shape[1:]:
            numel *= s
        if flat.shape[1] != numel:
            raise ValueError(
                f"`attribution` gives maps of {flat.shape[1]} pixels, but the inputs "
                f"have {numel}; the map must have the input's spatial size (for "
                "LayerGradCam use upsample_to_input=True)."
            )
        return flat.view(shape)

    def _quantile_background(self, ref: Tensor, x: Tensor) -> Tensor:
        n = ref.shape[1]
        k = max(1, round(self.quantile * n))
        order = ref.argsort(dim=1, stable=True)[:, :k]
        flat = torch.zeros_like(ref, dtype=torch.bool).scatter_(1, order, True)
        return self._to_input(flat, x)

    def _weights(
        self,
        model: nn.Module,
        attr: Any,
        x: Tensor,
        t: Tensor,
        background: Tensor | None,
    ) -> Tensor:
        ref, logits = self._heatmap(model, attr, x, t, create_graph=False, check=True)
        self._to_input(ref, x)  # refuses maps of the wrong size early
        pred = logits.argmax(dim=1)
        if background is None:
            background = self._quantile_background(ref, x)
        step_mask = background.to(x.dtype)
        eps = as_like(self.eps, x)
        step_size = as_like(self.attack_step_size, x)
        batch_view = (-1,) + (1,) * (x.dim() - 1)

        best = x.clone()
        best_sim = torch.ones(x.shape[0], device=x.device, dtype=ref.dtype)

        def restrict(adv: Tensor) -> Tensor:
            return x + (project(adv, x, eps, self.bounds) - x) * step_mask

        def keep(adv: Tensor, heat: Tensor, adv_logits: Tensor) -> None:
            nonlocal best, best_sim
            sim = _similarity(heat.detach(), ref, self.similarity)
            better = (adv_logits.argmax(dim=1) == pred) & (sim < best_sim)
            best_sim = torch.where(better, sim, best_sim)
            best = torch.where(better.view(batch_view), adv.detach(), best)

        adv = x
        if self.random_start:
            adv = restrict(x + (2.0 * self._draw("rand", x) - 1.0) * eps)
        same_model = self.softplus_beta is None
        for step in range(self.attack_steps + 1):
            last = step == self.attack_steps
            evaluate = step > 0 or self.random_start
            if same_model and not last:
                # One pass serves both the measurement and the direction.
                leaf = adv.detach().requires_grad_(True)
                heat, adv_logits = self._heatmap(
                    model, attr, leaf, t, create_graph=True
                )
                if evaluate:
                    keep(adv, heat, adv_logits)
                direction = self._direction(heat, ref, leaf)
            else:
                if evaluate:
                    heat, adv_logits = self._heatmap(
                        model, attr, adv.detach(), t, create_graph=False
                    )
                    keep(adv, heat, adv_logits)
                if last:
                    break
                with self._smooth(model):
                    leaf = adv.detach().requires_grad_(True)
                    heat, _ = self._heatmap(model, attr, leaf, t, create_graph=True)
                    direction = self._direction(heat, ref, leaf)
            if last:
                break
            adv = restrict(adv.detach() - step_size * direction)

        self.last_perturbed = best
        self.last_similarity = best_sim
        weights = 1.0 - best_sim
        if self.normalize:
            mean = weights.mean()
            weights = torch.where(
                mean > 0, weights / mean.clamp_min(1e-12), torch.ones_like(weights)
            )
        return weights.detach().to(x.dtype)

    def _direction(self, heat: Tensor, ref: Tensor, leaf: Tensor) -> Tensor:
        sim = _similarity(heat, ref, self.similarity).sum()
        (grad,) = torch.autograd.grad(sim, leaf, allow_unused=True)
        if grad is None:  # the heatmap does not depend on the input
            return torch.zeros_like(leaf)
        return grad.sign()

    def __repr__(self) -> str:
        method = "saliency" if self.attribution is None else self.attribution.method
        return (
            f"ExplanationConsistencyWeights(attribution={method!r}, "
            f"similarity={self.similarity!r}, background={self.background!r}, "
            f"eps={self.eps!r}, attack_steps={self.attack_steps}, "
            f"softplus_beta={self.softplus_beta})"
        )
