"""The ``captum-robust`` command: ``demo`` and ``evaluate``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ATTRIBUTIONS = ("saliency", "integrated-gradients", "input-x-gradient")
ATTACKS = ("topk", "mass-center", "random")
DATASETS = ("silhouette-digits", "oxford-pets", "voc", "image-folder")


class CommandError(Exception):
    """An error the user can fix; reported as one line, without a traceback."""


def _demo(args: argparse.Namespace) -> int:
    from captum_robust.evaluation import DemoSettings, run_demo

    run_demo(
        args.output, settings=DemoSettings(seed=args.seed), progress=not args.quiet
    )
    return 0


def load_model(spec: str, weights: str | None, device: str) -> Any:
    """Build ``package.module:factory`` and load a state dict into it."""
    import torch
    from torch import nn

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--model must look like package.module:factory, got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import module {module_name!r} ({exc})") from exc
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise CommandError(f"{module_name!r} has no callable named {attribute!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise CommandError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CommandError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CommandError(
                f"cannot read weights {path}: not a PyTorch state dict file"
            ) from exc
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CommandError(
                f"weights {path} do not fit {spec}: {_one_line(exc)}"
            ) from exc
    return model.to(device).eval()


def _dataset(args: argparse.Namespace) -> Any:
    from captum_robust import datasets

    if args.data == "silhouette-digits":
        batch = datasets.make_silhouette_digits(
            args.samples or 256,
            split=args.split or "test",
            image_size=args.image_size or 32,
            seed=args.seed,
        )
        from torch.utils.data import TensorDataset

        return TensorDataset(batch.images, batch.labels, batch.masks)
    if args.data_root is None:
        raise CommandError(f"--data {args.data} needs --data-root")
    size = args.image_size or 224
    if args.data == "oxford-pets":
        data = datasets.OxfordIIITPetSilhouettes(
            args.data_root, split=args.split or "test", image_size=size
        )
    elif args.data == "voc":
        data = datasets.VOCSegmentationMasks(
            args.data_root, image_set=args.split or "val", image_size=size
        )
    else:
        data = datasets.ImageFolderWithMasks(args.data_root, image_size=size)
    if args.samples:
        from torch.utils.data import Subset

        data = Subset(data, range(min(args.samples, len(data))))
    return data


def _attribution(args: argparse.Namespace, model: Any) -> tuple[Any, dict[str, Any]]:
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    if args.ig_steps is not None and args.attribution != "integrated-gradients":
        raise CommandError(
            f"--ig-steps applies to integrated-gradients, not {args.attribution}"
        )
    if args.attribution == "saliency":
        return Saliency(model), {}
    if args.attribution == "input-x-gradient":
        return InputXGradient(model), {}
    return IntegratedGradients(model), {"n_steps": args.ig_steps or 50}


def _attack(
    args: argparse.Namespace, model: Any, attribution: Any, kwargs: dict
) -> Any:
    from captum_robust.attacks import MassCenterAttack, RandomAttack, TopKAttack

    common = dict(
        epsilon=args.epsilon,
        step_size=args.step_size,
        n_steps=args.steps,
        restarts=args.restarts,
        lower_bound=args.lower_bound,
        upper_bound=args.upper_bound,
        attribution_kwargs=kwargs or None,
        seed=args.seed,
    )
    if args.attack == "random":
        if args.surrogate_beta is not None:
            raise CommandError("--surrogate-beta does not apply to the random attack")
        return RandomAttack(
            model,
            attribution,
            criterion=args.criterion or "topk",
            criterion_k=args.k,
            **common,
        )
    beta = 10.0 if args.surrogate_beta is None else args.surrogate_beta
    surrogate = {"surrogate_beta": None if beta == 0 else beta}
    if args.attack == "topk":
        return TopKAttack(
            model,
            attribution,
            k=args.k,
            criterion=args.criterion or "topk",
            **surrogate,
            **common,
        )
    return MassCenterAttack(
        model,
        attribution,
        criterion=args.criterion or "center_shift",
        criterion_k=args.k,
        **surrogate,
        **common,
    )


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(
            f"--device {args.device} requested but CUDA is not available"
        )
    launched = _init_distributed(args)
    try:
        status = _evaluate_on_this_rank(args)
        if launched:
            # The other ranks wait for the first to write the report, so that
            # none tears down its connections while a peer still uses them.
            torch.distributed.barrier()
        return status
    finally:
        if launched:
            torch.distributed.destroy_process_group()


def _init_distributed(args: argparse.Namespace) -> bool:
    """Join the process group torchrun describes in the environment, if any."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return False
    cuda = args.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if args.device == "cuda":
        # One GPU per process: torchrun numbers the processes of a machine.
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        torch.cuda.set_device(torch.device(args.device))
    return True


