import json

import pytest
import torch
from captum.attr import Saliency
from helpers.models import conv_net

from captum_robust.evaluation import RecordLog
from captum_robust.evaluation import evaluate_robustness
from captum_robust.evaluation import summarize
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import topk_intersection


class Interrupted(Exception):
    pass


def make_model():
    return conv_net(3, 4, 8, 3)


def make_loader(with_masks=True):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(20, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (20,), generator=generator)
    masks = torch.zeros(20, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    batches = []
    for start in range(0, 20, 6):  # uneven last batch
        part = slice(start, start + 6)
        batch = (images[part], labels[part])
        batches.append(batch + ((masks[part],) if with_masks else ()))
    return batches


def noise_attack(inputs, target):
    # Deterministic per input, so resumed and uninterrupted runs agree.
    generator = torch.Generator().manual_seed(int(inputs.sum().item() * 1000) % 2**31)
    noise = torch.rand(inputs.shape, generator=generator) - 0.5
    return (inputs + 0.05 * noise).clamp(0, 1)


def evaluate(model, loader=None, **kwargs):
    """Saliency maps under the noise attack, top-k at k=10, quietly."""
    loader = make_loader() if loader is None else loader
    return evaluate_robustness(
        model, loader, Saliency(model), noise_attack, k=10, progress=False, **kwargs
    )


def test_records_match_direct_computation(tmp_path):
    model = make_model()
    loader = make_loader()
    result = evaluate(model, loader=loader, records_path=tmp_path / "r.jsonl")
    assert [r["index"] for r in result.records] == list(range(20))
    images, labels, _ = loader[0]
    before = Saliency(model).attribute(images, target=labels)
    after = Saliency(model).attribute(noise_attack(images, labels), target=labels)
    expected_topk = topk_intersection(before, after, 10).tolist()
    expected_kendall = kendall_tau(before, after).tolist()
    assert [r["topk"] for r in result.records[:6]] == pytest.approx(expected_topk)
    assert [r["kendall"] for r in result.records[:6]] == pytest.approx(expected_kendall)
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert {"silhouette_before", "silhouette_after", "linf"} <= set(
        json.loads(lines[0])
    )
    assert result.summary["samples"] == 20


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path):
    model = make_model()
    full = evaluate(model)
    path = tmp_path / "records.jsonl"
    seen = []

    def stop_after_two(records):
        seen.append(records)
        if len(seen) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        evaluate(model, records_path=path, on_batch=stop_after_two)
    assert len(path.read_text().splitlines()) == 12
    # A crash in the middle of a write leaves half a line behind.
    with open(path, "a") as handle:
        handle.write('{"index": 12, "lab')
    resumed = evaluate(model, records_path=path, resume=True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(20))
    # JSON text compares NaN equal to NaN and floats exactly.
    assert json.dumps(resumed.records) == json.dumps(full.records)
    assert json.dumps(resumed.summary) == json.dumps(full.summary)


def test_resume_with_changed_order_is_refused(tmp_path):
    model = make_model()
    path = tmp_path / "records.jsonl"
    evaluate(model, records_path=path)
    reordered = make_loader()
    # The first sample is unchanged (it is part of the settings); a later
    # batch's labels say the order changed.
    images, labels, masks = reordered[1]
    reordered[1] = (images, (labels + 1) % 3, masks)
    with pytest.raises(ValueError, match="same order"):
        evaluate(model, loader=reordered, records_path=path, resume=True)


def test_model_mode_restored_and_figure_written(tmp_path):
    model = make_model().train()
    result = evaluate(model, figures_dir=tmp_path, num_figures=3)
    assert model.training
    assert result.figure_paths and result.figure_paths[0].read_bytes()[:4] == b"\x89PNG"


def test_summary_over_correct_samples_with_interval():
    records = [
        {"index": i, "correct": i % 4 != 0, "label_kept": True, "topk": i / 10}
        for i in range(10)
    ]
    summary = summarize(records, ["topk"])
    values = torch.tensor(
        [r["topk"] for r in records if r["correct"]], dtype=torch.float64
    )
    assert summary["correct"] == 7
    assert summary["topk"]["mean"] == pytest.approx(values.mean().item())
    assert (
        summary["topk"]["ci_low"] < summary["topk"]["mean"] < summary["topk"]["ci_high"]
    )


def test_bad_arguments():
    model = make_model()
    loader = make_loader()
    with pytest.raises(ValueError, match="metrics"):
        evaluate_robustness(model, loader, Saliency(model), noise_attack, ["nope"])
    with pytest.raises(TypeError, match="metrics"):
        evaluate_robustness(model, loader, Saliency(model), noise_attack, "topk")
    with pytest.raises(TypeError, match="model"):
        evaluate_robustness(lambda x: x, loader, Saliency(model), noise_attack)
    with pytest.raises(TypeError, match="attack"):
        evaluate_robustness(model, loader, Saliency(model), 3)
    with pytest.raises(ValueError, match="`k`"):
        evaluate_robustness(model, loader, Saliency(model), noise_attack, k=0)
    with pytest.raises(TypeError, match="loader"):
        evaluate_robustness(
            model, [torch.rand(2, 3, 8, 8)], Saliency(model), noise_attack
        )
    with pytest.raises(TypeError, match="records_path"):
        RecordLog(3)
    with pytest.raises(TypeError, match="`records_path` must be a str"):
        evaluate_robustness(
            model, loader, Saliency(model), noise_attack, records_path=3
        )


def test_report_files_are_self_contained(tmp_path):
    from captum_robust.evaluation import ReportRow
    from captum_robust.evaluation import format_table
    from captum_robust.evaluation import write_report

    model = make_model()
    result = evaluate(model, figures_dir=tmp_path / "fig")
    row = ReportRow("tiny", "Saliency", "noise", result.summary, result.figure_paths)
    json_path, html_path = write_report([row], tmp_path / "out", settings={"k": 10})
    report = json.loads(json_path.read_text())
    assert report["rows"][0]["summary"]["topk"]["mean"] == pytest.approx(
        result.summary["topk"]["mean"]
    )
    page = html_path.read_text()
    assert "data:image/png;base64," in page and 'src="fig' not in page
    table = format_table([row])
    assert table.splitlines()[0].split()[:3] == ["model", "attribution", "attack"]
    with pytest.raises(TypeError, match="rows"):
        write_report([{"model": "x"}], tmp_path)
