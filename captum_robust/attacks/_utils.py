"""Machinery of the attack loop: argument checks, batch selection, model state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_float_tensors
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_same_device
from captum_robust.attr._base import as_module
from captum_robust.metrics._maps import flatten_attribution

TensorOrTuple = Tensor | tuple[Tensor, ...]


def same_model(a: object, b: object) -> bool:
    """Whether two forward functions run the same model (a module and its own
    forward method do)."""
    if a is b or a == b:
        return True
    ma, mb = as_module(a), as_module(b)
    if ma is None or mb is None or ma is not mb:
        return False
    return isinstance(a, nn.Module) or isinstance(b, nn.Module)


def check_pixel_bounds(lower: object, upper: object) -> tuple[float, float]:
    lo = check_number(lower, "lower_bound")
    hi = check_number(upper, "upper_bound")
    if lo > hi:
        raise ValueError(f"`lower_bound` ({lo}) must not exceed `upper_bound` ({hi}).")
    return lo, hi


def check_attribution_kwargs(kwargs: object, name: str) -> dict[str, Any]:
    """Keyword arguments for the attribution's ``attribute``, as a new dict."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(
            f"`{name}` must be a dict of keyword arguments for the attribution's "
            f"`attribute`, got {type(kwargs).__name__}."
        )
    reserved = {"inputs", "target", "additional_forward_args"} & set(kwargs)
    if reserved:
        raise ValueError(
            f"`{name}` must not contain {sorted(reserved)}; pass them to perturb()."
        )
    if kwargs.get("return_convergence_delta"):
        raise ValueError(f"`{name}`: return_convergence_delta=True is not supported.")
    return dict(kwargs)


def check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
        raise ValueError(
            "`forward_func` must return logits of shape (B, classes), which the "
            f"label constraint needs; got {shape}."
        )
    return logits


def fmt(tensors: tuple[Tensor, ...], is_tuple: bool) -> TensorOrTuple:
    return tensors if is_tuple else tensors[0]


def normalized_map(attributions: Any) -> Tensor:
    """The map S an attack ranks: channel-summed |attribution|, flat, summing to 1.

    Half-precision attributions are mapped in float32: a sum over a large map can
    overflow float16, and the losses' gradients would underflow.

    The normalisation makes the losses depend on where the attribution mass lies,
    not on how much of it there is: otherwise the top-k loss could be lowered by
    shrinking the whole map without moving anything. The clamp keeps an all-zero
    map at zero instead of NaN.
    """
    flat = flatten_attribution(
        _upcast(attributions), abs=True, channel_reduction="sum", validate=False
    )
    total = flat.sum(dim=1, keepdim=True)
    return flat / total.clamp_min(torch.finfo(flat.dtype).tiny)


def master_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the attack keeps iterates, maps and optimiser state in.

    Half precision (float16, bfloat16) cannot hold the iterates: a step of 1/255
    or an Adam update is below their spacing near 1 (2^-11 and 2^-8), so it
    would round away. Such inputs are iterated in float32 and only cast for the
    model; every other dtype is kept as it is.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _upcast(attributions: Any) -> Any:
    if isinstance(attributions, tuple):
        return tuple(_upcast(a) for a in attributions)
    if isinstance(attributions, Tensor) and attributions.is_floating_point():
        return attributions.to(master_dtype(attributions.dtype))
    return attributions


def spatial_shape(attributions: Any) -> tuple[int, int] | None:
    """(H, W) of an image attribution whose map has H*W entries, else None."""
    if isinstance(attributions, tuple):
        if len(attributions) != 1:
            return None
        attributions = attributions[0]
    if isinstance(attributions, Tensor) and attributions.dim() in (3, 4):
        return (int(attributions.shape[-2]), int(attributions.shape[-1]))
    return None


class OutputRecorder:
    """A forward function that keeps the model's output on one given input.

    Saliency and InputXGradient run the model on exactly the tensors they are
    given; recording that output spares the attack a second forward pass to read
    the predicted label. Methods that run the model on other points (Integrated
    Gradients) are not recorded, and the caller runs the forward pass itself.
    """

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        self.forward_func = forward_func
        self._watch: tuple[Tensor, ...] | None = None
        self._output: Tensor | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward_func(*args, **kwargs)
        watch = self._watch
        if (
            watch is not None
            and isinstance(out, Tensor)
            and len(args) >= len(watch)
            and all(a is w for a, w in zip(args, watch))
        ):
            self._output = out.detach()
        return out

    def watch(self, inputs: tuple[Tensor, ...]) -> None:
        self._watch = inputs
        self._output = None

    def take(self) -> Tensor | None:
        out, self._watch, self._output = self._output, None, None
        return out


def check_bounded_inputs(
    inputs: object, lower: float, upper: float
) -> tuple[tuple[Tensor, ...], bool]:
    """Inputs as a tuple, checked: float, one batch, one device, finite, in bounds.

    Costs one host synchronisation.
    """
    is_tuple = isinstance(inputs, tuple)
    tensors = as_tensor_tuple(inputs, "inputs")
    check_float_tensors(tensors, "inputs")
    check_same_device(inputs=tensors)
    flags = []
    for t in tensors:
        flags.append(~torch.isfinite(t).all())
        flags.append(((t < lower) | (t > upper)).any())
    bad = torch.stack(flags).tolist()
    if any(bad[0::2]):
        raise ValueError("`inputs` contains NaN or inf values.")
    if any(bad[1::2]):
        raise ValueError(
            f"`inputs` has values outside [lower_bound, upper_bound] = [{lower}, "
            f"{upper}]; set the bounds to the range of your input space (e.g. of "
            "normalised images), since every iterate is clamped to them."
        )
    return tensors, is_tuple


