"""Robustness of explanations under random input perturbations.

The metrics of Quantus' robustness category and Captum's ``sensitivity_max``,
batched: the perturbed copies of a whole batch are explained in chunks of at
most ``max_examples_per_batch`` copies, one explanation call (and, where a
model is needed, one forward) per chunk, never a loop over samples.

Draws are seeded: ``seed`` initialises a ``torch.Generator`` on the inputs'
device, and perturbation round ``p`` draws one noise tensor for the whole batch,
so the copies do not depend on ``max_examples_per_batch``. A user
``perturb_func`` receives the (B, ...) batch once per round and returns its
perturbed copy; it may take the generator, ``perturb_func(inputs, generator)``,
or be the function already written for Captum's ``sensitivity_max``,
``perturb_func(inputs, perturb_radius)``, which gets ``radius`` and whose draws
from torch's global generator ``seed`` seeds too.

Unlike the map-comparison metrics, these work on the raw explanation by default
(``abs=False``, ``channel_reduction="none"``), as Captum and Quantus do; both
options go through the shared ``flatten_attribution``.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from captum_robust._utils.modes import eval_mode
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import (
    check_finite,
    check_float_tensors,
    check_number,
    check_positive_int,
)
from captum_robust.metrics._maps import (
    ChannelReduction,
    check_flag,
    check_map_options,
    check_option,
    flatten_attribution,
    spatial_attribution,
)
from captum_robust.metrics._similarity import (
    cosine_flat,
    mse_flat,
    pearson_flat,
    ssim_spatial,
)

Norm = Literal["linf", "l2"]
Distribution = Literal["uniform", "gaussian"]
PredictionChange = Literal["skip", "nan", "keep"]
NORMS = ("linf", "l2")
DISTRIBUTIONS = ("uniform", "gaussian")
PREDICTION_CHANGES = ("skip", "nan", "keep")
SIMILARITIES = ("pearson", "cosine", "ssim", "mse")
PerturbFunc = (
    Callable[[Tensor, torch.Generator], Tensor]
    | Callable[[Tensor, float], Tensor | tuple[Tensor, ...]]
    | Callable[[Tensor], Tensor | tuple[Tensor, ...]]
)


# ---------------------------------------------------------------------------
# Shared machinery


def _explain_callable(explanation_func: object) -> Callable[..., Any]:
    attribute = getattr(explanation_func, "attribute", None)
    if callable(attribute):
        return attribute
    if callable(explanation_func):
        return explanation_func
    raise TypeError(
        "`explanation_func` must be a Captum attribution, its `attribute` method "
        f"or a callable, got {type(explanation_func).__name__}."
    )


def _check_inputs(inputs: object) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"`inputs` must be a Tensor (B, ...), got {type(inputs).__name__}."
        )
    check_float_tensors((inputs,), "inputs")
    check_finite((inputs,), "inputs")
    return inputs


def _check_kwargs(explanation_kwargs: object) -> dict[str, Any]:
    if explanation_kwargs is None:
        return {}
    if not isinstance(explanation_kwargs, Mapping):
        raise TypeError(
            "`explanation_kwargs` must be a dict or None, got "
            f"{type(explanation_kwargs).__name__}."
        )
    if "target" in explanation_kwargs:
        raise ValueError(
            "`explanation_kwargs` must not hold 'target'; pass it as `target`."
        )
    return dict(explanation_kwargs)


# How a user perturb_func is called, read from the name, annotation or default of
# its second parameter: with the seeded generator, or as Captum's
# sensitivity_max calls it, with the radius (or, with one parameter, alone).
_GENERATOR_NAMES = frozenset({"generator", "gen", "rng"})
_RADIUS_NAMES = frozenset({"perturb_radius", "radius", "eps", "epsilon"})
_PERTURB_SIGNATURES = (
    "perturb_func(inputs, generator) -> Tensor, drawing from the torch.Generator "
    "seeded by `seed`, or Captum's perturb_func(inputs, perturb_radius) -> Tensor "
    "(as captum.metrics.sensitivity_max calls it; perturb_func(inputs) too), "
    "given `radius`"
)


def _mentions(annotation: object, cls: type) -> bool:
    """Whether a parameter annotation names ``cls`` (postponed strings too)."""
    if annotation is cls:
        return True
    if isinstance(annotation, str):
        return re.search(rf"\b{cls.__name__}\b", annotation) is not None
    return cls in typing.get_args(annotation)


def _perturb_form(perturb_func: Callable[..., Any]) -> str | None:
    """The form of ``perturb_func`` ("generator", "radius" or "inputs"), or None
    when its signature does not say."""
    try:
        parameters = list(inspect.signature(perturb_func).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    positional = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) == 1:
        return "inputs"
    if len(positional) < 2:
        return None
    second = positional[1]
    if second.name in _GENERATOR_NAMES:
        return "generator"
    if second.name in _RADIUS_NAMES:
        return "radius"
    if _mentions(second.annotation, torch.Generator):
        return "generator"
    if _mentions(second.annotation, float) or isinstance(second.default, float):
        return "radius"
    return None


class _GlobalStream:
    """torch's global generators as a stream of their own, seeded with ``seed``.

    Captum's perturb_func draws from the global generators (CPU, and the CUDA
    device of the inputs); inside :meth:`draws` they continue this stream, so
    ``seed`` repeats those draws as it repeats the seeded form's, and the
    caller's global state is put back afterwards.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed = seed
        self.device = device
        self.cuda = device.type == "cuda"
        self.state: tuple[Tensor, Tensor | None] | None = None

    def draws(self, call: Callable[[], Any]) -> Any:
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            if self.state is None:
                torch.random.default_generator.manual_seed(self.seed)
                if self.cuda:
                    with torch.cuda.device(self.device):
                        torch.cuda.manual_seed(self.seed)
            else:
                torch.set_rng_state(self.state[0])
                if self.state[1] is not None:
                    torch.cuda.set_rng_state(self.state[1], self.device)
            result = call()
            self.state = (
                torch.get_rng_state(),
                torch.cuda.get_rng_state(self.device) if self.cuda else None,
            )
        return result


