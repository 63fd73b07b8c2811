"""Shared machinery of the differentiable attributions."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

import torch
from captum._utils.common import _run_forward
from captum._utils.common import _select_targets
from torch import Tensor
from torch import nn

from captum_robust._utils.second_order import second_order_safe
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number

__all__ = ["DifferentiableAttribution"]

TensorOrTuple = Tensor | tuple[Tensor, ...]


class DifferentiableAttribution:
    """An attribution method whose result can be back-propagated.

    Objects of this type are returned by :func:`~captum_robust.attr.differentiable`
    (and :class:`~captum_robust.attr.SmoothGrad` is one). ``attribute`` takes the
    same arguments as the Captum method it was made from and returns the same
    tensors, but they carry an autograd graph (built with ``create_graph=True``) back
    to the inputs that require gradients and to the model's parameters, so that a
    loss on the attribution can be minimised with respect to either.

    A subclass's ``attribute`` always runs under
    :func:`~captum_robust._utils.second_order.second_order_safe` (the base class wraps
    it), so the graph it records is twice differentiable on MobileNetV3 and ViT too.

    Attributes
    ----------
    method : str
        Name of the attribution method, e.g. ``"IntegratedGradients"``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import Saliency
    >>> from captum_robust.attr import DifferentiableAttribution, differentiable
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 2))
    >>> sal = differentiable(Saliency(model))
    >>> isinstance(sal, DifferentiableAttribution)
    True
    >>> sal.forward_func is model
    True
    """

    method: str = "attribution"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The contract of every subclass, a user's included: ``attribute`` records a
        # twice-differentiable graph (see :func:`second_order`), whether or not its
        # author remembered the decorator.
        attribute = cls.__dict__.get("attribute")
        if inspect.isfunction(attribute) and not getattr(attribute, "_second_order", 0):
            cls.attribute = second_order(attribute)

    def __init__(self, forward_func: Callable[..., Any] | None) -> None:
        if forward_func is not None:
            check_forward_func(forward_func)
        self._forward_func = forward_func

    @property
    def forward_func(self) -> Callable[..., Any] | None:
        """The model (or forward function) the attribution explains.

        Read-only: use :meth:`with_forward_func` to get the same attribution bound to
        another model, e.g. a :func:`~captum_robust.attr.softplus_surrogate`.
        ``None`` for a wrapped plain callable made without ``forward_func``.
        """
        return self._forward_func

    def attribute(self, inputs: TensorOrTuple, *args: Any, **kwargs: Any) -> Any:
        """Compute the attribution with an autograd graph; see the subclass."""
        raise NotImplementedError

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> DifferentiableAttribution:
        """Same method and settings, bound to ``forward_func``; see the subclass."""
        raise NotImplementedError

    def _check_rebinding(self, forward_func: object, kwargs: dict[str, Any]) -> None:
        """The checks of a ``with_forward_func`` that takes no keyword arguments."""
        if kwargs:
            raise TypeError(
                f"with_forward_func() of {self.method} takes no keyword arguments, "
                f"got {sorted(kwargs)}."
            )
        check_forward_func(forward_func)

    def __repr__(self) -> str:
        name = type(self._forward_func).__name__
        return f"{type(self).__name__}(method={self.method!r}, forward_func={name})"


def check_forward_func(forward_func: object, name: str = "forward_func") -> None:
    if not callable(forward_func):
        raise TypeError(
            f"`{name}` must be callable (a model or a forward function), got "
            f"{type(forward_func).__name__}."
        )


FuncT = TypeVar("FuncT", bound=Callable[..., Any])


def second_order(method: FuncT) -> FuncT:
    """Run ``method`` (a forward pass and its create_graph backward) under
    :func:`~captum_robust._utils.second_order.second_order_safe`.

    The graph recorded inside is twice differentiable (hardsigmoid / hardswish as
    relu6 forms, attention by the math kernel), so the second backward, which the
    caller runs later and outside, works on MobileNetV3 and ViT.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with second_order_safe():
            return method(*args, **kwargs)

    wrapper._second_order = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def check_module(forward_func: object, why: str = "") -> None:
    """Refuse a ``forward_func`` that is not an nn.Module; ``why`` says what the
    method needs the module for."""
    if not isinstance(forward_func, nn.Module):
        reason = f": {why}" if why else ""
        raise TypeError(
            f"`forward_func` must be an nn.Module{reason}, got "
            f"{type(forward_func).__name__}."
        )


