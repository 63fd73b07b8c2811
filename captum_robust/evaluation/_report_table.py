"""The text table of a report: its rows, columns and cells."""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from captum_robust._utils.validation import check_str
from captum_robust.metrics._registry import table_columns

# (summary field, column title, number format); metric columns show the mean
# with its confidence interval when the summary has one.
COUNT_COLUMNS = (
    ("evaluated", "attacked", "{:d}"),
    ("skipped", "skipped", "{:d}"),
)
TABLE_COLUMNS = (
    ("clean_accuracy", "clean acc", "{:.3f}"),
    ("label_kept_rate", "label kept", "{:.3f}"),
    *((c.field, c.label, c.number_format) for c in table_columns()),
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
            check_str(getattr(self, name), name)
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


def check_rows(rows: object) -> Sequence[ReportRow]:
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


def statistic(summary: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
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
    stats = statistic(summary, key, f"{where}['{key}']")
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


def table_cells(rows: Sequence[ReportRow]) -> tuple[list[str], list[list[str]]]:
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


def confidence_levels(rows: Sequence[ReportRow]) -> str:
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
        notes.append(
            f"mean [{confidence_levels(rows)} confidence interval] over the attacked"
        )
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
    rows = check_rows(rows)
    header, body = table_cells(rows)
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
