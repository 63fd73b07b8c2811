"""Reports (issue 13: an attack and its random baseline side by side, with
intervals) and the checks of the report arguments."""

import json
import math

import pytest

from captum_robust.evaluation import ReportRow
from captum_robust.evaluation import format_table
from captum_robust.evaluation import summarize
from captum_robust.evaluation import write_report


def summary_of(scores, skipped=0):
    records = [
        {"index": i, "correct": True, "label_kept": True, "topk": s}
        for i, s in enumerate(scores)
    ]
    records += [
        {"index": len(scores) + i, "correct": False, "label_kept": True, "topk": 1.0}
        for i in range(skipped)
    ]
    return summarize(records, ["topk"])


def two_attack_rows():
    attack = summary_of([0.2, 0.4, math.nan, 0.3], skipped=2)
    baseline = summary_of([0.9, 0.95, 0.85, 1.0], skipped=2)
    return [
        ReportRow("natural", "Saliency", "TopKAttack", attack),
        ReportRow("natural", "Saliency", "RandomAttack", baseline),
    ]


def test_attack_and_random_baseline_in_one_table_with_intervals():
    rows = two_attack_rows()
    table = format_table(rows).splitlines()
    assert table[0].split() == [
        "model",
        "attribution",
        "attack",
        "attacked",
        "skipped",
        "clean",
        "acc",
        "label",
        "kept",
        "top-k",
    ]
    attack_stats = rows[0].summary["topk"]
    interval = f"[{attack_stats['ci_low']:.3f}, {attack_stats['ci_high']:.3f}]"
    assert table[1].startswith("natural  Saliency     TopKAttack")
    assert table[1].endswith(f"0.300 {interval} (1 NaN)")
    assert table[1].split()[3:5] == ["4", "2"]  # attacked, skipped
    assert "RandomAttack" in table[2] and "NaN" not in table[2]
    assert table[2].split()[-3] == "0.925"
    assert "95% confidence interval" in table[3] and "skipped" in table[3]


def test_html_and_json_reports_hold_both_rows(tmp_path):
    rows = two_attack_rows()
    json_path, html_path = write_report(rows, tmp_path, settings={"epsilon": 0.03})
    report = json.loads(json_path.read_text())
    assert [r["attack"] for r in report["rows"]] == ["TopKAttack", "RandomAttack"]
    topk = report["rows"][0]["summary"]["topk"]
    assert topk["nan_count"] == 1 and topk["count"] == 3
    assert report["rows"][0]["summary"]["skipped"] == 2
    page = html_path.read_text()
    assert page.count("<tr>") == 3
    stats = rows[0].summary["topk"]
    cell = f"0.300 [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}] (1 NaN)"
    assert f"<td>{cell}</td>" in page
    assert "<th>skipped</th>" in page and "95% confidence interval" in page


def test_report_arguments_are_checked_by_name(tmp_path):
    with pytest.raises(TypeError, match="`summary` must be a dict"):
        ReportRow("m", "a", "x", [0.5])
    with pytest.raises(TypeError, match="`model` must be a str"):
        ReportRow(None, "a", "x", {})
    with pytest.raises(TypeError, match="`figure_paths` must be a list"):
        ReportRow("m", "a", "x", {}, "figure.png")
    with pytest.raises(TypeError, match=r"`rows` must be a sequence of ReportRow"):
        format_table([{"model": "m"}])
    with pytest.raises(TypeError, match="`rows` must be a sequence"):
        format_table(ReportRow("m", "a", "x", {}))
    bad = ReportRow("m", "a", "x", {"topk": {"mean": "high"}})
    with pytest.raises(ValueError, match=r"`rows\[0\].summary\['topk'\]\['mean'\]`"):
        format_table([bad])
    row = ReportRow("m", "a", "x", {"topk": {"mean": 0.5}})
    with pytest.raises(TypeError, match="`output_dir`"):
        write_report([row], 3)
    with pytest.raises(TypeError, match="`settings` must be a dict"):
        write_report([row], tmp_path, settings=[1])
    with pytest.raises(TypeError, match="`settings` and the rows' summaries"):
        write_report([row], tmp_path, settings={"model": object()})
    with pytest.raises(TypeError, match="`title`"):
        write_report([row], tmp_path, title=None)
    missing = ReportRow("m", "a", "x", {}, [tmp_path / "gone.png"])
    with pytest.raises(ValueError, match=r"`rows\[0\].figure_paths` names"):
        write_report([missing], tmp_path)
    # A summary without the mean of a metric shows a dash, not a KeyError.
    assert format_table([ReportRow("m", "a", "x", {"topk": {}})]).endswith("-")
