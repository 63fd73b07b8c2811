"""How well an attribution map sits on the object: scores against a binary mask."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_same_device
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._maps import prepare_mask
from captum_robust.metrics._maps import scaled_sums
from captum_robust.metrics._maps import spatial_attribution
from captum_robust.metrics._maps import unit_scale
from captum_robust.metrics._topk import constant_rows
from captum_robust.metrics._topk import topk_mask

ThresholdMode = Literal["max_fraction", "top_fraction"]
THRESHOLD_MODES = ("max_fraction", "top_fraction")
_NAN = float("nan")


def check_threshold(threshold: object, threshold_mode: object) -> float:
    """Validate ``mask_iou``'s threshold options; returns the threshold."""
    check_str_choice(threshold_mode, THRESHOLD_MODES, "threshold_mode")
    value = check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    if value == 0.0:
        raise ValueError("`threshold` must be in (0, 1], got 0.0.")
    return value


def _map_and_mask(
    attributions: TensorOrTuple,
    mask: Tensor,
    abs: bool,
    channel_reduction: ChannelReduction,
) -> tuple[Tensor, Tensor]:
    maps = spatial_attribution(
        attributions, abs=abs, channel_reduction=channel_reduction
    )
    if isinstance(mask, Tensor):
        check_same_device(attributions=maps, mask=mask)
    binary = prepare_mask(mask, maps.shape)
    # Negative relevance is not evidence for the object: clip it, as ObAlEx does
    # for Grad-CAM maps. With abs=True the map is already non-negative.
    if not abs:
        maps = maps.clamp(min=0)
    return maps.flatten(1), binary.flatten(1)


def silhouette_overlap(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Share of the explanation's mass that falls inside the object mask.

    Nguyen et al.'s "right for the right reason" score, ``sum(E * M) / sum(E)``.
    It is scale-free, so maps need no normalisation first. Quantus calls the
    same quantity AttributionLocalisation.

    An all-zero map (after the absolute value or the clipping of negative
    values) gives NaN: it puts no mass anywhere, so no share of it lies on the
    object. ObAlEx reports 0 there; 0 would count a dead explanation as a
    confident miss and pull the mean down, whereas NaN lets the streaming
    metrics leave the sample out and count it in ``nan_count``.

    Parameters
    ----------
    attributions : Tensor
        (B, C, H, W) or (B, H, W) image attributions.
    mask : Tensor
        (B, H, W) or (B, 1, H, W) object mask, bool or {0, 1}, at least one
        object pixel per sample.
    abs : bool, default True
        Use magnitudes. With ``abs=False`` negative values are clipped to zero.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), values in [0, 1]; NaN where the map is all zero.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import silhouette_overlap
    >>> attr = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
    >>> mask = torch.tensor([[[True, False], [False, False]]])
    >>> silhouette_overlap(attr, mask)
    tensor([0.7500])
    """
    maps, binary = _map_and_mask(attributions, mask, abs, channel_reduction)
    # Sums of rows of maps scaled by a power of two stay finite at any scale.
    # Rows of about sqrt(N) values keep the scaled weight vector short.
    rows = max(1, round(math.sqrt(maps.shape[1])))
    while maps.shape[1] % rows:
        rows -= 1
    maps = maps.view(len(maps), rows, -1)
    ones = torch.ones(maps.shape[2], 1, device=maps.device, dtype=maps.dtype)
    scale = unit_scale(maps)
    total = scaled_sums(maps, ones, scale).sum(dim=(1, 2))
    inside = scaled_sums(maps * binary.view_as(maps), ones, scale).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total, torch.full_like(total, _NAN))


def pointing_game(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """1 where the map's maximum lies inside the object mask, else 0.

    When several pixels share the maximum, the first in row-major order
    counts, so the result is deterministic. A constant map (all zero, say)
    has no peak to point with and gives NaN rather than the verdict of its
    first pixel.

    Parameters
    ----------
    attributions : Tensor
        (B, C, H, W) or (B, H, W) image attributions.
    mask : Tensor
        (B, H, W) or (B, 1, H, W) binary object mask.
    abs : bool, default True
        Use magnitudes; with ``abs=False`` negative values are clipped to zero.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), values 0.0 or 1.0; NaN where the map is constant.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import pointing_game
    >>> attr = torch.tensor([[[0.0, 5.0], [1.0, 0.0]]])
    >>> pointing_game(attr, torch.tensor([[[0, 1], [0, 0]]]))
    tensor([1.])
    """
    maps, binary = _map_and_mask(attributions, mask, abs, channel_reduction)
    peak = maps.argmax(dim=1, keepdim=True)
    hit = binary.gather(1, peak).squeeze(1).to(maps.dtype)
    return hit.masked_fill(constant_rows(maps), _NAN)


def relevance_rank_accuracy(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Share of the |M| highest-ranked pixels that lie inside the mask M.

    Arras et al.'s relevance rank accuracy, with |M| the number of object
    pixels of each sample; ties at the cut go to the lowest flat index. A
    constant map ranks no pixel above another and gives NaN.

    Parameters
    ----------
    attributions : Tensor
        (B, C, H, W) or (B, H, W) image attributions.
    mask : Tensor
        (B, H, W) or (B, 1, H, W) binary object mask.
    abs : bool, default True
        Use magnitudes; with ``abs=False`` negative values are clipped to zero.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), values in [0, 1]; NaN where the map is constant.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import relevance_rank_accuracy
    >>> attr = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    >>> relevance_rank_accuracy(attr, torch.tensor([[[1, 0], [1, 0]]]))
    tensor([0.5000])
    """
    maps, binary = _map_and_mask(attributions, mask, abs, channel_reduction)
    object_size = binary.sum(dim=1)
    top = topk_mask(maps, object_size)
    accuracy = (top & binary).sum(dim=1).to(maps.dtype) / object_size
    return accuracy.masked_fill(constant_rows(maps), _NAN)


