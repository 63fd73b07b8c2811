"""Differentiable SmoothGrad and NoiseTunnel.

Captum's ``NoiseTunnel`` runs under ``torch.no_grad``: its result never carries a
graph. This reimplements it with every noise sample of a chunk in one forward and one
backward pass, the noise drawn from a ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_seed
from captum_robust._utils.validation import resolve_generator
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_forward_func
from captum_robust.attr._base import check_stdevs
from captum_robust.attr._base import create_graph_gradients
from captum_robust.attr._base import randint
from captum_robust.attr._base import randn
from captum_robust.attr._base import second_order
from captum_robust.attr._base import tracked_inputs
from captum_robust.attr._gradient import CaptumGradientAttribution
from captum_robust.attr._gradient_shap import expand_forward_args
from captum_robust.attr._gradient_shap import expand_target

__all__ = ["SmoothGrad"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _expand_baselines(
    baselines: Any,
    xs: tuple[Tensor, ...],
    chunk: slice,
    count: int,
    drawn_index: Tensor | None,
) -> Any:
    # Mirrors Captum's _expand_and_update_baselines for one chunk of samples.
    is_tuple = isinstance(baselines, tuple)
    bases = baselines if is_tuple else (baselines,)
    batch = xs[0].shape[0]
    out = []
    for b in bases:
        if not isinstance(b, Tensor):
            out.append(b)
        elif drawn_index is not None:
            out.append(b.index_select(0, drawn_index[:, chunk].reshape(-1)))
        elif b.shape[0] == batch and batch > 1:
            out.append(b.repeat_interleave(count, dim=0))
        else:
            out.append(b)
    return tuple(out) if is_tuple else out[0]


@second_order
def noise_tunnel(
    attribute_fn: Callable[..., Any],
    inputs: TensorOrTuple,
    kwargs: dict[str, Any],
    *,
    nt_type: str,
    nt_samples: int,
    nt_samples_batch_size: int | None,
    stdevs: float | tuple[float, ...],
    draw_baseline_from_distrib: bool,
    generator: torch.Generator | None,
    seed: int | None,
) -> Any:
    """Average ``attribute_fn`` over noisy copies of ``inputs``, keeping the graph.

    ``attribute_fn(noisy_inputs, **kwargs)`` receives ``B * c`` noisy examples per
    chunk, ordered example-major (the ``c`` copies of example 0 first), with
    ``target``, ``additional_forward_args`` and ``baselines`` in ``kwargs`` expanded
    to match, as Captum's NoiseTunnel does.
    """
    is_tuple = isinstance(inputs, tuple)
    xs = check_call(inputs, kwargs.get("target"))
    check_choice(nt_type, NT_TYPES, "nt_type")
    n = check_positive_int(nt_samples, "nt_samples")
    chunk = n if nt_samples_batch_size is None else nt_samples_batch_size
    chunk = min(check_positive_int(chunk, "nt_samples_batch_size"), n)
    sds = check_stdevs(stdevs, len(xs))
    check_bool(draw_baseline_from_distrib, "draw_baseline_from_distrib")
    gen = resolve_generator(generator, seed, xs[0].device)
    batch = xs[0].shape[0]
    return_delta = check_bool(
        kwargs.get("return_convergence_delta", False), "return_convergence_delta"
    )

    # All noise is drawn up front so that chunking does not change the result.
    noise = [
        sd * randn((batch, n) + tuple(x.shape[1:]), generator=gen, like=x)
        if sd > 0
        else None
        for x, sd in zip(xs, sds)
    ]
    drawn_index = None
    baselines = kwargs.get("baselines")
    if draw_baseline_from_distrib:
        bases = baselines if isinstance(baselines, tuple) else (baselines,)
        sizes = {b.shape[0] for b in bases if isinstance(b, Tensor)}
        if len(sizes) > 1:
            raise ValueError(
                "`baselines` tensors must hold the same number of samples to be "
                f"drawn jointly, got {sorted(sizes)}."
            )
        if sizes:
            drawn_index = randint(sizes.pop(), (batch, n), generator=gen, like=xs[0])

    sums: list[Tensor] | None = None
    sums_sq: list[Tensor] | None = None
    deltas = []
    with torch.enable_grad():
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            part = slice(start, start + count)
            noisy = []
            for x, e in zip(xs, noise):
                rep = x.unsqueeze(1).expand((batch, count) + tuple(x.shape[1:]))
                if e is not None:
                    rep = rep + e[:, part]
                noisy.append(rep.reshape((batch * count,) + tuple(x.shape[1:])))
            call_kwargs = dict(kwargs)
            if "target" in call_kwargs:
                call_kwargs["target"] = expand_target(call_kwargs["target"], count)
            if "additional_forward_args" in call_kwargs:
                call_kwargs["additional_forward_args"] = expand_forward_args(
                    call_kwargs["additional_forward_args"], count
                )
            if baselines is not None:
                call_kwargs["baselines"] = _expand_baselines(
                    baselines, xs, part, count, drawn_index
                )
            out = attribute_fn(tuple(noisy) if is_tuple else noisy[0], **call_kwargs)
            if return_delta:
                out, delta = out
                deltas.append(delta)
            parts = as_tensor_tuple(out, "attributions")
            parts = tuple(a.reshape((batch, count) + tuple(a.shape[1:])) for a in parts)
            part_sum = [a.sum(dim=1) for a in parts]
            part_sq = [(a * a).sum(dim=1) for a in parts]
            if sums is None or sums_sq is None:
                sums, sums_sq = part_sum, part_sq
            else:
                sums = [s + p for s, p in zip(sums, part_sum)]
                sums_sq = [s + p for s, p in zip(sums_sq, part_sq)]
        assert sums is not None and sums_sq is not None
        mean = [s / n for s in sums]
        mean_sq = [s / n for s in sums_sq]
        if nt_type == "smoothgrad":
            result = mean
        elif nt_type == "smoothgrad_sq":
            result = mean_sq
        else:
            result = [sq - m * m for sq, m in zip(mean_sq, mean)]
    formatted: Any = tuple(result) if is_tuple else result[0]
    if return_delta:
        return formatted, torch.cat(deltas, dim=0)
    return formatted


class SmoothGrad(DifferentiableAttribution):
    r"""Differentiable SmoothGrad: the mean gradient over noisy copies of the input.

    ``SmoothGrad(model).attribute(x, target)`` equals Captum's
    ``NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", target=target)``
    for the same noise, but it is computed with ``create_graph=True`` (Captum's
    NoiseTunnel runs under ``torch.no_grad``), so it can be back-propagated to the
    input and to the model's parameters. All ``nt_samples`` noisy copies go through
    one forward and one backward pass, or through chunks of
    ``nt_samples_batch_size`` copies; the noise is drawn up front, so chunking does
    not change the result.

    .. math::
        \mathrm{SG}(x) = \frac{1}{n} \sum_{i=1}^{n} g(x + \epsilon_i), \quad
        \epsilon_i \sim \mathcal{N}(0, \sigma^2 I),

    with ``g`` the (absolute, if ``abs``) gradient of the target output;
    ``smoothgrad_sq`` averages ``g^2`` and ``vargrad`` is ``mean(g^2) - mean(g)^2``.

    Parameters
    ----------
    forward_func : callable
        The model or forward function.
    seed : int or None, default None
        If given and ``attribute`` gets no ``generator``, every call draws its noise
        from a fresh generator seeded with ``seed`` (on the input's device), so the
        attribution is a deterministic function of the input. If None, the noise
        comes from torch's global generator.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import SmoothGrad
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 2))
    >>> x = torch.randn(5, 3, requires_grad=True)
    >>> sg = SmoothGrad(model, seed=0)
    >>> attr = sg.attribute(x, target=1, nt_samples=8, stdevs=0.1)
    >>> attr.shape
    torch.Size([5, 3])
    >>> attr.sum().backward()  # second-order gradient, to the input
    >>> x.grad.shape
    torch.Size([5, 3])
    >>> torch.equal(attr, sg.attribute(x, target=1, nt_samples=8, stdevs=0.1))
    True
    """

    method = "SmoothGrad"

    def __init__(
        self, forward_func: Callable[..., Any], *, seed: int | None = None
    ) -> None:
        check_forward_func(forward_func)
        super().__init__(forward_func)
        self.seed = check_seed(seed)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        stdevs: float | tuple[float, ...] = 1.0,
        abs: bool = True,
        nt_samples_batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TensorOrTuple:
        """SmoothGrad attributions with an autograd graph.

        Parameters
        ----------
        inputs : Tensor or tuple of Tensor
            Shape ``(B, ...)`` each.
        target : int, tuple, Tensor or list, optional
            Output indices, as in Captum.
        additional_forward_args : optional
            Extra forward arguments; tensors with a batch dimension are repeated for
            the noise samples, as in Captum's NoiseTunnel.
        nt_type : {"smoothgrad", "smoothgrad_sq", "vargrad"}
            How the per-sample gradients are aggregated.
        nt_samples : int, default 5
            Number of noisy copies per example.
        stdevs : float or tuple of float, default 1.0
            Standard deviation of the Gaussian noise (one per input tensor).
        abs : bool, default True
            Use absolute gradients, as Captum's ``Saliency`` does by default.
        nt_samples_batch_size : int or None
            Copies per forward/backward pass (per example); None puts all in one.
        generator : torch.Generator or None
            Source of the noise; see the class's ``seed``.

        Returns
        -------
        Tensor or tuple of Tensor
            Shaped like ``inputs``.
        """
        check_bool(abs, "abs")
        forward_func = self.forward_func

        def saliency(
            noisy: TensorOrTuple, target: Any, additional_forward_args: Any
        ) -> Any:
            tracked = as_tensor_tuple(tracked_inputs(noisy), "inputs")
            grads = create_graph_gradients(
                forward_func, tracked, target, additional_forward_args
            )
            if abs:
                grads = tuple(g.abs() for g in grads)
            return grads

        return noise_tunnel(
            saliency,
            inputs,
            {"target": target, "additional_forward_args": additional_forward_args},
            nt_type=nt_type,
            nt_samples=nt_samples,
            nt_samples_batch_size=nt_samples_batch_size,
            stdevs=stdevs,
            draw_baseline_from_distrib=False,
            generator=generator,
            seed=self.seed,
        )

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> SmoothGrad:
        """A SmoothGrad with the same ``seed``, bound to ``forward_func``."""
        self._check_rebinding(forward_func, kwargs)
        return SmoothGrad(forward_func, seed=self.seed)


class NoiseTunnelAttribution(DifferentiableAttribution):
    """Differentiable ``NoiseTunnel`` over a differentiable Captum gradient method.

    ``attribute`` takes the arguments of ``captum.attr.NoiseTunnel.attribute`` (the
    remaining keyword arguments go to the wrapped method) plus ``generator``.
    """

    def __init__(self, inner: CaptumGradientAttribution, *, seed: int | None) -> None:
        super().__init__(inner.forward_func)
        self._inner = inner
        self.seed = check_seed(seed)
        self.method = f"NoiseTunnel({inner.method})"

    def attribute(
        self,
        inputs: TensorOrTuple,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 1.0,
        draw_baseline_from_distrib: bool = False,
        *,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Any:
        """NoiseTunnel attributions with an autograd graph (Captum's arguments)."""
        return noise_tunnel(
            self._inner.attribute,
            inputs,
            kwargs,
            nt_type=nt_type,
            nt_samples=nt_samples,
            nt_samples_batch_size=nt_samples_batch_size,
            stdevs=stdevs,
            draw_baseline_from_distrib=draw_baseline_from_distrib,
            generator=generator,
            seed=self.seed,
        )

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> NoiseTunnelAttribution:
        """The same method, settings and seed, bound to ``forward_func``."""
        return NoiseTunnelAttribution(
            self._inner.with_forward_func(forward_func, **kwargs), seed=self.seed
        )