def _expand(value: Any, index: Tensor, batch: int) -> Any:
    """Select the per-copy rows of a per-sample value (tensors with B rows)."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value.index_select(0, index.to(value.device))
    if isinstance(value, tuple):
        return tuple(_expand(v, index, batch) for v in value)
    return value


class _Perturbations:
    """Options shared by every metric that explains perturbed copies."""

    def __init__(
        self,
        inputs: Tensor,
        *,
        n_perturbations: object,
        radius: object,
        norm: object,
        distribution: object,
        perturb_func: object,
        lower_bound: object,
        upper_bound: object,
        seed: object,
        max_examples_per_batch: object,
    ) -> None:
        self.n = check_positive_int(n_perturbations, "n_perturbations")
        self.radius = check_number(radius, "radius", minimum=0.0)
        check_option(norm, NORMS, "norm")
        check_option(distribution, DISTRIBUTIONS, "distribution")
        self.norm, self.distribution = norm, distribution
        if perturb_func is not None and not callable(perturb_func):
            raise TypeError(
                f"`perturb_func` must be None or callable as {_PERTURB_SIGNATURES}; "
                f"got {type(perturb_func).__name__}."
            )
        self.perturb_func = perturb_func
        # Decided once: a call in the wrong form would fail inside the user's
        # function, with an error that does not say what was expected.
        self.form = None if perturb_func is None else _perturb_form(perturb_func)
        self.lower = (
            None if lower_bound is None else check_number(lower_bound, "lower_bound")
        )
        self.upper = (
            None if upper_bound is None else check_number(upper_bound, "upper_bound")
        )
        if self.lower is not None and self.upper is not None:
            if self.upper < self.lower:
                raise ValueError(
                    f"`upper_bound` ({self.upper}) must be >= `lower_bound` "
                    f"({self.lower})."
                )
        if seed is not None:
            check_positive_int(seed, "seed", minimum=0)
        self.seed = seed
        if max_examples_per_batch is None:
            self.chunk = None
        else:
            self.chunk = check_positive_int(
                max_examples_per_batch, "max_examples_per_batch"
            )
        self.inputs = inputs

    def _noise(self, generator: torch.Generator) -> Tensor:
        x = self.inputs
        if self.distribution == "gaussian":
            return self.radius * torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
        if self.norm == "linf":
            noise = torch.rand(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
            return self.radius * (2 * noise - 1)
        # Uniform in the L2 ball: a Gaussian direction, radius r * U^(1/d).
        direction = torch.randn(
            x.shape, generator=generator, device=x.device, dtype=x.dtype
        )
        flat = direction.flatten(1)
        dims = flat.shape[1]
        length = torch.rand(
            (x.shape[0], 1), generator=generator, device=x.device, dtype=x.dtype
        ) ** (1.0 / dims)
        flat = flat / flat.norm(dim=1, keepdim=True) * (self.radius * length)
        return flat.view_as(x)

    def _user_round(
        self, generator: torch.Generator, stream: _GlobalStream | None
    ) -> Any:
        x, func = self.inputs, self.perturb_func
        if self.form in ("radius", "inputs"):
            args = (x, self.radius) if self.form == "radius" else (x,)
            if stream is None:
                return func(*args)
            return stream.draws(lambda: func(*args))
        if self.form == "generator":
            return func(x, generator)
        try:
            return func(x, generator)
        except TypeError as error:
            raise TypeError(
                f"`perturb_func` must be callable as {_PERTURB_SIGNATURES}. Its "
                "signature names neither form (name or annotate the second "
                "parameter: `generator` / torch.Generator, or `perturb_radius` / "
                "float), so it was called as perturb_func(inputs, generator), "
                f"which raised: {error}"
            ) from error

    def _round(
        self, generator: torch.Generator, stream: _GlobalStream | None
    ) -> Tensor:
        x = self.inputs
        if self.perturb_func is not None:
            perturbed = self._user_round(generator, stream)
            # Captum's perturb_func returns a tuple, one tensor per input.
            if isinstance(perturbed, (tuple, list)) and len(perturbed) == 1:
                perturbed = perturbed[0]
            if not isinstance(perturbed, Tensor) or perturbed.shape != x.shape:
                shape = getattr(perturbed, "shape", type(perturbed).__name__)
                raise ValueError(
                    "`perturb_func` must return a Tensor of the inputs' shape "
                    f"{tuple(x.shape)}, got {shape}."
                )
            perturbed = perturbed.to(x.dtype)
        else:
            perturbed = x + self._noise(generator)
        if self.lower is not None or self.upper is not None:
            perturbed = perturbed.clamp(self.lower, self.upper)
        return perturbed.detach()

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (sample index, perturbed copies) chunks, perturbation-major.

        Copy ``j`` of the flat sequence is round ``j // B`` of sample ``j % B``.
        """
        x = self.inputs
        batch = x.shape[0]
        size = self.n * batch if self.chunk is None else self.chunk
        generator = torch.Generator(device=x.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        stream = None
        if self.form in ("radius", "inputs") and self.seed is not None:
            stream = _GlobalStream(self.seed, x.device)
        pending: list[Tensor] = []
        buffered = start = 0
        for _ in range(self.n):
            pending.append(self._round(generator, stream))
            buffered += batch
            while buffered >= size:
                stacked = torch.cat(pending)
                index = torch.arange(start, start + size, device=x.device) % batch
                yield index, stacked[:size]
                start += size
                rest = stacked[size:]
                pending = [rest] if len(rest) else []
                buffered = len(rest)
        if buffered:
            index = torch.arange(start, start + buffered, device=x.device) % batch
            yield index, torch.cat(pending)


def _explain(
    explain: Callable[..., Any],
    inputs: Tensor,
    target: Tensor | None,
    kwargs: dict[str, Any],
    sample_index: Tensor,
    batch: int,
    name: str,
) -> Tensor:
    call_kwargs = {k: _expand(v, sample_index, batch) for k, v in kwargs.items()}
    if target is not None:
        call_kwargs["target"] = target.index_select(0, sample_index)
    with warnings.catch_warnings():
        # Captum warns on every call that it switched on requires_grad of the
        # fresh perturbed copies, which is expected here.
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already")
        result = explain(inputs, **call_kwargs)
    if isinstance(result, tuple) and len(result) == 1:
        result = result[0]
    if not isinstance(result, Tensor) or result.shape[0] != inputs.shape[0]:
        raise TypeError(
            f"`explanation_func` must return one Tensor with a row per input for "
            f"{name}, got {type(result).__name__}."
        )
    return result.detach()


def _check_target(target: object, inputs: Tensor) -> Tensor | None:
    if target is None:
        return None
    return check_class_indices(target, inputs.shape[0], inputs.device)


def _reduce_rounds(scores: Tensor, batch: int, how: str) -> Tensor:
    """(n * B,) per-copy scores, perturbation-major -> (B,) max or mean.

    NaN copies (a perturbation left out) are ignored; NaN if every copy is.
    """
    table = scores.view(-1, batch)
    defined = ~table.isnan()
    if how == "mean":
        total = table.nan_to_num(0.0).sum(dim=0)
        return total / defined.sum(dim=0)  # 0 / 0 is NaN
    peak = table.nan_to_num(-math.inf).amax(dim=0)
    return peak.masked_fill(~defined.any(dim=0), math.nan)


def _flat(expl: Tensor, abs: bool, channel_reduction: str, name: str) -> Tensor:
    return flatten_attribution(
        expl, abs=abs, channel_reduction=channel_reduction, name=name
    )


def _reference_explanation(
    attributions: object,
    explain: Callable[..., Any],
    inputs: Tensor,
    target: Tensor | None,
    kwargs: dict[str, Any],
) -> Tensor:
    if attributions is None:
        index = torch.arange(inputs.shape[0], device=inputs.device)
        return _explain(explain, inputs, target, kwargs, index, len(inputs), "inputs")
    if not isinstance(attributions, Tensor):
        raise TypeError(
            "`attributions` must be a Tensor (the explanation of `inputs`) or "
            f"None, got {type(attributions).__name__}."
        )
    if attributions.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`attributions` has {attributions.shape[0]} rows but `inputs` has "
            f"{inputs.shape[0]}."
        )
    return attributions.detach()


