"""Shared argument handling for metrics that compare two attributions."""

from __future__ import annotations

from torch import Tensor

from captum_robust._utils.validation import (
    as_tensor_tuple,
    check_choice,
    check_same_device,
)
from captum_robust.metrics._maps import (
    CHANNEL_REDUCTIONS,
    ChannelReduction,
    TensorOrTuple,
    flatten_attribution,
    spatial_attribution,
)


def _check_same_structure(attr_a: TensorOrTuple, attr_b: TensorOrTuple) -> None:
    tensors_a = as_tensor_tuple(attr_a, "attr_a")
    tensors_b = as_tensor_tuple(attr_b, "attr_b")
    if len(tensors_a) != len(tensors_b):
        raise ValueError(
            f"`attr_b` holds {len(tensors_b)} tensors but `attr_a` holds "
            f"{len(tensors_a)}; both must have the same structure."
        )
    for i, (a, b) in enumerate(zip(tensors_a, tensors_b)):
        if a.shape != b.shape:
            where = "" if len(tensors_a) == 1 else f"[{i}]"
            raise ValueError(
                f"`attr_b{where}` has shape {tuple(b.shape)} but `attr_a{where}` has "
                f"shape {tuple(a.shape)}; both must have the same shape."
            )
    check_same_device(attr_a=tensors_a, attr_b=tensors_b)


def flat_pair(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    abs: bool,
    channel_reduction: ChannelReduction,
) -> tuple[Tensor, Tensor]:
    """Validate two attributions and return their flat (B, N) maps."""
    _check_same_structure(attr_a, attr_b)
    flat_a = flatten_attribution(
        attr_a, abs=abs, channel_reduction=channel_reduction, name="attr_a"
    )
    flat_b = flatten_attribution(
        attr_b, abs=abs, channel_reduction=channel_reduction, name="attr_b"
    )
    return flat_a, flat_b


def flat_pair_for_ranking(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    abs: bool,
    channel_reduction: ChannelReduction,
) -> tuple[Tensor, Tensor, bool]:
    """Like ``flat_pair``, for metrics that rank through ``order_keys``.

    When no channel has to be reduced after the absolute value, the maps come
    back without it (views of the inputs, no copy) and the flag says that the
    ranking keys must take the magnitude: one pass over each map instead of two.
    """
    check_choice(channel_reduction, CHANNEL_REDUCTIONS, "channel_reduction")
    tensors = as_tensor_tuple(attr_a, "attr_a")
    no_reduction = channel_reduction == "none" or all(
        t.dim() < 4 or t.shape[1] == 1 for t in tensors
    )
    if abs and no_reduction:
        flat_a, flat_b = flat_pair(attr_a, attr_b, False, "none")
        return flat_a, flat_b, True
    flat_a, flat_b = flat_pair(attr_a, attr_b, abs, channel_reduction)
    return flat_a, flat_b, False


def spatial_pair(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    abs: bool,
    channel_reduction: ChannelReduction,
) -> tuple[Tensor, Tensor]:
    """Validate two image attributions and return their (B, H, W) maps."""
    _check_same_structure(attr_a, attr_b)
    map_a = spatial_attribution(
        attr_a, abs=abs, channel_reduction=channel_reduction, name="attr_a"
    )
    map_b = spatial_attribution(
        attr_b, abs=abs, channel_reduction=channel_reduction, name="attr_b"
    )
    return map_a, map_b
