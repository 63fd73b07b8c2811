"""Sparsified SmoothGrad (Levine, Singla and Feizi, 2019), with a relaxation.

The map is the mean over Gaussian draws of the top-s indicator of a base
attribution. It is what :func:`captum_robust.metrics.certified_topk_overlap`
certifies, computed by the same sampler, so one seed gives one map in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution
from captum.attr import Saliency
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_seed
from captum_robust._utils.validation import resolve_generator
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_input_tuple
from captum_robust.attr._base import check_target
from captum_robust.attr._differentiable import differentiable
from captum_robust.metrics._certified import check_sparsity
from captum_robust.metrics._certified import sparsified_samples
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import check_map_options

__all__ = ["SparsifiedSmoothGrad", "relaxed_top_indicator"]


def relaxed_top_indicator(maps: Tensor, s: int, temperature: float) -> Tensor:
    """Smooth stand-in for the top-``s`` indicator of each row of ``maps``.

    ``sigmoid((a - t) / (temperature * std(a)))`` with ``t`` halfway between the
    s-th and (s+1)-th largest entries of the row and ``std(a)`` its standard
    deviation. Both stay in the graph, so this is an honest function of the
    map (differentiable wherever those two entries are unique), and it does not
    change when the map is scaled. With ``s = d`` the indicator is constant and
    so is this (all ones, zero gradient).

    Parameters
    ----------
    maps : Tensor
        (N, d) flat maps.
    s : int
        Size of the top set, 1 <= s <= d.
    temperature : float
        Width of the transition in units of the row's standard deviation; the
        relaxation tends to the indicator as it goes to 0.

    Returns
    -------
    Tensor
        (N, d), values in (0, 1).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import relaxed_top_indicator
    >>> soft = relaxed_top_indicator(torch.tensor([[3.0, 1.0, 2.0, 0.0]]), 2, 0.05)
    >>> soft.round()
    tensor([[1., 0., 1., 0.]])
    """
    if not isinstance(maps, Tensor) or maps.dim() != 2 or not maps.is_floating_point():
        raise TypeError(
            "`maps` must be a floating-point (N, d) Tensor, got "
            f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}."
        )
    s = check_positive_int(s, "s")
    if s > maps.shape[1]:
        raise ValueError(f"`s` ({s}) must be at most d = {maps.shape[1]}.")
    check_number(temperature, "temperature", minimum=0.0, strict_minimum=True)
    if s == maps.shape[1]:
        return maps * 0 + 1  # keeps the graph, with its true zero gradient
    top = maps.topk(s + 1, dim=1).values
    threshold = (top[:, s - 1 : s] + top[:, s : s + 1]) / 2
    spread = maps.std(dim=1, keepdim=True).clamp(min=torch.finfo(maps.dtype).eps)
    return torch.sigmoid((maps - threshold) / (temperature * spread))


def _base_attribution(attribution: object) -> Any:
    if isinstance(attribution, nn.Module):
        return Saliency(attribution)
    if isinstance(attribution, (Attribution, DifferentiableAttribution)):
        return attribution
    if callable(attribution):
        return attribution
    raise TypeError(
        "`attribution` must be a model (explained by Saliency), a Captum "
        "attribution, a DifferentiableAttribution or a callable "
        f"fn(inputs, target=None, ...), got {type(attribution).__name__}."
    )


class SparsifiedSmoothGrad(DifferentiableAttribution):
    r"""Sparsified SmoothGrad: how often each feature is in the top-s of a map.

    .. math::
        p(x) = \frac{1}{n} \sum_{j=1}^{n} \mathrm{top}_s\big(a(x + e_j)\big),
        \quad e_j \sim \mathcal{N}(0, \sigma^2 I),

    where ``a`` is the base attribution reduced to a map (absolute value,
    channel reduction, as the metrics do) and ``top_s`` is 1 on its
    ``s = ceil(sparsity * d)`` largest entries (ties to the lower index).
    Levine, Singla and Feizi (2019) certify its top-K set;
    :func:`captum_robust.metrics.certified_topk_overlap` computes the same map
    with the same seed.

    The indicator has no useful gradient, so the differentiable form (used by
    attacks and regularizers) is a straight-through estimator: the values are
    the exact map above, and its gradient is that of the mean of
    :func:`relaxed_top_indicator` over the same draws. ``relaxed=True`` returns
    that relaxation's values themselves.

    Parameters
    ----------
    attribution : model, Captum attribution, DifferentiableAttribution or callable
        The base method ``a``; a model (an ``nn.Module``) is explained by
        ``Saliency``. A plain callable is called as ``fn(inputs, target=...,
        **kwargs)``. Only the graph-carrying form needs a method that
        :func:`~captum_robust.attr.differentiable` accepts.
    abs : bool, default True
        Rank the base attribution's magnitudes.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        Channel merge of (B, C, H, W) attributions; "none" keeps the input's
        shape.
    temperature : float, default 0.1
        Of the relaxation, in units of each map's standard deviation.
    seed : int or None, default None
        If given and ``attribute`` gets no ``generator``, every call draws from
        a fresh generator seeded with it on the input's device (deterministic;
        attacks need this). None uses torch's global generator.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attr import SparsifiedSmoothGrad
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Softplus(),
    ...                       nn.Linear(8, 3))
    >>> ssg = SparsifiedSmoothGrad(model, seed=0)
    >>> x = torch.rand(2, 1, 4, 4, requires_grad=True)
    >>> p = ssg.attribute(x, target=1, sigma=0.1, n_samples=8, sparsity=0.25)
    >>> p.shape  # the map: (B, H, W) after the channel sum
    torch.Size([2, 4, 4])
    >>> p.sum(dim=(1, 2))  # 4 of 16 features in every draw's top set
    tensor([4., 4.], grad_fn=<SumBackward1>)
    >>> (grad,) = torch.autograd.grad((p * p).sum(), x)  # through the relaxation
    >>> bool(grad.abs().sum() > 0)
    True
    """

    def __init__(
        self,
        attribution: Any,
        *,
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        temperature: float = 0.1,
        seed: int | None = None,
    ) -> None:
        self._base = _base_attribution(attribution)
        super().__init__(getattr(self._base, "forward_func", None))
        check_map_options(abs, channel_reduction)
        self.abs = abs
        self.channel_reduction = channel_reduction
        self.temperature = check_number(
            temperature, "temperature", minimum=0.0, strict_minimum=True
        )
        self.seed = check_seed(seed)
        self._graph_base: DifferentiableAttribution | None = None
        inner = getattr(self._base, "method", None) or getattr(
            self._base, "__name__", type(self._base).__name__
        )
        self.method = f"SparsifiedSmoothGrad({inner})"

    def _differentiable_base(self) -> DifferentiableAttribution:
        if self._graph_base is None:
            # Raises a TypeError naming the method when it cannot be
            # differentiated (Occlusion, DeepLiftShap, ...).
            self._graph_base = differentiable(self._base)
        return self._graph_base

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        *,
        sigma: float,
        n_samples: int = 50,
        sparsity: float = 0.1,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        create_graph: bool | None = None,
        relaxed: bool = False,
        **kwargs: Any,
    ) -> TensorOrTuple:
        """The smoothed sparsified map ``p`` of every sample.

        Parameters
        ----------
        inputs : Tensor or tuple of Tensor
            (B, ...) each; the noise is added to all of them.
        target : int, tuple, Tensor or list, optional
            Output indices, as in Captum; fixed per sample for its copies.
        additional_forward_args : optional
            Extra forward arguments; per-sample tensors are repeated for the
            copies.
        sigma : float
            Standard deviation (>= 0) of the Gaussian noise.
        n_samples : int, default 50
            Noise draws per sample.
        sparsity : float, default 0.1
            Fraction in (0, 1] of the features in each draw's top set.
        batch_size : int or None
            Noisy copies per call of the base method (None: all at once);
            does not change the map.
        generator : torch.Generator or None
            Source of the noise; see the class's ``seed``.
        create_graph : bool or None
            Whether the result carries a graph (straight-through, see the
            class); None: when gradients are enabled. The graphs of all
            ``n_samples`` copies are then kept until the backward pass. Without
            it the base method runs its own code (Captum's, no
            ``create_graph``).
        relaxed : bool, default False
            Return the mean of the relaxed indicators instead of the exact map.
        **kwargs
            Passed to the base method's ``attribute`` (e.g. ``n_steps``,
            ``baselines``); per-sample tensors are repeated for the copies.

        Returns
        -------
        Tensor or tuple of Tensor
            The map of each attribution tensor with the batch first (its
            channel axis reduced unless ``channel_reduction="none"``), values
            in [0, 1], each draw's top set summing to ``s``; a tuple for tuple
            attributions.
        """
        xs = check_input_tuple(inputs)
        check_target(target, xs)
        sigma = check_number(sigma, "sigma", minimum=0.0)
        n = check_positive_int(n_samples, "n_samples")
        sparsity = check_sparsity(sparsity)
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        check_bool(relaxed, "relaxed")
        if create_graph is None:
            create_graph = torch.is_grad_enabled()
        check_bool(create_graph, "create_graph")
        gen = resolve_generator(generator, self.seed, xs[0].device)
        if create_graph:
            explain: Callable[..., Any] = self._differentiable_base().attribute
        else:
            explain = getattr(self._base, "attribute", self._base)
        per_sample = dict(kwargs)
        if target is not None:
            per_sample["target"] = target
        if additional_forward_args is not None:
            per_sample["additional_forward_args"] = additional_forward_args
        temperature = self.temperature
        sampled = sparsified_samples(
            explain,
            xs,
            per_sample,
            is_tuple=isinstance(inputs, tuple),
            n_samples=n,
            sigma=sigma,
            sparsity=sparsity,
            batch_size=batch_size,
            generator=gen,
            abs=self.abs,
            channel_reduction=self.channel_reduction,
            relax=(
                (lambda maps, s: relaxed_top_indicator(maps, s, temperature))
                if create_graph or relaxed
                else None
            ),
            create_graph=create_graph,
            name="attribution",
        )
        exact = sampled.counts / n
        if relaxed:
            assert sampled.relaxed is not None
            flat = sampled.relaxed / n
        elif create_graph:
            assert sampled.relaxed is not None
            soft = sampled.relaxed / n
            # soft - soft.detach() is exactly 0: the values stay the exact map.
            flat = exact + (soft - soft.detach())
        else:
            flat = exact
        batch = xs[0].shape[0]
        sizes = [_numel(shape) for shape in sampled.shapes]
        maps = tuple(
            part.reshape(batch, *shape)
            for part, shape in zip(flat.split(sizes, dim=1), sampled.shapes)
        )
        return maps[0] if len(maps) == 1 else maps

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> SparsifiedSmoothGrad:
        """The same settings and seed over the base method bound to
        ``forward_func`` (e.g. a softplus surrogate), as attacks need."""
        rebound = self._differentiable_base().with_forward_func(forward_func, **kwargs)
        return SparsifiedSmoothGrad(
            rebound,
            abs=self.abs,
            channel_reduction=self.channel_reduction,
            temperature=self.temperature,
            seed=self.seed,
        )


def _numel(shape: tuple[int, ...]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size
