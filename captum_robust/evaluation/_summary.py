"""Aggregates of per-sample records: means with confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from captum_robust.evaluation._records import Record
from captum_robust.metrics import PerSampleMean


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


def summarize(
    records: Sequence[Record], metrics: Sequence[str], *, confidence: float = 0.95
) -> dict[str, Any]:
    """Mean, spread and confidence interval of each score over the records.

    Scores are averaged over the correctly classified samples only, as the
    attack papers do: a misclassified sample is not attacked. NaN scores
    (undefined, e.g. a constant map) are counted apart.

    Parameters
    ----------
    records : sequence of dict
        Records as written by :func:`evaluate_robustness`.
    metrics : sequence of str
        Metric names to summarise.
    confidence : float, default 0.95
        Level of the Student-t confidence intervals.

    Returns
    -------
    dict
        ``samples``, ``correct``, ``clean_accuracy``, ``label_kept_rate`` and
        one dict per score with ``mean``, ``std``, ``count``, ``nan_count``,
        ``ci_low`` and ``ci_high`` (floats).

    Examples
    --------
    >>> records = [
    ...     {"index": 0, "correct": True, "label_kept": True, "topk": 0.5},
    ...     {"index": 1, "correct": True, "label_kept": True, "topk": 0.7},
    ...     {"index": 2, "correct": False, "label_kept": True, "topk": 1.0},
    ... ]
    >>> round(summarize(records, ["topk"])["topk"]["mean"], 3)
    0.6
    """
    correct = [r for r in records if r["correct"]]
    summary: dict[str, Any] = {
        "samples": len(records),
        "correct": len(correct),
        "clean_accuracy": len(correct) / len(records) if records else float("nan"),
        "label_kept_rate": (
            sum(bool(r["label_kept"]) for r in correct) / len(correct)
            if correct
            else float("nan")
        ),
    }
    for column in score_columns(metrics):
        values = [r[column] for r in correct if column in r]
        if not values:
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
