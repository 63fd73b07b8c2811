"""The one place where an attribution becomes the map that every metric ranks."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from captum_robust._utils.validation import (
    as_tensor_tuple,
    check_choice,
    check_finite,
    check_float_tensors,
    check_same_device,
)

ChannelReduction = Literal["sum", "mean", "max", "none"]
CHANNEL_REDUCTIONS = ("sum", "mean", "max", "none")
TensorOrTuple = Tensor | tuple[Tensor, ...]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision is widened so that sums and ranks stay exact enough."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reduce(t: Tensor, abs: bool, channel_reduction: str) -> Tensor:
    t = t.to(compute_dtype(t.dtype))
    if abs:
        t = t.abs()
    # Only (B, C, *spatial) tensors have a channel axis; (B, N) and (B, H, W) do not.
    if t.dim() >= 4 and channel_reduction != "none":
        if channel_reduction == "sum":
            t = t.sum(dim=1)
        elif channel_reduction == "mean":
            t = t.mean(dim=1)
        else:
            t = t.amax(dim=1)
    return t


def _validated(
    attributions: object, name: str, channel_reduction: str, validate: bool
) -> tuple[Tensor, ...]:
    tensors = as_tensor_tuple(attributions, name)
    if validate:
        check_choice(channel_reduction, CHANNEL_REDUCTIONS, "channel_reduction")
        check_float_tensors(tensors, name)
        check_same_device(**{name: tensors})
        check_finite(tensors, name)
    return tensors


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
    float32; float64 stays float64.

    Parameters
    ----------
    attributions : Tensor or tuple of Tensor
        What a Captum ``attribute`` call returns: shape (B, ...) or a tuple of
        such tensors with one batch size.
    abs : bool, default True
        Rank by magnitude, as Ghorbani et al. and Chen et al. do.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels of a (B, C, H, W) attribution are merged; "none" keeps every
        channel as its own feature.
    validate : bool, default True
        Check types, shapes, devices and finiteness (one host synchronisation).
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
    tensors = _validated(attributions, name, channel_reduction, validate)
    flat = [_reduce(t, abs, channel_reduction).flatten(1) for t in tensors]
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
        Take magnitudes before reducing channels.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged; "none" is accepted only for one channel.
    validate : bool, default True
        Check types, shapes, devices and finiteness (one host synchronisation).
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
    tensors = _validated(attributions, name, channel_reduction, validate)
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
    return _reduce(t, abs, channel_reduction)


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
