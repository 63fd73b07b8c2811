"""Shared argument handling for metrics that compare two attributions."""

from __future__ import annotations

from torch import Tensor

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_same_device
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._maps import flatten_attribution
from captum_robust.metrics._maps import reduced_shape
from captum_robust.metrics._maps import spatial_attribution


def _check_same_structure(
    attr_a: TensorOrTuple, attr_b: TensorOrTuple, channel_reduction: str
) -> None:
    """Both attributions must give maps of one shape after the channel reduction.

    A Grad-CAM map (B, 1, H, W) or (B, H, W) is comparable with a Saliency map
    (B, 3, H, W): all become (B, H, W). With ``channel_reduction="none"`` the
    channels stay features, so the shapes themselves must agree.
    """
    tensors_a = as_tensor_tuple(attr_a, "attr_a")
    tensors_b = as_tensor_tuple(attr_b, "attr_b")
    if len(tensors_a) != len(tensors_b):
        raise ValueError(
            f"`attr_b` holds {len(tensors_b)} tensors but `attr_a` holds "
            f"{len(tensors_a)}; both must have the same structure."
        )
    for i, (a, b) in enumerate(zip(tensors_a, tensors_b)):
        shape_a = reduced_shape(a, channel_reduction)
        shape_b = reduced_shape(b, channel_reduction)
        if shape_a != shape_b:
            where = "" if len(tensors_a) == 1 else f"[{i}]"
            if channel_reduction == "none":
                rule = 'with channel_reduction="none" both must have the same shape'
            else:
                rule = (
                    f"after the channel reduction they give maps {shape_b} and "
                    f"{shape_a}, which must agree"
                )
            raise ValueError(
                f"`attr_b{where}` has shape {tuple(b.shape)} but `attr_a{where}` has "
                f"shape {tuple(a.shape)}; {rule}."
            )
    check_same_device(attr_a=tensors_a, attr_b=tensors_b)


def paired_maps(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    abs: bool,
    channel_reduction: ChannelReduction,
    *,
    spatial: bool = False,
) -> tuple[Tensor, Tensor]:
    """Validate two attributions and return their maps: flat (B, N), or
    (B, H, W) for image attributions with ``spatial=True``."""
    check_map_options(abs, channel_reduction)
    _check_same_structure(attr_a, attr_b, channel_reduction)
    prepare = spatial_attribution if spatial else flatten_attribution
    map_a = prepare(attr_a, abs=abs, channel_reduction=channel_reduction, name="attr_a")
    map_b = prepare(attr_b, abs=abs, channel_reduction=channel_reduction, name="attr_b")
    return map_a, map_b


def _needs_no_reduction(attr: TensorOrTuple, channel_reduction: str) -> bool:
    tensors = as_tensor_tuple(attr, "attr")
    return channel_reduction == "none" or all(
        t.dim() < 4 or t.shape[1] == 1 for t in tensors
    )


def flat_pair_for_ranking(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    abs: bool,
    channel_reduction: ChannelReduction,
) -> tuple[Tensor, Tensor, bool]:
    """Like ``paired_maps``, for metrics that rank through ``order_keys``.

    When no channel of either attribution has to be reduced after the absolute
    value, the maps come back without it (views of the inputs, no copy) and the
    flag says that the ranking keys must take the magnitude: one pass over each
    map instead of two.
    """
    check_map_options(abs, channel_reduction)
    as_tensor_tuple(attr_a, "attr_a")
    as_tensor_tuple(attr_b, "attr_b")
    if (
        abs
        and _needs_no_reduction(attr_a, channel_reduction)
        and _needs_no_reduction(attr_b, channel_reduction)
    ):
        # Single channels are squeezed by a sum, which has nothing to add up.
        reduction = "none" if channel_reduction == "none" else "sum"
        flat_a, flat_b = paired_maps(attr_a, attr_b, False, reduction)
        return flat_a, flat_b, True
    flat_a, flat_b = paired_maps(attr_a, attr_b, abs, channel_reduction)
    return flat_a, flat_b, False
