"""The attacks of Ghorbani et al. (2019): lower the mass of the top-k features,
move the center of mass, raise the mass inside a target region.

Each is the shared loop of :class:`AttributionAttack` with sign steps and its own
loss on the surrogate's normalised map ``S``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import check_positive_int
from captum_robust.attacks._base import BASE_CRITERIA
from captum_robust.attacks._base import AttributionAttack
from captum_robust.attacks._batch import Batch
from captum_robust.attacks._result import AttackResult
from captum_robust.attacks._utils import TensorOrTuple
from captum_robust.metrics._center import center_of_mass_map
from captum_robust.metrics._topk import topk_mask

__all__ = ["MassCenterAttack", "TargetedAttack", "TopKAttack"]

# A center of mass closer than this (in pixels) to the original one counts as
# not moved: MassCenterAttack then pushes it along a fixed direction.
_UNMOVED_CENTER = 1e-3


class TopKAttack(AttributionAttack):
    """Remove the top-k features from the explanation (Ghorbani et al., 2019).

    Descends ``sum(S(x)[top-k of S(x0)])``: the mass of the map on the k features
    that were most important for the original input, so that other features take
    their place, with sign steps inside an L-inf ball. The direction is computed
    on a softplus surrogate; the iterate is selected on the real model by the
    criterion (top-k intersection by default, as Ghorbani et al.; Chen et al.
    select by Kendall's tau).

    Parameters
    ----------
    forward_func : nn.Module or callable
        The classifier, returning logits (B, classes). An ``nn.Module`` (or a bound
        method of one) is put in eval mode during the attack and its modes are
        restored afterwards.
    attribution : captum.attr.Attribution or callable
        Saliency, InputXGradient, IntegratedGradients, GradientShap, LayerGradCam,
        NoiseTunnel over those, a :class:`~captum_robust.attr.DifferentiableAttribution`
        or a differentiable callable, made differentiable by
        :func:`~captum_robust.attr.differentiable` (which refuses, with a
        ``TypeError`` saying why, methods that cannot be: Occlusion, DeepLift, ...).
        The user's object is never modified.
    k : int, default 100
        Size of the original top-k set whose mass is lowered (100 for 28x28 to
        32x32 images, 1000 for larger ones in the papers); at most the number of
        features of the map.
    epsilon : float, default 8/255
        Radius of the L-inf ball around the input; >= 0.
    step_size : float, default 1/255
        Step per iteration (``alpha`` of the sign step).
    n_steps : int, default 50
        Steps per restart.
    restarts : int, default 1
        Runs of the attack; the best iterate over all of them is kept. The first
        starts at the input (unless ``random_start``), the others at a uniform
        random point of the ball (drawn from ``seed``). Chen et al. use 3.
    random_start : bool, default False
        Start the first restart at a random point too.
    criterion : {"topk", "kendall", "spearman", "center_shift"}, default "topk"
        How iterates are compared with the original map on the real model; lower
        is better except for ``center_shift``.
    surrogate_beta : float or None, default 10.0
        The attack direction is computed on
        :func:`~captum_robust.attr.softplus_surrogate` ``(forward_func, beta)``
        (ReLU -> Softplus(beta)), since second derivatives of a ReLU network vanish;
        the papers use 1 to 100. None computes it on ``forward_func`` itself (for
        smooth models and for plain-callable attributions, which cannot be rebound).
    surrogate : callable or None, default None
        A smooth model to use instead of building one.
    lower_bound, upper_bound : float, default 0.0, 1.0
        Every iterate is clamped to this range (images in [0, 1] by default). Inputs
        outside it are refused: set the range of your (e.g. normalised) inputs.
    criterion_k : int, default ``k``
        k of the top-k intersection when ``criterion="topk"``.
    attribution_kwargs : dict or None, default None
        Passed to ``attribution.attribute`` on every call (surrogate and real
        model), e.g. ``{"n_steps": 100, "method": "riemann_right"}`` for the
        Integrated Gradients of Chen et al., or ``baselines``. Captum's defaults
        otherwise. On a CPU, Integrated Gradients is computed for a few samples at
        a time (about 128 model evaluations per call), which keeps the activations
        in cache and is several times faster than the whole batch at once; give
        ``internal_batch_size`` (in model evaluations) to choose the size yourself.
    seed : int or None, default 0
        Seeds a fresh generator on every ``perturb`` call (random starts, random
        steps), so calls are reproducible; None uses torch's global generator. The
        draws of random attribution methods (GradientShap, NoiseTunnel) are fixed
        by it too (0 when None), so the original and every iterate are explained
        under the same noise.

    Notes
    -----
    The loop (shared by every attack, vectorised over the batch): at each step,
    ``x <- clip_[lower, upper](x0 + clip_[-eps, eps](x + update - x0))``, with
    pixels outside ``mask`` never changed; the attribution of the iterate on the
    real model is compared with the original one by the criterion, and each sample
    keeps its best iterate among those whose predicted class is still the original
    one. Samples misclassified before the attack (prediction != ``target``) are
    returned unchanged and reported as skipped. The attack stops early when every
    sample has reached the best possible criterion value (checked every 5 steps).

    The map ``S`` the losses and criteria use is the channel-summed absolute
    attribution, flattened and divided by its sum (so it sums to 1: the losses then
    depend on where the attribution mass is, not on its scale; rank criteria do not
    change).

    Where a sample's attack gradient is exactly zero (a flat point of the loss,
    e.g. the top-k mass of a digit whose whole support is inside the top-k set),
    its step is a seeded random sign step, so no sample stays at its input for lack
    of a gradient. A sample whose gradient was zero at every step (e.g. a ReLU
    model with ``surrogate_beta=None``) was attacked at random only: it is marked in
    ``AttackResult.no_gradient``; one that never left its input (the mask leaves no
    pixel free) in ``AttackResult.unmoved``; each is counted in a
    ``RuntimeWarning``. The direction's second-order pass runs under
    ``second_order_safe()`` (hardsigmoid/hardswish rerouted to twice differentiable
    forms, the math attention kernel), so MobileNetV3 and ViT can be attacked.

    Half-precision inputs (float16, bfloat16) are iterated, mapped and scored in
    float32 and cast to the input's dtype for the model (returned iterates stay in
    the ball after rounding); float16 backward passes are loss-scaled per sample.
    The criteria are then float32.

    The user's model (mode, ``requires_grad``, ``.grad``, buffers), attribution
    object and inputs are left as they were. Every sample is attacked independently
    of the others: a deterministic attack gives the same result for a sample alone
    or in a batch. Random starts and random steps are drawn for the whole batch, so
    with those a sample's draws depend on its position in the batch.

    The softplus surrogate is built once, in the constructor, and shares the
    model's parameters and buffers: later weight updates reach it, but build the
    attack after moving the model to its device (``.to()`` replaces buffers).

    Defaults follow the common 32x32 setting (Chen et al. GTSRB, ART CIFAR-10):
    eps 8/255, 50 steps of 1/255, k 100. For MNIST Chen et al. use eps 0.3,
    alpha 0.01, 100 steps, k 200 in the attack and 100 in the metric.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attacks import TopKAttack
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> attack = TopKAttack(model, Saliency(model), k=8, n_steps=5)
    >>> x = torch.rand(4, 1, 8, 8)
    >>> x_adv, result = attack.perturb(x, return_results=True)
    >>> x_adv.shape
    torch.Size([4, 1, 8, 8])
    >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    True
    >>> bool(result.label_kept.all())
    True
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attribution: Any,
        *,
        k: int = 100,
        epsilon: float = 8 / 255,
        step_size: float = 1 / 255,
        n_steps: int = 50,
        restarts: int = 1,
        random_start: bool = False,
        criterion: str = "topk",
        surrogate_beta: float | None = 10.0,
        surrogate: Callable[..., Any] | None = None,
        lower_bound: float = 0.0,
        upper_bound: float = 1.0,
        criterion_k: int | None = None,
        attribution_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
    ) -> None:
        self.k = check_positive_int(k, "k")
        super().__init__(
            forward_func,
            attribution,
            epsilon=epsilon,
            step_size=step_size,
            n_steps=n_steps,
            restarts=restarts,
            random_start=random_start,
            surrogate_beta=surrogate_beta,
            surrogate=surrogate,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            criterion=criterion,
            criterion_k=self.k if criterion_k is None else criterion_k,
            attribution_kwargs=attribution_kwargs,
            seed=seed,
        )

    # The shared perturb, listed here so that the class's page documents it.
    perturb = AttributionAttack.perturb

    def _setup(self, b: Batch, extras: dict[str, Any]) -> None:
        n = int(b.map0.shape[1])
        if self.k > n:
            raise ValueError(
                f"`k` ({self.k}) must be at most the number of features of the "
                f"attribution map ({n})."
            )
        b.state["topk"] = topk_mask(b.map0, self.k).to(b.map0.dtype)

    def _loss(self, maps: Tensor, b: Batch, xg: tuple[Tensor, ...]) -> Tensor:
        return (maps * b.state["topk"].to(maps.dtype)).sum(dim=1)


