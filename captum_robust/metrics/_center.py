"""Center of mass of an attribution map and its shift (Ghorbani et al.)."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._maps import scaled_sums
from captum_robust.metrics._maps import spatial_attribution
from captum_robust.metrics._maps import unit_scale
from captum_robust.metrics._pairwise import paired_maps


def center_of_mass_map(maps: Tensor) -> Tensor:
    """(row, column) center of mass of (B, H, W) maps; NaN where the mass is zero.

    The row and column sums are taken of maps scaled by a power of two per
    sample (``unit_scale``): the center does not change, and no sum of H * W
    values (times a coordinate) can overflow however large the attributions are.
    """
    _, height, width = maps.shape
    scale = unit_scale(maps)
    # Row and column coordinates weigh the (B, H) and (B, W) sums.
    ones_w = torch.ones(width, 1, device=maps.device, dtype=maps.dtype)
    ones_h = torch.ones(height, 1, device=maps.device, dtype=maps.dtype)
    row_sums = scaled_sums(maps, ones_w, scale)[..., 0]
    col_sums = scaled_sums(maps.transpose(1, 2), ones_h, scale)[..., 0]
    rows = torch.arange(height, device=maps.device, dtype=maps.dtype)
    cols = torch.arange(width, device=maps.device, dtype=maps.dtype)
    mass = row_sums.sum(dim=1)
    row = (row_sums * rows).sum(dim=1) / mass
    col = (col_sums * cols).sum(dim=1) / mass
    center = torch.stack((row, col), dim=1)
    # Signed maps can have zero mass without being zero: x / 0 would give inf.
    return center.masked_fill((mass == 0).unsqueeze(1), float("nan"))


def center_of_mass(
    attributions: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Attribution-weighted mean pixel coordinate of each sample's map.

    Parameters
    ----------
    attributions : Tensor
        (B, C, H, W) or (B, H, W) image attributions.
    abs : bool, default True
        Weight pixels by magnitude. With ``abs=False`` negative attributions pull
        the center away, which is rarely meaningful.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B, 2): (row, column) in pixels, 0-based. NaN for a sample whose
        map sums to zero (an all-zero map, or with ``abs=False`` a signed map
        whose values cancel): its center is undefined. A uniform non-zero map
        has a center, the middle of the image.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import center_of_mass
    >>> attr = torch.zeros(1, 1, 5, 5)
    >>> attr[0, 0, 1, 3] = 2.0
    >>> center_of_mass(attr)
    tensor([[1., 3.]])
    """
    maps = spatial_attribution(
        attributions, abs=abs, channel_reduction=channel_reduction
    )
    return center_of_mass_map(maps)


def center_of_mass_shift(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Euclidean distance in pixels between the centers of mass of two maps.

    Ghorbani et al.'s "center dislocation": how far an attack moved the
    explanation.

    Parameters
    ----------
    attr_a, attr_b : Tensor
        Image attributions, (B, C, H, W) or (B, H, W), whose maps agree in shape
        after the channel reduction: a (B, 1, H, W) Grad-CAM map compares with a
        (B, 3, H, W) Saliency map.
    abs : bool, default True
        Weight pixels by magnitude.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), in pixels; NaN where either map sums to zero (no center),
        such as an all-zero map from dead gradients.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import center_of_mass_shift
    >>> a = torch.zeros(1, 8, 8)
    >>> b = torch.zeros(1, 8, 8)
    >>> a[0, 0, 0], b[0, 3, 4] = 1.0, 1.0
    >>> center_of_mass_shift(a, b)
    tensor([5.])
    """
    map_a, map_b = paired_maps(attr_a, attr_b, abs, channel_reduction, spatial=True)
    return (center_of_mass_map(map_a) - center_of_mass_map(map_b)).norm(dim=1)
