"""Perturbed copies of a batch and their explanations, for the robustness metrics.

The metrics of Quantus' robustness category and Captum's ``sensitivity_max``
(:mod:`~captum_robust.metrics._sensitivity` and ``_stability``) are batched:
the perturbed copies of a whole batch are explained in chunks of at most
``max_examples_per_batch`` copies, one explanation call (and, where a model is
needed, one forward) per chunk, never a loop over samples.

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
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Literal

import torch
from torch import Tensor

from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_float_tensors
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._maps import flatten_attribution

Norm = Literal["linf", "l2"]
Distribution = Literal["uniform", "gaussian"]
NORMS = ("linf", "l2")
DISTRIBUTIONS = ("uniform", "gaussian")
PerturbFunc = (
    Callable[[Tensor, torch.Generator], Tensor]
    | Callable[[Tensor, float], Tensor | tuple[Tensor, ...]]
    | Callable[[Tensor], Tensor | tuple[Tensor, ...]]
)


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


def _check_target(target: object, inputs: Tensor) -> Tensor | None:
    if target is None:
        return None
    return check_class_indices(target, inputs.shape[0], inputs.device)


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


class Perturbations:
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
        check_str_choice(norm, NORMS, "norm")
        check_str_choice(distribution, DISTRIBUTIONS, "distribution")
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


class Explanations:
    """An explanation function bound to one batch, its targets and keyword
    arguments: it explains the batch, or perturbed copies of its samples."""

    def __init__(
        self,
        explanation_func: object,
        inputs: object,
        target: object,
        explanation_kwargs: object,
    ) -> None:
        self.explain = _explain_callable(explanation_func)
        self.inputs = _check_inputs(inputs)
        self.batch = self.inputs.shape[0]
        self.kwargs = _check_kwargs(explanation_kwargs)
        self.labels = _check_target(target, self.inputs)

    def __call__(self, copies: Tensor, sample_index: Tensor) -> Tensor:
        """Explanations of ``copies``, row ``i`` a copy of sample
        ``sample_index[i]``, whose target and per-sample arguments it gets."""
        call_kwargs = {
            k: _expand(v, sample_index, self.batch) for k, v in self.kwargs.items()
        }
        if self.labels is not None:
            call_kwargs["target"] = self.labels.index_select(0, sample_index)
        with warnings.catch_warnings():
            # Captum warns on every call that it switched on requires_grad of
            # the fresh perturbed copies, which is expected here.
            warnings.filterwarnings("ignore", message="Input Tensor .* did not already")
            result = self.explain(copies, **call_kwargs)
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]
        if not isinstance(result, Tensor) or result.shape[0] != copies.shape[0]:
            raise TypeError(
                "`explanation_func` must return one Tensor with a row per input "
                f"for inputs, got {type(result).__name__}."
            )
        return result.detach()

    def reference(self, attributions: object) -> Tensor:
        """The explanation of the batch itself: ``attributions`` if given."""
        if attributions is None:
            return self(
                self.inputs, torch.arange(self.batch, device=self.inputs.device)
            )
        if not isinstance(attributions, Tensor):
            raise TypeError(
                "`attributions` must be a Tensor (the explanation of `inputs`) or "
                f"None, got {type(attributions).__name__}."
            )
        if attributions.shape[0] != self.batch:
            raise ValueError(
                f"`attributions` has {attributions.shape[0]} rows but `inputs` has "
                f"{self.batch}."
            )
        return attributions.detach()


def flat_map(expl: Tensor, abs: object, channel_reduction: object, name: str) -> Tensor:
    return flatten_attribution(
        expl, abs=abs, channel_reduction=channel_reduction, name=name
    )


def reduce_rounds(scores: Tensor, batch: int, how: str) -> Tensor:
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
