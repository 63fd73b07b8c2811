"""Metrics of attribution robustness and placement, on what Captum returns.

Functional metrics take attributions (a Tensor (B, ...) or a tuple of them) and
return one value per sample, shape (B,), on the input's device. Streaming
classes accumulate them over batches and across distributed ranks.

Every metric first turns an attribution into a map (``flatten_attribution``,
``spatial_attribution``): absolute value, channel reduction, flattening. Two
attributions are comparable when their maps agree in shape, so a Grad-CAM map
(B, 1, H, W) or (B, H, W) compares with a Saliency map (B, 3, H, W). The
reduction is overflow-safe: a sample whose channel sum would overflow is first
divided by a power of two, which changes no rank, tie or scale-free score.

Degenerate maps. A map that carries no ranking or placement information gives
NaN for that sample, never a perfect or an arbitrary score:

- metrics that rank or pick pixels (``topk_intersection``, ``kendall_tau``,
  ``spearman_correlation``, ``pointing_game``, ``relevance_rank_accuracy``,
  ``mask_iou`` with ``threshold_mode="top_fraction"``) give NaN where a map is
  constant, all zero included: no pixel ranks above another, and a tie rule
  would report 1.0 for two zero maps or the verdict of the first pixel;
- metrics that weigh pixels by their mass or peak (``center_of_mass``,
  ``center_of_mass_shift``, ``silhouette_overlap``, ``mask_iou`` with
  ``threshold_mode="max_fraction"``) give NaN where the mass or peak is zero.
  A uniform non-zero map is a real answer for them (the image centre, the
  object's share of the image, every pixel predicted).

The map is taken after the absolute value (``abs=True``) or, for mask scores,
after negative values are clipped. ObAlEx reports an overlap of 0 for
``sum(E) = 0``; here NaN is used instead, because 0 would count a dead
explanation (vanishing gradients) as a confident miss and bias every mean,
while a NaN sample is left out of the streaming means and counted in their
``nan_count``.
"""

from captum_robust.metrics._center import center_of_mass
from captum_robust.metrics._center import center_of_mass_shift
from captum_robust.metrics._certified import CertifiedTopK
from captum_robust.metrics._certified import certified_topk_overlap
from captum_robust.metrics._certified import topk_overlap_certificate
from captum_robust.metrics._correlation import kendall_tau
from captum_robust.metrics._correlation import spearman_correlation
from captum_robust.metrics._faithfulness import deletion_area
from captum_robust.metrics._faithfulness import deletion_curve
from captum_robust.metrics._faithfulness import insertion_area
from captum_robust.metrics._faithfulness import insertion_curve
from captum_robust.metrics._localisation import mask_iou
from captum_robust.metrics._localisation import pointing_game
from captum_robust.metrics._localisation import relevance_rank_accuracy
from captum_robust.metrics._localisation import silhouette_overlap
from captum_robust.metrics._maps import flatten_attribution
from captum_robust.metrics._maps import prepare_mask
from captum_robust.metrics._maps import spatial_attribution
from captum_robust.metrics._sensitivity import avg_sensitivity
from captum_robust.metrics._sensitivity import local_lipschitz_estimate
from captum_robust.metrics._sensitivity import max_sensitivity
from captum_robust.metrics._sensitivity import random_perturbation_similarity
from captum_robust.metrics._similarity import cosine_similarity
from captum_robust.metrics._similarity import mean_squared_error
from captum_robust.metrics._similarity import pearson_correlation
from captum_robust.metrics._similarity import structural_similarity
from captum_robust.metrics._stability import relative_input_stability
from captum_robust.metrics._stability import relative_output_stability
from captum_robust.metrics._stability import relative_representation_stability
from captum_robust.metrics._streaming import CenterOfMassShift
from captum_robust.metrics._streaming import KendallTau
from captum_robust.metrics._streaming import MaskIoU
from captum_robust.metrics._streaming import PerSampleMean
from captum_robust.metrics._streaming import PointingGame
from captum_robust.metrics._streaming import RelevanceRankAccuracy
from captum_robust.metrics._streaming import SilhouetteOverlap
from captum_robust.metrics._streaming import SpearmanCorrelation
from captum_robust.metrics._streaming import TopKIntersection
from captum_robust.metrics._streaming_certified import CertifiedTopKOverlap
from captum_robust.metrics._streaming_similarity import AvgSensitivity
from captum_robust.metrics._streaming_similarity import CosineSimilarity
from captum_robust.metrics._streaming_similarity import DeletionArea
from captum_robust.metrics._streaming_similarity import InsertionArea
from captum_robust.metrics._streaming_similarity import LocalLipschitzEstimate
from captum_robust.metrics._streaming_similarity import MaxSensitivity
from captum_robust.metrics._streaming_similarity import MeanSquaredError
from captum_robust.metrics._streaming_similarity import PearsonCorrelation
from captum_robust.metrics._streaming_similarity import RandomPerturbationSimilarity
from captum_robust.metrics._streaming_similarity import RelativeInputStability
from captum_robust.metrics._streaming_similarity import RelativeOutputStability
from captum_robust.metrics._streaming_similarity import RelativeRepresentationStability
from captum_robust.metrics._streaming_similarity import StructuralSimilarity
from captum_robust.metrics._topk import topk_intersection

__all__ = [
    "CertifiedTopK",
    "CertifiedTopKOverlap",
    "certified_topk_overlap",
    "topk_overlap_certificate",
    "StructuralSimilarity",
    "RelativeRepresentationStability",
    "RelativeOutputStability",
    "RelativeInputStability",
    "RandomPerturbationSimilarity",
    "PearsonCorrelation",
    "MeanSquaredError",
    "MaxSensitivity",
    "LocalLipschitzEstimate",
    "InsertionArea",
    "DeletionArea",
    "CosineSimilarity",
    "AvgSensitivity",
    "insertion_curve",
    "insertion_area",
    "deletion_curve",
    "deletion_area",
    "relative_representation_stability",
    "relative_output_stability",
    "relative_input_stability",
    "random_perturbation_similarity",
    "max_sensitivity",
    "local_lipschitz_estimate",
    "avg_sensitivity",
    "structural_similarity",
    "pearson_correlation",
    "mean_squared_error",
    "cosine_similarity",
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
