"""Aggregates of per-sample records: means with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import scipy.stats
import torch
from torch import Tensor

from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_confidence
from captum_robust.evaluation._records import Record
from captum_robust.metrics import PerSampleMean
from captum_robust.metrics._registry import DEFAULT_METRIC_NAMES
from captum_robust.metrics._registry import METRIC_NAMES as METRICS
from captum_robust.metrics._registry import score_fields

# evaluate_robustness's default metrics (kept here so that the summary does not
# import the evaluation loop); METRICS is every name it accepts.
METRIC_NAMES = DEFAULT_METRIC_NAMES


class _ValueMean(PerSampleMean):
    """PerSampleMean over values that are already computed."""

    score_fn = staticmethod(lambda values: values)


def check_metric_names(metrics: object) -> list[str]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(
            "`metrics` must be a sequence of metric names (e.g. ['topk']), got "
            f"{type(metrics).__name__}."
        )
    for name in metrics:
        check_choice(name, METRICS, "metrics")
    return list(metrics)


def _score(value: Any) -> float:
    # Records read back from JSON by hand hold null for an undefined score.
    return math.nan if value is None else float(value)


def _check_records(records: object) -> list[Mapping[str, Any]]:
    if isinstance(records, (str, Mapping)) or not isinstance(records, Sequence):
        raise TypeError(
            "`records` must be a sequence of dicts (as written by "
            f"evaluate_robustness), got {type(records).__name__}."
        )
    for position, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(
                f"`records` must hold dicts, got {type(record).__name__} at "
                f"position {position}."
            )
        missing = [key for key in ("correct", "label_kept") if key not in record]
        if missing:
            raise ValueError(
                f"`records[{position}]` lacks {missing}: records must come from "
                "evaluate_robustness (with 'correct', 'label_kept' and the scores)."
            )
    return list(records)


def summarize(
    records: Sequence[Record], metrics: Sequence[str], *, confidence: float = 0.95
) -> dict[str, Any]:
    """Mean, spread and confidence interval of each score over the attacked samples.

    Only attacked samples are averaged: with ``target="label"`` (the papers'
    protocol) the correctly classified ones, since a misclassified sample is
    not attacked and its unchanged map would score as perfectly robust; with
    ``target="predicted"`` every sample. Records without an ``attacked`` field
    (older files) count their correctly classified samples. NaN scores
    (undefined, e.g. a constant or all-zero map) are left out of the mean and
    the interval and counted in ``nan_count``.

    Parameters
    ----------
    records : sequence of dict
        Records as written by :func:`evaluate_robustness`.
    metrics : sequence of str
        Metric names to summarise (any of "topk", "kendall", "spearman",
        "center_shift", "silhouette").
    confidence : float, default 0.95
        Level of the Student-t confidence intervals.

    Returns
    -------
    dict
        ``samples`` (records), ``correct``, ``evaluated`` (attacked samples, the
        ones averaged), ``skipped`` (the others), ``clean_accuracy``,
        ``label_kept_rate`` (over the attacked samples), ``confidence`` and,
        for each score that at least one attacked sample has, a dict with
        ``mean``, ``std``, ``count`` (finite scores averaged), ``nan_count``,
        ``ci_low`` and ``ci_high`` (floats; NaN when every score is NaN).

    Examples
    --------
    >>> records = [
    ...     {"index": 0, "correct": True, "label_kept": True, "topk": 0.5},
    ...     {"index": 1, "correct": True, "label_kept": True, "topk": 0.7},
    ...     {"index": 2, "correct": True, "label_kept": True, "topk": float("nan")},
    ...     {"index": 3, "correct": False, "label_kept": True, "topk": 1.0},
    ... ]
    >>> summary = summarize(records, ["topk"])
    >>> round(summary["topk"]["mean"], 3), summary["topk"]["nan_count"]
    (0.6, 1.0)
    >>> summary["evaluated"], summary["skipped"]
    (3, 1)
    """
    records = _check_records(records)
    metrics = check_metric_names(metrics)
    check_confidence(confidence)
    correct = [r for r in records if r["correct"]]
    attacked = [r for r in records if r.get("attacked", r["correct"])]
    summary: dict[str, Any] = {
        "samples": len(records),
        "correct": len(correct),
        "evaluated": len(attacked),
        "skipped": len(records) - len(attacked),
        "clean_accuracy": len(correct) / len(records) if records else math.nan,
        "label_kept_rate": (
            sum(bool(r["label_kept"]) for r in attacked) / len(attacked)
            if attacked
            else math.nan
        ),
        "confidence": confidence,
    }
    for column in score_fields(metrics):
        values = [_score(r[column]) for r in attacked if column in r]
        if not values:
            # Nothing was attacked: no entry, as for a metric not computed.
            continue
        # The records are already gathered from every rank: no second reduction.
        statistic = _ValueMean(
            confidence=confidence, score_kwargs={}, sync_on_compute=False
        )
        statistic.update(torch.tensor(values, dtype=torch.float64))
        summary[column] = {key: _to_float(v) for key, v in statistic.compute().items()}
    return summary


def _to_float(value: Tensor) -> float:
    return float(value.item())


def proportion_interval(
    successes: int, total: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval of a proportion (e.g. an accuracy).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at
    0 or ``total`` successes, which small test sets of accurate models reach.

    Parameters
    ----------
    successes, total : int
        Successes out of ``total`` trials (``0 <= successes <= total``).
    confidence : float, default 0.95
        Level of the interval.

    Returns
    -------
    (float, float)
        The interval's ends; NaN for ``total == 0``.

    Examples
    --------
    >>> low, high = proportion_interval(45, 50)
    >>> round(low, 4), round(high, 4)
    (0.7864, 0.9565)
    """
    for name, value in (("successes", successes), ("total", total)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__}.")
    if not 0 <= successes <= total:
        raise ValueError(
            f"`successes` must be in [0, total] = [0, {total}], got {successes}."
        )
    confidence = check_confidence(confidence)
    if total == 0:
        return math.nan, math.nan
    z = float(scipy.stats.norm.ppf(0.5 + confidence / 2))
    p, z2 = successes / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total**2)) / (1 + z2 / total)
    # Clipped: rounding may put an end a hair outside [0, 1] at p = 0 or 1.
    return max(centre - half, 0.0), min(centre + half, 1.0)


