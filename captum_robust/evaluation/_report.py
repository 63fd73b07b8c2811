"""Reports of evaluations: a text table, JSON and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captum_robust._utils.validation import check_choice
from captum_robust.evaluation._summary import (
    difference_interval,
    proportion_difference_interval,
    proportion_interval,
)

# (summary field, column title, number format); metric columns show the mean
# with its confidence interval when the summary has one.
COUNT_COLUMNS = (
    ("evaluated", "attacked", "{:d}"),
    ("skipped", "skipped", "{:d}"),
)
TABLE_COLUMNS = (
    ("clean_accuracy", "clean acc", "{:.3f}"),
    ("label_kept_rate", "label kept", "{:.3f}"),
    ("topk", "top-k", "{:.3f}"),
    ("kendall", "kendall", "{:.3f}"),
    ("spearman", "spearman", "{:.3f}"),
    ("pearson", "pearson", "{:.3f}"),
    ("cosine", "cosine", "{:.3f}"),
    ("mse", "mse", "{:.3g}"),
    ("ssim", "ssim", "{:.3f}"),
    ("center_shift", "shift px", "{:.2f}"),
    ("silhouette_before", "silh. before", "{:.3f}"),
    ("silhouette_after", "silh. after", "{:.3f}"),
)
_LABELS = 3  # model, attribution, attack


@dataclass
class ReportRow:
    """One evaluation: which model, attribution and attack, and its summary.

    Rows of one model under several attacks (an attack and its
    :class:`~captum_robust.attacks.RandomAttack` baseline, say) sit side by side
    in one table; the attack column tells them apart.

    Parameters
    ----------
    model, attribution, attack : str
        Names shown in the table.
    summary : dict
        As returned by :func:`summarize` (``EvaluationResult.summary``).
    figure_paths : list of Path, optional
        PNG figures inlined in the HTML report.
    """

    model: str
    attribution: str
    attack: str
    summary: dict[str, Any]
    figure_paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("model", "attribution", "attack"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be a str, got {type(value).__name__}.")
        if not isinstance(self.summary, Mapping):
            raise TypeError(
                "`summary` must be a dict (as returned by summarize), got "
                f"{type(self.summary).__name__}."
            )
        paths = self.figure_paths
        if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence):
            raise TypeError(
                f"`figure_paths` must be a list of paths, got {type(paths).__name__}."
            )
        for path in paths:
            if not isinstance(path, (str, Path)):
                raise TypeError(
                    f"`figure_paths` must hold str or Path, got {type(path).__name__}."
                )


def _check_rows(rows: object) -> Sequence[ReportRow]:
    if isinstance(rows, (str, ReportRow)) or not isinstance(rows, Sequence):
        raise TypeError(
            f"`rows` must be a sequence of ReportRow, got {type(rows).__name__}."
        )
    for position, row in enumerate(rows):
        if not isinstance(row, ReportRow):
            raise TypeError(
                "`rows` must be a sequence of ReportRow, got "
                f"{type(row).__name__} at position {position}."
            )
    return rows


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"`{where}` must be a number or a dict with a 'mean', got {value!r}."
        )
    return float(value)


def _statistic(summary: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    value = summary.get(key, math.nan)
    if isinstance(value, Mapping):
        return {
            name: _number(value.get(name), f"{where}['{name}']")
            for name in ("mean", "ci_low", "ci_high", "nan_count")
        }
    return {
        "mean": _number(value, where),
        "ci_low": math.nan,
        "ci_high": math.nan,
        "nan_count": math.nan,
    }


def _format(number_format: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if number_format == "{:d}":
        return str(int(value))
    return number_format.format(value)


def _cell(summary: Mapping[str, Any], key: str, number_format: str, where: str) -> str:
    stats = _statistic(summary, key, f"{where}['{key}']")
    text = _format(number_format, stats["mean"])
    low, high = stats["ci_low"], stats["ci_high"]
    if text != "-" and math.isfinite(low) and math.isfinite(high):
        text += f" [{_format(number_format, low)}, {_format(number_format, high)}]"
    nan_count = stats["nan_count"]
    if math.isfinite(nan_count) and nan_count > 0:
        text += f" ({int(nan_count)} NaN)"
    return text


def _present_columns(rows: Sequence[ReportRow]) -> list[tuple[str, str, str]]:
    return [
        c
        for c in (*COUNT_COLUMNS, *TABLE_COLUMNS)
        if any(c[0] in row.summary for row in rows)
    ]


def _table(rows: Sequence[ReportRow]) -> tuple[list[str], list[list[str]]]:
    columns = _present_columns(rows)
    header = ["model", "attribution", "attack"] + [c[1] for c in columns]
    body = [
        [row.model, row.attribution, row.attack]
        + [
            _cell(row.summary, key, fmt, f"rows[{i}].summary")
            for key, _, fmt in columns
        ]
        for i, row in enumerate(rows)
    ]
    return header, body


def _levels(rows: Sequence[ReportRow]) -> str:
    levels = sorted(
        {
            float(row.summary["confidence"])
            for row in rows
            if isinstance(row.summary.get("confidence"), (int, float))
        }
    )
    return "/".join(f"{100 * level:g}%" for level in levels) or "95%"


def _legend(rows: Sequence[ReportRow], body: list[list[str]]) -> str:
    cells = [cell for line in body for cell in line[_LABELS:]]
    notes = []
    if any("[" in cell for cell in cells):
        notes.append(f"mean [{_levels(rows)} confidence interval] over the attacked")
    else:
        notes.append("means over the attacked")
    notes[0] += " samples; skipped samples (misclassified) are counted, not averaged"
    if any("NaN)" in cell for cell in cells):
        notes.append("(n NaN): samples with an undefined score, left out")
    return "; ".join(notes) + "."


def format_table(rows: Sequence[ReportRow]) -> str:
    """A fixed-width text table of the rows' means and intervals.

    Metric cells read ``mean [low, high]`` when the summary has a confidence
    interval, followed by ``(n NaN)`` when n samples had an undefined score;
    ``attacked`` and ``skipped`` count the samples averaged and left out. A
    line under the table explains the cells when intervals or NaN counts are
    shown.

    Examples
    --------
    >>> row = ReportRow("natural", "Saliency", "TopKAttack",
    ...                 {"clean_accuracy": 0.9, "topk": {"mean": 0.41}})
    >>> print(format_table([row]))
    model    attribution  attack      clean acc  top-k
    natural  Saliency     TopKAttack      0.900  0.410
    >>> baseline = ReportRow("natural", "Saliency", "RandomAttack", {
    ...     "evaluated": 9, "skipped": 1,
    ...     "topk": {"mean": 0.9, "ci_low": 0.85, "ci_high": 0.95, "nan_count": 1}})
    >>> print(format_table([baseline]))  # doctest: +NORMALIZE_WHITESPACE
    model    attribution  attack        attacked  skipped                   top-k
    natural  Saliency     RandomAttack         9        1  0.900 [0.850, 0.950] (1 NaN)
    mean [95% confidence interval] over the attacked samples; skipped samples
    (misclassified) are counted, not averaged; (n NaN): samples with an
    undefined score, left out.
    """
    rows = _check_rows(rows)
    header, body = _table(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        cells = [
            text.ljust(width) if i < _LABELS else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths))
        ]
        return "  ".join(cells).rstrip()

    text = "\n".join(render(line) for line in [header, *body])
    cells = [cell for line in body for cell in line[_LABELS:]]
    if any("[" in cell or "NaN)" in cell for cell in cells):
        text += "\n" + _legend(rows, body)
    return text


RANDOM_ATTACK = "RandomAttack"
# Metrics whose higher values mean a more robust attribution, with the words of
# a verdict sentence.
VERDICT_METRICS = {
    "topk": "top-k pixels",
    "kendall": "Kendall rank correlation",
    "spearman": "Spearman rank correlation",
    "pearson": "Pearson correlation",
    "cosine": "cosine similarity",
    "ssim": "structural similarity",
}
_CHART_METRICS = (
    ("topk", "top-k intersection"),
    ("kendall", "Kendall's tau"),
)


def _find(
    rows: Sequence[ReportRow], model: str, attribution: str, attack: str
) -> ReportRow | None:
    for row in rows:
        if (row.model, row.attribution, row.attack) == (model, attribution, attack):
            return row
    return None


def _mean_stats(row: ReportRow | None, metric: str) -> Mapping[str, Any] | None:
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


def _counts(summary: Mapping[str, Any]) -> tuple[int, int] | None:
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


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _main_attack(rows: Sequence[ReportRow], attack: str | None) -> str | None:
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
    a, b = _counts(mine), _counts(theirs)
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
    rows = _check_rows(rows)
    if not isinstance(reference, str):
        raise TypeError(f"`reference` must be a str, got {type(reference).__name__}.")
    if attack is not None and not isinstance(attack, str):
        raise TypeError(f"`attack` must be a str or None, got {type(attack).__name__}.")
    check_choice(metric, tuple(VERDICT_METRICS), "metric")
    # Checked here so that a bad level fails even without comparable rows.
    proportion_interval(0, 0, confidence=confidence)
    attack = _main_attack(rows, attack)
    word = VERDICT_METRICS[metric]
    sentences: dict[str, str] = {}
    attributions = _unique([row.attribution for row in rows])
    if attack is None:
        return sentences
    harm = []
    for attribution in attributions:
        attacked = _mean_stats(_find(rows, reference, attribution, attack), metric)
        random = _mean_stats(_find(rows, reference, attribution, RANDOM_ATTACK), metric)
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
    for model in _unique([row.model for row in rows]):
        if model == reference:
            continue
        effects, accuracy = [], ""
        for attribution in attributions:
            mine_row = _find(rows, model, attribution, attack)
            theirs_row = _find(rows, reference, attribution, attack)
            mine = _mean_stats(mine_row, metric)
            theirs = _mean_stats(theirs_row, metric)
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


def _interval_error(mean: float, low: float, high: float) -> list[list[float]] | None:
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]


def summary_chart(
    rows: Sequence[ReportRow], *, confidence: float = 0.95
) -> bytes | None:
    """A PNG chart of the rows: per model, top-k and Kendall per attack, accuracy.

    One panel per score (top-k intersection, Kendall's tau; those the rows
    hold), with one marker per attribution and attack and its confidence
    interval, so that an attack and its RandomAttack baseline sit side by side
    for each model; a last panel shows each model's clean accuracy with its
    Wilson interval (:func:`~captum_robust.evaluation._summary.proportion_interval`).

    Returns
    -------
    bytes or None
        The PNG, or None when the rows hold neither score nor accuracy.

    Examples
    --------
    >>> row = ReportRow("natural", "Saliency", "TopKAttack", {"samples": 10,
    ...     "correct": 9, "topk": {"mean": 0.4, "ci_low": 0.3, "ci_high": 0.5}})
    >>> summary_chart([row])[:4]
    b'\\x89PNG'
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = _check_rows(rows)
    metrics = [
        (key, title)
        for key, title in _CHART_METRICS
        if any(isinstance(row.summary.get(key), Mapping) for row in rows)
    ]
    models = _unique([row.model for row in rows])
    accuracy = {}
    for row in rows:
        counts = _counts(row.summary)
        if counts is not None and row.model not in accuracy:
            accuracy[row.model] = counts
    panels = len(metrics) + bool(accuracy)
    if not panels:
        return None
    series = _unique([f"{row.attribution} / {row.attack}" for row in rows])
    attacks = _unique([row.attack for row in rows])
    attributions = _unique([row.attribution for row in rows])
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    colours = {}
    for attack in attacks:
        colours[attack] = (
            "#7f7f7f" if attack == RANDOM_ATTACK else palette[len(colours) % 6]
        )
    markers = dict(zip(attributions, "osD^vP*X" * 4))
    width = [3.0] * len(metrics) + ([2.0] if accuracy else [])
    figure = Figure(figsize=(3.4 * len(metrics) + 2.6, 0.8 + 0.75 * len(models)))
    axes = figure.subplots(1, panels, sharey=True, width_ratios=width, squeeze=False)[0]
    spread = 0.7 / max(len(series), 1)
    for axis, (key, title) in zip(axes, metrics):
        lows = [0.0]
        for row in rows:
            stats = _statistic(row.summary, key, key)
            mean = stats["mean"]
            if math.isnan(mean):
                continue
            name = f"{row.attribution} / {row.attack}"
            y = (
                -models.index(row.model)
                + ((len(series) - 1) / 2 - series.index(name)) * spread
            )
            axis.errorbar(
                mean,
                y,
                xerr=_interval_error(mean, stats["ci_low"], stats["ci_high"]),
                fmt=markers[row.attribution],
                color=colours[row.attack],
                capsize=3,
                markersize=5,
            )
            low = stats["ci_low"] if math.isfinite(stats["ci_low"]) else mean
            lows.append(low)
        axis.set_xlim(min(min(lows) - 0.05, 0.0), 1.02)
        axis.set_title(f"{title} ({100 * confidence:g}% CI)", fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    if accuracy:
        axis = axes[-1]
        for model, (correct, samples) in accuracy.items():
            value = correct / samples
            low, high = proportion_interval(correct, samples, confidence=confidence)
            y = -models.index(model)
            axis.barh(
                y,
                value,
                height=0.5,
                color="#bcbd22",
                xerr=_interval_error(value, low, high),
                capsize=3,
            )
            axis.text(0.02, y, f"{value:.0%}", va="center", fontsize=8)
        axis.set_xlim(0.0, 1.02)
        axis.set_title(f"clean accuracy ({100 * confidence:g}% Wilson)", fontsize=9)
    axes[0].set_yticks([-i for i in range(len(models))], models, fontsize=9)
    axes[0].set_ylim(-len(models) + 0.5, 0.5)
    for axis in axes:
        for y in range(1, len(models)):
            axis.axhline(-y + 0.5, color="#ddd", linewidth=0.8)
        axis.tick_params(axis="x", labelsize=8)
    handles = [
        Line2D([], [], color=colours[a], marker=markers[m], linestyle="", label=name)
        for name in series
        for m, a in [name.split(" / ", 1)]
    ]
    if metrics:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 4),
            fontsize=8,
            frameon=False,
        )
    figure.tight_layout(rect=(0, 0.12 if metrics else 0, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")
    return buffer.getvalue()


def _ordered_figures(
    rows: Sequence[ReportRow], reference: str | None, attack: str | None
) -> tuple[list[tuple[ReportRow, Path]], list[tuple[ReportRow, Path]]]:
    """The lead pair (reference under the attack, most robust model beside it)
    and the other figures, attacks before their random baselines."""
    with_figures = [(row, Path(p)) for row in rows for p in row.figure_paths]
    lead: list[tuple[ReportRow, Path]] = []
    attack = _main_attack(rows, attack)
    if attack is not None:
        candidates = [
            (float(stats["mean"]), row)
            for row in rows
            if row.attack == attack
            and row.model != reference
            and row.figure_paths
            and (stats := _mean_stats(row, "topk")) is not None
        ]
        best = max(candidates, key=lambda c: c[0])[1] if candidates else None
        base = None
        if reference is not None:
            attribution = best.attribution if best is not None else None
            base = next(
                (
                    row
                    for row in rows
                    if row.model == reference
                    and row.attack == attack
                    and row.figure_paths
                    and attribution in (None, row.attribution)
                ),
                None,
            )
        for row in (base, best):
            if row is not None:
                lead.append((row, Path(row.figure_paths[0])))
    taken = {id(row) for row, _ in lead}
    rest = [
        (row, path)
        for row, path in with_figures
        if not (id(row) in taken and path == Path(row.figure_paths[0]))
    ]
    rest.sort(key=lambda item: item[0].attack == RANDOM_ATTACK)
    return lead, rest


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(
    rows: Sequence[ReportRow],
    output_dir: str | Path,
    *,
    title: str = "Attribution robustness report",
    settings: Mapping[str, Any] | None = None,
    reference: str | None = None,
    attack: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json`` and a self-contained ``report.html`` (figures inlined).

    The page shows a chart of the scores (:func:`summary_chart`: top-k
    intersection and Kendall's tau per model and attack with their intervals,
    clean accuracy beside them), the table, and the examples, each attack's
    before its RandomAttack baseline's. The HTML table shows each metric's mean
    with its confidence interval, the number of attacked and skipped samples
    and, per metric, how many samples had an undefined (NaN) score; the JSON
    holds the full summaries.

    Parameters
    ----------
    rows : sequence of ReportRow
        The evaluations to report (e.g. one model under an attack and under its
        random baseline).
    output_dir : str or Path
        Folder for both files; created if missing.
    title : str
        Heading of the HTML page.
    settings : dict, optional
        JSON-serialisable configuration recorded in both files (attack and
        metric parameters).
    reference : str, optional
        A model to compare the others with: the page then opens with one
        :func:`verdicts` sentence per model (also under ``"verdicts"`` in the
        JSON), and its examples start with this model under ``attack`` beside
        the model whose top-k intersection is highest under it.
    attack : str, optional
        The attack of the verdicts and of the leading examples; by default the
        first attack of the rows that is not "RandomAttack".

    Returns
    -------
    (Path, Path)
        The JSON and HTML paths.

    Examples
    --------
    >>> import tempfile
    >>> row = ReportRow("natural", "Saliency", "RandomAttack", {"topk": {"mean": 0.9}})
    >>> json_path, html_path = write_report([row], tempfile.mkdtemp())
    >>> html_path.read_text().count("<tr>")
    2
    """
    rows = _check_rows(rows)
    if not isinstance(output_dir, (str, Path)):
        raise TypeError(
            f"`output_dir` must be a str or a Path, got {type(output_dir).__name__}."
        )
    if not isinstance(title, str):
        raise TypeError(f"`title` must be a str, got {type(title).__name__}.")
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(
            f"`settings` must be a dict or None, got {type(settings).__name__}."
        )
    settings = dict(settings or {})
    if reference is not None and not isinstance(reference, str):
        raise TypeError(
            f"`reference` must be a str or None, got {type(reference).__name__}."
        )
    if attack is not None and not isinstance(attack, str):
        raise TypeError(f"`attack` must be a str or None, got {type(attack).__name__}.")
    for position, row in enumerate(rows):
        for path in row.figure_paths:
            if not Path(path).is_file():
                raise ValueError(
                    f"`rows[{position}].figure_paths` names {path}, which is not a "
                    "file."
                )
    payload = {
        "title": title,
        "settings": settings,
        "rows": [
            {
                "model": row.model,
                "attribution": row.attribution,
                "attack": row.attack,
                "summary": row.summary,
                "figures": [str(p) for p in row.figure_paths],
            }
            for row in rows
        ],
    }
    sentences = {}
    if reference is not None and any(row.model == reference for row in rows):
        sentences = verdicts(rows, reference=reference, attack=attack)
        payload["verdicts"] = sentences
    try:
        text = json.dumps(_json_safe(payload), indent=2)
    except TypeError as error:
        raise TypeError(
            f"`settings` and the rows' summaries must be JSON-serialisable: {error}."
        ) from None
    page = _html(
        rows,
        title,
        settings,
        sentences,
        summary_chart(rows),
        _ordered_figures(rows, reference, attack),
        _main_attack(rows, attack),
    )
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(text)
    html_path = folder / "report.html"
    html_path.write_text(page)
    return json_path, html_path


def _figure_html(row: ReportRow, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = f"{row.model} / {row.attribution} / {row.attack}"
    stats = _mean_stats(row, "topk")
    if stats is not None:
        caption += f": top-k {stats['mean']:.2f}"
    caption = html.escape(caption)
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _html(
    rows: Sequence[ReportRow],
    title: str,
    settings: dict[str, Any],
    sentences: dict[str, str],
    chart: bytes | None,
    figures: tuple[list[tuple[ReportRow, Path]], list[tuple[ReportRow, Path]]],
    attack: str | None,
) -> str:
    header, body_cells = _table(rows)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = [
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in body_cells
    ]
    levels = _levels(rows)
    verdict_html = ""
    if sentences:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in sentences.values())
        verdict_html = f"""<h2>Verdicts</h2>
<ul class="verdicts">{items}</ul>
<p class="note">Generated from the numbers below. An effect is called clear only
when the {levels} Welch interval of the difference of the mean top-k
intersections excludes 0 (shown as difference [low, high]); accuracy changes
are in percentage points, "within noise" when their {levels} Newcombe interval
includes 0.</p>"""
    chart_html = ""
    if chart is not None:
        data = base64.b64encode(chart).decode("ascii")
        chart_html = f"""<h2>At a glance</h2>
<figure class="chart"><img id="summary-chart" alt="Per model: top-k intersection
and Kendall's tau under each attack with {levels} intervals, and clean accuracy"
src="data:image/png;base64,{data}"><figcaption>Per model: the scores under each
attack (further right = attribution moved less) with their {levels} confidence
intervals; RandomAttack at the same budget is the floor an attack must beat.
Clean accuracy with its {levels} Wilson interval.</figcaption></figure>"""
    lead, rest = figures
    lead_html = "".join(_figure_html(row, path) for row, path in lead)
    rest_html = "".join(_figure_html(row, path) for row, path in rest)
    examples = ""
    if lead_html:
        what = html.escape(attack or "the attack")
        examples += f"""<h2>What the attack did</h2>
<p>{what} on the first model and on the model whose attributions it moved least,
same attribution method: the input, the perturbed input, the attribution before
and after the attack.</p>
<div class="pair">{lead_html}</div>"""
    if rest_html:
        examples += (
            f"<details{' open' if not lead_html else ''}><summary>"
            f"{'More examples' if lead_html else 'Examples'} ({len(rest)})"
            f'</summary><div class="pair">{rest_html}</div></details>'
        )
    if not examples:
        examples = "<h2>Examples</h2><p>No figures.</p>"
    settings_text = html.escape(json.dumps(_json_safe(settings), indent=2))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right;
  white-space: nowrap; }}
th:nth-child(-n+3), td:nth-child(-n+3) {{ text-align: left; }}
.verdicts li {{ margin: 0.4em 0; line-height: 1.4; }}
.note {{ color: #555; font-size: 0.9em; }}
figure {{ margin: 1em 0; }}
figure.chart img {{ max-width: 100%; }}
.pair {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.pair figure {{ flex: 1 1 420px; max-width: 640px; margin: 0; }}
.pair img {{ width: 100%; }}
figcaption {{ font-size: 0.9em; color: #444; }}
summary {{ cursor: pointer; font-weight: bold; margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{verdict_html}
{chart_html}
<h2>Scores</h2>
<p>Each score is the mean [{levels} confidence interval] over the attacked
samples: the correctly classified ones when the true label is attacked (a
misclassified sample is skipped: counted, not averaged), every sample when the
predicted class is. top-k, kendall, spearman (and pearson, cosine, ssim when
computed) compare the attribution before and after the attack (1 = unchanged;
mse: 0 = unchanged); shift px is how far the attribution's center of mass
moved; silh. is the share of attribution mass on the object. (n NaN) counts
samples whose score is undefined (e.g. an all-zero map), left out of the
mean.</p>
<div class="scroll"><table><tr>{head}</tr>
{"".join(body)}
</table></div>
{examples}
<h2>Settings</h2>
<pre>{settings_text}</pre>
</body></html>
"""
