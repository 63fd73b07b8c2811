"""The one place where an attribution becomes the map that every metric ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_float_tensors
from captum_robust._utils.validation import check_same_device
from captum_robust._utils.validation import check_str_choice

ChannelReduction = Literal["sum", "mean", "max", "none"]
CHANNEL_REDUCTIONS = ("sum", "mean", "max", "none")
TensorOrTuple = Tensor | tuple[Tensor, ...]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision is widened so that sums and ranks stay exact enough."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_map_options(abs: object, channel_reduction: object) -> None:
    """The two options every metric shares."""
    check_bool(abs, "abs")
    check_str_choice(channel_reduction, CHANNEL_REDUCTIONS, "channel_reduction")


def reduced_shape(t: Tensor, channel_reduction: str) -> tuple[int, ...]:
    """Shape of ``t`` once its channel axis (if any) is reduced."""
    if t.dim() >= 4 and channel_reduction != "none":
        return (t.shape[0], *t.shape[2:])
    return tuple(t.shape)


def _finite_peaks(tensors: Sequence[Tensor], name: str) -> list[float]:
    """Largest magnitude of each tensor; rejects NaN and inf.

    One host synchronisation for the whole tuple. The extremes are widened to
    float64, which holds every value of every floating dtype exactly, so finite
    float64 values beyond the float32 range pass.
    """
    extremes = torch.stack(
        [torch.stack(torch.aminmax(t)).double() for t in tensors]
    ).tolist()
    if not all(math.isfinite(lo) and math.isfinite(hi) for lo, hi in extremes):
        raise ValueError(f"`{name}` contains NaN or inf values.")
    return [max(-lo, hi) for lo, hi in extremes]


def _overflow_shift(
    tensors: Sequence[Tensor],
    peaks: Sequence[float | None],
    channel_reduction: str,
) -> Tensor | None:
    """Per-sample power of two that keeps every channel sum of a tuple finite.

    A sum of C values of magnitude up to ``peak`` overflows only when ``C * peak``
    nears the dtype's maximum. That check is on the host with the extremes that
    validation found, so the common case costs nothing and this returns None.
    Otherwise each sample gets the smallest shift that makes room for its sums
    in every tensor of the tuple: one shift per sample across the tuple, so that
    the concatenated map keeps the relative scale of its parts. Dividing by a
    power of two is exact, so ranks, ties, centres of mass and every
    scale-free score are unchanged.
    """
    if channel_reduction not in ("sum", "mean"):
        return None
    shift = None
    for t, peak in zip(tensors, peaks):
        if peak is None or t.dim() < 4 or t.shape[1] == 1:
            continue
        dtype = compute_dtype(t.dtype)
        info = torch.finfo(dtype)
        channels = t.shape[1]
        if peak * channels <= info.max / 2:
            continue
        magnitude = t.abs().amax(dim=tuple(range(1, t.dim()))).to(dtype)
        # magnitude < 2**exponent; after the shift, C values sum to
        # < 2**(maxexp - 1), which is finite.
        _, exponent = torch.frexp(magnitude)
        room = math.frexp(info.max)[1] - 1 - math.ceil(math.log2(channels))
        needed = (exponent - room).clamp(min=0)
        shift = needed if shift is None else torch.maximum(shift, needed)
    return shift


def unit_scale(maps: Tensor) -> Tensor:
    """(B,) powers of two that bring each sample's peak magnitude into [0.5, 1).

    Sums over a whole map of scaled values stay finite at any scale, and a power
    of two is exact, so a signed map whose values cancel still sums to exactly
    zero. The scale is detached: the metrics built on it are scale-free, and
    attacks differentiate them. Two reductions, no copy of the map.
    """
    flat = maps.detach().flatten(1)
    peak = torch.maximum(flat.amax(dim=1), -flat.amin(dim=1))
    _, exponent = torch.frexp(peak)
    return torch.ldexp(torch.ones_like(peak), -exponent)


def scaled_sums(maps: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
    """``(maps * scale) @ weights`` for (B, R, N) maps and (N, K) weights.

    Returns (B, R, K). The per-sample ``scale`` is applied to the small weights
    before the products are summed, so no sum overflows and no scaled copy of
    the maps is written: on the CPU the fresh pages of such a copy cost more
    than the arithmetic. On a GPU an elementwise product keeps float32 sums
    exact even where TF32 matrix products are enabled.
    """
    if maps.device.type == "cpu":
        return torch.bmm(maps, scale.view(-1, 1, 1) * weights)
    return scaled_sums_elementwise(maps, weights, scale)


def scaled_sums_elementwise(maps: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
    """``scaled_sums`` by elementwise products, the path taken on GPUs."""
    scaled = scale.view(-1, 1, 1) * weights
    return (maps.unsqueeze(-1) * scaled.unsqueeze(1)).sum(dim=2)


def _reduce(
    t: Tensor, abs: bool, channel_reduction: str, shift: Tensor | None = None
) -> Tensor:
    t = t.to(compute_dtype(t.dtype))
    if abs:
        t = t.abs()
    if shift is not None:
        t = torch.ldexp(t, -shift.view(-1, *(1,) * (t.dim() - 1)))
    # Only (B, C, *spatial) tensors have a channel axis; (B, N) and (B, H, W) do not.
    if t.dim() >= 4 and channel_reduction != "none":
        if t.shape[1] == 1:
            # One channel: every reduction is the identity, and a view copies nothing.
            return t[:, 0]
        if channel_reduction == "sum":
            t = t.sum(dim=1)
        elif channel_reduction == "mean":
            t = t.mean(dim=1)
        else:
            t = t.amax(dim=1)
    return t


def _validated(
    attributions: object,
    name: str,
    abs: object,
    channel_reduction: object,
    validate: object,
) -> tuple[tuple[Tensor, ...], list[float | None]]:
    """The attribution as a tuple, and each tensor's peak magnitude when checked."""
    check_bool(validate, "validate")
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__}.")
    tensors = as_tensor_tuple(attributions, name)
    peaks: list[float | None] = [None] * len(tensors)
    if validate:
        check_map_options(abs, channel_reduction)
        check_float_tensors(tensors, name)
        check_same_device(**{name: tensors})
        peaks = list(_finite_peaks(tensors, name))
    return tensors, peaks