def difference_interval(
    first: Mapping[str, Any], second: Mapping[str, Any], *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Difference of two means, ``first - second``, with its Welch t-interval.

    The arguments are metric entries of two summaries (dicts with ``mean``,
    ``std`` and ``count``, as :func:`summarize` writes them), so two reports can
    be compared without their records. Welch's interval does not assume equal
    variances; the two means are taken as independent (two models are
    attacked on different sets of correctly classified samples).

    Parameters
    ----------
    first, second : dict
        Statistics with ``mean``, ``std`` (sample standard deviation) and
        ``count``.
    confidence : float, default 0.95
        Level of the interval.

    Returns
    -------
    (float, float, float)
        The difference and the interval's ends; the interval is NaN when either
        side has fewer than two finite scores.

    Examples
    --------
    >>> a = {"mean": 0.6, "std": 0.1, "count": 20}
    >>> b = {"mean": 0.3, "std": 0.2, "count": 30}
    >>> [round(v, 3) for v in difference_interval(a, b)]
    [0.3, 0.214, 0.386]
    """
    confidence = check_confidence(confidence)
    parts = []
    for name, stats in (("first", first), ("second", second)):
        if not isinstance(stats, Mapping):
            raise TypeError(
                f"`{name}` must be a dict with 'mean', 'std' and 'count', got "
                f"{type(stats).__name__}."
            )
        values = []
        for key in ("mean", "std", "count"):
            value = stats.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"`{name}['{key}']` must be a number, got {value!r}.")
            values.append(float(value))
        parts.append(values)
    (mean_a, std_a, n_a), (mean_b, std_b, n_b) = parts
    difference = mean_a - mean_b
    if not (n_a >= 2 and n_b >= 2 and math.isfinite(std_a) and math.isfinite(std_b)):
        return difference, math.nan, math.nan
    var_a, var_b = std_a**2 / n_a, std_b**2 / n_b
    error = math.sqrt(var_a + var_b)
    if error == 0:
        return difference, difference, difference
    # Welch-Satterthwaite degrees of freedom.
    degrees = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, degrees)) * error
    return difference, difference - half, difference + half


def proportion_difference_interval(
    successes_a: int,
    total_a: int,
    successes_b: int,
    total_b: int,
    *,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of two proportions, ``a - b``, with Newcombe's hybrid score interval.

    The interval combines the two :func:`proportion_interval` (Wilson) intervals
    (Newcombe 1998, method 10), so it behaves at accuracies of 0 or 1 where the
    normal approximation has no width.

    Returns
    -------
    (float, float, float)
        The difference and the interval's ends; NaN when a total is 0.

    Examples
    --------
    >>> [round(v, 4) for v in proportion_difference_interval(45, 50, 40, 50)]
    [0.1, -0.0434, 0.2421]
    """
    low_a, high_a = proportion_interval(successes_a, total_a, confidence=confidence)
    low_b, high_b = proportion_interval(successes_b, total_b, confidence=confidence)
    if total_a == 0 or total_b == 0:
        return math.nan, math.nan, math.nan
    p_a, p_b = successes_a / total_a, successes_b / total_b
    difference = p_a - p_b
    low = difference - math.hypot(p_a - low_a, high_b - p_b)
    high = difference + math.hypot(high_a - p_a, p_b - low_b)
    return difference, low, high
