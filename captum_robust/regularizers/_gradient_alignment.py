"""Local gradient alignment (Joo et al., AAAI 2023) and its Hessian-norm baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.ball import Bounds
from captum_robust._utils.ball import Radius
from captum_robust._utils.ball import as_like
from captum_robust._utils.ball import check_bounds_pair
from captum_robust._utils.ball import check_radius
from captum_robust._utils.ball import pgd_ascent
from captum_robust._utils.ball import project
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_positive_int
from captum_robust.regularizers._base import GradientRegularizer
from captum_robust.regularizers._base import Regularizer
from captum_robust.regularizers._checks import LossFn
from captum_robust.regularizers._checks import check_weight
from captum_robust.regularizers._gradients import flat_sq_norm
from captum_robust.regularizers._gradients import input_gradient
from captum_robust.regularizers._gradients import target_logit
from captum_robust.regularizers._state import SeededMixin
from captum_robust.regularizers._state import unwrap_parallel

__all__ = ["HessianNorm", "LocalGradientAlignment"]

NEIGHBOURS = ("uniform", "gaussian", "gradient", "adversarial")


class LocalGradientAlignment(GradientRegularizer, SeededMixin):
    r"""Align the input gradient at ``x`` with the one at a nearby point.

    Joo et al.'s local gradient alignment (AAAI 2023). With
    :math:`g(x) = \partial\, \mathrm{logit}_y(x) / \partial x` and a neighbour
    :math:`x_r` of :math:`x`, the term is

    .. math::
        w_{l2}\, \operatorname{mean}_i \lVert g(x_i) - g(x_{r,i}) \rVert_2^2
        + w_{cos}\, \operatorname{mean}_i \frac{1 - \cos(g(x_i), g(x_{r,i}))}{2}

    Both are differentiated with respect to the model's parameters (double
    back-propagation); the source gradient :math:`g(x)` is a constant by default,
    as in the reference code.

    Parameters
    ----------
    eps : float or Tensor, default 4/255
        Radius of the neighbourhood in input units (the paper's 4 in 0-255 pixel
        scale, for inputs in [0, 1]). For normalised inputs pass ``eps / std``; a
        Tensor broadcast against the inputs (e.g. shape (C, 1, 1)) gives one
        radius per channel.
    l2_weight : float, default 0.01
        Weight of the squared L2 distance. The paper uses 0.01 (CIFAR-10 LeNet and
        ResNet18) and 1.0 (ImageNet-100 ResNet18).
    cos_weight : float, default 1.0
        Weight of the cosine distance. The paper uses 1.0 (CIFAR-10 LeNet), 0.1
        (CIFAR-10 ResNet18) and 0.01 (ImageNet-100 ResNet18).
    neighbour : {"uniform", "gaussian", "gradient", "adversarial"}, default "uniform"
        How :math:`x_r` is drawn: ``x + U(-eps, eps)`` (the paper's choice),
        ``x + eps * N(0, 1)``, ``x + eps * g(x) / ||g(x)||_2`` (the reference
        code's "grad" option), or sign-gradient ascent of the term from a uniform
        start, ``attack_steps`` steps of ``attack_step_size`` inside the L-inf ball.
    detach_source : bool, default True
        Treat :math:`g(x)` as a constant (the reference default). False also
        differentiates through it (one more double back-propagation).
    attack_steps : int, default 1
        Ascent steps for ``neighbour="adversarial"``.
    attack_step_size : float, Tensor or None, default None
        Step size for ``neighbour="adversarial"``; None uses ``eps``.
    bounds : (low, high) or None, default None
        Clamp :math:`x_r` into the valid input range. The reference code does not
        clamp.
    softplus_beta : float or None, default None
        If given, every gradient is taken on the model with its ``nn.ReLU`` /
        ``nn.LeakyReLU`` modules swapped for softplus of this sharpness
        (:func:`~captum_robust.attr.softplus_activations`) for the duration of the
        call. The term does not vanish for ReLU networks (their input gradients
        depend on the parameters), but Joo et al. train softplus networks
        (beta = 3) so that the gradients are smooth in the input.
    seed : int or None, default None
        Seed of the regularizer's own generator (one per device); successive calls
        draw new neighbours and a run is reproducible. None draws a seed from
        torch's global generator at construction.
    generator : torch.Generator or None, default None
        Use this generator instead (not together with ``seed``).

    Notes
    -----
    ``reg(model, x, y)`` returns the term only (call it after or before the task
    loss; it runs its own forward passes). ``reg.loss(model, x, y)`` returns
    ``loss_fn(model(x), y) + term`` and shares the forward pass at ``x`` between
    the two, as the reference implementation does, which saves one forward pass
    (with ``softplus_beta`` set, the task loss runs on the real model in a forward
    pass of its own).
    The term's own forward passes leave the running statistics of batch
    normalisation layers unchanged (the task-loss forward pass updates them).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import LocalGradientAlignment
    >>> model = nn.Sequential(
    ...     nn.Flatten(), nn.Linear(12, 16), nn.Softplus(beta=3.0), nn.Linear(16, 3)
    ... )
    >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    >>> reg = LocalGradientAlignment(seed=0)
    >>> term = reg(model, x, y)  # add to your task loss
    >>> term.dim(), term.requires_grad
    (0, True)
    >>> loss = reg.loss(model, x, y)  # cross-entropy + term, one shared forward
    >>> loss.backward()
    """

    _scalar = staticmethod(target_logit)

    # Named here for this class's API page (see Regularizer).
    __call__ = Regularizer.__call__
    loss = Regularizer.loss

    def __init__(
        self,
        eps: Radius = 4 / 255,
        *,
        l2_weight: float = 0.01,
        cos_weight: float = 1.0,
        neighbour: str = "uniform",
        detach_source: bool = True,
        attack_steps: int = 1,
        attack_step_size: Radius | None = None,
        bounds: Bounds | None = None,
        softplus_beta: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.eps = check_radius(eps, "eps")
        self.l2_weight = check_weight(l2_weight, "l2_weight")
        self.cos_weight = check_weight(cos_weight, "cos_weight")
        check_choice(neighbour, NEIGHBOURS, "neighbour")
        self.neighbour = neighbour
        self.detach_source = check_bool(detach_source, "detach_source")
        self.attack_steps = check_positive_int(attack_steps, "attack_steps", minimum=0)
        self.attack_step_size = (
            None
            if attack_step_size is None
            else check_radius(attack_step_size, "attack_step_size")
        )
        self.bounds = check_bounds_pair(bounds)
        self._init_smooth(softplus_beta)
        self._init_random(seed, generator)

    @property
    def _source_graph(self) -> bool:
        return not self.detach_source

    def _alignment(self, g: Tensor, g_r: Tensor) -> Tensor:
        """Per-sample weighted distance between two gradients."""
        out = 0.0
        if self.l2_weight:
            out = self.l2_weight * flat_sq_norm(g - g_r)
        if self.cos_weight:
            cos = F.cosine_similarity(g.flatten(1), g_r.flatten(1), dim=1, eps=1e-8)
            out = out + self.cos_weight * (1.0 - cos) / 2.0
        if isinstance(out, float):
            out = torch.zeros(g.shape[0], device=g.device, dtype=g.dtype)
        return out

    def _neighbour(self, model: nn.Module, x: Tensor, t: Tensor, g: Tensor) -> Tensor:
        eps = as_like(self.eps, x)
        if self.neighbour == "uniform":
            x_r = x + (2.0 * self._draw("rand", x) - 1.0) * eps
        elif self.neighbour == "gaussian":
            x_r = x + eps * self._draw("randn", x)
        elif self.neighbour == "gradient":
            g = g.detach()
            norm = g.flatten(1).norm(dim=1).view((-1,) + (1,) * (x.dim() - 1))
            x_r = x + eps * g / (norm + 1e-8)
        else:
            step = self.attack_step_size
            step = eps if step is None else as_like(step, x)
            source = g.detach()
            inner = unwrap_parallel(model)

            def objective(adv: Tensor) -> Tensor:
                g_adv, _, _ = input_gradient(
                    inner, adv, t, target_logit, create_graph=True
                )
                return self._alignment(source, g_adv).sum()

            return pgd_ascent(
                objective,
                x,
                eps=eps,
                step_size=step,
                steps=self.attack_steps,
                bounds=self.bounds,
                random_start=self._draw("rand", x),
            )
        if self.bounds is not None:
            x_r = project(x_r, x, float("inf"), self.bounds)
        return x_r

    def _gradient_term(
        self, model: nn.Module, x: Tensor, t: Tensor, g: Tensor, leaf: Tensor
    ) -> Tensor:
        if self.detach_source:
            g = g.detach()
        x_r = self._neighbour(model, x, t, g)
        g_r, _, _ = input_gradient(model, x_r, t, target_logit, create_graph=True)
        return self._alignment(g, g_r).mean()

    def __repr__(self) -> str:
        return (
            f"LocalGradientAlignment(eps={self.eps!r}, l2_weight={self.l2_weight}, "
            f"cos_weight={self.cos_weight}, neighbour={self.neighbour!r}, "
            f"detach_source={self.detach_source}, softplus_beta={self.softplus_beta})"
        )


def _check_no_training_batch_norm(model: nn.Module) -> None:
    # Failing here is clearer than PyTorch's error in the caller's backward pass.
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"`model` has a batch-norm layer in training mode ({name or 'model'}: "
                f"{type(module).__name__}); training through a Hessian-vector "
                "product needs third derivatives, which PyTorch's batch_norm does not "
                "provide in training mode. Put batch-norm layers in eval mode, or use "
                "GroupNorm / LayerNorm."
            )


class HessianNorm(GradientRegularizer, SeededMixin):
    r"""Penalise the curvature of the target logit along random directions.

    The Hessian-norm baseline of Joo et al. (AAAI 2023): with
    :math:`g(x) = \partial\, \mathrm{logit}_y / \partial x` and
    :math:`v \sim \mathcal N(0, I)`,

    .. math::
        \lambda\, \operatorname{mean}_i
        \lVert \nabla_x (v_i \cdot g(x_i)) \rVert_2^2
        = \lambda\, \operatorname{mean}_i \lVert H_i v_i \rVert_2^2,

    an unbiased estimate of :math:`\lambda \lVert H_i \rVert_F^2` computed with
    Hessian-vector products (three back-propagations, no Hessian is formed).

    Parameters
    ----------
    weight : float, default 1e-3
        :math:`\lambda`; the paper uses 1e-3 (LeNet) and 1e-4 (ResNet18).
    n_samples : int, default 1
        Directions :math:`v` per sample, averaged (the paper uses one).
    softplus_beta : float or None, default None
        ReLU networks are piecewise linear: their Hessian with respect to the input
        is zero almost everywhere, so for them the term and its gradient are zero.
        Joo et al. train softplus networks (beta = 3); for a ReLU model, give a beta
        to compute the term on the model with ``nn.ReLU`` / ``nn.LeakyReLU``
        modules swapped for softplus during the call.
    seed : int or None, default None
        Seed of the regularizer's own generator (one per device).
    generator : torch.Generator or None, default None
        Use this generator instead (not together with ``seed``).

    Notes
    -----
    Training through the term takes third derivatives of the model. PyTorch's
    ``batch_norm`` has none in training mode, so a model with batch-norm layers
    in training mode is refused with a ``ValueError``; put them in eval mode
    (``module.eval()`` on each) or use GroupNorm / LayerNorm. ``reg(model, x, y)``
    returns the term; ``reg.loss(model, x, y)`` returns ``loss_fn(model(x), y) +
    term`` sharing the forward pass at ``x``, as the reference implementation does
    (with ``softplus_beta`` set, the task loss runs on the real model in a forward
    pass of its own).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import HessianNorm
    >>> model = nn.Sequential(nn.Linear(5, 8), nn.Softplus(beta=3.0), nn.Linear(8, 3))
    >>> x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    >>> reg = HessianNorm(seed=0)
    >>> term = reg(model, x, y)
    >>> bool(term > 0)
    True
    >>> relu = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> reg(relu, x, y).item()  # piecewise linear: no curvature
    0.0
    >>> bool(HessianNorm(softplus_beta=3.0, seed=0)(relu, x, y) > 0)
    True
    """

    _scalar = staticmethod(target_logit)

    # Named here for this class's API page (see Regularizer).
    __call__ = Regularizer.__call__
    loss = Regularizer.loss

    def __init__(
        self,
        weight: float = 1e-3,
        *,
        n_samples: int = 1,
        softplus_beta: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.weight = check_weight(weight, "weight")
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self._init_smooth(softplus_beta)
        self._init_random(seed, generator)

    def _term_and_task(
        self, model: nn.Module, x: Tensor, t: Tensor, *, loss_fn: LossFn | None
    ) -> tuple[Tensor, Tensor | None]:
        _check_no_training_batch_norm(model)
        return super()._term_and_task(model, x, t, loss_fn=loss_fn)

    def _gradient_term(
        self, model: nn.Module, x: Tensor, t: Tensor, g: Tensor, leaf: Tensor
    ) -> Tensor:
        total = torch.zeros(g.shape[0], device=g.device, dtype=g.dtype)
        for _ in range(self.n_samples):
            v = self._draw("randn", leaf)
            # A model whose gradient does not depend on the input at all (a linear
            # model) has no path from g back to the input: its Hessian is zero.
            (hv,) = torch.autograd.grad(
                (g * v).sum(),
                leaf,
                create_graph=True,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            total = total + flat_sq_norm(hv)
        return self.weight * (total / self.n_samples).mean()

    def __repr__(self) -> str:
        return (
            f"HessianNorm(weight={self.weight}, n_samples={self.n_samples}, "
            f"softplus_beta={self.softplus_beta})"
        )
