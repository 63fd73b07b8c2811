"""evaluation sits below experiments and the command line: importing it imports
neither, and the names that moved up to experiments are still served from it."""

import subprocess
import sys

import captum_robust.evaluation as evaluation
import captum_robust.experiments as experiments


def test_importing_evaluation_imports_nothing_above_it():
    above = (
        "captum_robust.experiments",
        "captum_robust.cli",
        "captum_robust.regularizers",
    )
    code = (
        "import sys, captum_robust.evaluation\n"
        f"print(sorted(m for m in sys.modules if m.startswith({above!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_moved_names_are_served_by_evaluation_and_documented_once():
    for name in experiments.__all__:
        assert name in evaluation.__all__
        assert getattr(evaluation, name) is getattr(experiments, name)
    # Kept out of evaluation's namespace: docs/conf.py gives them their page
    # under experiments only.
    assert not set(experiments.__all__) & set(vars(evaluation))
    assert set(experiments.__all__) <= set(dir(evaluation))
    namespace: dict = {}
    exec("from captum_robust.evaluation import *", namespace)
    assert namespace["run_demo"] is experiments.run_demo
