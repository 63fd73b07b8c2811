import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from PIL import Image
from torch import nn

import captum_robust
from captum_robust import cli
from captum_robust.cli import _data
from captum_robust.cli import _models
from captum_robust.cli import default_k
from captum_robust.cli import default_layer
from captum_robust.cli import main
from captum_robust.cli import silhouette_digits
from captum_robust.datasets import make_silhouette_digits
from captum_robust.evaluation import demo_model

MODEL = "captum_robust.evaluation:demo_model"
README = Path(__file__).resolve().parents[1] / "README.md"
FAST = ["--steps", "1", "--quiet", "--num-figures", "1"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evaluate(capsys, output, options, *argv):
    """``captum-robust evaluate`` of the demo model with ``options`` (a command
    line) and ``argv``, one attack step, writing into ``output``."""
    argv = ["evaluate", "--model", MODEL, *shlex.split(options), *argv]
    return run(capsys, *argv, "--output", str(output), *FAST)


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "model.pt"
    torch.save(demo_model().state_dict(), path)
    return path


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package in the current directory, which a console script cannot see on
    its own: neither the directory nor "" is on sys.path."""
    name = f"userpkg_{os.getpid()}_{len(list(tmp_path.parent.iterdir()))}"
    root = tmp_path / "project"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "models.py").write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "def make_model():\n"
        "    from captum_robust.evaluation import demo_model\n"
        "    return demo_model()\n\n"
        "def always_wrong():\n"
        "    # 11 outputs, class 10 always wins: no silhouette-digits label is 10.\n"
        "    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 11))\n"
        "    with torch.no_grad():\n"
        "        model[1].weight.mul_(1e-3)\n"
        "        model[1].bias.zero_()[10] = 10.0\n"
        "    return model\n\n"
        "def channel_means():\n"
        "    # Predicts the channel with the largest mean: normalising changes that.\n"
        "    model = nn.Sequential(\n"
        "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)\n"
        "    )\n"
        "    with torch.no_grad():\n"
        "        model[2].weight.zero_()[:3] = torch.eye(3)\n"
        "        model[2].bias.fill_(-1e3)[:3] = 0.0\n"
        "    return model\n"
    )
    monkeypatch.chdir(root)
    kept = [p for p in sys.path if p not in ("", os.getcwd(), str(root))]
    monkeypatch.setattr(sys, "path", kept)
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_evaluate_end_to_end_with_random_baseline(capsys, tmp_path, weights):
    args = ["evaluate", "--model", MODEL, "--weights", str(weights), "--samples"]
    args += ["7", "--batch-size", "4", "--steps", "2", "--k", "20"]
    args += ["--output", str(tmp_path), "--quiet", "--num-figures", "2"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "TopKAttack" in out and "RandomAttack" in out and "report:" in out
    assert len(read_records(tmp_path / "records.jsonl")) == 7
    assert len(read_records(tmp_path / "random_records.jsonl")) == 7
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["attack"] for row in report["rows"]] == ["TopKAttack", "RandomAttack"]
    assert report["rows"][0]["summary"]["samples"] == 7
    assert report["settings"]["k"] == 20
    assert (tmp_path / "report.html").exists()
    assert (tmp_path / "figures" / "examples.png").is_file()
    # Both rows attack with the same budget.
    for name in ("records.jsonl", "random_records.jsonl"):
        assert all(r["linf"] <= 8 / 255 + 1e-6 for r in read_records(tmp_path / name))


def test_resume_of_a_finished_run_attacks_nothing(
    capsys, tmp_path, weights, monkeypatch
):
    from captum_robust.attacks import RandomAttack
    from captum_robust.attacks import TopKAttack

    args = ["evaluate", "--model", MODEL, "--weights", str(weights)]
    args += ["--samples", "6", "--batch-size", "3", "--k", "20"]
    args += ["--output", str(tmp_path), *FAST]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    records = (tmp_path / "records.jsonl").read_text()
    figure = (tmp_path / "figures" / "examples.png").read_bytes()
    calls = []

    def counted(original):
        def perturb(self, *a, **kw):
            calls.append(type(self).__name__)
            return original(self, *a, **kw)

        return perturb

    monkeypatch.setattr(TopKAttack, "perturb", counted(TopKAttack.perturb))
    monkeypatch.setattr(RandomAttack, "perturb", counted(RandomAttack.perturb))
    code, out, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert calls == []
    assert (tmp_path / "records.jsonl").read_text() == records
    assert (tmp_path / "figures" / "examples.png").read_bytes() == figure
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"][0]["figures"] == [str(tmp_path / "figures" / "examples.png")]
    # Resuming over more samples attacks only the new batch, once per row.
    more = [a if a != "6" else "9" for a in args]
    code, _, err = run(capsys, *more, "--resume")
    assert code == 0, err
    assert calls == ["TopKAttack", "RandomAttack"]
    assert [r["index"] for r in read_records(tmp_path / "records.jsonl")] == list(
        range(9)
    )


def test_resume_with_other_settings_is_refused(capsys, tmp_path, weights):
    args = ["evaluate", "--model", MODEL, "--weights", str(weights), "--samples"]
    args += ["4", "--batch-size", "4", "--k", "20", "--output", str(tmp_path), *FAST]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args, "--resume", "--epsilon", "0.01")
    assert code == 2
    assert "epsilon" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # Options that do not change a record may differ.
    code, _, err = run(capsys, *args, "--resume", "--num-figures", "3")
    assert code == 0, err


def test_corrupt_record_line_is_one_line_error(capsys, tmp_path, weights):
    args = ["evaluate", "--model", MODEL, "--weights", str(weights), "--samples"]
    args += ["4", "--batch-size", "2", "--k", "20", "--output", str(tmp_path)]
    args += ["--baseline", "none", *FAST]
    assert run(capsys, *args)[0] == 0
    path = tmp_path / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"index": 2, "label": \n'
    path.write_text("".join(lines))
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2
    assert "records.jsonl" in err and "line 3" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# A linear model's saliency does not depend on the input: the attack cannot move it.
@pytest.mark.filterwarnings("ignore:TopKAttack.*had no attack gradient")
def test_normalize_happens_inside_the_model(capsys, tmp_path, package):
    args = ["evaluate", "--model", f"{package}.models:channel_means", "--samples"]
    args += ["12", "--batch-size", "12", "--k", "20", "--baseline", "none"]
    args += ["--target", "predicted", "--metrics", "topk", *FAST]
    code, _, err = run(
        capsys, *args, "--normalize", "imagenet", "--output", str(tmp_path / "a")
    )
    assert code == 0, err
    records = read_records(tmp_path / "a" / "records.jsonl")
    # Reference: the largest channel mean of the normalised pixels, computed here.
    images = silhouette_digits(12, split="test", image_size=32, seed=0).tensors[0]
    means = images.mean(dim=(2, 3))
    normalised = (means - torch.tensor(cli.IMAGENET_MEAN)) / torch.tensor(
        cli.IMAGENET_STD
    )
    expected = normalised.argmax(1).tolist()
    assert [r["prediction"] for r in records] == expected
    assert expected != means.argmax(1).tolist()  # the check tells the two apart
    # The budget and the bounds are in pixel space.
    assert all(r["linf"] <= 8 / 255 + 1e-6 for r in records)
    # Explicit statistics are the same normalisation.
    mean = [str(v) for v in cli.IMAGENET_MEAN]
    std = [str(v) for v in cli.IMAGENET_STD]
    code, _, err = run(
        capsys, *args, "--mean", *mean, "--std", *std, "--output", str(tmp_path / "b")
    )
    assert code == 0, err
    assert read_records(tmp_path / "b" / "records.jsonl") == records


def test_normalized_model_matches_manual_normalisation():
    torch.manual_seed(0)
    inner = demo_model().eval()
    wrapped = cli.NormalizedModel(inner, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    x = torch.rand(2, 3, 16, 16)
    manual = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 2.0]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(wrapped(x), inner(manual))
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in inner.state_dict()}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--normalize", "imagenet", "--mean", "0.5"], "exclude each other"),
        (["--mean", "0.5"], "go together"),
        (["--mean", "0.5", "0.5", "--std", "0.2"], "needs 1 or 3 values"),
        (["--mean", "0.5", "--std", "0"], "must be > 0"),
        (["--attribution", "grad-cam", "--layer", "nope"], "not a module"),
        (["--layer", "3"], "--layer applies to grad-cam"),
        (["--nt-samples", "3"], "--nt-samples applies to smoothgrad"),
        (["--k", "5000"], "exceeds"),
    ],
)
def test_bad_combinations_end_in_one_line(capsys, tmp_path, extra, message):
    args = ["evaluate", "--model", MODEL, "--samples", "2", "--output", str(tmp_path)]
    code, _, err = run(capsys, *args, *FAST, *extra)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


# A linear model's saliency does not depend on the input: the attack cannot move it.
@pytest.mark.filterwarnings("ignore:TopKAttack.*had no attack gradient")
def test_target_predicted_and_the_no_sample_exit(capsys, tmp_path, package):
    args = ["evaluate", "--model", f"{package}.models:always_wrong", "--samples"]
    args += ["4", "--batch-size", "4", "--k", "20", "--output", str(tmp_path), *FAST]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert "no sample was evaluated" in err and "--target predicted" in err
    assert len(err.strip().splitlines()) == 1
    assert "report:" in out  # the records and the report are kept
    code, _, err = run(
        capsys, *args, "--target", "predicted", "--output", str(tmp_path / "p")
    )
    assert code == 0, err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    summary = report["rows"][0]["summary"]
    assert summary["clean_accuracy"] == 0 and summary["evaluated"] == 4
    assert all(
        r["prediction"] == 10 for r in read_records(tmp_path / "p" / "records.jsonl")
    )


def test_model_imports_from_the_current_directory(capsys, tmp_path, package):
    code, _, err = run(
        capsys,
        "evaluate",
        "--model",
        f"{package}.models:make_model",
        "--samples",
        "2",
        "--k",
        "20",
        "--output",
        str(tmp_path / "out"),
        "--baseline",
        "none",
        *FAST,
    )
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--model", "nopkg_xyz.models:f")
    assert code == 2
    assert "No module named 'nopkg_xyz'" in err and "PYTHONPATH" in err


def test_unwritable_output_is_one_line_error(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(
        capsys, "evaluate", "--model", MODEL, "--output", str(blocker / "out")
    )
    assert code == 2 and "cannot write there" in err
    assert len(err.strip().splitlines()) == 1
    # A permission error inside the run, after the output check.
    from captum_robust.evaluation import _records

    def denied(self, records):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(_records.RecordLog, "write", denied)
    code, _, err = evaluate(capsys, tmp_path / "o", "--samples 2")
    assert code == 2
    assert "Permission denied" in err and "records.jsonl" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(
            capsys, "evaluate", "--model", MODEL, "--output", str(folder / "out")
        )
    finally:
        folder.chmod(0o700)
    assert code == 2 and "cannot write there" in err and "Permission" in err


def test_grad_cam_with_default_layer_matches_captum(capsys, tmp_path):
    code, out, err = evaluate(
        capsys,
        tmp_path,
        "--samples 3 --batch-size 3 --attribution grad-cam --k 20 --metrics silhouette "
        "--baseline none --target predicted",
    )
    assert code == 0, err
    assert "grad-cam (13)" in out
    records = read_records(tmp_path / "records.jsonl")
    # Reference: Captum's LayerGradCam at the last ReLU, upsampled bilinearly.
    torch.manual_seed(0)
    model = demo_model().eval()
    data = silhouette_digits(3, split="test", image_size=32, seed=0)
    images, _, masks = data.tensors
    with torch.no_grad():
        predicted = model(images).argmax(1)
    maps = LayerGradCam(model, model[13]).attribute(
        images, target=predicted, relu_attributions=True
    )
    maps = F.interpolate(maps, size=(32, 32), mode="bilinear", align_corners=False)
    maps = maps.abs().sum(1)
    expected = (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1)
    torch.testing.assert_close(
        torch.tensor([r["silhouette_before"] for r in records]),
        expected.float(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_smoothgrad_and_mass_center(capsys, tmp_path):
    code, out, err = evaluate(
        capsys,
        tmp_path,
        "--samples 2 --batch-size 2 --attribution smoothgrad --nt-samples 2 --noise "
        "0.1 --attack mass-center --metrics center_shift topk --target predicted",
    )
    assert code == 0, err
    assert "smoothgrad" in out and "MassCenterAttack" in out
    records = read_records(tmp_path / "records.jsonl")
    assert all({"center_shift", "topk"} <= set(r) for r in records)
    assert all("kendall" not in r for r in records)


def test_integrated_gradients_and_attack_random_has_one_row(capsys, tmp_path):
    code, out, err = evaluate(
        capsys,
        tmp_path,
        "--samples 2 --batch-size 2 --attribution integrated-gradients --ig-steps 3 "
        "--attack random --metrics topk --target predicted",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["attack"] for row in report["rows"]] == ["RandomAttack"]
    assert not (tmp_path / "random_records.jsonl").exists()


def test_samples_are_the_first_n():
    a = silhouette_digits(20, split="test", image_size=32, seed=0)
    b = silhouette_digits(40, split="test", image_size=32, seed=0)
    c = silhouette_digits(300, split="test", image_size=32, seed=0)
    for x, y, z in zip(a.tensors, b.tensors, c.tensors):
        assert torch.equal(x, y[:20]) and torch.equal(y, z[:40])
    # The first chunk is the plain generator's batch of 256.
    plain = make_silhouette_digits(256, split="test", image_size=32, seed=0)
    assert torch.equal(c.tensors[0][:256], plain.images)
    # The second chunk is other data, not a repeat of the first.
    assert not torch.equal(c.tensors[0][256:300], c.tensors[0][:44])


def test_default_k_rule():
    assert [default_k(s, s) for s in (28, 32, 80, 128, 224, 512)] == [
        100,
        100,
        550,
        1000,
        1000,
        1000,
    ]
    assert default_k(8, 8) == 16  # at most a quarter of the pixels
    assert default_k(32, 128) == default_k(64, 64) == 400


def test_default_k_in_a_run(capsys, tmp_path):
    code, _, err = evaluate(
        capsys,
        tmp_path,
        "--samples 1 --image-size 64 --metrics topk --baseline none --target predicted",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "report.json").read_text())["settings"]["k"] == 400


def test_default_layer_of_torchvision_models(capsys):
    torchvision = pytest.importorskip("torchvision")
    x = torch.rand(1, 3, 32, 32)
    assert default_layer(torchvision.models.resnet18(), x) == "layer4"
    # Squeeze-excitation blocks pool inside `features`; the global pool comes after.
    mobilenet = torchvision.models.mobilenet_v3_small()
    assert default_layer(mobilenet, x) == "features"
    # ResNet's layer4 is 1x1 at 32 px: a constant Grad-CAM map, said on stderr.
    capsys.readouterr()
    resnet = torchvision.models.resnet18()
    _models.warn_if_single_cell(resnet, resnet.layer4, "layer4", x)
    assert "1x1 map" in capsys.readouterr().err
    _models.warn_if_single_cell(resnet, resnet.layer3, "layer3", x)
    assert capsys.readouterr().err == ""
    with pytest.raises(cli.CommandError, match="--layer"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), x)


def write_image_folder(root, size=16):
    for cls in ("cat", "dog"):
        for i in range(2):
            (root / "images" / cls).mkdir(parents=True, exist_ok=True)
            (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
            colour = (200, 40 * i, 90) if cls == "cat" else (30, 160, 40 * i)
            Image.new("RGB", (size, size), colour).save(
                root / "images" / cls / f"{i}.png"
            )
            mask = Image.new("L", (size, size), 0)
            mask.paste(255, (4, 4, size - 4, size - 4))
            mask.save(root / "masks" / cls / f"{i}.png")


def test_image_folder_run_and_upscale_warning(capsys, tmp_path):
    write_image_folder(tmp_path / "data")
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "evaluate",
            "--model",
            MODEL,
            "--data",
            "image-folder",
            "--data-root",
            str(tmp_path / "data"),
        ]
    )
    data = _data.load_dataset(args)
    err = capsys.readouterr().err
    assert data[0][0].shape == (3, 224, 224)
    assert "16x16" in err and "--image-size 16" in err
    code, out, err = evaluate(
        capsys,
        tmp_path / "o",
        "--data image-folder --image-size 16 --k 10 --attribution grad-cam "
        "--target predicted",
        "--data-root",
        str(tmp_path / "data"),
    )
    assert code == 0, err
    assert "warning" not in err
    records = read_records(tmp_path / "o" / "records.jsonl")
    assert [r["label"] for r in records] == [0, 0, 1, 1]
    assert all(0 <= r["silhouette_before"] <= 1 for r in records)


def test_help_shows_every_default_an_example_and_the_folder_layout(capsys):
    parser = cli.build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name in ("evaluate", "demo"):
        sub = subparsers.choices[name]
        formatter = sub.formatter_class(prog=sub.prog)
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.required:
                continue
            text = formatter._get_help_string(action) or ""
            assert "default" in text, (name, action.option_strings, text)
        help_text = sub.format_help()
        assert "example" in help_text
    help_text = subparsers.choices["evaluate"].format_help()
    assert (
        "images/<class>/<name>" in help_text and "masks/<class>/<name>.png" in help_text
    )
    assert "224 for" in help_text and "weights=None" in help_text
    assert "1000 from 128 px" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert captum_robust.__version__ in capsys.readouterr().out


def readme_evaluate_commands():
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if (
                len(words) > 1
                and words[0].endswith("captum-robust")
                and (words[1] == "evaluate")
            ):
                commands.append(words[1:])
    return commands


def test_readme_evaluate_commands_run_as_written(capsys, tmp_path):
    commands = readme_evaluate_commands()
    assert commands, "README.md has no `captum-robust evaluate` command"
    for number, argv in enumerate(commands):
        code, out, err = run(capsys, *argv, "--output", str(tmp_path / str(number)))
        assert code == 0, (argv, err)
        assert "RandomAttack" in out


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


@pytest.mark.parametrize(
    "option, value",
    [("--steps", "0"), ("--epsilon", "-1"), ("--epsilon", "8/0"), ("--k", "x")],
)
def test_bad_option_values_are_rejected_by_the_parser(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", MODEL, option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_budgets_may_be_fractions():
    args = cli.build_parser().parse_args(
        ["evaluate", "--model", MODEL, "--epsilon", "4/255", "--step-size", "0.5/255"]
    )
    assert args.epsilon == 4 / 255 and args.step_size == 0.5 / 255
    assert cli.build_parser().parse_args(["evaluate", "--model", MODEL]).epsilon == (
        8 / 255
    )
