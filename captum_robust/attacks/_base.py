"""The one loop shared by every attack on attributions."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import Saliency
from captum.robust import Perturbation
from torch import Tensor

from captum_robust._utils.modes import eval_mode
from captum_robust._utils.second_order import second_order_safe
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.targets import check_class_range
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust.attacks._batch import Batch
from captum_robust.attacks._batch import CallSettings
from captum_robust.attacks._precision import in_input_dtype
from captum_robust.attacks._precision import input_gradients
from captum_robust.attacks._result import AttackResult
from captum_robust.attacks._utils import OutputRecorder
from captum_robust.attacks._utils import TensorOrTuple
from captum_robust.attacks._utils import adam_moves
from captum_robust.attacks._utils import check_attribution_kwargs
from captum_robust.attacks._utils import check_bounded_inputs
from captum_robust.attacks._utils import check_logits
from captum_robust.attacks._utils import check_pixel_bounds
from captum_robust.attacks._utils import draw
from captum_robust.attacks._utils import fmt
from captum_robust.attacks._utils import master_dtype
from captum_robust.attacks._utils import normalized_map
from captum_robust.attacks._utils import prepare_masks
from captum_robust.attacks._utils import same_model
from captum_robust.attacks._utils import spatial_shape
from captum_robust.attr import DifferentiableAttribution
from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate
from captum_robust.attr._base import as_module
from captum_robust.attr._base import concat_rows
from captum_robust.metrics._center import center_of_mass_map
from captum_robust.metrics._registry import CRITERION_NAMES
from captum_robust.metrics._registry import METRICS

# name -> (higher is better for the attack, best possible value or None). Reaching
# the best value for every sample ends the attack early. The registry's metrics
# are read the other way round (the attack wants the explanation to move); the
# targeted attacks' two criteria compare with their target instead.
CRITERIA: dict[str, tuple[bool, float | None]] = {
    **{
        name: (not METRICS[name].robust_when_higher, METRICS[name].attack_goal)
        for name in CRITERION_NAMES
    },
    "target_mass": (True, 1.0),
    "target_mse": (False, 0.0),
}
BASE_CRITERIA = CRITERION_NAMES

# Early-exit checks cost a host synchronisation; every few steps keeps that cost
# negligible on a GPU while wasting at most this many steps.
CHECK_EVERY = 5

# Captum gradient methods whose plain (no create_graph) code can score iterates:
# the criterion needs no graph, and building one costs time.
_PLAIN_CRITERION_METHODS = (Saliency, InputXGradient, IntegratedGradients, LayerGradCam)

# Model evaluations per attribution call on a CPU for path methods. Integrated
# Gradients evaluates n_steps points per sample; a whole batch of them at once
# allocates activations too large for the caches (and fresh pages on every
# call), which made a batch of 64 slower than one image at a time. From 64 to 256
# evaluations per call the speed is flat (3x32x32 CNN, 2 cores).
_CPU_EVALUATIONS_PER_CALL = 128


class AttributionAttack(Perturbation):
    """Base of the attacks: arguments, the shared loop and the bookkeeping.

    Subclasses set the update rule and the loss (the quantity whose descent moves
    the attribution), may prepare per-sample state from their own arguments
    (``_setup``) and add fields to the result (``_report``). :meth:`perturb`
    takes the arguments every attack shares; an attack with per-call arguments
    of its own overrides it and hands them to ``_perturb`` as ``extras``.
    """

    _update_rule = "sign"  # "sign", "adam" or "random"
    _criteria: tuple[str, ...] = BASE_CRITERIA
    _needs_surrogate = True

    def __init__(
        self,
        forward_func: Callable[..., Any],
        attribution: Any,
        *,
        epsilon: float,
        step_size: float | None,
        n_steps: int,
        restarts: int,
        random_start: bool,
        surrogate_beta: float | None,
        surrogate: Callable[..., Any] | None,
        lower_bound: float,
        upper_bound: float,
        criterion: str,
        criterion_k: int,
        attribution_kwargs: dict[str, Any] | None,
        seed: int | None,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(
                "`forward_func` must be callable (a model or a forward function), "
                f"got {type(forward_func).__name__}."
            )
        self.forward_func = forward_func
        # differentiable() raises a TypeError naming the method and the reason for
        # a method that cannot be differentiated (Occlusion, DeepLift, ...). The
        # seed fixes the draws of random methods (GradientShap, NoiseTunnel) on
        # every call, so the original and each iterate see the same noise.
        self._attribution = differentiable(
            attribution, seed=0 if seed is None else seed
        )
        explained = self._attribution.forward_func
        if explained is not None and not same_model(explained, forward_func):
            raise ValueError(
                "`attribution` explains a different model than `forward_func`; "
                "build the attribution on the attacked model."
            )
        self.epsilon = check_number(epsilon, "epsilon", minimum=0.0)
        self.step_size = (
            None
            if step_size is None
            else check_number(step_size, "step_size", minimum=0.0, strict_minimum=True)
        )
        self.n_steps = check_positive_int(n_steps, "n_steps")
        self.restarts = check_positive_int(restarts, "restarts")
        if not isinstance(random_start, bool):
            raise TypeError(
                f"`random_start` must be a bool, got {type(random_start).__name__}."
            )
        self.random_start = random_start
        self.lower_bound, self.upper_bound = check_pixel_bounds(
            lower_bound, upper_bound
        )
        check_choice(criterion, self._criteria, "criterion")
        self.criterion = criterion
        self.criterion_k = check_positive_int(criterion_k, "criterion_k")
        self.attribution_kwargs = check_attribution_kwargs(
            attribution_kwargs, "attribution_kwargs"
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(
                f"`seed` must be an int or None, got {type(seed).__name__}."
            )
        self.seed = seed
        self.surrogate_beta = (
            None
            if surrogate_beta is None
            else check_number(
                surrogate_beta, "surrogate_beta", minimum=0.0, strict_minimum=True
            )
        )
        self._model = as_module(forward_func)
        self._path_method = isinstance(attribution, IntegratedGradients)
        self._recorder = OutputRecorder(forward_func)
        self._criterion_attribution = self._make_criterion_attribution(attribution)
        self.surrogate = None
        self._direction_attribution = None
        if self._needs_surrogate:
            self.surrogate = self._make_surrogate(surrogate)
            self._direction_attribution = self._bind(self.surrogate)

    # ----------------------------------------------------------------- set-up

    def _make_surrogate(self, surrogate: object) -> Callable[..., Any]:
        if surrogate is not None:
            if not callable(surrogate):
                raise TypeError(
                    f"`surrogate` must be callable, got {type(surrogate).__name__}."
                )
            return surrogate
        if self.surrogate_beta is None:
            return self.forward_func
        if self._model is None:
            raise TypeError(
                "`forward_func` is neither an nn.Module nor a method of one, so no "
                "softplus surrogate can be built from it; pass `surrogate=` (a smooth "
                "copy of the model) or `surrogate_beta=None` to compute directions on "
                "the model itself."
            )
        # The surrogate is the attack's own copy of the module tree (parameters
        # and buffers are shared): eval mode here never touches the user's model,
        # and keeps BatchNorm statistics frozen.
        smooth = softplus_surrogate(self._model, beta=self.surrogate_beta).eval()
        if self.forward_func is self._model:
            return smooth
        # A bound method of the model (e.g. model.logits): the same method of the copy.
        return getattr(smooth, self.forward_func.__name__)

    def _bind(self, model: Callable[..., Any]) -> DifferentiableAttribution:
        if model is self.forward_func:
            return self._attribution
        try:
            return self._attribution.with_forward_func(model)
        except TypeError as exc:
            raise TypeError(
                f"`attribution` ({self._attribution.method}) cannot be bound to the "
                "surrogate model that gives the attack its direction; pass "
                "`surrogate_beta=None` to use the attribution as it is (its model "
                f"should then be smooth, e.g. softplus). Cause: {exc}"
            ) from exc

    def _make_criterion_attribution(self, attribution: object) -> Any:
        if type(attribution) in _PLAIN_CRITERION_METHODS:
            # Captum's own code without create_graph, on a shallow copy so the
            # user's object is untouched.
            plain = copy.copy(attribution)
            plain.forward_func = self._recorder
            return plain
        try:
            return self._attribution.with_forward_func(self._recorder)
        except (TypeError, ValueError):
            return self._attribution

    # ---------------------------------------------------------------- helpers

    def _effective_step_size(self, epsilon: float, n_steps: int) -> float:
        if self.step_size is None:
            raise AssertionError("subclasses without a default step size override")
        return self.step_size

    def _rows_per_call(self, b: Batch) -> int:
        """Samples per attribution call of a path method (Integrated Gradients):
        ``internal_batch_size // n_steps`` when given, a default on a CPU."""
        if not self._path_method:
            return b.size
        n_steps = b.attribution_kwargs.get("n_steps", 50)
        if not isinstance(n_steps, int) or n_steps < 1:
            return b.size  # Captum reports the bad value itself
        evaluations = b.attribution_kwargs.get("internal_batch_size")
        if evaluations is None:
            if b.x0[0].device.type != "cpu":
                return b.size
            evaluations = _CPU_EVALUATIONS_PER_CALL
        if not isinstance(evaluations, int) or evaluations < 1:
            return b.size
        return max(1, evaluations // n_steps)

    def _in_row_chunks(
        self, fn: Callable[..., Any], x: tuple[Tensor, ...], b: Batch
    ) -> list[Any]:
        """``fn(x, b)`` on consecutive groups of samples; each sample's result is
        the same as in one call (per-sample inputs are split along)."""
        rows = self._rows_per_call(b)
        if rows >= b.size:
            return [fn(x, b)]
        parts = []
        for start in range(0, b.size, rows):
            stop = min(start + rows, b.size)
            index = torch.arange(start, stop, device=x[0].device)
            part = b.select(index, list(range(start, stop)))
            parts.append(fn(tuple(t[start:stop] for t in x), part))
        return parts

    def _real_map(self, x: tuple[Tensor, ...], b: Batch) -> tuple[Tensor, Tensor]:
        """Normalised map (n, N) and logits of the real model at ``x``."""
        parts = self._in_row_chunks(self._real_map_rows, x, b)
        if len(parts) == 1:
            return parts[0]
        return torch.cat([m for m, _ in parts]), torch.cat([lg for _, lg in parts])

    def _real_map_rows(self, x: tuple[Tensor, ...], b: Batch) -> tuple[Tensor, Tensor]:
        attr, logits = self._attribute_rows(x, b)
        if logits is None:
            with torch.no_grad():
                logits = b.call(self.forward_func, tuple(t.detach() for t in x))
        return normalized_map(attr), logits

    def _attribute_rows(
        self, x: tuple[Tensor, ...], b: Batch
    ) -> tuple[Any, Tensor | None]:
        """The real model's attribution at ``x``, detached, and its logits where
        the method ran the model on ``x`` itself (None otherwise)."""
        xg = tuple(t.detach().requires_grad_() for t in x)
        self._recorder.watch(xg)
        try:
            attr = self._criterion_attribution.attribute(
                fmt(xg, b.is_tuple),
                target=b.target,
                additional_forward_args=b.additional_forward_args,
                **b.attribution_kwargs,
            )
        finally:
            recorded = self._recorder.take()
        if isinstance(attr, tuple):
            attr = tuple(a.detach() for a in attr)
        else:
            attr = attr.detach()
        return attr, recorded

    def _surrogate_map(self, xg: tuple[Tensor, ...], b: Batch) -> Tensor:
        return torch.cat(self._in_row_chunks(self._surrogate_map_rows, xg, b))

    def _surrogate_map_rows(self, xg: tuple[Tensor, ...], b: Batch) -> Tensor:
        assert self._direction_attribution is not None
        attr = self._direction_attribution.attribute(
            fmt(xg, b.is_tuple),
            target=b.target,
            additional_forward_args=b.additional_forward_args,
            **b.attribution_kwargs,
        )
        return normalized_map(attr)

    def _criterion(self, maps: Tensor, b: Batch) -> Tensor:
        name = self.criterion
        metric = METRICS.get(name)
        if metric is not None and metric.flat_score is not None:
            return metric.flat_score(b.map0, maps, self.criterion_k)
        if name == "center_shift":
            assert b.shape is not None
            centers = center_of_mass_map(maps.view(-1, *b.shape))
            return (centers - b.state["center0"]).norm(dim=1)
        if name == "target_mass":
            return (maps * b.state["region"]).sum(dim=1)
        return (maps - b.state["target_map"]).square().mean(dim=1)

    # ------------------------------------------------------------ subclass API

    def _setup(self, b: Batch, extras: dict[str, Any]) -> None:
        """Check the attack's own per-call arguments; add per-sample state."""

    def _loss(self, maps: Tensor, b: Batch, xg: tuple[Tensor, ...]) -> Tensor:
        """Per-sample loss (n,) on the surrogate's map; the attack descends it."""
        raise NotImplementedError

    def _report(
        self, result: AttackResult, x: tuple[Tensor, ...], full: Batch
    ) -> AttackResult:
        """The :class:`AttackResult` of a call with ``return_results``, where an
        attack adds its own fields: ``x`` holds the returned inputs and ``full``
        every sample of the call."""
        return result

    # -------------------------------------------------------------- the loop

    def perturb(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        *,
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
        inputs : Tensor or tuple of Tensor
            (B, ...) inputs inside [lower_bound, upper_bound]; not modified.
        target : int, Tensor, list of int or None, default None
            The class whose attribution is attacked and the true label: samples the
            model does not predict as ``target`` are skipped. None uses the predicted
            class (nothing is skipped). A negative or out-of-range index (checked
            against the model's output width), a float, or a wrong length raises a
            ``ValueError`` or ``TypeError`` naming ``target``.
        additional_forward_args : Any, default None
            Extra model arguments, as in Captum (tensors with the batch size as first
            dimension are per sample).
        mask : Tensor or tuple of Tensor or None, default None
            Binary; only pixels where it is 1 may change. Shape broadcastable to the
            input's, e.g. (B, C, H, W), (B, 1, H, W), (1, C, H, W) or (B, H, W).
        epsilon, step_size, n_steps, restarts : optional
            Override the attack's settings for this call (e.g. to search ``epsilon``
            with ``captum.robust.MinParamPerturbation``).
        attribution_kwargs : dict or None, default None
            Merged over the attack's ``attribution_kwargs`` for this call (e.g.
            per-batch ``baselines``).
        generator : torch.Generator or None, default None
            Source of the random draws; None uses a fresh one seeded with ``seed``.
        return_results : bool, default False
            Also return an :class:`AttackResult`.

        Returns
        -------
        Tensor or tuple of Tensor, or (that, AttackResult)
            The perturbed inputs, in the structure of ``inputs``, detached. A sample
            where no iterate improved the criterion comes back unchanged.

        See the attack's class for an example.
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
            extras={},
        )

    def _perturb(
        self,
        inputs: TensorOrTuple,
        target: Any,
        additional_forward_args: Any,
        *,
        mask: Any,
        epsilon: float | None,
        step_size: float | None,
        n_steps: int | None,
        restarts: int | None,
        attribution_kwargs: dict[str, Any] | None,
        generator: torch.Generator | None,
        return_results: bool,
        extras: dict[str, Any],
    ) -> TensorOrTuple | tuple[TensorOrTuple, AttackResult]:
        eps = (
            self.epsilon
            if epsilon is None
            else check_number(epsilon, "epsilon", minimum=0.0)
        )
        steps = (
            self.n_steps if n_steps is None else check_positive_int(n_steps, "n_steps")
        )
        if step_size is None:
            alpha = self._effective_step_size(eps, steps)
        else:
            alpha = check_number(
                step_size, "step_size", minimum=0.0, strict_minimum=True
            )
        n_restarts = (
            self.restarts
            if restarts is None
            else check_positive_int(restarts, "restarts")
        )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                "`generator` must be a torch.Generator or None, got "
                f"{type(generator).__name__}."
            )
        if not isinstance(return_results, bool):
            raise TypeError(
                f"`return_results` must be a bool, got {type(return_results).__name__}."
            )
        kwargs = {
            **self.attribution_kwargs,
            **check_attribution_kwargs(attribution_kwargs, "attribution_kwargs"),
        }
        x0, is_tuple = check_bounded_inputs(inputs, self.lower_bound, self.upper_bound)
        masks = prepare_masks(mask, x0, is_tuple)
        x0 = tuple(t.detach() for t in x0)
        batch, device = int(x0[0].shape[0]), x0[0].device
        # One validated LongTensor (B,) goes to Captum and to the label check; the
        # class range is checked once the model's output width is known.
        classes = (
            None
            if target is None
            else check_class_indices(target, batch, device, name="target")
        )
        if generator is None and self.seed is not None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
        settings = CallSettings(
            epsilon=eps,
            step_size=alpha,
            n_steps=steps,
            restarts=n_restarts,
            generator=generator,
            return_results=return_results,
        )
        full = Batch.of_call(
            x0, is_tuple, masks, classes, additional_forward_args, kwargs
        )

        surrogate_module = None if self.surrogate is None else as_module(self.surrogate)
        with torch.enable_grad(), eval_mode(self._model):
            # A user surrogate is put in eval mode too (and restored).
            with eval_mode(
                surrogate_module if surrogate_module is not self._model else None
            ):
                return self._run(full, settings, extras)

    def _run(
        self, full: Batch, settings: CallSettings, extras: dict[str, Any]
    ) -> TensorOrTuple | tuple[TensorOrTuple, AttackResult]:
        """The attack of every sample of ``full`` (whose ``target`` is the checked
        one, or None), with the warnings and the result."""
        x0, classes = full.x0, full.target
        batch, device = full.size, x0[0].device
        # The original map and prediction, on the real model.
        attr0, logits0 = self._attribute_original(full)
        full.label = logits0.argmax(dim=1)
        if classes is None:
            classes = full.label
        full.map0 = normalized_map(attr0)
        full.shape = spatial_shape(attr0)
        n_features = int(full.map0.shape[1])
        if full.shape is not None and full.shape[0] * full.shape[1] != n_features:
            full.shape = None
        if (self.criterion == "center_shift" or self._needs_spatial()) and (
            full.shape is None
        ):
            raise ValueError(
                f"{type(self).__name__} with criterion {self.criterion!r} needs an "
                "image attribution map (B, C, H, W) or (B, H, W); the attribution "
                "has another structure."
            )
        self._setup(full, extras)
        self._setup_criterion(full, n_features)

        higher = CRITERIA[self.criterion][0]
        before = self._criterion(full.map0, full)
        correct = full.label == classes
        host_index = correct.nonzero().flatten().tolist()
        n_attacked = len(host_index)
        index = torch.tensor(host_index, dtype=torch.long, device=device)
        b = full if n_attacked == batch else full.select(index, host_index)

        best, best_crit, best_restart, best_step, steps_done, unmoved = self._search(
            b, full, index, before.index_select(0, index), settings
        )

        out = tuple(
            t.clone().index_copy_(0, index, bt) if n_attacked < batch else bt
            for t, bt in zip(x0, best)
        )
        perturbed = fmt(out, full.is_tuple)
        if settings.epsilon > 0:
            self._warn_of(
                unmoved,
                "never left the input (every update was zero or clipped: the "
                "mask leaves no pixel free, or the bounds hold every step back); "
                "AttackResult.unmoved marks them.",
            )
        live = b.state.get("live_gradient")
        no_gradient = (
            ~live
            if live is not None and n_attacked
            else torch.zeros(n_attacked, dtype=torch.bool, device=device)
        )
        if settings.epsilon > 0:
            self._warn_of(
                no_gradient,
                "had no attack gradient at any step (e.g. a ReLU model with "
                "surrogate_beta=None); they moved by random sign steps only, as "
                "RandomAttack would. AttackResult.no_gradient marks them.",
            )
        if not settings.return_results:
            return perturbed

        with torch.no_grad():
            final_label = full.call(self.forward_func, out).argmax(dim=1)

        def scatter(values: Tensor, fill: Tensor) -> Tensor:
            return fill.clone().index_copy_(0, index, values)

        after = scatter(best_crit, before)
        restart_full = scatter(best_restart, torch.full_like(full.label, -1))
        result = AttackResult(
            criterion=self.criterion,
            higher_is_better=higher,
            criterion_before=before,
            criterion_after=after,
            improved=restart_full >= 0,
            label_kept=final_label == full.label,
            skipped=~correct,
            original_label=full.label,
            steps=torch.where(
                correct,
                torch.full_like(full.label, steps_done),
                torch.zeros_like(full.label),
            ),
            best_restart=restart_full,
            best_step=scatter(best_step, torch.zeros_like(full.label)),
            unmoved=scatter(unmoved, torch.zeros_like(correct)),
            no_gradient=scatter(no_gradient, torch.zeros_like(correct)),
            random_steps=scatter(
                b.state.get("random_steps", torch.zeros_like(index)),
                torch.zeros_like(full.label),
            ),
        )
        return perturbed, self._report(result, out, full)

    def _warn_of(self, marked: Tensor, what: str) -> None:
        """A RuntimeWarning counting the attacked samples ``marked`` (n,), if any,
        raised at the caller of ``perturb``."""
        n_marked = int(marked.sum()) if marked.numel() else 0
        if n_marked:
            warnings.warn(
                f"{type(self).__name__}: {n_marked} of {marked.numel()} attacked "
                f"samples {what}",
                RuntimeWarning,
                stacklevel=5,
            )

    def _search(
        self,
        b: Batch,
        full: Batch,
        index: Tensor,
        best_crit: Tensor,
        settings: CallSettings,
    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor, Tensor, int, Tensor]:
        """Restarts x steps on the attacked samples ``b``; each keeps its best.

        Iterates live in :func:`master_dtype` (float32 for half-precision
        inputs); the model sees them, and the caller gets them, in the input's
        dtype.
        """
        higher, best_value = CRITERIA[self.criterion]
        n, device = b.size, b.x0[0].device
        best = tuple(t.clone() for t in b.x0)
        best_restart = torch.full((n,), -1, dtype=torch.long, device=device)
        best_step = torch.zeros(n, dtype=torch.long, device=device)
        unmoved = torch.ones(n, dtype=torch.bool, device=device)
        steps_done = 0
        if n == 0:
            return best, best_crit, best_restart, best_step, steps_done, unmoved
        x0m = tuple(t.to(master_dtype(t.dtype)) for t in b.x0)
        n_steps = settings.n_steps
        for restart in range(settings.restarts):
            x = self._start(b, x0m, full, index, settings, restart)
            optimizer: dict[str, Any] = {}
            for step in range(1, n_steps + 1):
                x = self._step(x, x0m, b, full, index, settings, step, optimizer)
                xi = in_input_dtype(
                    x, b.x0, settings.epsilon, self.lower_bound, self.upper_bound
                )
                for t, t0 in zip(xi, b.x0):
                    unmoved &= (t == t0).flatten(1).all(dim=1)
                maps, logits = self._real_map(xi, b)
                crit = self._criterion(maps, b)
                # The label constraint: an iterate that changes the prediction is
                # never kept (the walk goes on from it, inside the ball).
                kept = logits.argmax(dim=1) == b.label
                better = kept & ((crit > best_crit) if higher else (crit < best_crit))
                best = tuple(
                    torch.where(better.view(-1, *([1] * (t.dim() - 1))), t, bt)
                    for t, bt in zip(xi, best)
                )
                best_crit = torch.where(better, crit, best_crit)
                best_restart = best_restart.masked_fill(better, restart)
                best_step = best_step.masked_fill(better, step)
                steps_done += 1
                if best_value is not None and (
                    step % CHECK_EVERY == 0 or step == n_steps
                ):
                    reached = (
                        best_crit >= best_value if higher else best_crit <= best_value
                    )
                    if bool(reached.all()):
                        return (
                            best,
                            best_crit,
                            best_restart,
                            best_step,
                            steps_done,
                            unmoved,
                        )
        return best, best_crit, best_restart, best_step, steps_done, unmoved

    def _attribute_original(self, b: Batch) -> tuple[Any, Tensor]:
        """Attribution and logits of the real model at the original inputs."""
        logits = None
        # Off the CPU an out-of-range target would trip a device-side assert in
        # the attribution's gather, which no error handler recovers from: check
        # it on the logits first. On a CPU that forward pass is spared (Saliency
        # records the logits) and a failed attribution is explained afterwards.
        if b.target is None or b.x0[0].device.type != "cpu":
            with torch.no_grad():
                logits = check_logits(b.call(self.forward_func, b.x0))
            if b.target is None:
                # Attribute the predicted class, as one does to explain a
                # prediction.
                b.target = logits.argmax(dim=1)
            else:
                check_class_range(b.target, logits.shape[1], name="target")
        try:
            parts = self._in_row_chunks(self._attribute_rows, b.x0, b)
        except (RuntimeError, IndexError) as exc:
            if logits is None:
                with torch.no_grad():
                    width = check_logits(b.call(self.forward_func, b.x0)).shape[1]
                try:
                    check_class_range(b.target, width, name="target")
                except ValueError as range_error:
                    raise range_error from exc
            raise
        attr, recorded = parts[0] if len(parts) == 1 else concat_rows(parts)
        if logits is None:
            logits = recorded
            if logits is None:
                with torch.no_grad():
                    logits = b.call(self.forward_func, b.x0)
            logits = check_logits(logits)
            # A plain-callable attribution may ignore the target; the label check
            # still needs it to name an output.
            check_class_range(b.target, logits.shape[1], name="target")
        return attr, logits

    def _setup_criterion(self, b: Batch, n_features: int) -> None:
        if self.criterion == "topk" and self.criterion_k > n_features:
            raise ValueError(
                f"`criterion_k` ({self.criterion_k}) must be at most the number of "
                f"features of the attribution map ({n_features})."
            )
        if self.criterion == "center_shift":
            assert b.shape is not None
            b.state["center0"] = center_of_mass_map(b.map0.view(-1, *b.shape))

    def _needs_spatial(self) -> bool:
        return False

    def _start(
        self,
        b: Batch,
        x0m: tuple[Tensor, ...],
        full: Batch,
        index: Tensor,
        settings: CallSettings,
        restart: int,
    ) -> tuple[Tensor, ...]:
        if restart == 0 and not self.random_start:
            return x0m
        eps = settings.epsilon
        # Noise is drawn for the whole batch and then selected, so a sample's
        # start depends on its position in the batch, not on which others were
        # skipped.
        out = []
        for i, x0 in enumerate(x0m):
            noise = draw(
                "rand", full.x0[i].shape, generator=settings.generator, like=x0
            )
            noise = (noise.index_select(0, index) * 2 - 1) * eps
            out.append(self._project(x0 + noise, x0, b, i, eps))
        return tuple(out)

    def _project(self, x: Tensor, x0: Tensor, b: Batch, i: int, eps: float) -> Tensor:
        delta = (x - x0).clamp(-eps, eps)
        if b.masks is not None:
            delta = delta * b.masks[i]
        return (x0 + delta).clamp(self.lower_bound, self.upper_bound)

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
        alpha, generator = settings.step_size, settings.generator
        if self._update_rule == "random":
            moves = []
            for i, t in enumerate(x):
                noise = draw("randn", full.x0[i].shape, generator=generator, like=t)
                moves.append(alpha * noise.index_select(0, index).sign())
        else:
            xg = tuple(
                t.detach().to(t0.dtype).requires_grad_() for t, t0 in zip(x, b.x0)
            )
            # The direction differentiates the attribution a second time;
            # MobileNetV3's hard activations and ViT's fused attention have no
            # double backward, this context reroutes them.
            with second_order_safe():
                loss = self._loss(self._surrogate_map(xg, b), b, xg)
                grads = input_gradients(loss, xg, optimizer)
            grads = tuple(
                torch.nan_to_num(g.to(t.dtype), nan=0.0) for g, t in zip(grads, x)
            )
            if self._update_rule == "sign":
                moves = [-alpha * g.sign() for g in grads]
            else:
                moves, optimizer["moments"] = adam_moves(
                    grads, optimizer.get("moments"), step, alpha
                )
            moves = self._fallback_moves(moves, grads, b, full, index, alpha, generator)
        return tuple(
            self._project(t.detach() + m, x0, b, i, settings.epsilon)
            for i, (t, m, x0) in enumerate(zip(x, moves, x0m))
        )

    def _fallback_moves(
        self,
        moves: list[Tensor],
        grads: tuple[Tensor, ...],
        b: Batch,
        full: Batch,
        index: Tensor,
        alpha: float,
        generator: torch.Generator | None,
    ) -> list[Tensor]:
        """Random sign steps for the samples whose attack gradient is exactly zero.

        A zero gradient is a point where the loss is flat to first order, not an
        optimum: e.g. the top-k attack on an input-times-gradient map of a digit
        whose strokes fit in the top-k set (the normalised top-k mass is 1 and
        ``|a|`` has derivative 0 where the background's attribution is 0). A
        sign step would leave such a sample at the input for good; a random one
        moves it where the gradient exists. Samples with a zero gradient at
        every step are counted in ``b.state["live_gradient"]`` and reported.
        """
        dead = torch.stack([g.flatten(1).abs().amax(dim=1) == 0 for g in grads])
        dead = dead.all(dim=0)
        live = b.state.get("live_gradient")
        b.state["live_gradient"] = ~dead if live is None else live | ~dead
        taken = b.state.get("random_steps")
        b.state["random_steps"] = dead.long() if taken is None else taken + dead
        # On an accelerator the noise is drawn at every step, needed or not: asking
        # first would cost a device-to-host synchronisation per step. On the CPU
        # asking is free, and the generator is only drawn from when a sample is flat.
        if dead.device.type == "cpu" and not bool(dead.any()):
            return moves
        out = []
        for i, (m, g) in enumerate(zip(moves, grads)):
            # Drawn for the whole batch, then selected, like RandomAttack's steps.
            noise = draw("randn", full.x0[i].shape, generator=generator, like=g)
            noise = alpha * noise.index_select(0, index).sign()
            out.append(torch.where(dead.view(-1, *([1] * (m.dim() - 1))), noise, m))
        return out
