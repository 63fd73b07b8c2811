"""Reports of evaluations: a text table, JSON and a self-contained HTML page.

The table is drawn in ``_report_table``, the verdict sentences are written in
``_report_verdicts`` and the page with its chart in ``_report_html``; this
module writes both files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captum_robust._utils.validation import check_path
from captum_robust._utils.validation import check_str
from captum_robust.evaluation._report_html import json_safe
from captum_robust.evaluation._report_html import ordered_figures
from captum_robust.evaluation._report_html import report_page
from captum_robust.evaluation._report_html import summary_chart
from captum_robust.evaluation._report_table import ReportRow
from captum_robust.evaluation._report_table import check_rows
from captum_robust.evaluation._report_verdicts import main_attack
from captum_robust.evaluation._report_verdicts import verdicts


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
    rows = check_rows(rows)
    check_path(output_dir, "output_dir")
    check_str(title, "title")
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(
            f"`settings` must be a dict or None, got {type(settings).__name__}."
        )
    settings = dict(settings or {})
    check_str(reference, "reference", optional=True)
    check_str(attack, "attack", optional=True)
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
        text = json.dumps(json_safe(payload), indent=2)
    except TypeError as error:
        raise TypeError(
            f"`settings` and the rows' summaries must be JSON-serialisable: {error}."
        ) from None
    page = report_page(
        rows,
        title,
        settings,
        sentences,
        summary_chart(rows),
        ordered_figures(rows, reference, attack),
        main_attack(rows, attack),
    )
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(text)
    html_path = folder / "report.html"
    html_path.write_text(page)
    return json_path, html_path
