"""Batched rank kernels: ranks, tie counts and inversion counts of (B, N) rows.

Every kernel works row by row on the tensor's device with O(N log N) time, O(N)
memory per row, no Python loop over rows and no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _positions(like: Tensor) -> Tensor:
    return torch.arange(like.shape[1], device=like.device).expand_as(like)


def order_keys(values: Tensor) -> Tensor:
    """Integers that sort like the floats ``values`` (no NaN), for faster sorting.

    CPU sorts integers about twice as fast as floats. Adding 0.0 turns -0.0
    into +0.0 so that equal floats get equal keys; flipping the magnitude bits
    of negative numbers makes their two's-complement order match their value.
    """
    if values.dtype == torch.float64:
        bits = (values + 0.0).view(torch.int64)
        return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
    bits = (values.float() + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def run_starts(sorted_values: Tensor) -> Tensor:
    """Index of the first element of each element's run of equal values."""
    new_run = torch.ones_like(sorted_values, dtype=torch.bool)
    torch.ne(sorted_values[:, 1:], sorted_values[:, :-1], out=new_run[:, 1:])
    return torch.where(new_run, _positions(sorted_values), 0).cummax(dim=1).values


def run_ends(sorted_values: Tensor) -> Tensor:
    """Index of the last element of each element's run of equal values."""
    n = sorted_values.shape[1]
    run_end = torch.ones_like(sorted_values, dtype=torch.bool)
    torch.ne(sorted_values[:, 1:], sorted_values[:, :-1], out=run_end[:, :-1])
    last = torch.where(run_end, _positions(sorted_values), n)
    return last.flip(1).cummin(dim=1).values.flip(1)


def tied_pairs_from_runs(new_run: Tensor) -> Tensor:
    """Pairs of equal elements per row, given where runs start in sorted order.

    Each element adds the number of equal elements before it in its run, so a
    run of length t adds t(t - 1) / 2.
    """
    positions = torch.arange(
        new_run.shape[1], device=new_run.device, dtype=torch.int32
    ).expand_as(new_run)
    starts = torch.where(new_run, positions, 0).cummax(dim=1).values
    return (positions - starts).sum(dim=1, dtype=torch.long)


def new_run_mask(*sorted_keys: Tensor) -> Tensor:
    """True where a run of equal key tuples starts (keys are in sorted order)."""
    first = sorted_keys[0]
    new_run = torch.ones_like(first, dtype=torch.bool)
    changed = new_run[:, 1:]
    changed.zero_()
    for key in sorted_keys:
        changed |= key[:, 1:] != key[:, :-1]
    return new_run


def dense_ranks_sorted(sorted_values: Tensor, order: Tensor) -> Tensor:
    """Dense integer ranks (0 for the smallest value, ties share a rank)."""
    new_value = torch.zeros_like(sorted_values, dtype=torch.long)
    new_value[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ranks_sorted = new_value.cumsum(dim=1)
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks where ties share the mean of their positions (scipy's rankdata).

    Ranks come back in float64 so that they are exact for any row length.
    """
    sorted_values, order = order_keys(values).sort(dim=1)
    middle = (run_starts(sorted_values) + run_ends(sorted_values)).double() / 2 + 1
    return torch.empty_like(middle).scatter_(1, order, middle)


def count_inversions(ranks: Tensor, num_values: int) -> Tensor:
    """Pairs i < j with ranks[i] > ranks[j] (strict), per row.

    ``ranks`` is an int64 (B, N) tensor of values in [0, num_values). The count
    is built bit by bit from the most significant bit, like an MSD radix sort:
    the row is kept in (prefix, position) order, each level counts the pairs
    whose highest differing bit is the current one and stably partitions every
    prefix group by that bit for the next level. Group boundaries come from a
    histogram of the values, so a level costs one small gather, one cumulative
    sum and one scatter over the row: O(N log N) work and O(N) memory in all.
    """
    batch, n = ranks.shape
    device = ranks.device
    total = torch.zeros(batch, dtype=torch.long, device=device)
    if n < 2 or num_values < 2:
        return total
    num_bits = int(num_values - 1).bit_length()
    padded = 1 << num_bits
    counts = torch.zeros(batch, padded, dtype=torch.long, device=device)
    counts.scatter_add_(1, ranks, torch.ones_like(ranks))
    # below[:, v] is the number of elements whose value is < v.
    below = torch.zeros(batch, padded + 1, dtype=torch.long, device=device)
    torch.cumsum(counts, dim=1, out=below[:, 1:])
    # int32 halves the memory traffic; n < 2**31 always holds for one row here.
    small = torch.int32
    positions = torch.arange(n, device=device, dtype=small)
    current = ranks.to(small)
    for bit in range(num_bits - 1, -1, -1):
        edges = below[:, :: 1 << bit]
        group_mid, group_end = edges[:, 1::2], edges[:, 2::2]
        ones_per_group = group_end - group_mid
        ones_before_group = ones_per_group.cumsum(dim=1) - ones_per_group
        # For key = value >> bit = 2 * group + bit_value, one gathered offset
        # gives the new position of both halves of every group.
        offsets = torch.stack(
            (ones_before_group, group_mid - ones_before_group), dim=2
        ).flatten(1)
        key = current >> bit
        is_one = key & 1
        offset = offsets.to(small).gather(1, key.long())
        ones_inclusive = is_one.cumsum(dim=1, dtype=small)
        ones_before = ones_inclusive - is_one
        # Inversions at this bit: over the zeros, the ones before them in their
        # group. Over the ones, ones_before runs through 0 .. T-1, so the sum over
        # zeros is sum(ones_before) - T(T-1)/2 - sum_g zeros_g * ones_before_g.
        ones_total = ones_inclusive[:, -1].long()
        zeros_per_group = (group_mid - edges[:, :-1:2]).to(torch.long)
        total += (
            ones_before.sum(dim=1, dtype=torch.long)
            - ones_total * (ones_total - 1) // 2
            - (zeros_per_group * ones_before_group).sum(dim=1)
        )
        if bit:
            target = torch.where(
                is_one.bool(), ones_before + offset, positions - ones_before + offset
            )
            current = torch.empty_like(current).scatter_(1, target.long(), current)
    return total
