"""Reports of evaluations: a text table, JSON and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (record field, column title, number format)
TABLE_COLUMNS = (
    ("clean_accuracy", "clean acc", "{:.3f}"),
    ("label_kept_rate", "label kept", "{:.3f}"),
    ("topk", "top-k", "{:.3f}"),
    ("kendall", "kendall", "{:.3f}"),
    ("spearman", "spearman", "{:.3f}"),
    ("center_shift", "shift px", "{:.2f}"),
    ("silhouette_before", "silh. before", "{:.3f}"),
    ("silhouette_after", "silh. after", "{:.3f}"),
)


@dataclass
class ReportRow:
    """One evaluation: which model, attribution and attack, and its summary."""

    model: str
    attribution: str
    attack: str
    summary: dict[str, Any]
    figure_paths: list[Path] = field(default_factory=list)


def _value(summary: dict[str, Any], key: str) -> float:
    value = summary.get(key, math.nan)
    return value["mean"] if isinstance(value, dict) else value


def _cell(summary: dict[str, Any], key: str, number_format: str) -> str:
    value = _value(summary, key)
    return "-" if value is None or math.isnan(value) else number_format.format(value)


def _present_columns(rows: Sequence[ReportRow]) -> list[tuple[str, str, str]]:
    return [c for c in TABLE_COLUMNS if any(c[0] in row.summary for row in rows)]


def format_table(rows: Sequence[ReportRow]) -> str:
    """A fixed-width text table of the rows' means.

    Examples
    --------
    >>> row = ReportRow("natural", "Saliency", "TopKAttack",
    ...                 {"clean_accuracy": 0.9, "topk": {"mean": 0.41}})
    >>> print(format_table([row]))
    model    attribution  attack      clean acc  top-k
    natural  Saliency     TopKAttack      0.900  0.410
    """
    columns = _present_columns(rows)
    header = ["model", "attribution", "attack"] + [c[1] for c in columns]
    body = [
        [row.model, row.attribution, row.attack]
        + [_cell(row.summary, key, fmt) for key, _, fmt in columns]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        cells = [
            text.ljust(width) if i < 3 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(render(line) for line in [header, *body])


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
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
    settings: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json`` and a self-contained ``report.html`` (figures inlined).

    Parameters
    ----------
    rows : sequence of ReportRow
        The evaluations to report.
    output_dir : str or Path
        Folder for both files; created if missing.
    title : str
        Heading of the HTML page.
    settings : dict, optional
        Configuration recorded in both files (attack and metric parameters).

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
    if not isinstance(rows, Sequence) or not all(
        isinstance(r, ReportRow) for r in rows
    ):
        raise TypeError("`rows` must be a sequence of ReportRow.")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "title": title,
        "settings": settings or {},
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
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(_json_safe(payload), indent=2))
    html_path = folder / "report.html"
    html_path.write_text(_html(rows, title, settings or {}))
    return json_path, html_path


def _html(rows: Sequence[ReportRow], title: str, settings: dict[str, Any]) -> str:
    columns = _present_columns(rows)
    head = "".join(
        f"<th>{html.escape(name)}</th>"
        for name in ["model", "attribution", "attack"] + [c[1] for c in columns]
    )
    body = []
    for row in rows:
        cells = [row.model, row.attribution, row.attack]
        cells += [_cell(row.summary, key, fmt) for key, _, fmt in columns]
        body.append(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        )
    figures = []
    for row in rows:
        for path in row.figure_paths:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            caption = html.escape(f"{row.model} / {row.attribution} / {row.attack}")
            figures.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    settings_text = html.escape(json.dumps(_json_safe(settings), indent=2))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:nth-child(-n+3), td:nth-child(-n+3) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 640px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Means over correctly classified samples. top-k, kendall and spearman compare
the attribution before and after the attack (1 = unchanged); shift px is how far
the attribution's center of mass moved; silh. is the share of attribution mass on
the object.</p>
<table><tr>{head}</tr>
{"".join(body)}
</table>
<h2>Examples</h2>
{"".join(figures) or "<p>No figures.</p>"}
<h2>Settings</h2>
<pre>{settings_text}</pre>
</body></html>
"""
