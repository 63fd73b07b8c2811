"""Aggregates of per-sample records: means with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from captum_robust._utils.validation import check_choice, check_number
from captum_robust.evaluation._records import Record
from captum_robust.metrics import PerSampleMean

# The metric names of evaluate_robustness (kept here so that the summary does
# not import the evaluation loop).
METRIC_NAMES = ("topk", "kendall", "spearman", "center_shift", "silhouette")
# Map similarities between the two attributions, chosen by name (not default).
SIMILARITY_METRIC_NAMES = ("pearson", "cosine", "mse", "ssim")


class _ValueMean(PerSampleMean):
    """PerSampleMean over values that are already computed."""

    score_fn = staticmethod(lambda values: values)


def score_columns(metrics: Sequence[str]) -> list[str]:
    """Record fields holding the scores of ``metrics``."""
    columns = []
    for name in metrics:
        if name == "silhouette":
            columns += ["silhouette_before", "silhouette_after"]
        else:
            columns.append(name)
    return columns


def check_metric_names(metrics: object) -> list[str]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(
            "`metrics` must be a sequence of metric names (e.g. ['topk']), got "
            f"{type(metrics).__name__}."
        )
    for name in metrics:
        check_choice(name, METRIC_NAMES + SIMILARITY_METRIC_NAMES, "metrics")
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
    check_number(confidence, "confidence", minimum=0.0, maximum=1.0)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}.")
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
    for column in score_columns(metrics):
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