class MassCenterAttack(AttributionAttack):
    """Move the center of mass of the explanation (Ghorbani et al., 2019).

    Descends ``-||C(S(x)) - C(S(x0))||^2``, where ``C`` is the map-weighted mean
    pixel coordinate, with sign steps inside an L-inf ball; iterates are selected
    on the real model by the center shift in pixels (highest kept). Needs an
    image attribution, (B, C, H, W) or (B, H, W).

    At the input itself the squared shift has zero gradient when the surrogate's
    center equals the original one (smooth models: SiLU, GELU, or
    ``surrogate_beta=None``), which left such samples at ``x0``. The attack
    therefore descends ``-v . d`` with ``d = C(S(x)) - C0`` and ``v = d / ||d||``
    held fixed: the same sign steps as the squared loss wherever the center has
    moved (more than 1e-3 pixels), and, where it has not, a push along the fixed
    direction from the image's middle to ``C0`` (the diagonal if ``C0`` is the
    middle).

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
        Step per iteration (``alpha`` of the sign step).
    n_steps : int, default 50
        Steps per restart.
    restarts : int, default 1
        Runs of the attack; the best iterate over all of them is kept (see
        :class:`TopKAttack`).
    random_start : bool, default False
        Start the first restart at a random point too.
    criterion : {"center_shift", "topk", "kendall", "spearman"}, default \
"center_shift"
        How iterates are compared with the original map on the real model.
    surrogate_beta : float or None, default 10.0
        Beta of the softplus surrogate the attack direction is computed on, as
        in :class:`TopKAttack`; None computes it on ``forward_func`` itself.
    surrogate : callable or None, default None
        A smooth model to use instead of building one.
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

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attacks import MassCenterAttack
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> attack = MassCenterAttack(model, Saliency(model), n_steps=5)
    >>> x_adv, result = attack.perturb(torch.rand(2, 1, 8, 8), return_results=True)
    >>> bool((result.criterion_after >= 0).all())  # shift in pixels
    True
    """

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
        criterion: str = "center_shift",
        surrogate_beta: float | None = 10.0,
        surrogate: Callable[..., Any] | None = None,
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
            surrogate_beta=surrogate_beta,
            surrogate=surrogate,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            criterion=criterion,
            criterion_k=criterion_k,
            attribution_kwargs=attribution_kwargs,
            seed=seed,
        )

    # The shared perturb, listed here so that the class's page documents it.
    perturb = AttributionAttack.perturb

    def _needs_spatial(self) -> bool:
        return True

    def _setup(self, b: Batch, extras: dict[str, Any]) -> None:
        assert b.shape is not None
        center0 = center_of_mass_map(b.map0.view(-1, *b.shape))
        b.state["center0"] = center0
        # The direction to push a center that has not moved yet: away from the
        # middle of the image, or along the diagonal from the middle itself.
        h, w = b.shape
        middle = torch.tensor(
            [(h - 1) / 2, (w - 1) / 2], dtype=center0.dtype, device=center0.device
        )
        away = torch.nan_to_num(center0 - middle)
        length = away.norm(dim=1, keepdim=True)
        diagonal = torch.full_like(away, 0.5**0.5)
        b.state["push"] = torch.where(
            length > _UNMOVED_CENTER, away / length.clamp_min(1e-30), diagonal
        )

    def _loss(self, maps: Tensor, b: Batch, xg: tuple[Tensor, ...]) -> Tensor:
        # The sign step only uses the gradient's sign, per sample. With
        # d = C(S(x)) - C0, grad(-||d||^2) = 2 ||d|| grad(-v . d) for v = d / ||d||
        # held fixed, so descending -v . d takes the same steps. Where d = 0 (the
        # input itself, on a smooth model whose surrogate is the model) the
        # squared loss has no gradient and the sample never moved; -v . d with
        # the fixed push direction v still has one.
        assert b.shape is not None
        centers = center_of_mass_map(maps.view(-1, *b.shape))
        d = centers - b.state["center0"].to(maps.dtype)
        length = d.detach().norm(dim=1, keepdim=True)
        v = torch.where(
            length > _UNMOVED_CENTER,
            d.detach() / length.clamp_min(1e-30),
            b.state["push"].to(maps.dtype),
        )
        return -(v * d).sum(dim=1)


