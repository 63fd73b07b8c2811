"""Evaluate a model's attribution robustness over a data loader."""

from captum_robust.evaluation._evaluate import EvaluationResult
from captum_robust.evaluation._evaluate import evaluate_robustness
from captum_robust.evaluation._records import RecordLog
from captum_robust.evaluation._records import RecordsMismatchError
from captum_robust.evaluation._report import write_report
from captum_robust.evaluation._report_table import ReportRow
from captum_robust.evaluation._report_table import format_table
from captum_robust.evaluation._summary import METRICS
from captum_robust.evaluation._summary import summarize

# The demo and the reproduction train models, so they moved up to
# captum_robust.experiments, which imports this package. Their names are still
# served from here, as they were before the move, but only when first asked for:
# importing them at load would run an import back up the layers, and a cycle.
# They are the names of __all__ that this module does not define, and they are
# not stored in its namespace, which is how the API reference (docs/conf.py)
# knows to document them once, under captum_robust.experiments.


def __getattr__(name: str):
    if name in __all__:
        from captum_robust import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
