"""Top-k intersection (Ghorbani et al.) with deterministic tie breaking."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_robust._utils.validation import check_positive_int
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._pairwise import flat_pair_for_ranking
from captum_robust.metrics._ranking import order_keys


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


def _top_indices(keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices of the k largest keys of each row, and where that set is ambiguous.

    One ``topk`` of k + 1 entries finds both the set and whether a tie straddles
    the cut: that is the case exactly when the two smallest of the k + 1 are
    equal. Otherwise the smallest of them is the (k+1)-th and is dropped, and the
    set is the only top-k set, whatever the tie-breaking rule.
    """
    values, indices = keys.topk(k + 1, dim=1, sorted=False)
    lowest, where = values.topk(2, dim=1, largest=False)
    ambiguous = lowest[:, 0] == lowest[:, 1]
    keep = torch.ones_like(indices, dtype=torch.bool).scatter_(1, where[:, :1], False)
    return indices[keep].view(-1, k), ambiguous


# Keys per chunk of rows on a CPU (a few MiB); measured on 2 cores.
_CPU_CHUNK_ELEMENTS = 1 << 22


def _top_indices_in_chunks(
    maps: Tensor, k: int, magnitude: bool
) -> tuple[Tensor, Tensor]:
    """``_top_indices`` of the ordering keys, a few million keys at a time.

    On a CPU, keys for the whole batch would be fresh pages of memory, which
    cost more than the comparisons; chunks of this size reuse freed memory and
    stay in cache.
    """
    rows = max(1, _CPU_CHUNK_ELEMENTS // maps.shape[1])
    parts = [
        _top_indices(order_keys(chunk, magnitude), k) for chunk in maps.split(rows)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([top for top, _ in parts]), torch.cat([flag for _, flag in parts])


def constant_rows(maps: Tensor) -> Tensor:
    """True for each row of a (B, N) map whose values are all equal."""
    low, high = maps.aminmax(dim=1)
    return low == high


def _mask_overlap(
    map_a: Tensor, map_b: Tensor, k: int, magnitude: bool, constant_nan: bool
) -> Tensor:
    """``topk_intersection_flat`` by the deterministic tie rule of ``topk_mask``."""
    if magnitude:
        map_a, map_b = map_a.abs(), map_b.abs()
    common = (topk_mask(map_a, k) & topk_mask(map_b, k)).sum(dim=1)
    result = common.to(_score_dtype(map_a)) / k
    if constant_nan:
        undefined = constant_rows(map_a) | constant_rows(map_b)
        result = result.masked_fill(undefined, float("nan"))
    return result


def _score_dtype(maps: Tensor) -> torch.dtype:
    return maps.dtype if maps.dtype == torch.float64 else torch.float32


def topk_intersection_flat(
    map_a: Tensor,
    map_b: Tensor,
    k: int,
    magnitude: bool = False,
    constant_nan: bool = False,
) -> Tensor:
    """Share of the k top entries that two (B, N) maps have in common.

    ``magnitude=True`` ranks ``map.abs()``. ``constant_nan=True`` gives NaN for
    rows where either map is constant (no top-k set to speak of); otherwise the
    tie rule picks the lowest indices there too.
    """
    if map_a.device.type != "cpu" or k == map_a.shape[1]:
        return _mask_overlap(map_a, map_b, k, magnitude, constant_nan)
    # CPU: integer keys select faster than floats, and the intersection of two
    # sets of k indices is found among 2k sorted indices, not over all N.
    top_a, ambiguous_a = _top_indices_in_chunks(map_a, k, magnitude)
    top_b, ambiguous_b = _top_indices_in_chunks(map_b, k, magnitude)
    both = torch.cat((top_a, top_b), dim=1).sort(dim=1).values
    common = (both[:, 1:] == both[:, :-1]).sum(dim=1)
    # Reading the flags is free on the CPU. Rows with a tie at the cut take the
    # deterministic rule of topk_mask.
    tied = (ambiguous_a | ambiguous_b).nonzero().flatten()
    result = common.to(_score_dtype(map_a)) / k
    if len(tied):
        # A constant row ties at every place, so it is always among these rows:
        # the constant_nan check costs nothing on rows without a tie at the cut.
        result[tied] = _mask_overlap(
            map_a[tied], map_b[tied], k, magnitude, constant_nan
        )
    return result


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
        Attributions of the same structure: (B, C, H, W), (B, ...) or a tuple,
        whose maps agree in shape after the channel reduction ((B, 1, H, W)
        against (B, 3, H, W) is fine).
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
        Shape (B,), values in [0, 1]; NaN for a sample where either map is
        constant after the absolute value and channel reduction (an all-zero map
        from dead gradients, say): it has no top-k features, and the tie rule
        would otherwise report an arbitrary overlap (1.0 for two zero maps).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import topk_intersection
    >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    >>> b = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    >>> topk_intersection(a, b, k=2)
    tensor([0.5000])
    >>> topk_intersection(torch.zeros(1, 4), b, k=2)
    tensor([nan])
    """
    check_positive_int(k, "k")
    map_a, map_b, magnitude = flat_pair_for_ranking(
        attr_a, attr_b, abs, channel_reduction
    )
    n = map_a.shape[1]
    if k > n:
        raise ValueError(
            f"`k` must be at most the number of features per sample ({n}), got {k}."
        )
    return topk_intersection_flat(map_a, map_b, k, magnitude, constant_nan=True)
