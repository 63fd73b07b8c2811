"""The metrics the evaluation pipeline, its report, the command and the attacks
know by name.

One entry per name says how to score two maps, which way is robust, whether the
loader must give object masks, and the record fields and table columns the
scores fill. The evaluation loop, the summary, the report's table, the
command's ``--metrics`` choices and the attacks' ``criterion`` choices are all
read from here, so a metric is added to all of them by adding its entry (and,
for a new metric, writing its function).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from torch import Tensor

from captum_robust.metrics._center import center_of_mass_shift
from captum_robust.metrics._certified import certified_topk_overlap
from captum_robust.metrics._correlation import kendall_tau
from captum_robust.metrics._correlation import kendall_tau_flat
from captum_robust.metrics._correlation import spearman_correlation
from captum_robust.metrics._correlation import spearman_flat
from captum_robust.metrics._localisation import silhouette_overlap
from captum_robust.metrics._similarity import cosine_similarity
from captum_robust.metrics._similarity import mean_squared_error
from captum_robust.metrics._similarity import pearson_correlation
from captum_robust.metrics._similarity import structural_similarity
from captum_robust.metrics._topk import topk_intersection
from captum_robust.metrics._topk import topk_intersection_flat


@dataclass(frozen=True)
class Column:
    """A record field filled by a metric, and how the report's table shows it."""

    field: str
    label: str
    number_format: str


@dataclass(frozen=True)
class ScoreInputs:
    """What a batch of the evaluation gives its metrics.

    The maps of the attribution at the inputs (``before``) and at the attacked
    inputs (``after``), the loader's masks (or None), the evaluation's ``k``;
    for metrics that explain the inputs themselves, the inputs, the explained
    classes, the attribution with its keyword arguments, and the options of
    such metrics by name (``options["certified"]``: keywords of
    ``certified_topk_overlap``).
    """

    before: Tensor
    after: Tensor
    masks: Tensor | None
    k: int
    inputs: Tensor | None = None
    targets: Tensor | None = None
    attribution: Any = None
    attribution_kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredMetric:
    """A metric the pipeline knows by name.

    ``score(batch)`` (a :class:`ScoreInputs`) returns one (B,) tensor per
    column, keyed by the column's field. ``robust_when_higher`` is the
    direction a robust explanation takes (top-k intersection: higher; centre
    shift: lower).
    ``attack_goal`` is, for a metric an attack can use as its criterion, the
    value at which the explanation has moved as far as it can (None: no such
    bound, or not a criterion); ``flat_score(map0, maps, k)`` is the criterion
    on the flattened normalised maps of an attack's inner loop. ``verdict`` names
    the metric in the report's verdict sentences (None: the report draws no
    verdict from it). ``needs_options``: the metric cannot run without its
    options (``ScoreInputs.options[name]``).
    """

    name: str
    score: Callable[[ScoreInputs], dict[str, Tensor]]
    columns: tuple[Column, ...]
    robust_when_higher: bool
    needs_mask: bool = False
    needs_options: bool = False
    default: bool = False
    criterion: bool = False
    attack_goal: float | None = None
    flat_score: Callable[[Tensor, Tensor, int], Tensor] | None = None
    verdict: str | None = None


def _pair(fn: Callable[[Tensor, Tensor], Tensor], name: str) -> Callable[..., dict]:
    def score(batch: ScoreInputs) -> dict:
        return {name: fn(batch.before, batch.after)}

    return score


def _topk(batch: ScoreInputs) -> dict:
    return {"topk": topk_intersection(batch.before, batch.after, batch.k)}


def _silhouette(batch: ScoreInputs) -> dict:
    return {
        "silhouette_before": silhouette_overlap(batch.before, batch.masks),
        "silhouette_after": silhouette_overlap(batch.after, batch.masks),
    }


def _certified(batch: ScoreInputs) -> dict:
    # The certificate is of the clean input's smoothed sparsified map; the
    # attack plays no part in it.
    overlap = certified_topk_overlap(
        batch.attribution,
        batch.inputs,
        batch.targets,
        k=batch.k,
        explanation_kwargs=dict(batch.attribution_kwargs),
        **batch.options["certified"],
    )
    return {"certified": overlap}