def _evaluate_on_this_rank(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from captum_robust.evaluation import ReportRow, evaluate_robustness, write_report
    from captum_robust.evaluation._distributed import rank_and_world
    from captum_robust.evaluation._report import format_table

    # The factory may draw initial weights: same seed, same model on every rank.
    torch.manual_seed(args.seed)
    model = load_model(args.model, args.weights, args.device)
    data = _dataset(args)
    attribution, attribution_kwargs = _attribution(args, model)
    attack = _attack(args, model, attribution, attribution_kwargs)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    output = Path(args.output)
    result = evaluate_robustness(
        model,
        loader,
        attribution,
        attack,
        args.metrics,
        k=args.k,
        attribution_kwargs=attribution_kwargs,
        records_path=output / "records.jsonl",
        resume=args.resume,
        device=args.device,
        figures_dir=output / "figures",
        num_figures=args.num_figures,
        progress=not args.quiet,
    )
    if rank_and_world()[0] != 0:
        return 0
    row = ReportRow(
        args.model, args.attribution, args.attack, result.summary, result.figure_paths
    )
    settings = {key: value for key, value in vars(args).items() if key != "handler"}
    json_path, html_path = write_report([row], output, settings=settings)
    print(format_table([row]))
    print(f"report: {html_path} and {json_path}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


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
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train natural and robust models on the embedded benchmark, attack them",
    )
    demo.add_argument("--output", default="captum_robust_output", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random step")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a model's attribution robustness on a data set"
    )
    evaluate.add_argument(
        "--model", required=True, help="package.module:factory returning an nn.Module"
    )
    evaluate.add_argument("--weights", help="state dict (.pt) to load into the model")
    evaluate.add_argument("--data", choices=DATASETS, default="silhouette-digits")
    evaluate.add_argument("--data-root", help="folder of the data set on disk")
    evaluate.add_argument("--split", help="data split (default: test / val)")
    evaluate.add_argument("--image-size", type=_positive_int)
    evaluate.add_argument("--samples", type=_positive_int, help="evaluate the first N")
    evaluate.add_argument("--batch-size", type=_positive_int, default=32)
    evaluate.add_argument("--attribution", choices=ATTRIBUTIONS, default="saliency")
    evaluate.add_argument(
        "--ig-steps", type=_positive_int, help="integration steps (default 50)"
    )
    evaluate.add_argument("--attack", choices=ATTACKS, default="topk")
    evaluate.add_argument("--epsilon", type=_non_negative_float, default=8 / 255)
    evaluate.add_argument("--step-size", type=float, default=1 / 255)
    evaluate.add_argument("--steps", type=_positive_int, default=50)
    evaluate.add_argument("--restarts", type=_positive_int, default=1)
    evaluate.add_argument("--k", type=_positive_int, default=100)
    evaluate.add_argument(
        "--criterion",
        choices=("topk", "kendall", "spearman", "center_shift"),
        help="how the attack picks its best iterate (default: topk; center_shift "
        "for mass-center)",
    )
    evaluate.add_argument(
        "--surrogate-beta",
        type=_non_negative_float,
        help="softplus beta of the surrogate (default 10; 0 uses the model itself)",
    )
    evaluate.add_argument("--lower-bound", type=float, default=0.0)
    evaluate.add_argument("--upper-bound", type=float, default=1.0)
    evaluate.add_argument(
        "--metrics",
        nargs="+",
        default=["topk", "kendall", "spearman", "center_shift", "silhouette"],
        choices=("topk", "kendall", "spearman", "center_shift", "silhouette"),
    )
    evaluate.add_argument("--output", default="captum_robust_output/evaluate")
    evaluate.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run (with any number of processes)",
    )
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    evaluate.add_argument("--num-figures", type=_positive_int, default=8)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``captum-robust``; user errors end in one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"captum-robust: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # The library's argument errors already name the argument and the fix.
        print(f"captum-robust: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
