"""The calls every regularizer shares; a subclass writes only its term."""

from __future__ import annotations

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.second_order import second_order_safe
from captum_robust.regularizers._checks import LossFn
from captum_robust.regularizers._checks import check_input_batch
from captum_robust.regularizers._checks import check_loss_fn
from captum_robust.regularizers._checks import check_model
from captum_robust.regularizers._checks import check_target_indices
from captum_robust.regularizers._gradients import input_gradient
from captum_robust.regularizers._gradients import run_checked
from captum_robust.regularizers._state import SmoothMixin
from captum_robust.regularizers._state import frozen_running_stats


class Regularizer:
    """``reg(model, inputs, target)`` returns the term, ``reg.loss`` the objective.

    Both go through :meth:`_run`, which checks the arguments and runs with
    gradients on, even when the caller is inside ``torch.no_grad()``. A subclass
    computes its term (and the task loss, where the two share a forward pass) in
    :meth:`_term_and_task`, leaving the user's model as it found it.

    A subclass whose calls take other arguments (a mask) writes its own
    ``__call__`` and ``loss`` around :meth:`_run`; the others name these two
    again in their own namespace (``loss = Regularizer.loss``), because the API
    pages and the record of the public API read a class's own members only.
    """

    def __call__(
        self, model: nn.Module, inputs: Tensor, target: Tensor | int
    ) -> Tensor:
        """The term, a scalar with a graph to the model's parameters.

        ``model`` is a classifier returning (B, num_classes) scores, ``inputs`` a
        (B, ...) batch and ``target`` its (B,) class indices (an int: one class
        for every sample).
        """
        return self._run(model, inputs, target)

    def loss(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: Tensor | int,
        *,
        loss_fn: LossFn | None = None,
    ) -> Tensor:
        """The method's whole objective: the task loss plus the term.

        The task loss is ``loss_fn(model(task_inputs), target)``, ``loss_fn``
        defaulting to cross-entropy (batch mean). ``task_inputs`` are ``inputs``,
        or the inner maximisation's x' for the methods that replace the clean loss
        by the loss at x' (use their ``loss`` in place of the task loss); the
        class's notes say which forward passes the two terms share.
        """
        return self._run(model, inputs, target, loss_fn=check_loss_fn(loss_fn))

    @staticmethod
    def _prepare(
        model: object, inputs: object, target: object
    ) -> tuple[nn.Module, Tensor, Tensor]:
        model = check_model(model)
        x = check_input_batch(inputs)
        return model, x, check_target_indices(target, x)

    # Gradients are needed even when the caller is inside torch.no_grad().
    @torch.enable_grad()
    def _run(
        self,
        model: object,
        inputs: object,
        target: object,
        *args: object,
        loss_fn: LossFn | None = None,
    ) -> Tensor:
        """The term, or with ``loss_fn`` the objective; ``args`` go to the term."""
        model, x, t = self._prepare(model, inputs, target)
        term, task = self._term_and_task(model, x, t, *args, loss_fn=loss_fn)
        return term if loss_fn is None else self._objective(term, task)

    def _term_and_task(
        self, model: nn.Module, x: Tensor, t: Tensor, *args, loss_fn: LossFn | None
    ) -> tuple[Tensor, Tensor | None]:
        """The term and, with ``loss_fn``, the task loss (None without)."""
        raise NotImplementedError

    def _objective(self, term: Tensor, task: Tensor) -> Tensor:
        """How :meth:`loss` combines the term and the task loss."""
        return task + term


class GradientRegularizer(Regularizer, SmoothMixin):
    """A term made from the input gradient at x of ``_scalar(logits, target)``.

    With a task loss and no softplus surrogate, the gradient's forward pass at x
    is the task loss's too, as the reference implementations do (one forward
    pass saved; it updates the norm statistics as the task loss's pass would).
    With a surrogate the task loss runs on the real model in a pass of its own.
    The term's own passes leave the norm statistics unchanged.
    """

    # create_graph for the gradient at x: whether the term trains through it.
    _source_graph = True

    @staticmethod
    def _scalar(logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def _gradient_term(
        self, model: nn.Module, x: Tensor, t: Tensor, g: Tensor, leaf: Tensor, *args
    ) -> Tensor:
        """The term from ``g``, the gradient at ``leaf`` (x with a graph to it)."""
        raise NotImplementedError

    def _term_and_task(
        self, model: nn.Module, x: Tensor, t: Tensor, *args, loss_fn: LossFn | None
    ) -> tuple[Tensor, Tensor | None]:
        share = loss_fn is not None and self.softplus_beta is None
        task = None
        # Double-differentiable hardsigmoid / hardswish and the math attention
        # kernel for every pass (MobileNetV3, ViT); the graph recorded here needs
        # nothing at backward time.
        with second_order_safe():
            if share:
                # The task loss back-propagates through this forward pass later.
                g, logits, leaf = self._gradient_at(model, x, t, retain_graph=True)
                task = loss_fn(logits, t)
            elif loss_fn is not None:
                task = loss_fn(run_checked(model, x, t), t)
            with frozen_running_stats(model), self._smooth(model):
                if not share:
                    g, _, leaf = self._gradient_at(model, x, t)
                term = self._gradient_term(model, x, t, g, leaf, *args)
        return term, task

    def _gradient_at(
        self, model: nn.Module, x: Tensor, t: Tensor, retain_graph: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return input_gradient(
            model,
            x,
            t,
            self._scalar,
            create_graph=self._source_graph,
            retain_graph=retain_graph,
            check=True,
        )
