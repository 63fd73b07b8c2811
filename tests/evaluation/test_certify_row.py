"""The certified top-k overlap as a row of the evaluation and of the command."""

import json
import shlex

import pytest
import torch
from captum.attr import Saliency
from torch import nn

from captum_robust.cli import main
from captum_robust.evaluation import evaluate_robustness
from captum_robust.metrics import certified_topk_overlap

CERTIFY = {"radius": 0.05, "sigma": 0.25, "n_samples": 128, "seed": 3}


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)
    ).eval()


def _jitter(inputs, target):
    return (inputs + 0.01).clamp(0, 1)


def test_records_equal_the_function_on_each_batch():
    model = _model()
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    data = [
        (images[:4], torch.tensor([0, 1, 2, 3])),
        (images[4:], torch.tensor([0, 1])),
    ]
    result = evaluate_robustness(
        model,
        data,
        Saliency(model),
        _jitter,
        ["topk"],
        k=5,
        target="predicted",
        progress=False,
        certify=CERTIFY,
    )
    with torch.no_grad():
        classes = model(images).argmax(1)
    expected = torch.cat(
        [
            certified_topk_overlap(
                Saliency(model), images[:4], classes[:4], k=5, **CERTIFY
            ),
            certified_topk_overlap(
                Saliency(model), images[4:], classes[4:], k=5, **CERTIFY
            ),
        ]
    )
    got = torch.tensor([r["certified"] for r in result.records])
    torch.testing.assert_close(got, expected)
    assert result.summary["certified"]["count"] == 6
    assert "topk" in result.records[0]


@pytest.mark.parametrize(
    "metrics, certify, match",
    [
        (["topk", "certified"], None, "`certify` must give the options"),
        (["topk"], {"radius": 0.1}, r"`certify` must give \['sigma'\]"),
        (["topk"], {"radius": 0.1, "sigma": 0.2, "k": 3}, "`certify` takes"),
        (["topk"], {"radius": 0.1, "sigma": 0.2, "generator": None}, "`certify`"),
        (["topk"], [("radius", 0.1)], "`certify` must be a dict"),
    ],
)
def test_bad_certify_options_are_named(metrics, certify, match):
    model = _model()
    data = [(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))]
    with pytest.raises((TypeError, ValueError), match=match):
        evaluate_robustness(
            model,
            data,
            Saliency(model),
            _jitter,
            metrics,
            k=5,
            progress=False,
            certify=certify,
        )


def test_command_records_the_certificate_in_the_attack_row_only(capsys, tmp_path):
    argv = shlex.split(
        "evaluate --model captum_robust.evaluation:demo_model --samples 4 "
        "--batch-size 4 --k 20 --target predicted --steps 1 --quiet "
        "--num-figures 1 --certify 0.02 --certify-samples 64"
    )
    assert main([*argv, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cert. top-k" in out
    records = [
        json.loads(line)
        for line in (tmp_path / "records.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4
    assert all(0.0 <= r["certified"] <= 1.0 for r in records)
    random_rows = (tmp_path / "random_records.jsonl").read_text().splitlines()
    assert all("certified" not in json.loads(line) for line in random_rows)
    settings = json.loads((tmp_path / "records.jsonl.settings.json").read_text())
    assert settings["settings"]["options"]["certified"]["radius"] == 0.02
    # A resume with another radius is refused: it would change the records.
    rerun = [*argv[:-4], "--certify", "0.03", "--certify-samples", "64"]
    code = main([*rerun, "--resume", "--output", str(tmp_path)])
    assert code == 2
    assert "certify" in capsys.readouterr().err
