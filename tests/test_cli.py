import json

import pytest
import torch
from torch import nn

from captum_robust.cli import main
from captum_robust.evaluation import demo_model

MODEL = "captum_robust.evaluation:demo_model"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "model.pt"
    torch.save(demo_model().state_dict(), path)
    return path


def test_evaluate_end_to_end_and_resume(capsys, tmp_path, weights):
    args = [
        "evaluate",
        "--model",
        MODEL,
        "--weights",
        str(weights),
        "--samples",
        "12",
        "--batch-size",
        "5",
        "--steps",
        "2",
        "--k",
        "20",
        "--output",
        str(tmp_path),
        "--quiet",
        "--num-figures",
        "2",
    ]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "top-k" in out and "report:" in out
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == 12
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"][0]["summary"]["samples"] == 12
    assert (tmp_path / "report.html").exists() and (tmp_path / "figures").is_dir()
    # Resuming a finished run recomputes nothing and keeps every record once.
    code, _, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert (tmp_path / "records.jsonl").read_text().splitlines() == records


def test_integrated_gradients_and_mass_center(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        MODEL,
        "--samples",
        "4",
        "--batch-size",
        "4",
        "--attribution",
        "integrated-gradients",
        "--ig-steps",
        "4",
        "--attack",
        "mass-center",
        "--steps",
        "1",
        "--output",
        str(tmp_path),
        "--quiet",
        "--metrics",
        "center_shift",
        "topk",
    )
    assert code == 0, err
    assert "clean acc" in out
    # An untrained model may classify none of 4 samples correctly, so check the
    # per-sample records rather than the summary over correct samples.
    records = [
        json.loads(line)
        for line in (tmp_path / "records.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4
    assert all({"center_shift", "topk"} <= set(r) for r in records)
    assert all("kendall" not in r for r in records)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_package.module:f"], "cannot import module"),
        (["--model", "captum_robust.evaluation"], "package.module:factory"),
        (["--model", "captum_robust.evaluation:missing"], "no callable named"),
        (["--model", "captum_robust.evaluation:METRICS"], "no callable named"),
        (["--model", MODEL, "--weights", "/no/such/file.pt"], "does not exist"),
        (["--model", MODEL, "--data", "voc"], "needs --data-root"),
        (
            ["--model", MODEL, "--data", "oxford-pets", "--data-root", "/no/pets"],
            "Missing",
        ),
        (["--model", MODEL, "--ig-steps", "5"], "--ig-steps applies"),
        (["--model", MODEL, "--attack", "random", "--surrogate-beta", "5"], "random"),
        (["--model", MODEL, "--device", "cuda:0"], "CUDA"),
    ],
)
def test_user_errors_end_in_one_line(capsys, tmp_path, argv, message):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = run(capsys, "evaluate", "--output", str(tmp_path), *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_weights_that_do_not_fit(capsys, tmp_path):
    path = tmp_path / "linear.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    code, _, err = run(capsys, "evaluate", "--model", MODEL, "--weights", str(path))
    assert code == 2 and "do not fit" in err and len(err.strip().splitlines()) == 1
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    code, _, err = run(capsys, "evaluate", "--model", MODEL, "--weights", str(garbage))
    assert code == 2 and "cannot read weights" in err


def test_bad_option_values_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", MODEL, "--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps" in capsys.readouterr().err
