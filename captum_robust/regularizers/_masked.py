"""Input-gradient penalty outside an object mask (Ross et al., IJCAI 2017)."""

from __future__ import annotations

from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_choice
from captum_robust.regularizers._base import GradientRegularizer
from captum_robust.regularizers._checks import LossFn
from captum_robust.regularizers._checks import check_loss_fn
from captum_robust.regularizers._checks import check_mask
from captum_robust.regularizers._checks import check_weight
from captum_robust.regularizers._gradients import target_log_prob

__all__ = ["MaskedGradientPenalty"]

LOG_PROBS = ("sum", "target")


def _sum_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    return logits.log_softmax(dim=1).sum(dim=1)


class MaskedGradientPenalty(GradientRegularizer):
    r"""Penalise input-gradient mass outside the object ("right for the right reasons").

    Ross, Hughes and Doshi-Velez (IJCAI 2017) train with

    .. math::
        \ell(x, y) + \lambda\, \operatorname{mean}_i \sum_j
        \Bigl( (1 - M_{ij})\, \frac{\partial s(x_i)}{\partial x_{ij}} \Bigr)^2,

    where :math:`M` is the object mask (1 on the object), :math:`j` runs over every
    input feature (all channels of a pixel share the pixel's mask value), and
    :math:`s` is the sum of the log-probabilities of all classes (Ross et al.'s
    default) or the log-probability of the target class. A model that relies on
    the background (a decoy) gets a large penalty; one that looks at the object
    does not.

    Parameters
    ----------
    weight : float, default 1000.0
        :math:`\lambda`; 1000 is Ross et al.'s value for decoy MNIST and their toy
        data (their loss sums over the batch; both terms here are batch means, so
        the ratio is the same). Choose it so that both terms have a similar size.
    log_prob : {"sum", "target"}, default "sum"
        :math:`s`: ``"sum"`` differentiates :math:`\sum_k \log p_k(x)` (every
        class's explanation must avoid the background), ``"target"`` only
        :math:`\log p_y(x)`.
        ``"sum"`` leaves one loophole: a background feature that raises all
        logits alike changes no probability, so it costs no penalty while it
        still moves each class's logit. On the decoy silhouette benchmark
        ``"sum"`` lowered the penalty without moving the saliency of the target
        logit onto the object; ``"target"`` moved it (overlap 0.35 -> 0.50).
    softplus_beta : float or None, default None
        Compute the penalty on the model with ReLU modules swapped for
        softplus(beta). Not needed: the input gradient of a ReLU network depends on
        its parameters, so the penalty trains them as it is.

    Notes
    -----
    ``reg(model, x, y, mask)`` returns the penalty only; ``reg.loss(model, x, y,
    mask)`` returns ``loss_fn(model(x), y) + penalty`` with one shared forward pass.
    Forward passes made by ``reg(...)`` do not update the running statistics of
    normalisation layers (the task loss's forward pass does).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import MaskedGradientPenalty
    >>> model = nn.Sequential(
    ...     nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    ... )
    >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 2])
    >>> mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    >>> mask[:, 1:3, 1:3] = True  # the object
    >>> rrr = MaskedGradientPenalty(weight=10.0)
    >>> penalty = rrr(model, x, y, mask)
    >>> bool(penalty > 0), penalty.requires_grad
    (True, True)
    >>> rrr.loss(model, x, y, mask).backward()  # cross-entropy + penalty
    >>> rrr(model, x, y, torch.ones(2, 4, 4)).item()  # no background, no penalty
    0.0
    """

    def __init__(
        self,
        weight: float = 1000.0,
        *,
        log_prob: str = "sum",
        softplus_beta: float | None = None,
    ) -> None:
        self.weight = check_weight(weight, "weight")
        check_choice(log_prob, LOG_PROBS, "log_prob")
        self.log_prob = log_prob
        self._scalar = _sum_log_probs if log_prob == "sum" else target_log_prob
        self._init_smooth(softplus_beta)

    def __call__(
        self, model: nn.Module, inputs: Tensor, target: Tensor | int, mask: Tensor
    ) -> Tensor:
        """The weighted penalty, a scalar with a graph to the parameters.

        Parameters
        ----------
        model : nn.Module
            Classifier returning (B, num_classes) scores.
        inputs : Tensor
            (B, C, H, W) images (or (B, ...) features).
        target : Tensor or int
            (B,) class indices (used by ``log_prob="target"`` and by :meth:`loss`).
        mask : Tensor
            Object mask, bool or {0, 1}: (B, H, W), (B, 1, H, W) or shaped like
            ``inputs``. True marks the object; gradients elsewhere are penalised.
        """
        return self._run(model, inputs, target, mask)

    def loss(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor | int,
        mask: Tensor,
        *,
        loss_fn: LossFn | None = None,
    ) -> Tensor:
        """``loss_fn(model(inputs), target) + penalty`` with one shared forward pass.

        ``loss_fn`` defaults to cross-entropy (batch mean).
        """
        return self._run(model, inputs, target, mask, loss_fn=check_loss_fn(loss_fn))

    def _term_and_task(
        self,
        model: nn.Module,
        x: Tensor,
        t: Tensor,
        mask: Tensor,
        *,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        outside = (~check_mask(mask, x)).to(x.dtype)
        return super()._term_and_task(model, x, t, outside, loss_fn=loss_fn)

    def _gradient_term(
        self,
        model: nn.Module,
        x: Tensor,
        t: Tensor,
        grad: Tensor,
        leaf: Tensor,
        outside: Tensor,
    ) -> Tensor:
        return self.weight * (grad * outside).flatten(1).pow(2).sum(dim=1).mean()

    def __repr__(self) -> str:
        return (
            f"MaskedGradientPenalty(weight={self.weight}, log_prob={self.log_prob!r}, "
            f"softplus_beta={self.softplus_beta})"
        )
