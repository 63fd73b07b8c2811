"""The verdict sentences of a report: each model against a reference model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_str
from captum_robust.evaluation._report_table import ReportRow
from captum_robust.evaluation._report_table import check_rows
from captum_robust.evaluation._summary import difference_interval
from captum_robust.evaluation._summary import proportion_difference_interval
from captum_robust.evaluation._summary import proportion_interval
from captum_robust.metrics._registry import METRICS

RANDOM_ATTACK = "RandomAttack"
# Metrics whose higher values mean a more robust attribution, with the words of
# a verdict sentence.
VERDICT_METRICS = {
    name: m.verdict
    for name, m in METRICS.items()
    if m.verdict is not None and m.robust_when_higher
}


def _find(
    rows: Sequence[ReportRow], model: str, attribution: str, attack: str
) -> ReportRow | None:
    for row in rows:
        if (row.model, row.attribution, row.attack) == (model, attribution, attack):
            return row
    return None


def mean_stats(row: ReportRow | None, metric: str) -> Mapping[str, Any] | None:
    """The metric's statistics when they hold a finite mean, std and count."""
    if row is None:
        return None
    stats = row.summary.get(metric)
    if not isinstance(stats, Mapping):
        return None
    for key in ("mean", "std", "count"):
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
    return stats if math.isfinite(stats["mean"]) else None


def accuracy_counts(summary: Mapping[str, Any]) -> tuple[int, int] | None:
    correct, samples = summary.get("correct"), summary.get("samples")
    if (
        isinstance(correct, int)
        and isinstance(samples, int)
        and not isinstance(correct, bool)
        and 0 <= correct <= samples
        and samples > 0
    ):
        return correct, samples
    return None


def unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def main_attack(rows: Sequence[ReportRow], attack: str | None) -> str | None:
    if attack is not None:
        return attack
    return next((r.attack for r in rows if r.attack != RANDOM_ATTACK), None)


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _clear(low: float, high: float) -> bool:
    return math.isfinite(low) and math.isfinite(high) and (low > 0 or high < 0)


def _effect(
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
    reference: str,
    word: str,
    attribution: str,
    confidence: float,
) -> str:
    ours, base = float(mine["mean"]), float(theirs["mean"])
    difference, low, high = difference_interval(mine, theirs, confidence=confidence)
    numbers = f"{ours:.2f} vs {base:.2f}"
    if not _clear(low, high):
        why = "too few samples" if math.isnan(low) else "difference"
        if math.isfinite(low):
            why += f" {difference:+.2f} [{low:+.2f}, {high:+.2f}]"
        return (
            f"has no clear effect at this budget with {attribution} ({numbers}, {why})"
        )
    interval = f"[{low:+.2f}, {high:+.2f}]"
    if base > 0:
        only = "only " if ours < base else ""
        return (
            f"keeps {only}{ours / base:.1f}x the {word} of the {reference} model "
            f"with {attribution} ({numbers}, difference {interval})"
        )
    return (
        f"keeps {ours:.2f} of its {word} with {attribution} where the "
        f"{reference} model keeps {base:.2f} (difference {interval})"
    )


def _accuracy_clause(
    mine: Mapping[str, Any], theirs: Mapping[str, Any], confidence: float
) -> str:
    a, b = accuracy_counts(mine), accuracy_counts(theirs)
    if a is None or b is None:
        return ""
    difference, low, high = proportion_difference_interval(
        *a, *b, confidence=confidence
    )
    noise = "" if _clear(low, high) else ", within noise"
    return (
        f", at {100 * difference:+.1f} points of clean accuracy{noise} "
        f"({a[0] / a[1]:.1%} vs {b[0] / b[1]:.1%})"
    )


