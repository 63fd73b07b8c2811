"""The HTML page of a report: the summary chart, the figures and the page."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captum_robust.evaluation._report_table import ReportRow
from captum_robust.evaluation._report_table import check_rows
from captum_robust.evaluation._report_table import confidence_levels
from captum_robust.evaluation._report_table import statistic
from captum_robust.evaluation._report_table import table_cells
from captum_robust.evaluation._report_verdicts import RANDOM_ATTACK
from captum_robust.evaluation._report_verdicts import accuracy_counts
from captum_robust.evaluation._report_verdicts import main_attack
from captum_robust.evaluation._report_verdicts import mean_stats
from captum_robust.evaluation._report_verdicts import unique
from captum_robust.evaluation._summary import proportion_interval

_CHART_METRICS = (
    ("topk", "top-k intersection"),
    ("kendall", "Kendall's tau"),
)


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

    rows = check_rows(rows)
    metrics = [
        (key, title)
        for key, title in _CHART_METRICS
        if any(isinstance(row.summary.get(key), Mapping) for row in rows)
    ]
    models = unique([row.model for row in rows])
    accuracy = {}
    for row in rows:
        counts = accuracy_counts(row.summary)
        if counts is not None and row.model not in accuracy:
            accuracy[row.model] = counts
    panels = len(metrics) + bool(accuracy)
    if not panels:
        return None
    series = unique([f"{row.attribution} / {row.attack}" for row in rows])
    attacks = unique([row.attack for row in rows])
    attributions = unique([row.attribution for row in rows])
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
            stats = statistic(row.summary, key, key)
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


def ordered_figures(
    rows: Sequence[ReportRow], reference: str | None, attack: str | None
) -> tuple[list[tuple[ReportRow, Path]], list[tuple[ReportRow, Path]]]:
    """The lead pair (reference under the attack, most robust model beside it)
    and the other figures, attacks before their random baselines."""
    with_figures = [(row, Path(p)) for row in rows for p in row.figure_paths]
    lead: list[tuple[ReportRow, Path]] = []
    attack = main_attack(rows, attack)
    if attack is not None:
        candidates = [
            (float(stats["mean"]), row)
            for row in rows
            if row.attack == attack
            and row.model != reference
            and row.figure_paths
            and (stats := mean_stats(row, "topk")) is not None
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


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _figure_html(row: ReportRow, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = f"{row.model} / {row.attribution} / {row.attack}"
    stats = mean_stats(row, "topk")
    if stats is not None:
        caption += f": top-k {stats['mean']:.2f}"
    caption = html.escape(caption)
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def report_page(
    rows: Sequence[ReportRow],
    title: str,
    settings: dict[str, Any],
    sentences: dict[str, str],
    chart: bytes | None,
    figures: tuple[list[tuple[ReportRow, Path]], list[tuple[ReportRow, Path]]],
    attack: str | None,
) -> str:
    header, body_cells = table_cells(rows)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = [
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in body_cells
    ]
    levels = confidence_levels(rows)
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
    settings_text = html.escape(json.dumps(json_safe(settings), indent=2))
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
