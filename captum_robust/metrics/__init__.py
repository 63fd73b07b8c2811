"""Metrics of attribution robustness and placement, on what Captum returns.

Functional metrics take attributions (a Tensor (B, ...) or a tuple of them) and
return one value per sample, shape (B,), on the input's device. Streaming
classes accumulate them over batches and across distributed ranks.
"""

from captum_robust.metrics._center import center_of_mass, center_of_mass_shift
from captum_robust.metrics._correlation import kendall_tau, spearman_correlation
from captum_robust.metrics._localisation import (
    mask_iou,
    pointing_game,
    relevance_rank_accuracy,
    silhouette_overlap,
)
from captum_robust.metrics._maps import (
    flatten_attribution,
    prepare_mask,
    spatial_attribution,
)
from captum_robust.metrics._streaming import (
    CenterOfMassShift,
    KendallTau,
    MaskIoU,
    PerSampleMean,
    PointingGame,
    RelevanceRankAccuracy,
    SilhouetteOverlap,
    SpearmanCorrelation,
    TopKIntersection,
)
from captum_robust.metrics._topk import topk_intersection

__all__ = [
    "CenterOfMassShift",
    "KendallTau",
    "MaskIoU",
    "PerSampleMean",
    "PointingGame",
    "RelevanceRankAccuracy",
    "SilhouetteOverlap",
    "SpearmanCorrelation",
    "TopKIntersection",
    "center_of_mass",
    "center_of_mass_shift",
    "flatten_attribution",
    "kendall_tau",
    "mask_iou",
    "pointing_game",
    "prepare_mask",
    "relevance_rank_accuracy",
    "silhouette_overlap",
    "spatial_attribution",
    "spearman_correlation",
    "topk_intersection",
]
