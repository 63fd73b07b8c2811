"""Verdict sentences, the chart and the order of the examples in report.html."""

import base64
import re

import pytest
from matplotlib.figure import Figure

from captum_robust.evaluation import ReportRow
from captum_robust.evaluation import write_report
from captum_robust.evaluation._report_html import summary_chart
from captum_robust.evaluation._report_verdicts import verdicts
from captum_robust.visualization import save_figure


def stats(mean, std, count):
    # The Student-t interval summarize would write, by hand for n = 50:
    # t(0.975, 49) = 2.009575.
    half = 2.009575 * std / count**0.5
    return {
        "mean": mean,
        "std": std,
        "count": count,
        "nan_count": 0,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def summary(topk, correct=50, samples=50, kendall=None):
    out = {"samples": samples, "correct": correct, "evaluated": correct}
    out["topk"] = stats(*topk)
    if kendall is not None:
        out["kendall"] = stats(*kendall)
    return out


def rows_of(robust_topk, robust_correct=50):
    return [
        ReportRow("natural", "Saliency", "RandomAttack", summary((0.8, 0.1, 50))),
        ReportRow("natural", "Saliency", "TopKAttack", summary((0.3, 0.1, 50))),
        ReportRow("robust", "Saliency", "RandomAttack", summary((0.85, 0.1, 50))),
        ReportRow(
            "robust",
            "Saliency",
            "TopKAttack",
            summary((robust_topk, 0.1, robust_correct), correct=robust_correct),
        ),
    ]


def test_clear_effect_sentence_gives_the_ratio_and_the_accuracy_change():
    # 47 of 50 correct against 50 of 50: -6.0 points. Hand computation of the
    # Welch interval of 0.63 - 0.30 (std 0.1, n 47 and 50): se = 0.02031,
    # dof ~ 94.4, t = 1.9855, half width 0.0403.
    sentences = verdicts(rows_of(0.63, robust_correct=47))
    assert list(sentences) == ["natural", "robust"]
    assert sentences["robust"] == (
        "robust: under TopKAttack it keeps 2.1x the top-k pixels of the natural "
        "model with Saliency (0.63 vs 0.30, difference [+0.29, +0.37]), at -6.0 "
        "points of clean accuracy, within noise (94.0% vs 100.0%)."
    )
    assert sentences["natural"].startswith(
        "natural: TopKAttack at this budget lowers the top-k pixels with Saliency "
        "to 0.30 from 0.80 under RandomAttack"
    )


def test_effect_within_noise_is_called_so():
    # 0.32 vs 0.30 with std 0.1 and n = 50 each: the Welch interval is
    # 0.02 +- 1.9845 * 0.02 = [-0.02, +0.06], which includes 0.
    sentence = verdicts(rows_of(0.32))["robust"]
    assert "has no clear effect at this budget with Saliency" in sentence
    assert "(0.32 vs 0.30, difference +0.02 [-0.02, +0.06])" in sentence
    assert "x the top-k" not in sentence
    assert "+0.0 points of clean accuracy, within noise" in sentence


def test_clearly_worse_model_keeps_only_a_fraction():
    sentence = verdicts(rows_of(0.15))["robust"]
    assert "keeps only 0.5x the top-k pixels of the natural model" in sentence


def test_verdict_arguments_are_checked():
    rows = rows_of(0.5)
    with pytest.raises(ValueError, match="`metric`"):
        verdicts(rows, metric="mse")
    with pytest.raises(TypeError, match="`reference`"):
        verdicts(rows, reference=1)
    with pytest.raises(ValueError, match="`confidence`"):
        verdicts(rows, confidence=2.0)
    assert verdicts(rows, reference="absent") == {}


def figure_file(path, colour):
    figure = Figure(figsize=(1, 1))
    figure.set_facecolor(colour)
    save_figure(figure, path)
    return path


def test_report_has_chart_verdicts_and_leads_with_the_natural_model(tmp_path):
    rows = rows_of(0.63)
    extra = ReportRow("weak", "Saliency", "TopKAttack", summary((0.4, 0.1, 50)))
    rows.append(extra)
    for i, row in enumerate(rows):
        row.figure_paths = [figure_file(tmp_path / f"f{i}.png", f"C{i}")]
    _, html_path = write_report(rows, tmp_path / "out", reference="natural")
    page = html_path.read_text()
    chart = re.search(
        r'id="summary-chart"[^>]*src="data:image/png;base64,([^"]+)"', page
    )
    assert chart is not None
    assert base64.b64decode(chart.group(1))[:4] == b"\x89PNG"
    assert page.index("<h2>Verdicts</h2>") < page.index("<h2>At a glance</h2>")
    assert "robust: under TopKAttack it keeps 2.1x" in page
    captions = re.findall(r"<figcaption>([^<:]+)", page)[1:]  # after the chart
    images = [
        base64.b64decode(s)
        for s in re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    ][1:]
    # The pair: natural under TopKAttack, then the most robust model (robust,
    # top-k 0.63, not weak at 0.40); the attacks before their baselines.
    assert captions[:2] == [
        "natural / Saliency / TopKAttack",
        "robust / Saliency / TopKAttack",
    ]
    assert images[0] == rows[1].figure_paths[0].read_bytes()
    assert images[1] == rows[3].figure_paths[0].read_bytes()
    assert captions[2] == "weak / Saliency / TopKAttack"
    assert all("RandomAttack" in c for c in captions[3:]) and len(captions) == 5


def test_chart_needs_scores_or_accuracy():
    assert summary_chart([ReportRow("m", "a", "x", {})]) is None
    rows = [
        ReportRow(
            "m", "a", "TopKAttack", summary((0.3, 0.1, 50), kendall=(0.5, 0.1, 50))
        )
    ]
    assert summary_chart(rows)[:4] == b"\x89PNG"