def _sensitivity(
    explanation_func: object,
    inputs: object,
    *,
    how: str,
    score: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    target: object,
    attributions: object,
    explanation_kwargs: object,
    abs: object,
    channel_reduction: object,
    perturbations: dict[str, Any],
) -> Tensor:
    """max / mean over perturbations of ``score(e, e_pert, x, x_pert)`` rows."""
    explain = _explain_callable(explanation_func)
    inputs = _check_inputs(inputs)
    check_map_options(abs, channel_reduction)
    kwargs = _check_kwargs(explanation_kwargs)
    plan = _Perturbations(inputs, **perturbations)
    labels = _check_target(target, inputs)
    batch = inputs.shape[0]
    reference = _reference_explanation(attributions, explain, inputs, labels, kwargs)
    flat_ref = _flat(reference, abs, channel_reduction, "attributions")
    flat_inputs = inputs.flatten(1).to(flat_ref.dtype)
    scores = []
    for index, copies in plan.chunks():
        expl = _explain(explain, copies, labels, kwargs, index, batch, "inputs")
        flat = _flat(expl, abs, channel_reduction, "explanation_func output")
        if flat.shape[1] != flat_ref.shape[1]:
            raise ValueError(
                "`explanation_func` returned explanations of "
                f"{flat.shape[1]} features for perturbed inputs but "
                f"{flat_ref.shape[1]} for `inputs`."
            )
        scores.append(
            score(
                flat_ref.index_select(0, index),
                flat,
                flat_inputs.index_select(0, index),
                copies.flatten(1).to(flat.dtype),
            )
        )
    return _reduce_rounds(torch.cat(scores), batch, how)


