"""The inner maximisation of the integrated-gradients regularizers.

Chen et al. (NeurIPS 2019) and Sarkar et al. (AAAI 2021) penalise integrated
gradients towards a worst x' in an L-inf ball, found by PGD on a cheap path;
every path runs in passes of bounded memory on the unwrapped model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager

from torch import Tensor
from torch import nn

from captum_robust._utils.ball import as_like
from captum_robust._utils.ball import check_bounds_pair
from captum_robust._utils.ball import check_radius
from captum_robust._utils.ball import pgd_ascent
from captum_robust._utils.second_order import second_order_safe
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_positive_int
from captum_robust.attr import softplus_activations
from captum_robust.regularizers._base import Regularizer
from captum_robust.regularizers._checks import LossFn
from captum_robust.regularizers._checks import check_internal_batch_size
from captum_robust.regularizers._gradients import flat_l1_norm
from captum_robust.regularizers._gradients import per_sample_ce
from captum_robust.regularizers._gradients import run_checked
from captum_robust.regularizers._paths import integrated_gradients
from captum_robust.regularizers._paths import path_alphas
from captum_robust.regularizers._state import SeededMixin
from captum_robust.regularizers._state import SmoothMixin
from captum_robust.regularizers._state import frozen_running_stats
from captum_robust.regularizers._state import unwrap_parallel


class AdversarialIG(Regularizer, SeededMixin, SmoothMixin):
    """Term at an x' found by PGD with random start on [CE +] ||IG_approx||_1.

    A subclass writes the term, :meth:`_term`, from x and x'.
    """

    # IG-SUM-NORM and Sarkar et al. replace the task loss by the loss at x': the
    # inner objective includes it, and :meth:`loss` takes it there. IG-NORM keeps
    # the clean task loss and maximises the IG norm alone.
    _loss_at_adversarial = True

    def _init_attack(
        self,
        eps: object,
        n_steps: object,
        approx_factor: object,
        attack_steps: object,
        attack_step_size: object,
        random_start: object,
        bounds: object,
        softplus_beta: object,
        seed: object,
        generator: object,
        internal_batch_size: object,
    ) -> None:
        self.eps = check_radius(eps, "eps")
        self.n_steps = check_positive_int(n_steps, "n_steps")
        self.approx_factor = check_positive_int(approx_factor, "approx_factor")
        if self.n_steps % self.approx_factor:
            raise ValueError(
                f"`approx_factor` ({self.approx_factor}) must divide `n_steps` "
                f"({self.n_steps}) so that the cheap path ends at x'."
            )
        self.attack_steps = check_positive_int(attack_steps, "attack_steps", minimum=0)
        self.attack_step_size = check_radius(attack_step_size, "attack_step_size")
        self.random_start = check_bool(random_start, "random_start")
        self.bounds = check_bounds_pair(bounds)
        self._init_smooth(softplus_beta)
        self._init_random(seed, generator)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.last_adversarial: Tensor | None = None

    @contextmanager
    def _contexts(self, model: nn.Module) -> Iterator[None]:
        """Frozen statistics, surrogate activations and second-order-safe kernels."""
        with frozen_running_stats(model), self._smooth(model), second_order_safe():
            yield

    def _recompute(self, model: nn.Module):
        """The contexts of :meth:`_contexts` again, for a checkpoint's recomputation
        in the caller's backward pass (the functional-ReLU check is not repeated)."""

        def factory() -> ExitStack:
            stack = ExitStack()
            stack.enter_context(frozen_running_stats(model))
            if self.softplus_beta is not None:
                stack.enter_context(
                    softplus_activations(
                        model, self.softplus_beta, check_functional=False
                    )
                )
            stack.enter_context(second_order_safe())
            return stack

        return factory

    def _ig(
        self,
        model: nn.Module,
        start: Tensor,
        end: Tensor,
        alphas: Tensor,
        t: Tensor,
        scalar_fn,
        *,
        check: bool = False,
        want_last: bool = False,
        param_grads: bool = True,
    ) -> tuple[Tensor, ...]:
        """Path IG in passes of ``internal_batch_size`` rows on the unwrapped model.

        The passes run on the module inside a DistributedDataParallel wrapper: a
        checkpoint recomputes them in the backward pass, where the wrapper's
        forward must not run; DDP still averages the gradients, since the step's
        task loss goes through the wrapper.
        """
        inner = unwrap_parallel(model)
        return integrated_gradients(
            inner,
            start,
            end,
            alphas,
            t,
            scalar_fn,
            create_graph=True,
            internal_batch_size=self.internal_batch_size or (start.shape[0] + 1) // 2,
            check=check,
            want_last=want_last,
            recompute=self._recompute(inner),
            param_grads=param_grads,
        )

    def _ig_weight(self) -> float:
        """The weight of ||IG_approx||_1 in the inner objective."""
        return self.weight if self._loss_at_adversarial else 1.0

    def _adversarial(self, model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        """x' maximising [CE(x') +] ig_weight * ||IG_approx(x -> x')||_1."""
        ig_weight = self._ig_weight()
        alphas = path_alphas(self.n_steps, self.approx_factor, x)
        checked = False

        def objective(adv: Tensor) -> Tensor:
            nonlocal checked
            ig, last_loss = self._ig(
                model, x, adv, alphas, t, per_sample_ce, check=not checked,
                want_last=True, param_grads=False,
            )  # fmt: skip
            checked = True
            value = ig_weight * flat_l1_norm(ig)
            if self._loss_at_adversarial:
                # The last path point is x' itself.
                value = value + last_loss
            return value.sum()

        eps = as_like(self.eps, x)
        adv = pgd_ascent(
            objective,
            x,
            eps=eps,
            step_size=as_like(self.attack_step_size, x),
            steps=self.attack_steps,
            bounds=self.bounds,
            random_start=self._draw("rand", x) if self.random_start else None,
        )
        self.last_adversarial = adv
        return adv

    def _term(self, model: nn.Module, x: Tensor, t: Tensor, adv: Tensor) -> Tensor:
        raise NotImplementedError

    def _term_and_task(
        self, model: nn.Module, x: Tensor, t: Tensor, *, loss_fn: LossFn | None
    ) -> tuple[Tensor, Tensor | None]:
        with self._contexts(model):
            adv = self._adversarial(model, x, t)
            term = self._term(model, x, t, adv)
        if loss_fn is None:
            return term, None
        # The term first: the task loss's graph is then built after the term's
        # and back-propagated (and freed) before the term's passes are recomputed,
        # so the two are never held at once.
        at = adv if self._loss_at_adversarial else x
        return term, loss_fn(run_checked(model, at, t), t)
