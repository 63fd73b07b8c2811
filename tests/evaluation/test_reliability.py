"""Issue 14 (and parts of 13 and 18): records bound to their settings, modes
restored, labels and inputs checked, summaries over attacked samples only."""

import json
import math
import shutil

import pytest
import scipy.stats
import torch
from captum.attr import IntegratedGradients
from captum.attr import Saliency
from helpers.models import conv_net

from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TopKAttack
from captum_robust.evaluation import RecordLog
from captum_robust.evaluation import RecordsMismatchError
from captum_robust.evaluation import evaluate_robustness
from captum_robust.evaluation import summarize


class Interrupted(Exception):
    pass


def make_model(seed=0):
    return conv_net(3, 4, 4, 3, batch_norm=True, seed=seed).eval()


def make_loader(batches=3):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4 * batches, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (4 * batches,), generator=generator)
    return [(images[i : i + 4], labels[i : i + 4]) for i in range(0, 4 * batches, 4)]


def make_attack(model, cls=TopKAttack, **changes):
    budget = dict(epsilon=0.05, step_size=0.02, n_steps=1, seed=0)
    budget.update(changes)
    if cls is TopKAttack:
        return TopKAttack(model, Saliency(model), k=8, **budget)
    return cls(model, Saliency(model), **budget)