def _lp(values: Tensor, p: float) -> Tensor:
    return torch.linalg.vector_norm(values, ord=p, dim=1)


def _check_ord(norm_ord: object) -> float:
    if norm_ord == "fro":
        return 2.0
    if norm_ord == "inf":
        return math.inf
    return check_number(norm_ord, "norm_ord", minimum=1.0)


def _sensitivity_score(p: float, normalize: bool) -> Callable[..., Tensor]:
    def score(ref: Tensor, pert: Tensor, x: Tensor, x_pert: Tensor) -> Tensor:
        change = _lp(ref - pert, p)
        if not normalize:
            return change
        scale = _lp(ref, p)
        # Captum divides by 1 where the explanation at x is zero.
        return change / torch.where(scale == 0, torch.ones_like(scale), scale)

    return score


_PERTURBATION_PARAMETERS = """
    n_perturbations : int
        Perturbed copies per sample.
    radius : float
        Radius of the ball that uniform noise is drawn from, or the standard
        deviation of Gaussian noise.
    norm : {"linf", "l2"}, default "linf"
        Ball of uniform draws: every coordinate in [-radius, radius] (Captum's
        and Quantus' draws), or uniform in the L2 ball of the whole input.
    distribution : {"uniform", "gaussian"}
        "gaussian" adds N(0, radius^2) to every coordinate (``norm`` unused).
    perturb_func : callable, optional
        Replaces the draws: it gets the (B, ...) batch once per perturbation
        round and returns its perturbed copy. Two forms, told apart by the
        signature:

        * ``perturb_func(inputs, generator)``: draws from the
          ``torch.Generator`` that ``seed`` seeds;
        * Captum's ``perturb_func(inputs, perturb_radius)``, as
          ``captum.metrics.sensitivity_max`` calls it (e.g. Captum's
          ``default_perturb_func``), given ``radius``; or
          ``perturb_func(inputs)``. It may return a tuple of one Tensor. Its
          draws from torch's global generator are seeded by ``seed`` too (the
          caller's global random state is left as it was); ``seed=None``
          continues the global stream, as Captum does.

        A second parameter named ``generator``, or annotated
        ``torch.Generator``, selects the first form; one named
        ``perturb_radius``, ``radius`` or ``eps``, annotated ``float`` or with
        a float default, the second. A signature that says neither is called
        in the first form (a TypeError from that call names both forms).
    lower_bound, upper_bound : float, optional
        Clamp the perturbed inputs to the valid range.
    seed : int or None, default 0
        Seed of the draws' generator; None draws a fresh seed.
    max_examples_per_batch : int, optional
        Most perturbed copies explained in one call (default: all at once).
    explanation_kwargs : dict, optional
        Passed to every explanation call; tensors with B rows (baselines,
        additional_forward_args) are repeated for the copies.
    abs : bool, default False
        Magnitudes before comparing (Captum and Quantus compare raw values).
    channel_reduction : {"none", "sum", "mean", "max"}, default "none"
        Channel merge before comparing; "none" keeps the raw explanation.
"""


