"""Evaluate a model's attribution robustness over a data loader."""

from captum_robust.evaluation._demo import DemoSettings, demo_model, run_demo
from captum_robust.evaluation._evaluate import (
    METRICS,
    EvaluationResult,
    evaluate_robustness,
)
from captum_robust.evaluation._records import RecordLog, RecordsMismatchError
from captum_robust.evaluation._report import ReportRow, format_table, write_report
from captum_robust.evaluation._reproduce import run_reproduction
from captum_robust.evaluation._reproduce_settings import CHEN_MNIST, ReproduceSettings
from captum_robust.evaluation._reproduce_training import load_mnist_subset, mnist_model
from captum_robust.evaluation._summary import summarize

__all__ = [
    "CHEN_MNIST",
    "DemoSettings",
    "METRICS",
    "EvaluationResult",
    "RecordLog",
    "RecordsMismatchError",
    "demo_model",
    "ReportRow",
    "ReproduceSettings",
    "evaluate_robustness",
    "format_table",
    "load_mnist_subset",
    "mnist_model",
    "run_demo",
    "run_reproduction",
    "summarize",
    "write_report",
]