def evaluate(model, path, *, loader=None, attack=None, resume=False, **kwargs):
    options = dict(metrics=["topk"], k=8, progress=False)
    options.update(kwargs)
    return evaluate_robustness(
        model,
        make_loader() if loader is None else loader,
        options.pop("attribution", Saliency(model)),
        make_attack(model) if attack is None else attack,
        records_path=path,
        resume=resume,
        **options,
    )


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Records of a run stopped after its first batch (4 of 12 samples)."""
    folder = tmp_path_factory.mktemp("interrupted")
    path = folder / "records.jsonl"

    def stop(records):
        raise Interrupted

    with pytest.raises(Interrupted):
        evaluate(make_model(), path, on_batch=stop)
    assert len(path.read_text().splitlines()) == 4
    return folder


def copy_of(interrupted, tmp_path):
    for item in interrupted.iterdir():
        shutil.copy(item, tmp_path / item.name)
    return tmp_path / "records.jsonl"


def changed_weights():
    model = make_model()
    with torch.no_grad():
        model[4].bias[0] += 1e-3
    return model


def changed_buffers():
    model = make_model()
    model[1].running_mean.add_(0.5)
    return model


CHANGES = {
    "epsilon": (
        lambda m: dict(attack=make_attack(m, epsilon=0.1)),
        "attack.epsilon: 0.05 in the records, 0.1 now",
    ),
    "steps": (
        lambda m: dict(attack=make_attack(m, n_steps=2)),
        "attack.n_steps: 1 in the records, 2 now",
    ),
    "attack class": (
        lambda m: dict(attack=make_attack(m, RandomAttack)),
        "attack.class:",
    ),
    "k": (lambda m: dict(k=4), "k: 8 in the records, 4 now"),
    "metrics": (lambda m: dict(metrics=["topk", "kendall"]), "metrics:"),
    "target": (lambda m: dict(target="predicted"), 'target: "label" in the records'),
    "attribution": (
        lambda m: dict(attribution=IntegratedGradients(m)),
        "attribution.class:",
    ),
    "attribution kwargs": (
        lambda m: dict(attribution_kwargs={"abs": False}),
        "attribution_kwargs.abs: ",
    ),
    "run settings": (
        lambda m: dict(run_settings={"seed": 3}),
        'run_settings.seed: "<absent>" in the records, 3 now',
    ),
    "data": (
        lambda m: dict(loader=[(x.flip(-1), y) for x, y in make_loader()]),
        "data.first_sample:",
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resume_under_other_settings_is_refused(interrupted, tmp_path, change):
    path = copy_of(interrupted, tmp_path)
    before = path.read_text()
    make_options, expected = CHANGES[change]
    model = make_model()
    with pytest.raises(RecordsMismatchError, match="Differing settings") as error:
        evaluate(model, path, resume=True, **make_options(model))
    assert expected in str(error.value)
    assert isinstance(error.value, ValueError) and len(error.value.differences) >= 1
    # Refused before anything is written.
    assert path.read_text() == before


@pytest.mark.parametrize("model_of", [changed_weights, changed_buffers])
def test_resume_with_other_weights_or_buffers_is_refused(
    interrupted, tmp_path, model_of
):
    path = copy_of(interrupted, tmp_path)
    model = model_of()
    with pytest.raises(RecordsMismatchError, match="model.weights: "):
        evaluate(model, path, resume=True, attack=make_attack(model))


def test_message_names_every_differing_setting(interrupted, tmp_path):
    path = copy_of(interrupted, tmp_path)
    model = make_model()
    attack = make_attack(model, epsilon=0.1, n_steps=3)
    with pytest.raises(RecordsMismatchError) as error:
        evaluate(model, path, resume=True, attack=attack, k=5)
    message = str(error.value)
    assert "Differing settings (3)" in message
    assert error.value.differences == {
        "attack.epsilon": (0.05, 0.1),
        "attack.n_steps": (1, 3),
        "k": (8, 5),
    }
    for line in (
        "attack.epsilon: 0.05 in the records, 0.1 now",
        "attack.n_steps: 1 in the records, 3 now",
        "k: 8 in the records, 5 now",
    ):
        assert line in message


def test_resume_with_same_settings_completes_the_run(interrupted, tmp_path):
    path = copy_of(interrupted, tmp_path)
    model = make_model()
    evaluated = []
    result = evaluate(
        model,
        path,
        resume=True,
        run_settings={},
        on_batch=lambda records: evaluated.extend(r["index"] for r in records),
    )
    assert evaluated == list(range(4, 12))
    full = evaluate(make_model(), tmp_path / "full.jsonl")
    assert json.dumps(result.records) == json.dumps(full.records)


def test_resume_over_a_shorter_loader_returns_only_its_samples(tmp_path):
    path = tmp_path / "records.jsonl"
    model = make_model()
    full = evaluate(model, path)
    assert len(full.records) == 12
    short = evaluate(model, path, resume=True, loader=make_loader()[:1])
    assert [r["index"] for r in short.records] == [0, 1, 2, 3]
    assert short.summary["samples"] == 4
    assert json.dumps(short.records) == json.dumps(full.records[:4])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2, 3]


def test_records_of_an_earlier_version_are_refused_clearly(tmp_path):
    path = tmp_path / "records.jsonl"
    model = make_model()
    evaluate(model, path)
    (tmp_path / "records.jsonl.settings.json").unlink()
    # Still readable...
    assert RecordLog(path, resume=True).done == set(range(12))
    # ...but not resumed: nothing says which settings made them.
    with pytest.raises(RecordsMismatchError, match="earlier version"):
        evaluate(model, path, resume=True)
    # A fresh run writes the settings again.
    evaluate(model, path)
    evaluate(model, path, resume=True)


def test_run_settings_must_be_json():
    model = make_model()
    with pytest.raises(TypeError, match="run_settings"):
        evaluate(model, None, run_settings={"path": object()})
    with pytest.raises(TypeError, match="run_settings"):
        evaluate(model, None, run_settings={"pair": (1, 2)})
    with pytest.raises(TypeError, match="run_settings"):
        evaluate(model, None, run_settings=[("seed", 1)])


def test_every_module_mode_restored_on_success_and_failure():
    model = make_model().train()
    model[1].eval()  # a frozen BatchNorm in a training model
    modes = [m.training for m in model.modules()]
    evaluate(model, None)
    assert [m.training for m in model.modules()] == modes

    def failing(inputs, target):
        assert not any(m.training for m in model.modules())
        raise Interrupted

    with pytest.raises(Interrupted):
        evaluate(model, None, attack=failing)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (torch.tensor([0, 1, 3, 2]), ValueError, r"`labels` must hold class indices"),
        (torch.tensor([0, -1, 2, 2]), ValueError, r"`labels` must hold non-negative"),
        (torch.tensor([0.0, 1.0, 2.0, 1.0]), TypeError, r"`labels` must hold integer"),
        (torch.tensor([0, 1, 2]), ValueError, r"`labels` must be"),
    ],
)
def test_bad_labels_are_named(labels, error, match):
    images = make_loader()[0][0]
    with pytest.raises(error, match=match):
        evaluate(make_model(), None, loader=[(images, labels)])


def test_non_finite_inputs_are_refused():
    for bad in (math.nan, math.inf):
        images, labels = make_loader()[1]
        images = images.clone()
        images[2, 0, 1, 1] = bad
        loader = [make_loader()[0], (images, labels)]
        with pytest.raises(ValueError, match=r"NaN or inf values \(batch 1\)"):
            evaluate(make_model(), None, loader=loader)


def test_bool_flags_must_be_bools():
    with pytest.raises(TypeError, match="`resume` must be a bool"):
        evaluate(make_model(), None, resume=1)
    with pytest.raises(TypeError, match="`progress` must be a bool"):
        evaluate(make_model(), None, progress="no")
    with pytest.raises(ValueError, match="`target` must be one of"):
        evaluate(make_model(), None, target="true")


def recording_attack(calls):
    def attack(inputs, target):
        calls.append(target.clone())
        return (inputs + 0.01).clamp(0, 1)

    return attack


def test_target_label_skips_misclassified_samples_in_the_summary():
    model = make_model()
    calls = []
    result = evaluate(model, None, attack=recording_attack(calls))
    labels = torch.cat([y for _, y in make_loader()])
    assert torch.equal(torch.cat(calls), labels)
    correct = [r for r in result.records if r["correct"]]
    assert 0 < len(correct) < 12  # both kinds present, so the test can fail
    assert [r["attacked"] for r in result.records] == [
        r["correct"] for r in result.records
    ]
    assert result.num_evaluated == len(correct) == result.summary["evaluated"]
    assert result.num_skipped == 12 - len(correct) == result.summary["skipped"]
    expected = sum(r["topk"] for r in correct) / len(correct)
    assert result.summary["topk"]["mean"] == pytest.approx(expected)
    assert result.summary["topk"]["count"] == len(correct)


def test_target_predicted_attacks_and_scores_every_sample():
    model = make_model()
    calls = []
    result = evaluate(model, None, attack=recording_attack(calls), target="predicted")
    images = torch.cat([x for x, _ in make_loader()])
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert torch.equal(torch.cat(calls), predicted)
    assert [r["prediction"] for r in result.records] == predicted.tolist()
    assert all(r["attacked"] for r in result.records)
    assert any(not r["correct"] for r in result.records)  # still recorded
    assert (result.num_evaluated, result.num_skipped) == (12, 0)
    expected = sum(r["topk"] for r in result.records) / 12
    assert result.summary["topk"]["mean"] == pytest.approx(expected)


def test_skipped_samples_are_not_averaged_as_unchanged_maps():
    # The real attack returns misclassified samples unchanged: their maps score
    # 1.0 and would raise the mean if they were averaged in.
    model = make_model()
    result = evaluate(
        model, None, attack=make_attack(model, epsilon=0.2, step_size=0.07, n_steps=3)
    )
    skipped = [r for r in result.records if not r["correct"]]
    attacked = [r for r in result.records if r["correct"]]
    assert skipped and all(r["topk"] == 1.0 and r["linf"] == 0.0 for r in skipped)
    mean_attacked = sum(r["topk"] for r in attacked) / len(attacked)
    mean_all = sum(r["topk"] for r in result.records) / len(result.records)
    assert result.summary["topk"]["mean"] == pytest.approx(mean_attacked)
    assert mean_attacked != pytest.approx(mean_all)


def test_summary_leaves_nan_scores_out_and_counts_them():
    scores = [0.2, math.nan, 0.5, 0.9, math.nan, 0.4]
    records = [
        {"index": i, "correct": True, "label_kept": True, "kendall": s}
        for i, s in enumerate(scores)
    ]
    records.append(
        {"index": 6, "correct": False, "label_kept": True, "kendall": math.nan}
    )
    stats = summarize(records, ["kendall"])["kendall"]
    finite = [s for s in scores if not math.isnan(s)]
    low, high = scipy.stats.t.interval(
        0.95, len(finite) - 1, loc=sum(finite) / 4, scale=scipy.stats.sem(finite)
    )
    assert stats["count"] == 4 and stats["nan_count"] == 2
    assert stats["mean"] == pytest.approx(sum(finite) / 4)
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx((low, high))
    # JSON null (a record read back by hand) is a NaN as well.
    records[1]["kendall"] = None
    assert summarize(records, ["kendall"])["kendall"]["nan_count"] == 2


def test_summarize_rejects_bad_arguments_by_name():
    record = {"index": 0, "correct": True, "label_kept": True, "topk": 0.5}
    with pytest.raises(ValueError, match="`metrics` must be one of"):
        summarize([record], ["top-k"])
    with pytest.raises(TypeError, match="`metrics` must be a sequence"):
        summarize([record], "topk")
    with pytest.raises(ValueError, match=r"`records\[0\]` lacks \['correct'"):
        summarize([{"index": 0, "topk": 0.5}], ["topk"])
    with pytest.raises(TypeError, match="`records` must hold dicts"):
        summarize([0.5], ["topk"])
    with pytest.raises(TypeError, match="`records` must be a sequence"):
        summarize(record, ["topk"])
    with pytest.raises(ValueError, match="`confidence`"):
        summarize([record], ["topk"], confidence=1.0)


def test_record_log_names_file_and_line_of_a_corrupt_record(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"index": 0}\n{"ind\n{"index": 2}\n')
    with pytest.raises(ValueError, match=rf"{path.name}: line 2 is not a JSON record"):
        RecordLog(path, resume=True)
    assert path.read_text().count("\n") == 3  # a corrupt file is not truncated
    path.write_text('{"index": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is not a record"):
        RecordLog(path, resume=True)
    # Half a last line is an interrupted write, not corruption.
    path.write_text('{"index": 0}\n{"ind')
    assert RecordLog(path, resume=True).done == {0}
    log = RecordLog(None)
    with pytest.raises(ValueError, match="non-negative int 'index'"):
        log.write([{"kendall": 0.5}])
    with pytest.raises(TypeError, match="`records` must be a list"):
        log.write({"index": 0})
    with pytest.raises(TypeError, match="`records` must hold dicts"):
        log.write([3])
    with pytest.raises(TypeError, match="`resume` must be a bool"):
        RecordLog(path, resume="yes")