def mask_iou(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    threshold: float = 0.5,
    threshold_mode: ThresholdMode = "max_fraction",
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Intersection over union of the thresholded map with the object mask.

    Parameters
    ----------
    attributions : Tensor
        (B, C, H, W) or (B, H, W) image attributions.
    mask : Tensor
        (B, H, W) or (B, 1, H, W) binary object mask.
    threshold : float, default 0.5
        With ``threshold_mode="max_fraction"``, a pixel is predicted as object
        when its value is at least ``threshold`` times the sample's maximum
        (and above zero); the weakly supervised localisation protocol uses 0.1
        of the maximum. With ``"top_fraction"``, the ``ceil(threshold * H * W)``
        highest pixels are predicted (ties to the lowest flat index).
        Must be in (0, 1].
    threshold_mode : {"max_fraction", "top_fraction"}, default "max_fraction"
        How ``threshold`` is read.
    abs : bool, default True
        Use magnitudes; with ``abs=False`` negative values are clipped to zero.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), values in [0, 1]. NaN for an all-zero map in
        ``"max_fraction"`` mode (no peak to take a fraction of) and for a
        constant map in ``"top_fraction"`` mode (no pixel ranks above another).
        A uniform non-zero map predicts every pixel in ``"max_fraction"``
        mode, a genuine answer.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import mask_iou
    >>> attr = torch.tensor([[[1.0, 0.9], [0.2, 0.0]]])
    >>> mask_iou(attr, torch.tensor([[[1, 0], [1, 0]]]), threshold=0.5)
    tensor([0.3333])
    """
    threshold = check_threshold(threshold, threshold_mode)
    maps, binary = _map_and_mask(attributions, mask, abs, channel_reduction)
    if threshold_mode == "max_fraction":
        peak = maps.amax(dim=1, keepdim=True)
        predicted = (maps >= threshold * peak) & (maps > 0)
        undefined = peak.squeeze(1) == 0
    else:
        count = min(maps.shape[1], math.ceil(threshold * maps.shape[1]))
        predicted = topk_mask(maps, count)
        undefined = constant_rows(maps)
    intersection = (predicted & binary).sum(dim=1)
    union = (predicted | binary).sum(dim=1)
    iou = intersection.to(maps.dtype) / union.to(maps.dtype)
    return iou.masked_fill(undefined, _NAN)
