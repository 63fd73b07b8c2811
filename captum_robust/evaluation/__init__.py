"""Evaluate a model's attribution robustness over a data loader."""

from captum_robust.evaluation._demo import DemoSettings, demo_model, run_demo
from captum_robust.evaluation._evaluate import (
    METRICS,
    EvaluationResult,
    evaluate_robustness,
)
from captum_robust.evaluation._records import RecordLog, RecordsMismatchError
from captum_robust.evaluation._report import ReportRow, format_table, write_report
from captum_robust.evaluation._summary import summarize

__all__ = [
    "DemoSettings",
    "METRICS",
    "EvaluationResult",
    "RecordLog",
    "RecordsMismatchError",
    "demo_model",
    "ReportRow",
    "evaluate_robustness",
    "format_table",
    "run_demo",
    "summarize",
    "write_report",
]