def verdicts(
    rows: Sequence[ReportRow],
    *,
    reference: str = "natural",
    attack: str | None = None,
    metric: str = "topk",
    confidence: float = 0.95,
) -> dict[str, str]:
    """One generated sentence per model: its effect against a reference model.

    For every model other than ``reference`` and every attribution both were
    evaluated with under ``attack``, the sentence gives the ratio of the
    metric's means ("keeps 2.1x the top-k pixels of the natural model") and
    the change of clean accuracy in percentage points. An effect is called
    clear only when the ``confidence`` Welch interval of the difference of
    means (:func:`~captum_robust.evaluation._summary.difference_interval`)
    excludes 0; otherwise the sentence says "no clear effect at this budget".
    An accuracy change whose Newcombe interval includes 0 is marked "within
    noise". The reference's own sentence says whether ``attack`` does clearly
    more harm than :class:`~captum_robust.attacks.RandomAttack` at the same
    budget, when the rows hold that baseline: without it, the verdicts of the
    other models mean little.

    Parameters
    ----------
    rows : sequence of ReportRow
        The evaluations (summaries as written by :func:`summarize`).
    reference : str, default "natural"
        The model the others are compared with.
    attack : str, optional
        The attack compared; by default the first attack of the rows that is
        not "RandomAttack".
    metric : str, default "topk"
        One of "topk", "kendall", "spearman", "pearson", "cosine", "ssim" (the
        scores for which higher means more robust).
    confidence : float, default 0.95
        Level of the intervals.

    Returns
    -------
    dict
        Model name to sentence, the reference first; models without a
        comparable row are left out.

    Examples
    --------
    >>> def summary(mean, std, correct):
    ...     return {"samples": 1000, "correct": correct,
    ...             "topk": {"mean": mean, "std": std, "count": correct}}
    >>> rows = [
    ...     ReportRow("natural", "Saliency", "TopKAttack", summary(0.3, 0.1, 970)),
    ...     ReportRow("smooth", "Saliency", "TopKAttack", summary(0.63, 0.1, 910)),
    ... ]
    >>> print(verdicts(rows)["smooth"])  # doctest: +NORMALIZE_WHITESPACE
    smooth: under TopKAttack it keeps 2.1x the top-k pixels of the natural model
    with Saliency (0.63 vs 0.30, difference [+0.32, +0.34]), at -6.0 points of
    clean accuracy (91.0% vs 97.0%).
    """
    rows = check_rows(rows)
    check_str(reference, "reference")
    check_str(attack, "attack", optional=True)
    check_choice(metric, tuple(VERDICT_METRICS), "metric")
    # Checked here so that a bad level fails even without comparable rows.
    proportion_interval(0, 0, confidence=confidence)
    attack = main_attack(rows, attack)
    word = VERDICT_METRICS[metric]
    sentences: dict[str, str] = {}
    attributions = unique([row.attribution for row in rows])
    if attack is None:
        return sentences
    harm = []
    for attribution in attributions:
        attacked = mean_stats(_find(rows, reference, attribution, attack), metric)
        random = mean_stats(_find(rows, reference, attribution, RANDOM_ATTACK), metric)
        if attacked is None or random is None or attack == RANDOM_ATTACK:
            continue
        difference, low, high = difference_interval(
            attacked, random, confidence=confidence
        )
        numbers = f"{attacked['mean']:.2f} vs {random['mean']:.2f}"
        if math.isfinite(high) and high < 0:
            harm.append(
                f"lowers the {word} with {attribution} to "
                f"{attacked['mean']:.2f} from {random['mean']:.2f} under "
                f"{RANDOM_ATTACK} (difference [{low:+.2f}, {high:+.2f}])"
            )
        else:
            harm.append(
                f"does no clearly more harm than {RANDOM_ATTACK} with "
                f"{attribution} ({numbers})"
            )
    if harm:
        sentences[reference] = f"{reference}: {attack} at this budget {_join(harm)}."
    for model in unique([row.model for row in rows]):
        if model == reference:
            continue
        effects, accuracy = [], ""
        for attribution in attributions:
            mine_row = _find(rows, model, attribution, attack)
            theirs_row = _find(rows, reference, attribution, attack)
            mine = mean_stats(mine_row, metric)
            theirs = mean_stats(theirs_row, metric)
            if mine is None or theirs is None:
                continue
            effects.append(
                _effect(mine, theirs, reference, word, attribution, confidence)
            )
            if not accuracy:
                accuracy = _accuracy_clause(
                    mine_row.summary, theirs_row.summary, confidence
                )
        if effects:
            sentences[model] = f"{model}: under {attack} it {_join(effects)}{accuracy}."
    return sentences
