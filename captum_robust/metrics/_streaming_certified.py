"""Streaming mean of the certified top-k overlap, built like the other
explanation-function metrics of :mod:`captum_robust.metrics._streaming_similarity`.
"""

from __future__ import annotations

from typing import Any

from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._certified import BOUNDS
from captum_robust.metrics._certified import certified_topk_overlap
from captum_robust.metrics._certified import check_sparsity
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._streaming_similarity import _BoundMean


class CertifiedTopKOverlap(_BoundMean):
    """Streaming mean of :func:`certified_topk_overlap`.

    ``CertifiedTopKOverlap(explanation_func, k=..., radius=..., sigma=...,
    **options)``, then ``update(inputs, target=...)`` per batch; the options
    are those of the function (``return_details`` excepted), plus
    ``confidence`` and ``dist_kwargs`` (passed to ``torchmetrics.Metric``).
    ``compute()["mean"]`` is the mean certified fraction ``m / K`` over every
    sample seen, equal to the mean of the function's results over the same
    batches (each batch drawn from the same ``seed``, as the function does).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import CertifiedTopKOverlap
    >>> metric = CertifiedTopKOverlap(
    ...     lambda z, target=None: z, k=2, radius=0.5, sigma=0.5,
    ...     sparsity=1 / 3, n_samples=512)
    >>> metric.update(torch.tensor([[4.0, 3.0, 0.0, 0.0, 0.0, 0.0]]))
    >>> metric.update(torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    >>> metric.compute()["mean"]
    tensor(0.5000, dtype=torch.float64)
    """

    higher_is_better = True
    function = staticmethod(certified_topk_overlap)

    def __init__(
        self,
        explanation_func: object,
        *,
        k: int,
        radius: float,
        sigma: float,
        confidence: float = 0.95,
        dist_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if "return_details" in options:
            raise ValueError(
                "`return_details` is not an option of CertifiedTopKOverlap; it "
                "averages the certified fraction."
            )
        # Checked here so that a bad option fails at once, not at the first
        # update; k's upper bound and the sample size depend on the maps.
        check_positive_int(k, "k")
        check_number(radius, "radius", minimum=0.0)
        check_number(sigma, "sigma", minimum=0.0, strict_minimum=True)
        if "sparsity" in options:
            check_sparsity(options["sparsity"])
        if "bound" in options:
            check_str_choice(options["bound"], BOUNDS, "bound")
        check_map_options(
            options.get("abs", True), options.get("channel_reduction", "sum")
        )
        super().__init__(
            explanation_func,
            confidence=confidence,
            dist_kwargs=dist_kwargs,
            k=k,
            radius=radius,
            sigma=sigma,
            **options,
        )
