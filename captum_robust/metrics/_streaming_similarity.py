"""Streaming means of the similarity, sensitivity and faithfulness metrics.

Built like :mod:`captum_robust.metrics._streaming`: float64 running sums that
reduce across distributed ranks, NaN samples counted in ``nan_count``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._faithfulness import deletion_area
from captum_robust.metrics._faithfulness import insertion_area
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._sensitivity import avg_sensitivity
from captum_robust.metrics._sensitivity import local_lipschitz_estimate
from captum_robust.metrics._sensitivity import max_sensitivity
from captum_robust.metrics._sensitivity import random_perturbation_similarity
from captum_robust.metrics._similarity import MSE_REDUCTIONS
from captum_robust.metrics._similarity import NORMALIZATIONS
from captum_robust.metrics._similarity import cosine_similarity
from captum_robust.metrics._similarity import mean_squared_error
from captum_robust.metrics._similarity import pearson_correlation
from captum_robust.metrics._similarity import structural_similarity
from captum_robust.metrics._stability import relative_input_stability
from captum_robust.metrics._stability import relative_output_stability
from captum_robust.metrics._stability import relative_representation_stability
from captum_robust.metrics._streaming import PerSampleMean
from captum_robust.metrics._streaming import _PairScore


class _PairScoreWithOptions(_PairScore):
    """A :class:`_PairScore` whose constructor also takes ``options``, more
    keyword arguments of its score function (part of the signature of the
    classes built on it)."""

    def __init__(
        self,
        *,
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            abs=abs,
            channel_reduction=channel_reduction,
            confidence=confidence,
            **kwargs,
        )
        self.score_kwargs.update(options or {})


class PearsonCorrelation(_PairScoreWithOptions):
    """Streaming mean of :func:`pearson_correlation`; constant maps counted apart.

    Parameters
    ----------
    abs, channel_reduction
        As in :func:`pearson_correlation`.
    options : dict, optional
        More keyword arguments of :func:`pearson_correlation` (it has none).
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import PearsonCorrelation
    >>> metric = PearsonCorrelation()
    >>> metric.update(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 6.0]]))
    >>> metric.update(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]]))
    >>> metric.compute()["mean"], metric.compute()["nan_count"]
    (tensor(1., dtype=torch.float64), tensor(1., dtype=torch.float64))
    """

    higher_is_better = True
    score_fn = staticmethod(pearson_correlation)


class CosineSimilarity(_PairScoreWithOptions):
    """Streaming mean of :func:`cosine_similarity`.

    Parameters
    ----------
    abs, channel_reduction, options, confidence, **kwargs
        As in :class:`PearsonCorrelation`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import CosineSimilarity
    >>> metric = CosineSimilarity()
    >>> metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    >>> metric.compute()["mean"]
    tensor(0.7071, dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(cosine_similarity)


class MeanSquaredError(_PairScore):
    """Streaming mean of :func:`mean_squared_error`.

    Parameters
    ----------
    normalize, reduction, abs, channel_reduction
        As in :func:`mean_squared_error`.
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import MeanSquaredError
    >>> metric = MeanSquaredError(normalize="sum")
    >>> metric.update(torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 1.0]]))
    >>> metric.compute()["mean"]
    tensor(0.2500, dtype=torch.float64)
    """

    higher_is_better = False
    score_fn = staticmethod(mean_squared_error)

    def __init__(
        self,
        *,
        normalize: str = "none",
        reduction: str = "mean",
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        check_str_choice(normalize, NORMALIZATIONS, "normalize")
        check_str_choice(reduction, MSE_REDUCTIONS, "reduction")
        super().__init__(
            abs=abs,
            channel_reduction=channel_reduction,
            confidence=confidence,
            **kwargs,
        )
        self.score_kwargs.update(normalize=normalize, reduction=reduction)


class StructuralSimilarity(_PairScore):
    """Streaming mean of :func:`structural_similarity`.

    Parameters
    ----------
    win_size, sigma, k1, k2, use_sample_covariance, abs, channel_reduction
        As in :func:`structural_similarity`; checked at the first update.
    confidence, **kwargs
        As in :class:`PerSampleMean`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import StructuralSimilarity
    >>> metric = StructuralSimilarity()
    >>> a = torch.rand(2, 9, 9, generator=torch.Generator().manual_seed(0))
    >>> metric.update(a, a)
    >>> metric.compute()["mean"]
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True
    score_fn = staticmethod(structural_similarity)

    def __init__(
        self,
        *,
        win_size: int = 7,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        use_sample_covariance: bool = False,
        abs: bool = True,
        channel_reduction: ChannelReduction = "sum",
        confidence: float = 0.95,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            abs=abs,
            channel_reduction=channel_reduction,
            confidence=confidence,
            **kwargs,
        )
        self.score_kwargs.update(
            win_size=win_size,
            sigma=sigma,
            k1=k1,
            k2=k2,
            use_sample_covariance=use_sample_covariance,
        )


class _BoundMean(PerSampleMean):
    """A metric whose first arguments (explanation function, model) are fixed.

    They are kept in a plain tuple, not as attributes: a Metric is an
    nn.Module, and a model assigned to it would join its state dict and follow
    its ``.to()`` calls.
    """

    function: Callable[..., Tensor]

    def __init__(
        self,
        *front: Any,
        confidence: float = 0.95,
        dist_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            confidence=confidence, score_kwargs=options, **(dist_kwargs or {})
        )
        self._front = front

    def update(self, *args: Any, **kwargs: Any) -> None:
        # torchmetrics runs update under no_grad; gradient explanations need it.
        with torch.enable_grad():
            scores = type(self).function(
                *self._front, *args, **kwargs, **self.score_kwargs
            )
        self._add_scores(scores)


class MaxSensitivity(_BoundMean):
    """Streaming mean of :func:`max_sensitivity`.

    ``MaxSensitivity(explanation_func, **options)``, then ``update(inputs,
    target=...)`` per batch.

    Parameters
    ----------
    explanation_func
        As in :func:`max_sensitivity`.
    confidence : float, default 0.95
        Level of the confidence interval returned by ``compute``.
    dist_kwargs : dict, optional
        Passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).
    **options
        Keyword arguments of :func:`max_sensitivity`, the same for every
        batch. ``perturb_func`` may have either form the function accepts:
        ``perturb_func(inputs, generator)`` or Captum's ``perturb_func(inputs,
        perturb_radius)``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import MaxSensitivity
    >>> metric = MaxSensitivity(lambda x: 2 * x, n_perturbations=4)
    >>> metric.update(torch.ones(3, 5))
    >>> metric.compute()["count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(max_sensitivity)


class AvgSensitivity(_BoundMean):
    """Streaming mean of :func:`avg_sensitivity`; used like :class:`MaxSensitivity`.

    Parameters
    ----------
    explanation_func, **options
        The arguments of :func:`avg_sensitivity` but ``inputs`` and ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import AvgSensitivity
    >>> metric = AvgSensitivity(lambda x: 2 * x)
    >>> metric.update(torch.ones(3, 5))
    >>> bool(metric.compute()["mean"] > 0)
    True
    """

    higher_is_better = False
    function = staticmethod(avg_sensitivity)


class LocalLipschitzEstimate(_BoundMean):
    """Streaming mean of :func:`local_lipschitz_estimate`.

    Used like :class:`MaxSensitivity`.

    Parameters
    ----------
    explanation_func, **options
        The arguments of :func:`local_lipschitz_estimate` but ``inputs`` and
        ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import LocalLipschitzEstimate
    >>> metric = LocalLipschitzEstimate(lambda x: 3 * x)
    >>> metric.update(torch.zeros(2, 4))
    >>> metric.compute()["mean"]
    tensor(3.0000, dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(local_lipschitz_estimate)


class RandomPerturbationSimilarity(_BoundMean):
    """Streaming mean of :func:`random_perturbation_similarity`.

    Used like :class:`MaxSensitivity`.

    Parameters
    ----------
    explanation_func, **options
        The arguments of :func:`random_perturbation_similarity` but ``inputs``
        and ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import RandomPerturbationSimilarity
    >>> metric = RandomPerturbationSimilarity(lambda x: x.square())
    >>> metric.update(torch.rand(2, 6))
    >>> bool(metric.compute()["mean"] > 0.9)
    True
    """

    higher_is_better = True
    function = staticmethod(random_perturbation_similarity)


class RelativeInputStability(_BoundMean):
    """Streaming mean of :func:`relative_input_stability`.

    ``RelativeInputStability(explanation_func, model, **options)``, then
    ``update(inputs, target=...)`` per batch.

    Parameters
    ----------
    explanation_func, model, **options
        The arguments of :func:`relative_input_stability` but ``inputs`` and
        ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import RelativeInputStability
    >>> model = torch.nn.Linear(4, 2)
    >>> metric = RelativeInputStability(lambda x, target: x, model)
    >>> metric.update(torch.rand(3, 4) + 1, target=0)
    >>> metric.compute()["count"] + metric.compute()["nan_count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(relative_input_stability)


class RelativeOutputStability(_BoundMean):
    """Streaming mean of :func:`relative_output_stability`.

    Used like :class:`RelativeInputStability`.

    Parameters
    ----------
    explanation_func, model, **options
        The arguments of :func:`relative_output_stability` but ``inputs`` and
        ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import RelativeOutputStability
    >>> model = torch.nn.Linear(4, 2)
    >>> metric = RelativeOutputStability(lambda x, target: x, model)
    >>> metric.update(torch.rand(3, 4) + 1, target=0)
    >>> metric.compute()["count"] + metric.compute()["nan_count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(relative_output_stability)


class RelativeRepresentationStability(_BoundMean):
    """Streaming mean of :func:`relative_representation_stability`.

    Used like :class:`RelativeInputStability`, with ``layer`` among the options.

    Parameters
    ----------
    explanation_func, model, **options
        The arguments of :func:`relative_representation_stability` but
        ``inputs`` and ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import RelativeRepresentationStability
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> metric = RelativeRepresentationStability(
    ...     lambda x, target: x, model, layer="0")
    >>> metric.update(torch.rand(3, 4) + 1, target=0)
    >>> metric.compute()["count"] + metric.compute()["nan_count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(relative_representation_stability)


class InsertionArea(_BoundMean):
    """Streaming mean of :func:`insertion_area`.

    ``InsertionArea(model, **options)``, then ``update(inputs, attributions,
    target=...)``.

    Parameters
    ----------
    model, **options
        The arguments of :func:`insertion_area` but ``inputs``,
        ``attributions`` and ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import InsertionArea
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> metric = InsertionArea(model, n_steps=4)
    >>> metric.update(torch.rand(3, 1, 2, 2), torch.rand(3, 2, 2), target=1)
    >>> metric.compute()["count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = True
    function = staticmethod(insertion_area)


class DeletionArea(_BoundMean):
    """Streaming mean of :func:`deletion_area`; used like :class:`InsertionArea`.

    Parameters
    ----------
    model, **options
        The arguments of :func:`deletion_area` but ``inputs``,
        ``attributions`` and ``target``.
    confidence, dist_kwargs
        As in :class:`MaxSensitivity`.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import DeletionArea
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> metric = DeletionArea(model, n_steps=4)
    >>> metric.update(torch.rand(3, 1, 2, 2), torch.rand(3, 2, 2), target=1)
    >>> metric.compute()["count"]
    tensor(3., dtype=torch.float64)
    """

    higher_is_better = False
    function = staticmethod(deletion_area)