def check_input_tuple(inputs: object, name: str = "inputs") -> tuple[Tensor, ...]:
    """``inputs`` (a Tensor or a tuple of Tensors, as Captum takes them) as a
    tuple of tensors with one non-empty batch dimension."""
    xs = as_tensor_tuple(inputs, name)
    for i, x in enumerate(xs):
        label = name if len(xs) == 1 else f"{name}[{i}]"
        if x.dim() == 0:
            raise ValueError(
                f"`{label}` must have a batch dimension, got a 0-d tensor."
            )
        if x.shape[0] != xs[0].shape[0]:
            raise ValueError(
                f"`{label}` has {x.shape[0]} samples but `{name}[0]` has "
                f"{xs[0].shape[0]}; every input tensor needs the same batch size."
            )
    if xs[0].shape[0] == 0:
        raise ValueError(
            f"`{name}` is an empty batch (0 samples); nothing to attribute."
        )
    return xs


def _is_tuple_target(target: object) -> bool:
    # Captum's multi-dimensional targets (an index tuple, or one per sample) are
    # passed on unchecked: they index outputs of shape (B, ..., X, Y).
    if isinstance(target, tuple):
        return True
    return (
        isinstance(target, list)
        and len(target) > 0
        and all(isinstance(t, tuple) for t in target)
    )


def check_target(target: object, inputs: tuple[Tensor, ...]) -> None:
    """Reject a bad class target before Captum or the model sees it.

    ``None`` and Captum's index tuples pass; ints, integer tensors and lists of
    ints go through :func:`~captum_robust._utils.targets.check_class_indices`
    (negative, float, bool, wrong length). The range is checked against the
    model's output in :func:`select_target`.
    """
    if target is None or _is_tuple_target(target):
        return
    check_class_indices(target, inputs[0].shape[0], name="target")


def check_target_range(outputs: Tensor, target: object) -> None:
    """Every class index of ``target`` below the class count of ``outputs``.

    Runs before the selection, so an out-of-range index is a ``ValueError``
    naming ``target`` rather than an IndexError (or a device-side assert on CUDA).
    """
    if target is None or _is_tuple_target(target) or outputs.dim() < 2:
        return
    num_classes = outputs.shape[-1]
    if isinstance(target, int) and not isinstance(target, bool):
        top = target
    elif isinstance(target, Tensor):
        if target.numel() == 0 or target.is_floating_point():
            return
        top = int(target.max())
    elif isinstance(target, list) and target:
        if not all(isinstance(t, int) for t in target):
            return
        top = max(target)
    else:
        return
    if top >= num_classes:
        raise ValueError(
            f"`target` must hold class indices in [0, {num_classes - 1}] for a model "
            f"with {num_classes} outputs, got {top}."
        )
    if top < 0:
        raise ValueError(f"`target` must hold non-negative class indices, got {top}.")


def check_call(inputs: object, target: object, **flags: object) -> tuple[Tensor, ...]:
    """The checks an ``attribute`` call starts with, in this order: ``inputs``
    (returned as a tuple of tensors), ``target`` against them, then each keyword
    argument, a flag that must be a bool."""
    xs = check_input_tuple(inputs)
    check_target(target, xs)
    for name, flag in flags.items():
        check_bool(flag, name)
    return xs


def check_outputs(outputs: object, target: object, method: str) -> Tensor:
    """The model's output, a Tensor, with ``target``'s class range checked on it;
    ``method`` names what needs it in the error."""
    if not isinstance(outputs, Tensor):
        raise TypeError(
            f"`forward_func` must return a Tensor for {method}, got "
            f"{type(outputs).__name__}."
        )
    check_target_range(outputs, target)
    return outputs


def target_outputs(outputs: Tensor, target: object) -> Tensor:
    """The outputs ``target`` selects (Captum's selection), one per example."""
    if target is not None:
        outputs = _select_targets(outputs, target)
    if outputs.dim() == 0 or outputs[0].numel() != 1:
        raise ValueError(
            "`target` must select one output per example; the model's output "
            f"after target selection has shape {tuple(outputs.shape)}."
        )
    return outputs