_STABILITY_PARAMETERS = """
    explanation_func : Captum attribution, its ``attribute``, or callable
        As in :func:`max_sensitivity`.
    model : nn.Module
        The classifier, returning (B, num_classes) logits. It is run in eval
        mode for the predictions (and representations), and every submodule's
        mode is restored.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample for the explanations.
    eps_min : float, default 1e-6
        Floor of the denominator, and divisor of zero reference values.
    norm_ord : float, "fro" or "inf", default 2
        Order of the norms (Agarwal et al.'s p).
    on_prediction_change : {"skip", "nan", "keep"}, default "skip"
        Perturbations that change the predicted class are outside the
        neighbourhood of Agarwal et al.: "skip" leaves them out of the max (NaN
        when all of them change it), "nan" makes the sample NaN when any does
        (Quantus 0.6's default), "keep" uses them.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
""" + _PERTURBATION_PARAMETERS.replace(
    "    n_perturbations : int\n",
    "    n_perturbations : int, default 10\n",
)


_RPS_PARAMETERS = _PERTURBATION_PARAMETERS.replace(
    "    abs : bool, default False\n"
    "        Magnitudes before comparing (Captum and Quantus compare raw values).\n"
    '    channel_reduction : {"none", "sum", "mean", "max"}, default "none"\n'
    '        Channel merge before comparing; "none" keeps the raw explanation.\n',
    "    abs : bool, default True\n"
    "        Compare magnitudes, as every map metric does.\n"
    '    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"\n'
    "        Channel merge before comparing.\n",
)


