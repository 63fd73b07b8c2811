"""Streaming versions of the functional metrics, built on torchmetrics.Metric.

Each class keeps a running sum, sum of squares and count in float64, which
reduce by summation across distributed ranks, and returns the mean with a
Student-t confidence interval. Samples whose score is NaN (a degenerate map,
see :mod:`captum_robust.metrics`) are left out of these and counted in
``nan_count``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import scipy.stats
import torch
from torch import Tensor
from torchmetrics import Metric

from captum_robust._utils.validation import check_confidence
from captum_robust._utils.validation import check_positive_int
from captum_robust.metrics._center import center_of_mass_shift
from captum_robust.metrics._correlation import kendall_tau
from captum_robust.metrics._correlation import spearman_correlation
from captum_robust.metrics._localisation import ThresholdMode
from captum_robust.metrics._localisation import check_threshold
from captum_robust.metrics._localisation import mask_iou
from captum_robust.metrics._localisation import pointing_game
from captum_robust.metrics._localisation import relevance_rank_accuracy
from captum_robust.metrics._localisation import silhouette_overlap
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._topk import topk_intersection


class PerSampleMean(Metric):
    """Mean of a per-sample score over every batch seen, with its spread.

    Subclasses set ``score_fn``, a function returning a (B,) tensor. Samples
    whose score is NaN are undefined, not bad: a map with no ranking or
    placement information (all zero after the absolute value and channel
    reduction, or constant for a metric that ranks pixels). They are left out
    of the mean, standard deviation and interval, and counted apart.

    ``compute()`` returns a dict of 0-dim float64 tensors: ``mean``, ``std``
    (sample standard deviation), ``count`` (samples with a defined score),
    ``nan_count`` (samples skipped as NaN), ``ci_low`` and ``ci_high`` (the
    Student-t interval of the mean at ``confidence``). The running
    ``nan_count`` is also the metric state of that name (``metric.nan_count``),
    summed across ranks like the others; ``count + nan_count`` is the number of
    samples seen. With no defined sample, ``mean`` and the interval are NaN.

    Parameters
    ----------
    confidence : float, default 0.95
        Level of the confidence interval returned by ``compute``.
    score_kwargs : dict
        Keyword arguments passed to ``score_fn`` with every batch.
    **kwargs
        Passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).
    """

    full_state_update = False
    is_differentiable = False
    score_fn: Callable[..., Tensor]

    def __init__(
        self, *, confidence: float = 0.95, score_kwargs: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_confidence(confidence)
        self.confidence = confidence
        self.score_kwargs = score_kwargs
        for name in ("total", "total_squares", "count", "nan_count"):
            self.add_state(
                name,
                default=torch.tensor(0.0, dtype=torch.float64),
                dist_reduce_fx="sum",
            )

    def update(self, *args: Any) -> None:
        """Add one batch: the arguments of the metric's function, e.g.
        ``update(attr_a, attr_b)`` for a pairwise score or ``update(attributions,
        mask)`` for a localisation score, each with a leading batch dimension.

        Each sample's score enters the running sums; a NaN score (a map with no
        information) is counted in ``nan_count`` instead.
        """
        self._add_scores(type(self).score_fn(*args, **self.score_kwargs))

    def _add_scores(self, scores: Tensor) -> None:
        scores = scores.double()
        undefined = scores.isnan()
        scores = scores.masked_fill(undefined, 0.0)
        self.total += scores.sum()
        self.total_squares += (scores * scores).sum()
        self.count += (~undefined).sum()
        self.nan_count += undefined.sum()

    def compute(self) -> dict[str, Tensor]:
        """Statistics of every sample seen since the last ``reset()`` (on all
        ranks when synchronised).

        Returns
        -------
        dict of str to Tensor
            0-dim float64 tensors: ``mean``, ``std`` (sample standard deviation),
            ``count`` (samples with a defined score), ``nan_count`` (samples whose
            score was NaN), ``ci_low`` and ``ci_high`` (Student-t interval of the
            mean at ``confidence``). With no defined sample, ``mean`` and the
            interval are NaN.
        """
        count = self.count
        mean = self.total / count
        variance = (self.total_squares - count * mean * mean) / (count - 1)
        std = variance.clamp(min=0.0).sqrt()
        degrees = max(int(count.item()) - 1, 1)
        t_value = float(scipy.stats.t.ppf(0.5 + self.confidence / 2, degrees))
        half_width = t_value * std / count.sqrt()
        return {
            "mean": mean,
            "std": std,
            "count": count,
            "nan_count": self.nan_count,
            "ci_low": mean - half_width,
            "ci_high": mean + half_width,
        }


class _PairScore(PerSampleMean):
    """A score of maps, ``update(attr_a, attr_b)`` or ``update(attributions,
    mask)``, whose map options are checked and fixed at construction; a
    subclass with more options adds them to ``score_kwargs``."""

    def __init__(
        self,
        *,
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        # Checked here so that a bad option fails at once, not at the first
        # update.
        check_map_options(abs, channel_reduction)
        score_kwargs = dict(abs=abs, channel_reduction=channel_reduction)
        super().__init__(confidence=confidence, score_kwargs=score_kwargs, **kwargs)


class TopKIntersection(_PairScore):
    """Streaming mean of :func:`topk_intersection` over batches.

    Samples where either map is constant (all zero, say) have no top-k set;
    they are skipped and counted in ``compute()["nan_count"]``.

    Parameters
    ----------
    k : int
        Number of top features compared.
    abs, channel_reduction
        As in :func:`topk_intersection`.
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import TopKIntersection
    >>> metric = TopKIntersection(k=2)
    >>> metric.update(torch.tensor([[4.0, 3.0, 2.0]]), torch.tensor([[4.0, 1.0, 3.0]]))
    >>> metric.update(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    >>> metric.compute()["mean"]
    tensor(0.7500, dtype=torch.float64)
    >>> metric.update(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]]))
    >>> metric.compute()["nan_count"]
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(topk_intersection)

    def __init__(
        self,
        k: int,
        *,
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        # k's upper bound depends on the maps and is checked at the update.
        check_positive_int(k, "k")
        super().__init__(
            abs=abs,
            channel_reduction=channel_reduction,
            confidence=confidence,
            **kwargs,
        )
        self.score_kwargs["k"] = k


class KendallTau(_PairScore):
    """Streaming mean of :func:`kendall_tau`; NaN samples are counted apart.

    Parameters
    ----------
    abs : bool, default True
        Take the absolute value of the maps before the channel reduction.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How (B, C, H, W) maps are reduced over channels before scoring.
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import KendallTau
    >>> metric = KendallTau()
    >>> metric.update(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    >>> metric.compute()["mean"]
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(kendall_tau)


class SpearmanCorrelation(_PairScore):
    """Streaming mean of :func:`spearman_correlation`.

    Parameters
    ----------
    abs, channel_reduction, confidence, **kwargs
        As in :class:`KendallTau`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import SpearmanCorrelation
    >>> metric = SpearmanCorrelation()
    >>> metric.update(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]))
    >>> metric.compute()["mean"]
    tensor(-1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(spearman_correlation)


class CenterOfMassShift(_PairScore):
    """Streaming mean of :func:`center_of_mass_shift`, in pixels.

    Parameters
    ----------
    abs, channel_reduction, confidence, **kwargs
        As in :class:`KendallTau`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import CenterOfMassShift
    >>> a, b = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    >>> a[0, 0, 0], b[0, 0, 3] = 1.0, 1.0
    >>> metric = CenterOfMassShift()
    >>> metric.update(a, b)
    >>> metric.compute()["mean"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    score_fn = staticmethod(center_of_mass_shift)


class SilhouetteOverlap(_PairScore):
    """Streaming mean of :func:`silhouette_overlap`; ``update(attributions, mask)``.

    Parameters
    ----------
    abs, channel_reduction, confidence, **kwargs
        As in :class:`KendallTau`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import SilhouetteOverlap
    >>> metric = SilhouetteOverlap()
    >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[1, 0]]]))
    >>> metric.compute()["mean"]
    tensor(0.7500, dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(silhouette_overlap)


class PointingGame(_PairScore):
    """Streaming hit rate of :func:`pointing_game`; ``update(attributions, mask)``.

    Parameters
    ----------
    abs, channel_reduction, confidence, **kwargs
        As in :class:`KendallTau`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import PointingGame
    >>> metric = PointingGame()
    >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[0, 1]]]))
    >>> metric.compute()["mean"]
    tensor(0., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(pointing_game)


class RelevanceRankAccuracy(_PairScore):
    """Streaming mean of :func:`relevance_rank_accuracy`.

    Parameters
    ----------
    abs, channel_reduction, confidence, **kwargs
        As in :class:`KendallTau`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import RelevanceRankAccuracy
    >>> metric = RelevanceRankAccuracy()
    >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[1, 0]]]))
    >>> metric.compute()["mean"]
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(relevance_rank_accuracy)


class MaskIoU(_PairScore):
    """Streaming mean of :func:`mask_iou`; ``update(attributions, mask)``.

    Parameters
    ----------
    threshold, threshold_mode
        As in :func:`mask_iou`: which pixels of the map form its region.
    abs, channel_reduction
        As in :func:`mask_iou`.
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import MaskIoU
    >>> metric = MaskIoU(threshold=0.5)
    >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[1, 0]]]))
    >>> metric.compute()["mean"]
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(mask_iou)

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        threshold_mode: ThresholdMode = "max_fraction",
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        check_threshold(threshold, threshold_mode)
        super().__init__(
            abs=abs,
            channel_reduction=channel_reduction,
            confidence=confidence,
            **kwargs,
        )
        self.score_kwargs.update(threshold=threshold, threshold_mode=threshold_mode)