class TargetedAttack(AttributionAttack):
    """Raise the explanation's mass inside a target region (Ghorbani et al., 2019).

    Descends ``-sum(S(x) * T)`` for a binary target region ``T`` given to
    :meth:`perturb`, with sign steps inside an L-inf ball; iterates are selected
    on the real model by the share of the map's mass inside ``T`` (highest
    kept), or by another criterion.

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
        Step per iteration (``alpha`` of the sign step).
    n_steps : int, default 50
        Steps per restart.
    restarts : int, default 1
        Runs of the attack; the best iterate over all of them is kept (see
        :class:`TopKAttack`).
    random_start : bool, default False
        Start the first restart at a random point too.
    criterion : {"target_mass", "topk", "kendall", "spearman", "center_shift"}, \
default "target_mass"
        How iterates are compared on the real model. ``target_mass`` is
        ``sum(S * T)``, in [0, 1], higher is better.
    surrogate_beta : float or None, default 10.0
        Beta of the softplus surrogate the attack direction is computed on, as
        in :class:`TopKAttack`; None computes it on ``forward_func`` itself.
    surrogate : callable or None, default None
        A smooth model to use instead of building one.
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

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attacks import TargetedAttack
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> region = torch.zeros(8, 8, dtype=torch.bool)
    >>> region[:, :3] = True  # raise attribution on the left border
    >>> attack = TargetedAttack(model, Saliency(model), n_steps=5)
    >>> x_adv, result = attack.perturb(
    ...     torch.rand(2, 1, 8, 8), target_region=region, return_results=True)
    >>> bool((result.criterion_after >= result.criterion_before).all())
    True
    """

    _criteria = ("target_mass", *BASE_CRITERIA)

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
        criterion: str = "target_mass",
        surrogate_beta: float | None = 10.0,
        surrogate: Callable[..., Any] | None = None,
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
            surrogate_beta=surrogate_beta,
            surrogate=surrogate,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            criterion=criterion,
            criterion_k=criterion_k,
            attribution_kwargs=attribution_kwargs,
            seed=seed,
        )

    def perturb(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        target_region: Tensor | None = None,
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
        target_region : Tensor
            Binary region T where attribution should be raised, (H, W), (B, H, W) or
            (B, 1, H, W) matching the attribution map (1 in place of B to share one);
            every sample needs at least one pixel in it.

        Returns
        -------
        Tensor or tuple of Tensor, or (that, AttackResult)
            The perturbed inputs, in the structure of ``inputs``, detached. A sample
            where no iterate improved the criterion comes back unchanged.

        See :class:`TargetedAttack` for an example.
        """
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
            extras={"target_region": target_region},
        )

    def _setup(self, b: Batch, extras: dict[str, Any]) -> None:
        region = extras["target_region"]
        if region is None:
            raise ValueError("`target_region` is required by TargetedAttack.perturb.")
        region = b.map_like(region, "target_region")
        binary = (region == 0) | (region == 1)
        nonempty = region.sum(dim=1) > 0
        ok = torch.stack((binary.all(), nonempty.all())).tolist()
        if not ok[0]:
            raise ValueError("`target_region` must be binary (only 0 and 1 values).")
        if not ok[1]:
            raise ValueError(
                "`target_region` is empty for at least one sample; every sample "
                "needs a target pixel."
            )
        b.state["region"] = region

    def _loss(self, maps: Tensor, b: Batch, xg: tuple[Tensor, ...]) -> Tensor:
        return -(maps * b.state["region"].to(maps.dtype)).sum(dim=1)