def _documented(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Insert the shared parameter descriptions into ``fn``'s docstring."""
    doc = fn.__doc__ or ""
    for marker, text in (
        ("    <perturbation parameters>\n", _PERTURBATION_PARAMETERS.lstrip("\n")),
        ("    <rps parameters>\n", _RPS_PARAMETERS.lstrip("\n")),
        ("    <stability parameters>\n", _STABILITY_PARAMETERS.lstrip("\n")),
    ):
        doc = doc.replace(marker, text)
    fn.__doc__ = doc
    return fn


def _perturbation_options(**options: Any) -> dict[str, Any]:
    return options


@_documented
def max_sensitivity(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.02,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    norm_ord: float | str = "fro",
    normalize: bool = True,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Max-sensitivity of an explanation (Yeh et al. 2019), per sample.

    ``max_j ||e(x) - e(x + d_j)|| / ||e(x)||`` over random perturbations
    ``d_j``. Lower is more robust; 0 for an explanation that does not move.

    The defaults are those of ``captum.metrics.sensitivity_max`` (10 draws
    uniform in the L-inf ball of radius 0.02, Frobenius norm, divided by
    ``||e(x)||``, taken as 1 where it is zero), and given the same perturbations
    the values are equal. Quantus 0.6 ``MaxSensitivity()`` computes the same
    quantity with ``radius=0.2`` (its ``lower_bound``), ``n_perturbations=200``
    and no clamp; its default ``return_nan_when_prediction_changes=False`` is
    what is done here.

    Parameters
    ----------
    explanation_func : Captum attribution, its ``attribute``, or callable
        Called as ``f(perturbed, target=..., **explanation_kwargs)``; returns
        one Tensor with a row per input.
    inputs : Tensor
        Shape (B, ...), finite floating point.
    target : int, Tensor or list of int, optional
        Class per sample, repeated for its copies; not passed when None.
    norm_ord : float, "fro" or "inf", default "fro"
        Order of the vector norm of the explanation change ("fro" is 2).
    normalize : bool, default True
        Divide by ``||e(x)||`` (Captum, Quantus); False gives the raw change.
    attributions : Tensor, optional
        The explanation of ``inputs`` if already computed.
    <perturbation parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import max_sensitivity
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> inputs = torch.rand(4, 1, 4, 4)
    >>> max_sensitivity(Saliency(model), inputs, target=0)  # linear: no change
    tensor([0., 0., 0., 0.])
    """
    return _sensitivity(
        explanation_func,
        inputs,
        how="max",
        score=_sensitivity_score(
            _check_ord(norm_ord), check_flag(normalize, "normalize")
        ),
        target=target,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


@_documented
def avg_sensitivity(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.02,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    norm_ord: float | str = "fro",
    normalize: bool = True,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Average sensitivity of an explanation (Yeh et al. 2019), per sample.

    The mean instead of the max of :func:`max_sensitivity`:
    ``mean_j ||e(x) - e(x + d_j)|| / ||e(x)||``. Lower is more robust. Quantus
    0.6 ``AvgSensitivity()`` is the same with ``radius=0.2`` and
    ``n_perturbations=200``.

    Parameters
    ----------
    explanation_func, inputs, target, norm_ord, normalize, attributions
        As in :func:`max_sensitivity`.
    <perturbation parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import avg_sensitivity
    >>> def explain(x):  # e(x) = x**2: the change grows with the radius
    ...     return x**2
    >>> x = torch.ones(2, 8)
    >>> bool((avg_sensitivity(explain, x, radius=0.1) < 0.21).all())
    True
    """
    return _sensitivity(
        explanation_func,
        inputs,
        how="mean",
        score=_sensitivity_score(
            _check_ord(norm_ord), check_flag(normalize, "normalize")
        ),
        target=target,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


@_documented
def local_lipschitz_estimate(
    explanation_func: object,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.1,
    norm: Norm = "linf",
    distribution: Distribution = "gaussian",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018), per sample.

    ``max_j ||e(x) - e(x_j)||_2 / (||x - x_j||_2 + 1e-10)`` over random
    neighbours ``x_j``. Lower is more robust. The defaults follow Quantus 0.6
    ``LocalLipschitzEstimate``: Gaussian noise of standard deviation 0.1
    (``radius``); Quantus draws 200 neighbours and by default normalises the
    explanations by their maximum (``normalise=True``), which is not done here
    (pass normalised explanations to compare).

    Parameters
    ----------
    explanation_func, inputs, target, attributions
        As in :func:`max_sensitivity`.
    <perturbation parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import local_lipschitz_estimate
    >>> def explain(x):  # 3-Lipschitz
    ...     return 3 * x
    >>> local_lipschitz_estimate(explain, torch.zeros(2, 5))
    tensor([3.0000, 3.0000])
    """

    def score(ref: Tensor, pert: Tensor, x: Tensor, x_pert: Tensor) -> Tensor:
        return _lp(ref - pert, 2.0) / (_lp(x - x_pert, 2.0) + 1e-10)

    return _sensitivity(
        explanation_func,
        inputs,
        how="max",
        score=score,
        target=target,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


# ---------------------------------------------------------------------------
# Relative stability (Agarwal et al. 2022)


def _relative(change: Tensor, reference: Tensor, eps: float) -> Tensor:
    """Elementwise relative change; a zero reference value divides by ``eps``."""
    return change / (reference + (reference == 0).to(reference.dtype) * eps)


class _Capture:
    """Forward hook keeping the flattened output of one layer."""

    def __init__(self, module: nn.Module) -> None:
        self.value: Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]
        self.value = output.detach().flatten(1)


def _layer_module(model: nn.Module, layer: object) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("`layer` must be a submodule of `model`.")
        return layer
    if not isinstance(layer, str):
        raise TypeError(
            "`layer` must be a submodule name (str) or an nn.Module, got "
            f"{type(layer).__name__}."
        )
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"`layer` {layer!r} is not a submodule of `model`.") from None


def _stability(
    kind: str,
    explanation_func: object,
    model: object,
    inputs: object,
    *,
    layer: object,
    target: object,
    eps_min: object,
    norm_ord: object,
    on_prediction_change: object,
    attributions: object,
    explanation_kwargs: object,
    abs: object,
    channel_reduction: object,
    perturbations: dict[str, Any],
) -> Tensor:
    explain = _explain_callable(explanation_func)
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
    inputs = _check_inputs(inputs)
    check_map_options(abs, channel_reduction)
    eps = check_number(eps_min, "eps_min", minimum=0.0, strict_minimum=True)
    p = _check_ord(norm_ord)
    check_option(on_prediction_change, PREDICTION_CHANGES, "on_prediction_change")
    kwargs = _check_kwargs(explanation_kwargs)
    plan = _Perturbations(inputs, **perturbations)
    labels = _check_target(target, inputs)
    batch = inputs.shape[0]
    capture = (
        _Capture(_layer_module(model, layer)) if kind == "representation" else None
    )
    try:

        def run(x: Tensor) -> tuple[Tensor, Tensor | None]:
            with eval_mode(model), torch.no_grad():
                logits = model(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ValueError(
                    "`model` must return (B, num_classes) logits, got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}."
                )
            hidden = capture.value if capture is not None else None
            return logits.detach(), hidden

        logits_ref, hidden_ref = run(inputs)
        reference = _reference_explanation(
            attributions, explain, inputs, labels, kwargs
        )
        flat_ref = _flat(reference, abs, channel_reduction, "attributions")
        dtype = flat_ref.dtype
        flat_inputs = inputs.flatten(1).to(dtype)
        prediction = logits_ref.argmax(dim=1)
        scores, changed = [], []
        for index, copies in plan.chunks():
            expl = _explain(explain, copies, labels, kwargs, index, batch, "inputs")
            flat = _flat(expl, abs, channel_reduction, "explanation_func output")
            logits, hidden = run(copies)
            ref = flat_ref.index_select(0, index)
            numerator = _lp(_relative(ref - flat, ref, eps), p)
            if kind == "input":
                x = flat_inputs.index_select(0, index)
                denominator = _lp(_relative(x - copies.flatten(1).to(dtype), x, eps), p)
            elif kind == "output":
                diff = logits_ref.index_select(0, index) - logits
                denominator = _lp(diff.to(dtype), p)
            else:
                h = hidden_ref.index_select(0, index).to(dtype)
                denominator = _lp(_relative(h - hidden.to(dtype), h, eps), p)
            scores.append(numerator / denominator.clamp(min=eps))
            changed.append(logits.argmax(dim=1) != prediction.index_select(0, index))
    finally:
        if capture is not None:
            capture.handle.remove()
    scores_all = torch.cat(scores)
    changed_all = torch.cat(changed)
    if on_prediction_change != "keep":
        scores_all = scores_all.masked_fill(changed_all, math.nan)
    result = _reduce_rounds(scores_all, batch, "max")
    if on_prediction_change == "nan":
        any_changed = changed_all.view(-1, batch).any(dim=0)
        result = result.masked_fill(any_changed, math.nan)
    return result


@_documented
def relative_input_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative input stability, RIS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||(x - x') / x||_p, eps_min)``,
    relative changes taken elementwise (a zero reference value divides by
    ``eps_min``), over perturbations ``x'`` that keep the predicted class.
    Lower is more robust. Quantus 0.6 ``RelativeInputStability()`` computes the
    same with 200 draws of its ``batch_uniform_noise`` (``upper_bound=0.2``)
    and ``on_prediction_change="nan"``; its zero-denominator rule adds
    ``eps_min`` only to an exact zero, where this takes ``max(., eps_min)``
    as the paper writes.

    Parameters
    ----------
    <stability parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_input_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_input_stability(Saliency(model), model, inputs, target=0).shape
    torch.Size([4])
    """

    return _stability(
        "input",
        explanation_func,
        model,
        inputs,
        layer=None,
        target=target,
        eps_min=eps_min,
        norm_ord=norm_ord,
        on_prediction_change=on_prediction_change,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


@_documented
def relative_output_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative output stability, ROS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||h(x) - h(x')||_p, eps_min)``
    with ``h`` the model's logits, over perturbations that keep the predicted
    class. Lower is more robust. Matches Quantus 0.6
    ``RelativeOutputStability()`` as :func:`relative_input_stability` matches
    RIS.

    Parameters
    ----------
    <stability parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_output_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_output_stability(Saliency(model), model, inputs, target=0).shape
    torch.Size([4])
    """

    return _stability(
        "output",
        explanation_func,
        model,
        inputs,
        layer=None,
        target=target,
        eps_min=eps_min,
        norm_ord=norm_ord,
        on_prediction_change=on_prediction_change,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


@_documented
def relative_representation_stability(
    explanation_func: object,
    model: nn.Module,
    inputs: Tensor,
    *,
    layer: str | nn.Module,
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 0.2,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
    eps_min: float = 1e-6,
    norm_ord: float | str = 2.0,
    on_prediction_change: PredictionChange = "skip",
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = False,
    channel_reduction: ChannelReduction = "none",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Relative representation stability, RRS (Agarwal et al. 2022), per sample.

    ``max_x' ||(e_x - e_x') / e_x||_p / max(||(L_x - L_x') / L_x||_p,
    eps_min)`` with ``L`` the flattened output of ``layer``, over perturbations
    that keep the predicted class. Lower is more robust. Matches Quantus 0.6
    ``RelativeRepresentationStability(layer_names=[layer])`` as
    :func:`relative_input_stability` matches RIS.

    Parameters
    ----------
    layer : str or nn.Module
        The layer (a submodule name of ``model``, or the module) whose output
        is the representation.
    <stability parameters>
    Returns
    -------
    Tensor
        Shape (B,), >= 0; NaN for a sample left without a perturbation (see
        ``on_prediction_change``).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import relative_representation_stability
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
    ...     torch.nn.Linear(8, 3))
    >>> inputs = torch.rand(4, 1, 4, 4) + 0.5
    >>> relative_representation_stability(
    ...     Saliency(model), model, inputs, layer="2", target=0).shape
    torch.Size([4])
    """

    return _stability(
        "representation",
        explanation_func,
        model,
        inputs,
        layer=layer,
        target=target,
        eps_min=eps_min,
        norm_ord=norm_ord,
        on_prediction_change=on_prediction_change,
        attributions=attributions,
        explanation_kwargs=explanation_kwargs,
        abs=abs,
        channel_reduction=channel_reduction,
        perturbations=_perturbation_options(
            n_perturbations=n_perturbations,
            radius=radius,
            norm=norm,
            distribution=distribution,
            perturb_func=perturb_func,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
            seed=seed,
            max_examples_per_batch=max_examples_per_batch,
        ),
    )


def _similarity_fn(similarity: object) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(similarity):
        return similarity
    if not isinstance(similarity, str):
        raise TypeError(
            "`similarity` must be one of 'pearson', 'cosine', 'ssim', 'mse' or a "
            f"callable, got {type(similarity).__name__}."
        )
    check_option(similarity, SIMILARITIES, "similarity")
    return similarity


@_documented
def random_perturbation_similarity(
    explanation_func: object,
    inputs: Tensor,
    *,
    similarity: str | Callable[[Tensor, Tensor], Tensor] = "pearson",
    target: object = None,
    n_perturbations: int = 10,
    radius: float = 4 / 255,
    norm: Norm = "linf",
    distribution: Distribution = "uniform",
    perturb_func: PerturbFunc | None = None,
    lower_bound: float | None = 0.0,
    upper_bound: float | None = 1.0,
    attributions: Tensor | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    seed: int | None = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Random perturbation similarity, RPS (Joo et al. 2023), per sample.

    The mean over draws of ``similarity(map(x), map(clamp(x + U(-eps,
    eps))))``: Joo et al. use eps = 4/255 in pixel space, 10 draws, and report
    PCC, SSIM, MSE and cosine. Higher is more robust (lower for "mse"). Draws
    whose similarity is NaN (a degenerate map, see :mod:`captum_robust.metrics`)
    are left out of the mean; NaN when all are.

    Parameters
    ----------
    similarity : {"pearson", "cosine", "ssim", "mse"} or callable
        A named similarity of this package (with ``abs`` and
        ``channel_reduction``, SSIM with Joo's settings), or
        ``f(attr_a, attr_b) -> (n,)`` on the raw explanations, e.g.
        ``functools.partial(structural_similarity, sigma=1.0)``.
    explanation_func, inputs, target, attributions
        As in :func:`max_sensitivity`.
    <rps parameters>
    Returns
    -------
    Tensor
        Shape (B,).

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import random_perturbation_similarity
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.Softplus(),
    ...     torch.nn.Linear(8, 2))
    >>> inputs = torch.rand(3, 1, 8, 8)
    >>> rps = random_perturbation_similarity(Saliency(model), inputs, target=0)
    >>> bool((rps > 0.9).all())
    True
    """
    explain = _explain_callable(explanation_func)
    inputs = _check_inputs(inputs)
    check_map_options(abs, channel_reduction)
    measure = _similarity_fn(similarity)
    kwargs = _check_kwargs(explanation_kwargs)
    plan = _Perturbations(
        inputs,
        n_perturbations=n_perturbations,
        radius=radius,
        norm=norm,
        distribution=distribution,
        perturb_func=perturb_func,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        seed=seed,
        max_examples_per_batch=max_examples_per_batch,
    )
    labels = _check_target(target, inputs)
    batch = inputs.shape[0]
    reference = _reference_explanation(attributions, explain, inputs, labels, kwargs)
    if measure == "ssim":
        prepared = spatial_attribution(
            reference, abs=abs, channel_reduction=channel_reduction, name="attributions"
        )
    elif isinstance(measure, str):
        prepared = _flat(reference, abs, channel_reduction, "attributions")
    else:
        prepared = reference
    scores = []
    for index, copies in plan.chunks():
        expl = _explain(explain, copies, labels, kwargs, index, batch, "inputs")
        ref = prepared.index_select(0, index)
        if measure == "ssim":
            pert = spatial_attribution(
                expl, abs=abs, channel_reduction=channel_reduction, validate=False
            )
            if pert.shape != ref.shape or min(ref.shape[1:]) < 7:
                raise ValueError(
                    "`explanation_func` must give (H, W) maps of one shape, at "
                    "least 7 pixels a side, for similarity='ssim'."
                )
            value = ssim_spatial(ref, pert)
        elif isinstance(measure, str):
            pert = _flat(expl, abs, channel_reduction, "explanation_func output")
            fn = {"pearson": pearson_flat, "cosine": cosine_flat, "mse": mse_flat}
            value = fn[measure](ref, pert)
        else:
            value = measure(ref, expl)
            if not isinstance(value, Tensor) or value.shape != (len(index),):
                raise ValueError(
                    "`similarity` must return a Tensor of shape (n,) for n pairs, "
                    f"got {getattr(value, 'shape', type(value).__name__)}."
                )
        scores.append(value)
    return _reduce_rounds(torch.cat(scores).double(), batch, "mean").to(
        prepared.dtype if prepared.is_floating_point() else torch.float32
    )
