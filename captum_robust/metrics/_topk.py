"""Top-k intersection (Ghorbani et al.) with deterministic tie breaking."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_robust._utils.validation import check_positive_int
from captum_robust.metrics._maps import ChannelReduction, TensorOrTuple
from captum_robust.metrics._pairwise import flat_pair


def topk_mask(maps: Tensor, k: int | Tensor) -> Tensor:
    """Boolean (B, N) mask of the k largest entries of each row.

    Ties at the k-th value go to the lowest flat index, so the result does not
    depend on the sort algorithm or the device. ``k`` is an int or a (B,) tensor
    of per-row counts in [0, N].
    """
    n = maps.shape[1]
    if isinstance(k, int):
        kth = maps.topk(k, dim=1).values[:, -1:]
        needed = k
    else:
        k = k.clamp(0, n)
        sorted_desc = maps.sort(dim=1, descending=True).values
        kth = sorted_desc.gather(1, (k - 1).clamp(min=0).unsqueeze(1))
        needed = k.unsqueeze(1)
    greater = maps > kth
    equal = maps == kth
    missing = needed - greater.sum(dim=1, keepdim=True)
    return greater | (equal & (equal.cumsum(dim=1, dtype=torch.int32) <= missing))


def _topk_indices_if_unique(maps: Tensor, k: int) -> Tensor | None:
    """Indices of the k largest entries, or None when a tie straddles the cut.

    Without a tie at the k-th value, torch.topk's choice is the only one, so the
    O(N) tie-breaking passes of ``topk_mask`` can be skipped. Deciding that needs
    a host check, which costs nothing for CPU tensors and is skipped on GPUs.
    """
    values, indices = maps.topk(k, dim=1, sorted=False)
    kth = values.amin(dim=1, keepdim=True)
    if bool(((maps >= kth).sum(dim=1) == k).all()):
        return indices
    return None


def topk_intersection_flat(map_a: Tensor, map_b: Tensor, k: int) -> Tensor:
    """Share of the k top entries that two (B, N) maps have in common."""
    if map_a.device.type == "cpu":
        top_a = _topk_indices_if_unique(map_a, k)
        top_b = _topk_indices_if_unique(map_b, k) if top_a is not None else None
        if top_a is not None and top_b is not None:
            in_a = torch.zeros_like(map_a, dtype=torch.bool).scatter_(1, top_a, True)
            return in_a.gather(1, top_b).sum(dim=1).to(map_a.dtype) / k
    common = (topk_mask(map_a, k) & topk_mask(map_b, k)).sum(dim=1)
    return common.to(map_a.dtype) / k


def topk_intersection(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    k: int,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Fraction of the k most important features that two attributions share.

    ``|topk(a) ∩ topk(b)| / k`` per sample (Ghorbani et al., 2019). Features
    with equal importance at the k-th place are taken in order of their flat
    index, so the result is deterministic.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions of the same structure: (B, C, H, W), (B, ...) or a tuple.
    k : int
        Number of top features, 1 <= k <= N (N features per sample after the
        channel reduction). The papers use 100 for 28x28 to 32x32 images and
        1000 for 128x128 and larger.
    abs : bool, default True
        Rank by magnitude.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged before ranking.

    Returns
    -------
    Tensor
        Shape (B,), values in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import topk_intersection
    >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    >>> b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    >>> topk_intersection(a, b, k=2)
    tensor([0.5000])
    """
    map_a, map_b = flat_pair(attr_a, attr_b, abs, channel_reduction)
    check_positive_int(k, "k")
    n = map_a.shape[1]
    if k > n:
        raise ValueError(
            f"`k` must be at most the number of features per sample ({n}), got {k}."
        )
    return topk_intersection_flat(map_a, map_b, k)
