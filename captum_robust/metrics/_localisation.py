"""How well an attribution map sits on the object: scores against a binary mask."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from captum_robust._utils.validation import (
    check_choice,
    check_number,
    check_same_device,
)
from captum_robust.metrics._maps import (
    ChannelReduction,
    TensorOrTuple,
    prepare_mask,
    spatial_attribution,
)
from captum_robust.metrics._topk import topk_mask

ThresholdMode = Literal["max_fraction", "top_fraction"]


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
    return maps.clamp(min=0).flatten(1), binary.flatten(1)


def silhouette_overlap(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Share of the explanation's mass that falls inside the object mask.

    Nguyen et al.'s "right for the right reason" score, ``sum(E * M) / sum(E)``,
    0 for an all-zero map. It is scale-free, so maps need no normalisation
    first. Quantus calls the same quantity AttributionLocalisation.

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
        Shape (B,), values in [0, 1].

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
    total = maps.sum(dim=1)
    inside = (maps * binary).sum(dim=1)
    return torch.where(total > 0, inside / total, torch.zeros_like(total))


def pointing_game(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """1 where the map's maximum lies inside the object mask, else 0.

    When several pixels share the maximum, the first in row-major order
    counts, so the result is deterministic.

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
        Shape (B,), values 0.0 or 1.0.

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
    return binary.gather(1, peak).squeeze(1).to(maps.dtype)


def relevance_rank_accuracy(
    attributions: TensorOrTuple,
    mask: Tensor,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Share of the |M| highest-ranked pixels that lie inside the mask M.

    Arras et al.'s relevance rank accuracy, with |M| the number of object
    pixels of each sample; ties at the cut go to the lowest flat index.

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
        Shape (B,), values in [0, 1].

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
    return (top & binary).sum(dim=1).to(maps.dtype) / object_size


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
        Shape (B,), values in [0, 1]; 0 for an all-zero map in
        ``"max_fraction"`` mode (nothing is predicted).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import mask_iou
    >>> attr = torch.tensor([[[1.0, 0.9], [0.2, 0.0]]])
    >>> mask_iou(attr, torch.tensor([[[1, 0], [1, 0]]]), threshold=0.5)
    tensor([0.3333])
    """
    check_choice(threshold_mode, ("max_fraction", "top_fraction"), "threshold_mode")
    threshold = check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    if threshold == 0.0:
        raise ValueError("`threshold` must be in (0, 1], got 0.0.")
    maps, binary = _map_and_mask(attributions, mask, abs, channel_reduction)
    if threshold_mode == "max_fraction":
        peak = maps.amax(dim=1, keepdim=True)
        predicted = (maps >= threshold * peak) & (maps > 0)
    else:
        count = min(maps.shape[1], math.ceil(threshold * maps.shape[1]))
        predicted = topk_mask(maps, count)
    intersection = (predicted & binary).sum(dim=1)
    union = (predicted | binary).sum(dim=1)
    return intersection.to(maps.dtype) / union.to(maps.dtype)