def _column(name: str, label: str, number_format: str = "{:.3f}") -> tuple:
    return (Column(name, label, number_format),)


METRICS: dict[str, RegisteredMetric] = {
    m.name: m
    for m in (
        RegisteredMetric(
            "topk",
            _topk,
            _column("topk", "top-k"),
            robust_when_higher=True,
            verdict="top-k pixels",
            default=True,
            criterion=True,
            attack_goal=0.0,
            flat_score=topk_intersection_flat,
        ),
        RegisteredMetric(
            "kendall",
            _pair(kendall_tau, "kendall"),
            _column("kendall", "kendall"),
            robust_when_higher=True,
            verdict="Kendall rank correlation",
            default=True,
            criterion=True,
            attack_goal=-1.0,
            flat_score=lambda a, b, k: kendall_tau_flat(a, b),
        ),
        RegisteredMetric(
            "spearman",
            _pair(spearman_correlation, "spearman"),
            _column("spearman", "spearman"),
            robust_when_higher=True,
            verdict="Spearman rank correlation",
            default=True,
            criterion=True,
            attack_goal=-1.0,
            flat_score=lambda a, b, k: spearman_flat(a, b),
        ),
        RegisteredMetric(
            "center_shift",
            _pair(center_of_mass_shift, "center_shift"),
            _column("center_shift", "shift px", "{:.2f}"),
            robust_when_higher=False,
            default=True,
            # The attacks score it on the maps' shape, with state of their own.
            criterion=True,
        ),
        RegisteredMetric(
            "pearson",
            _pair(pearson_correlation, "pearson"),
            _column("pearson", "pearson"),
            robust_when_higher=True,
            verdict="Pearson correlation",
        ),
        RegisteredMetric(
            "cosine",
            _pair(cosine_similarity, "cosine"),
            _column("cosine", "cosine"),
            robust_when_higher=True,
            verdict="cosine similarity",
        ),
        RegisteredMetric(
            "mse",
            _pair(mean_squared_error, "mse"),
            _column("mse", "mse", "{:.3g}"),
            robust_when_higher=False,
        ),
        RegisteredMetric(
            "ssim",
            _pair(structural_similarity, "ssim"),
            _column("ssim", "ssim"),
            robust_when_higher=True,
            verdict="structural similarity",
        ),
        RegisteredMetric(
            "silhouette",
            _silhouette,
            (
                Column("silhouette_before", "silh. before", "{:.3f}"),
                Column("silhouette_after", "silh. after", "{:.3f}"),
            ),
            robust_when_higher=True,
            needs_mask=True,
            default=True,
        ),
        RegisteredMetric(
            "certified",
            _certified,
            _column("certified", "cert. top-k"),
            robust_when_higher=True,
            needs_options=True,
            verdict="certified top-k overlap",
        ),
    )
}

# The table's order of metric columns (it is the order of METRICS but for the
# centre shift and silhouette, which read best at the right).
TABLE_ORDER = (
    "topk",
    "kendall",
    "spearman",
    "pearson",
    "cosine",
    "mse",
    "ssim",
    "center_shift",
    "silhouette",
    "certified",
)

# Scores are computed, and records filled, in the order of METRICS.
DEFAULT_METRIC_NAMES = tuple(name for name, m in METRICS.items() if m.default)
METRIC_NAMES = DEFAULT_METRIC_NAMES + tuple(
    name for name, m in METRICS.items() if not m.default
)
CRITERION_NAMES = tuple(name for name, m in METRICS.items() if m.criterion)


def score_batch(metrics: Sequence[str], batch: ScoreInputs) -> dict[str, Tensor]:
    """Every column of ``metrics`` for one batch of the evaluation."""
    scores: dict[str, Tensor] = {}
    for name, metric in METRICS.items():
        # Without masks from the loader a mask score has nothing to score.
        if name in metrics and not (metric.needs_mask and batch.masks is None):
            scores.update(metric.score(batch))
    return scores


def score_fields(metrics: Sequence[str]) -> list[str]:
    """The record fields that hold the scores of ``metrics``."""
    return [c.field for name in metrics for c in METRICS[name].columns]


def table_columns() -> tuple[Column, ...]:
    """The metric columns of the report's table, in its order."""
    return tuple(c for name in TABLE_ORDER for c in METRICS[name].columns)