def flatten_attribution(
    attributions: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    validate: bool = True,
    name: str = "attributions",
) -> Tensor:
    """Turn a Captum attribution into one flat map per sample.

    The steps, in order: absolute value (``abs=True``), reduction over the channel
    axis (dimension 1 of tensors with four or more dimensions), flattening, and
    concatenation of the tensors of a tuple. float16 and bfloat16 are widened to
    float32; float64 stays float64. When a channel sum or mean would overflow
    (values near the dtype's maximum), the samples concerned are first divided
    by the smallest power of two that avoids it, which is exact and leaves
    every rank and scale-free score unchanged; the check uses the extremes
    found by validation, so ``validate=False`` skips it.

    Parameters
    ----------
    attributions : Tensor or tuple of Tensor
        What a Captum ``attribute`` call returns: shape (B, ...) or a tuple of
        such tensors with one batch size.
    abs : bool, default True
        Rank by magnitude, as Ghorbani et al. and Chen et al. do. Must be a bool.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels of a (B, C, H, W) attribution are merged; "none" keeps every
        channel as its own feature.
    validate : bool, default True
        Check options, types, shapes, devices and finiteness (one host
        synchronisation).
    name : str, default "attributions"
        Argument name used in error messages.

    Returns
    -------
    Tensor
        Shape (B, N) on the input's device.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import flatten_attribution
    >>> attr = torch.randn(2, 3, 8, 8)
    >>> flatten_attribution(attr).shape
    torch.Size([2, 64])
    >>> flatten_attribution((attr, torch.randn(2, 5))).shape
    torch.Size([2, 69])
    """
    tensors, peaks = _validated(attributions, name, abs, channel_reduction, validate)
    shift = _overflow_shift(tensors, peaks, channel_reduction)
    flat = [_reduce(t, abs, channel_reduction, shift).flatten(1) for t in tensors]
    if len(flat) == 1:
        return flat[0]
    dtype = flat[0].dtype
    for f in flat[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    return torch.cat([f.to(dtype) for f in flat], dim=1)


def spatial_attribution(
    attributions: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    validate: bool = True,
    name: str = "attributions",
) -> Tensor:
    """Turn an image attribution into one (H, W) map per sample.

    Accepts (B, C, H, W), whose channels are reduced, and (B, H, W). A tuple must
    hold exactly one tensor: spatial scores need one image plane.

    Parameters
    ----------
    attributions : Tensor or tuple of one Tensor
        Shape (B, C, H, W) or (B, H, W).
    abs : bool, default True
        Take magnitudes before reducing channels. Must be a bool.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged; "none" is accepted only for one channel.
    validate : bool, default True
        Check options, types, shapes, devices and finiteness (one host
        synchronisation); overflow-safe reduction as in ``flatten_attribution``.
    name : str, default "attributions"
        Argument name used in error messages.

    Returns
    -------
    Tensor
        Shape (B, H, W) on the input's device.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import spatial_attribution
    >>> spatial_attribution(torch.randn(4, 3, 16, 16)).shape
    torch.Size([4, 16, 16])
    """
    tensors, peaks = _validated(attributions, name, abs, channel_reduction, validate)
    if len(tensors) != 1:
        raise TypeError(
            f"`{name}` must be a single Tensor (B, C, H, W) or (B, H, W) for a "
            f"spatial score, got a tuple of {len(tensors)} tensors."
        )
    t = tensors[0]
    if t.dim() not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W) or (B, H, W), got {tuple(t.shape)}."
        )
    if t.dim() == 4 and channel_reduction == "none":
        if t.shape[1] != 1:
            raise ValueError(
                "`channel_reduction` 'none' keeps channels apart, which a spatial "
                f"score cannot do for {t.shape[1]} channels; use 'sum', 'mean' or "
                "'max'."
            )
        return _reduce(t, abs, "sum")
    shift = _overflow_shift(tensors, peaks, channel_reduction)
    return _reduce(t, abs, channel_reduction, shift)


def prepare_mask(
    mask: Tensor, map_shape: torch.Size, *, name: str = "mask", validate: bool = True
) -> Tensor:
    """Check an object mask against (B, H, W) maps and return it as bool (B, H, W).

    A mask is (B, H, W) or (B, 1, H, W), bool or holding only 0 and 1, with at
    least one object pixel per sample.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"`{name}` must be a Tensor, got {type(mask).__name__}.")
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(map_shape):
        raise ValueError(
            f"`{name}` must have shape (B, H, W) or (B, 1, H, W) matching the "
            f"attribution map {tuple(map_shape)}, got {tuple(mask.shape)}."
        )
    if mask.is_complex():
        raise TypeError(f"`{name}` must be bool or real, got {mask.dtype}.")
    if mask.dtype == torch.bool:
        binary = mask
    else:
        binary = mask != 0
        if validate and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"`{name}` must be binary (only 0 and 1 values).")
    if validate and not bool(binary.flatten(1).any(dim=1).all()):
        raise ValueError(
            f"`{name}` is empty (no object pixel) for at least one sample; every "
            "sample needs an object pixel."
        )
    return binary
