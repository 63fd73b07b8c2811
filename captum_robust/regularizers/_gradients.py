"""Per-sample scalars of the logits and the input gradients the regularizers take."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust.regularizers._checks import check_class_scores


def target_logit(logits: Tensor, target: Tensor) -> Tensor:
    return logits.gather(1, target.unsqueeze(1)).squeeze(1)


def target_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    return target_logit(logits.log_softmax(dim=1), target)


def target_prob(logits: Tensor, target: Tensor) -> Tensor:
    return target_logit(logits.softmax(dim=1), target)


def per_sample_ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, reduction="none")


def flat_sq_norm(t: Tensor) -> Tensor:
    return t.flatten(1).pow(2).sum(dim=1)


def flat_l1_norm(t: Tensor) -> Tensor:
    return t.abs().flatten(1).sum(dim=1)


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    scalar_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    create_graph: bool,
    retain_graph: bool | None = None,
    check: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``sum scalar_fn(model(x), target)`` with respect to x.

    An ``x`` that does not require gradients is replaced by a leaf copy; one that
    does (an iterate of an inner maximisation) is used as it is, so the result
    keeps its graph to it. Returns (gradient, logits, leaf); ``check`` validates
    the logits and target.
    """
    leaf = x if x.requires_grad else x.detach().requires_grad_(True)
    logits = model(leaf)
    if check:
        check_class_scores(logits, target)
    (grad,) = torch.autograd.grad(
        scalar_fn(logits, target).sum(),
        leaf,
        create_graph=create_graph,
        retain_graph=retain_graph,
    )
    return grad, logits, leaf


def run_checked(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    return check_class_scores(model(x), target)
