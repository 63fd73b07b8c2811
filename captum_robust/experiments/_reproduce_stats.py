"""Intervals, paired effects and verdicts of the reproduction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from scipy import stats


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of the finite values and its 95% t-interval (NaN with fewer than 2)."""
    t = torch.tensor(list(values), dtype=torch.float64)
    t = t[t.isfinite()]
    if len(t) == 0:
        return math.nan, math.nan, math.nan
    mean = t.mean().item()
    if len(t) < 2:
        return mean, math.nan, math.nan
    se = t.std().item() / math.sqrt(len(t))
    half = float(stats.t.ppf(0.975, len(t) - 1)) * se
    return mean, mean - half, mean + half


def paired_difference(
    mine: Sequence[float], base: Sequence[float]
) -> tuple[float, float, float, int]:
    """Mean of the per-image differences ``mine - base``, its 95% t-interval, n.

    Images where either value is NaN (a constant map) are left out of both.
    """
    if len(mine) != len(base):
        raise ValueError("paired values must come from the same images")
    a = torch.tensor(list(mine), dtype=torch.float64)
    b = torch.tensor(list(base), dtype=torch.float64)
    keep = a.isfinite() & b.isfinite()
    diff = (a - b)[keep]
    mean, low, high = mean_interval(diff.tolist())
    return mean, low, high, int(keep.sum())


def sign_verdict(low: float, high: float) -> str:
    """Every paper claims its training raises both scores under attack."""
    if math.isnan(low) or math.isnan(high):
        return "undetermined"
    if low > 0:
        return "paper's sign"
    if high < 0:
        return "opposite sign"
    return "no effect shown"


def first_common(correct: dict[str, Sequence[bool]], limit: int, n: int) -> list[int]:
    """The first ``n`` indices below ``limit`` that every model classifies correctly."""
    rows = torch.tensor([list(c)[:limit] for c in correct.values()], dtype=torch.bool)
    common = rows.all(dim=0).nonzero().flatten().tolist()
    return common[:n]


def skipped_counts(
    correct: dict[str, Sequence[bool]], images: Sequence[int], limit: int
) -> dict[str, int]:
    """Per model, how many test images up to the last paired one it misclassifies."""
    end = (images[-1] + 1) if images else limit
    return {name: sum(1 for c in list(c)[:end] if not c) for name, c in correct.items()}


def diagnostics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the attack did, summed or averaged over the attacked images."""
    n = len(records)
    if n == 0:
        return {"images": 0}
    return {
        "images": n,
        "no_gradient": sum(bool(r["no_gradient"]) for r in records),
        "random_steps_mean": sum(r["random_steps"] for r in records) / n,
        "samples_with_random_steps": sum(r["random_steps"] > 0 for r in records),
        "label_kept": sum(bool(r["label_kept"]) for r in records) / n,
        "improved": sum(bool(r["improved"]) for r in records) / n,
        "linf_mean": sum(r["linf"] for r in records) / n,
        "l2_mean": sum(r["l2"] for r in records) / n,
    }


__all__ = [
    "diagnostics",
    "first_common",
    "mean_interval",
    "paired_difference",
    "sign_verdict",
    "skipped_counts",
]
