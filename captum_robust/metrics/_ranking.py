"""Batched rank kernels: ranks, tie counts and inversion counts of (B, N) rows.

Every kernel works row by row on the tensor's device with O(N log N) time, O(N)
memory per row, no Python loop over rows and no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _positions(like: Tensor) -> Tensor:
    return torch.arange(like.shape[1], device=like.device).expand_as(like)


def order_keys(values: Tensor, magnitude: bool = False) -> Tensor:
    """Integers that sort like the floats ``values`` (no NaN), for faster sorting.

    CPU sorts integers about twice as fast as floats. Adding 0.0 turns -0.0
    into +0.0 so that equal floats get equal keys; flipping the magnitude bits
    of negative numbers makes their two's-complement order match their value.
    With ``magnitude=True`` the keys sort like ``values.abs()``: clearing the
    sign bit is the absolute value, in the same single pass.
    """
    if values.dtype == torch.float64:
        if magnitude:
            return values.view(torch.int64) & 0x7FFFFFFFFFFFFFFF
        bits = (values + 0.0).view(torch.int64)
        return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
    if magnitude:
        return values.float().view(torch.int32) & 0x7FFFFFFF
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

    A run of length t adds t(t - 1) / 2. On the CPU, rows without ties are
    read off ``new_run`` and skipped.
    """
    batch, n = new_run.shape
    if n < 2:
        return torch.zeros(batch, dtype=torch.long, device=new_run.device)
    if new_run.device.type != "cpu":
        return _tied_pairs(new_run)
    # Reading the flags is free on the CPU; on a GPU it would stall.
    tied_rows = (~new_run[:, 1:]).any(dim=1).nonzero().flatten()
    if len(tied_rows) == batch:
        return _tied_pairs(new_run)
    pairs = torch.zeros(batch, dtype=torch.long)
    if len(tied_rows):
        pairs[tied_rows] = _tied_pairs(new_run[tied_rows])
    return pairs


def _tied_pairs(new_run: Tensor) -> Tensor:
    # Run lengths, counted by run number (a cumulative sum of the run starts).
    run_index = new_run.cumsum(dim=1) - 1
    lengths = torch.zeros(new_run.shape, dtype=torch.int32, device=new_run.device)
    lengths.scatter_add_(1, run_index, torch.ones_like(lengths))
    # Runs partition the row: sum t(t - 1) / 2 = (sum t^2 - n) / 2.
    lengths = lengths.long()
    return ((lengths * lengths).sum(dim=1) - new_run.shape[1]) // 2


def new_run_mask(*sorted_keys: Tensor) -> Tensor:
    """True where a run of equal key tuples starts (keys are in sorted order)."""
    first = sorted_keys[0]
    new_run = torch.ones_like(first, dtype=torch.bool)
    changed = new_run[:, 1:]
    changed.zero_()
    for key in sorted_keys:
        changed |= key[:, 1:] != key[:, :-1]
    return new_run


def average_ranks(values: Tensor, magnitude: bool = False) -> Tensor:
    """1-based ranks where ties share the mean of their positions (scipy's rankdata).

    Ranks come back in float64 so that they are exact for any row length.
    ``magnitude=True`` ranks ``values.abs()``.
    """
    sorted_values, order = order_keys(values, magnitude).sort(dim=1)
    middle = (run_starts(sorted_values) + run_ends(sorted_values)).double() / 2 + 1
    return torch.empty_like(middle).scatter_(1, order, middle)


def _row_sums(values: Tensor) -> Tensor:
    """Row sums of a non-negative int32 (B, N) tensor with values <= N, as int64.

    Summing int32 into int64 copies the whole tensor to int64 first; partial
    sums over chunks small enough not to overflow int32 avoid the copy.
    """
    n = values.shape[1]
    chunk = min(4096, (2**31 - 1) // max(n, 1))
    whole = n - n % chunk
    if chunk < 2 or whole == 0:
        return values.sum(dim=1)
    partial = (
        values[:, :whole]
        .unflatten(1, (whole // chunk, chunk))
        .sum(2, dtype=values.dtype)
    )
    return partial.sum(dim=1) + values[:, whole:].sum(dim=1)


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
    # int32 halves the memory traffic; n < 2**31 always holds for one row here.
    # The CPU kernels also take int32 indices, which saves two conversions per
    # level. Every level writes into the same preallocated buffers: fresh
    # multi-megabyte tensors cost page faults on the CPU that outweigh the work.
    small = torch.int32
    index_dtype = small if device.type == "cpu" else torch.long
    counts = torch.zeros(batch, padded, dtype=small, device=device)
    counts.scatter_add_(1, ranks, torch.ones_like(ranks, dtype=small))
    # below[:, v] is the number of elements whose value is < v.
    below = torch.zeros(batch, padded + 1, dtype=small, device=device)
    torch.cumsum(counts, dim=1, dtype=small, out=below[:, 1:])
    del counts
    positions = torch.arange(n, device=device, dtype=small).expand(batch, n)
    current = ranks.to(small)
    following = torch.empty_like(current)
    key = torch.empty_like(current)
    is_one = torch.empty_like(current)
    ones_before = torch.empty_like(current)
    offset = torch.empty_like(current)
    key_index = (
        key if index_dtype == small else torch.empty_like(key, dtype=index_dtype)
    )
    target = torch.empty_like(current, dtype=index_dtype)
    for bit in range(num_bits - 1, -1, -1):
        edges = below[:, :: 1 << bit]
        group_mid, group_end = edges[:, 1::2], edges[:, 2::2]
        ones_per_group = group_end - group_mid
        ones_before_group = ones_per_group.cumsum(dim=1, dtype=small)
        ones_before_group -= ones_per_group
        # For key = value >> bit = 2 * group + bit_value, one gathered offset
        # gives the new position of both halves of every group.
        offsets = torch.stack(
            (ones_before_group, group_mid - ones_before_group), dim=2
        ).flatten(1)
        torch.bitwise_right_shift(current, bit, out=key)
        torch.bitwise_and(key, 1, out=is_one)
        if key_index is not key:
            key_index.copy_(key)
        torch.gather(offsets, 1, key_index, out=offset)
        torch.cumsum(is_one, dim=1, dtype=small, out=ones_before)
        ones_total = ones_before[:, -1].long()
        ones_before -= is_one
        # Inversions at this bit: over the zeros, the ones before them in their
        # group. Over the ones, ones_before runs through 0 .. T-1, so the sum over
        # zeros is sum(ones_before) - T(T-1)/2 - sum_g zeros_g * ones_before_g.
        zeros_per_group = (group_mid - edges[:, :-1:2]).long()
        total += (
            _row_sums(ones_before)
            - ones_total * (ones_total - 1) // 2
            - (zeros_per_group * ones_before_group).sum(dim=1)
        )
        if bit:
            # New position: zeros first, then the ones, both in their old order:
            # offset + (positions - ones_before) for a zero, offset + ones_before
            # for a one. Arithmetic select; torch.where is slower on the CPU.
            torch.sub(positions, ones_before, out=key)
            torch.sub(key, ones_before, out=target)
            target *= is_one
            torch.sub(key, target, out=target)
            target += offset
            following.scatter_(1, target, current)
            current, following = following, current
    return total