def create_graph_gradients(
    forward_fn: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    target_ind: Any = None,
    additional_forward_args: Any = None,
) -> tuple[Tensor, ...]:
    """Drop-in for Captum's ``compute_gradients`` that keeps the graph.

    Same signature and target semantics (Captum's ``_run_forward``), but the
    gradients are taken with ``create_graph=True``.
    """
    with torch.enable_grad():
        outputs = _run_forward(forward_fn, inputs, None, additional_forward_args)
        check_outputs(outputs, target_ind, "a differentiable attribution")
        outputs = target_outputs(outputs, target_ind)
        # The sum has the same gradient as Captum's list of unbound scalars, with one
        # backward node instead of one per example.
        return torch.autograd.grad(outputs.sum(), inputs, create_graph=True)


def tracked_inputs(inputs: TensorOrTuple) -> TensorOrTuple:
    """Inputs on which gradients can be taken, without touching the user's tensors.

    A floating tensor that does not require gradients is replaced by a detached alias
    (same storage, no copy) that does. Captum would otherwise switch
    ``requires_grad`` on the user's tensor and back, warn, and leave a graph whose
    backward pass writes ``.grad`` into it. Tensors that already require gradients
    are passed through, so the result's graph reaches them.
    """

    def track(t: object) -> object:
        if isinstance(t, Tensor) and t.is_floating_point() and not t.requires_grad:
            return t.detach().requires_grad_()
        return t

    if isinstance(inputs, tuple):
        return tuple(track(t) for t in inputs)  # type: ignore[return-value]
    return track(inputs)  # type: ignore[return-value]


def _draw(
    sample: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    like: Tensor,
    **options: Any,
) -> Tensor:
    """``sample(shape, **options)`` on ``like``'s device.

    A generator on another device draws there and the result is moved, so a CPU
    generator can drive a CUDA computation.
    """
    if generator is None:
        return sample(shape, device=like.device, **options)
    out = sample(shape, generator=generator, device=generator.device, **options)
    return out.to(like.device)


def randn(
    shape: tuple[int, ...], *, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Standard normal draws shaped ``shape`` on ``like``'s device and dtype."""
    return _draw(torch.randn, shape, generator, like, dtype=like.dtype)


def rand(
    shape: tuple[int, ...], *, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Uniform draws in [0, 1) shaped ``shape`` on ``like``'s device and dtype."""
    return _draw(torch.rand, shape, generator, like, dtype=like.dtype)


def randint(
    high: int,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None,
    like: Tensor,
) -> Tensor:
    """Integers in [0, ``high``) shaped ``shape`` on ``like``'s device."""
    return _draw(functools.partial(torch.randint, high), shape, generator, like)


def check_stdevs(stdevs: object, n_inputs: int) -> tuple[float, ...]:
    if isinstance(stdevs, (tuple, list)):
        if len(stdevs) != n_inputs:
            raise ValueError(
                f"`stdevs` has {len(stdevs)} values but there are {n_inputs} input "
                "tensors; give one per input or a single float."
            )
        return tuple(check_number(s, "stdevs", minimum=0.0) for s in stdevs)
    value = check_number(stdevs, "stdevs", minimum=0.0)
    return (value,) * n_inputs


def as_module(forward_func: object) -> nn.Module | None:
    """The nn.Module behind a model or a bound method of one, else None."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    return None


def rows_of(value: Any, start: int, stop: int, batch: int) -> Any:
    """Samples ``start:stop`` of a per-sample argument; others are left as they are.

    Captum's convention: a tensor (or list) whose first dimension is the batch
    size is per sample; tuples are searched one level deep.
    """
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value[start:stop]
        return value
    if isinstance(value, list) and len(value) == batch:
        return value[start:stop]
    if isinstance(value, tuple):
        return tuple(rows_of(v, start, stop, batch) for v in value)
    return value


def concat_rows(parts: list[Any]) -> Any:
    """Concatenate per-chunk results (a tensor, None, or tuples of them, such as
    Captum's ``(attributions, delta)`` pair) along the batch."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(parts)
    return tuple(concat_rows([p[i] for p in parts]) for i in range(len(first)))


_MISSING = object()


@contextlib.contextmanager
def patched_forwards(
    forwards: dict[nn.Module, Callable[..., Any]],
) -> Iterator[None]:
    """Each module's ``forward`` replaced (as an instance attribute) inside the
    context; restored on exit, on success and failure. Hooks keep running."""
    saved = {m: m.__dict__.get("forward", _MISSING) for m in forwards}
    try:
        for m, fn in forwards.items():
            m.forward = fn  # type: ignore[method-assign]
        yield
    finally:
        for m, old in saved.items():
            if old is _MISSING:
                m.__dict__.pop("forward", None)
            else:
                m.forward = old  # type: ignore[method-assign]
