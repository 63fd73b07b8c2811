"""Rank correlations between two attribution maps: Kendall tau-b and Spearman."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._pairwise import flat_pair_for_ranking
from captum_robust.metrics._ranking import average_ranks
from captum_robust.metrics._ranking import count_inversions
from captum_robust.metrics._ranking import new_run_mask
from captum_robust.metrics._ranking import order_keys
from captum_robust.metrics._ranking import tied_pairs_from_runs

# Elements per chunk of rows on a CPU; measured best on 2 cores.
_CPU_CHUNK_ELEMENTS = 1 << 19


def kendall_tau_flat(map_a: Tensor, map_b: Tensor, magnitude: bool = False) -> Tensor:
    """Kendall tau-b of two (B, N) maps, row by row, without argument checks.

    The same quantities as scipy.stats.kendalltau: concordant minus discordant
    pairs over the geometric mean of the untied pair counts, with discordant
    pairs counted as inversions of ``map_b`` taken in ``(map_a, map_b)`` order.
    ``magnitude=True`` compares ``map_a.abs()`` with ``map_b.abs()``.
    """
    # On a CPU, a few rows at a time keep the dozen working arrays in cache.
    rows = max(1, _CPU_CHUNK_ELEMENTS // max(map_a.shape[1], 1))
    if map_a.device.type == "cpu" and len(map_a) > rows:
        return torch.cat(
            [
                _kendall_tau_rows(a, b, magnitude)
                for a, b in zip(map_a.split(rows), map_b.split(rows))
            ]
        )
    return _kendall_tau_rows(map_a, map_b, magnitude)


def _kendall_tau_rows(map_a: Tensor, map_b: Tensor, magnitude: bool) -> Tensor:
    n = map_a.shape[1]
    sorted_b, order_b = order_keys(map_b, magnitude).sort(dim=1)
    new_run_b = new_run_mask(sorted_b)
    # Dense ranks of map_b (0 for its smallest value), in map_b's sorted order.
    dense_b = new_run_b.cumsum(dim=1) - 1
    # Stable sort of map_a taken in map_b order: a lexicographic sort by (a, b).
    keys_a = order_keys(map_a, magnitude).gather(1, order_b)
    sorted_a, order_in_b = keys_a.sort(dim=1, stable=True)
    ranks_b_lex = dense_b.gather(1, order_in_b)

    ties_a = tied_pairs_from_runs(new_run_mask(sorted_a))
    ties_b = tied_pairs_from_runs(new_run_b)
    ties_joint = tied_pairs_from_runs(new_run_mask(sorted_a, ranks_b_lex))
    # Fewer distinct values need fewer bit levels; reading the count is free on
    # the CPU but would stall a GPU, where the row length bounds it instead.
    num_values = int(dense_b[:, -1].max()) + 1 if map_b.device.type == "cpu" else n
    discordant = count_inversions(ranks_b_lex, num_values)

    total = n * (n - 1) // 2
    concordant_minus_discordant = total - ties_a - ties_b + ties_joint - 2 * discordant
    denominator = ((total - ties_a).double() * (total - ties_b).double()).sqrt()
    # 0 / 0 for a constant map gives NaN, as scipy does.
    tau = (concordant_minus_discordant.double() / denominator).clamp(-1.0, 1.0)
    return tau.to(map_a.dtype)


def spearman_flat(map_a: Tensor, map_b: Tensor, magnitude: bool = False) -> Tensor:
    """Spearman's rho of two (B, N) maps, row by row, without argument checks.

    ``magnitude=True`` compares ``map_a.abs()`` with ``map_b.abs()``.
    """
    ranks_a = average_ranks(map_a, magnitude)
    ranks_b = average_ranks(map_b, magnitude)
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    covariance = (ranks_a * ranks_b).sum(dim=1)
    scale = ((ranks_a * ranks_a).sum(dim=1) * (ranks_b * ranks_b).sum(dim=1)).sqrt()
    return (covariance / scale).clamp(-1.0, 1.0).to(map_a.dtype)


def kendall_tau(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Kendall's tau-b between two attribution maps, one value per sample.

    Exact, with ties handled as ``scipy.stats.kendalltau`` does (tau-b), in
    O(N log N) time and O(N) memory per sample for maps of N pixels, batched on
    the input's device.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions of the same structure, as Captum returns them: (B, C, H, W),
        (B, ...) or a tuple of such tensors. Their maps must agree in shape after
        the channel reduction, so a (B, 1, H, W) or (B, H, W) Grad-CAM map
        compares with a (B, 3, H, W) Saliency map.
    abs : bool, default True
        Compare magnitudes (the convention of Chen et al. and Ghorbani et al.).
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged before ranking; see ``flatten_attribution``.

    Returns
    -------
    Tensor
        Shape (B,), in [-1, 1]; NaN for a sample where either map is constant
        after the absolute value and channel reduction (an all-zero map
        included), as scipy returns: its ranks are undefined. float64 inputs
        give float64, others float32.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import kendall_tau
    >>> a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> kendall_tau(a, a)
    tensor([1.])
    >>> kendall_tau(a, a.flip(-1))
    tensor([0.3333])
    """
    map_a, map_b, magnitude = flat_pair_for_ranking(
        attr_a, attr_b, abs, channel_reduction
    )
    return kendall_tau_flat(map_a, map_b, magnitude)


def spearman_correlation(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Spearman's rank correlation between two attribution maps, per sample.

    Tied values get the average of their ranks, as ``scipy.stats.spearmanr``.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions of the same structure: (B, C, H, W), (B, ...) or a tuple,
        whose maps agree in shape after the channel reduction.
    abs : bool, default True
        Compare magnitudes.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged before ranking.

    Returns
    -------
    Tensor
        Shape (B,), in [-1, 1]; NaN where either map is constant (an all-zero
        map included), as scipy returns.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import spearman_correlation
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> spearman_correlation(a, torch.tensor([[1.0, 3.0, 2.0, 4.0]]))
    tensor([0.8000])
    """
    map_a, map_b, magnitude = flat_pair_for_ranking(
        attr_a, attr_b, abs, channel_reduction
    )
    return spearman_flat(map_a, map_b, magnitude)