def prepare_masks(
    mask: object, inputs: tuple[Tensor, ...], is_tuple: bool
) -> tuple[Tensor, ...] | None:
    """Perturbation masks as a tuple of bool tensors broadcastable to the inputs.

    Accepted per input of shape (B, C, H, W): anything that broadcasts to it
    without changing its shape, e.g. (B, C, H, W), (B, 1, H, W), (1, C, H, W),
    and also (B, H, W).
    """
    if mask is None:
        return None
    if is_tuple:
        if not isinstance(mask, tuple) or len(mask) != len(inputs):
            raise TypeError(
                f"`mask` must be a tuple of {len(inputs)} tensors, one per input "
                f"tensor, got {type(mask).__name__}."
            )
        masks = mask
    else:
        if not isinstance(mask, Tensor):
            raise TypeError(f"`mask` must be a Tensor, got {type(mask).__name__}.")
        masks = (mask,)
    out = []
    flags = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        label = f"mask[{i}]" if is_tuple else "mask"
        given = tuple(m.shape) if isinstance(m, Tensor) else None
        if not isinstance(m, Tensor):
            raise TypeError(f"`{label}` must be a Tensor, got {type(m).__name__}.")
        if m.device != x.device:
            raise ValueError(
                f"`{label}` is on {m.device} but `inputs` is on {x.device}."
            )
        if x.dim() == 4 and m.dim() == 3 and m.shape[0] == x.shape[0]:
            m = m.unsqueeze(1)
        try:
            fits = m.dim() <= x.dim() and (
                torch.broadcast_shapes(m.shape, x.shape) == x.shape
            )
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"`{label}` has shape {given}, which does not broadcast to the "
                f"input's shape {tuple(x.shape)}; "
                "use the input's shape, (B, 1, H, W) or (B, H, W)."
            )
        if m.is_complex():
            raise TypeError(f"`{label}` must be bool or real, got {m.dtype}.")
        if m.dtype != torch.bool:
            flags.append(((m != 0) & (m != 1)).any())
            m = m != 0
        out.append(m)
    if flags and any(torch.stack(flags).tolist()):
        raise ValueError("`mask` must be binary (bool, or only 0 and 1 values).")
    return tuple(out)


def take(value: Any, index: Tensor, host_index: list[int], batch: int) -> Any:
    """Select samples ``index`` of per-sample tensors; leave everything else.

    A tensor whose first dimension is the batch size is per sample (Captum's
    convention for additional forward arguments and baselines); tuples are
    searched one level deep.
    """
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, tuple):
        return tuple(take(v, index, host_index, batch) for v in value)
    return value


def draw(
    kind: str,
    shape: torch.Size,
    *,
    generator: torch.Generator | None,
    like: Tensor,
) -> Tensor:
    """Uniform [0, 1) (``"rand"``) or normal (``"randn"``) draws like ``like``.

    A generator on another device draws there and the result is moved, so a CPU
    generator can drive a CUDA attack.
    """
    fn = torch.rand if kind == "rand" else torch.randn
    if generator is None:
        return fn(shape, device=like.device, dtype=like.dtype)
    out = fn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return out.to(like.device)


def prepare_map_like(
    value: object,
    name: str,
    *,
    batch: int,
    n_features: int,
    shape: tuple[int, int] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """A per-sample map argument (target region or target map) as (B, N).

    Image maps (``shape`` is (H, W)) may be (H, W), (B, H, W) or (B, 1, H, W),
    with 1 in place of B to share one map; flat maps (N,) or (B, N).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a Tensor, got {type(value).__name__}.")
    if value.device != device:
        raise ValueError(f"`{name}` is on {value.device} but `inputs` on {device}.")
    v = value
    if shape is not None:
        h, w = shape
        if v.dim() == 4 and v.shape[1] == 1:
            v = v[:, 0]
        if v.dim() == 2 and tuple(v.shape) == (h, w):
            v = v.unsqueeze(0)
        ok = v.dim() == 3 and tuple(v.shape[1:]) == (h, w) and v.shape[0] in (1, batch)
        expected = f"(H, W) = {(h, w)}, (B, H, W) or (B, 1, H, W) with B = {batch}"
    else:
        if v.dim() == 1:
            v = v.unsqueeze(0)
        ok = v.dim() == 2 and v.shape[1] == n_features and v.shape[0] in (1, batch)
        expected = f"(N,) or (B, N) with N = {n_features}, B = {batch}"
    if not ok:
        raise ValueError(
            f"`{name}` must match the attribution map: shape {expected}; got "
            f"{tuple(value.shape)}."
        )
    if v.is_complex():
        raise TypeError(f"`{name}` must be real or bool, got {v.dtype}.")
    return v.reshape(v.shape[0], -1).to(dtype).expand(batch, n_features)


def adam_moves(
    grads: tuple[Tensor, ...],
    moments: list[Tensor] | None,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[list[Tensor], list[Tensor]]:
    """One Adam step per coordinate (descending); elementwise, hence per sample."""
    if moments is None:
        moments = [torch.zeros_like(g) for g in grads for _ in range(2)]
    moves = []
    for i, g in enumerate(grads):
        m = moments[2 * i].mul(beta1).add_(g, alpha=1 - beta1)
        v = moments[2 * i + 1].mul(beta2).addcmul_(g, g, value=1 - beta2)
        moments[2 * i], moments[2 * i + 1] = m, v
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        moves.append(-lr * m_hat / (v_hat.sqrt() + eps))
    return moves, moments
