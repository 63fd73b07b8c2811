"""What the subcommands run: ``demo``, ``reproduce`` and ``evaluate``.

The library is imported inside the commands, so that ``captum-robust --help``
and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from captum_robust.cli._builders import ATTACK_NAMES
from captum_robust.cli._builders import build_attack
from captum_robust.cli._builders import build_attribution
from captum_robust.cli._builders import default_k
from captum_robust.cli._common import CommandError
from captum_robust.cli._common import check_device
from captum_robust.cli._common import check_output
from captum_robust.cli._common import one_line
from captum_robust.cli._data import load_dataset
from captum_robust.cli._models import NormalizedModel
from captum_robust.cli._models import input_normalization
from captum_robust.cli._models import load_model

# Option values that do not change a single record: a resume may differ in them.
# The number of samples is one of them: a resumed run may go on over more samples.
_NOT_FINGERPRINTED = (
    "handler",
    "command",
    "quiet",
    "resume",
    "output",
    "device",
    "samples",
    "num_figures",
)


def demo_command(args: argparse.Namespace) -> int:
    from captum_robust.experiments import DemoSettings
    from captum_robust.experiments import run_demo

    check_output(Path(args.output))
    run_demo(
        args.output, settings=DemoSettings(seed=args.seed), progress=not args.quiet
    )
    return 0


def reproduce_command(args: argparse.Namespace) -> int:
    from captum_robust.experiments._reproduce import METHODS
    from captum_robust.experiments._reproduce import MISSING_MLXTEND
    from captum_robust.experiments._reproduce import ReproduceSettings
    from captum_robust.experiments._reproduce import run_reproduction

    try:
        import mlxtend  # noqa: F401
    except ImportError:
        raise CommandError(MISSING_MLXTEND) from None
    methods = tuple(args.methods) if args.methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CommandError(
            f"--methods: unknown name(s) {', '.join(unknown)}; choose among "
            + ", ".join(METHODS)
        )
    if "NATURAL" not in methods:
        raise CommandError(
            "--methods must include NATURAL (the baseline of every effect)"
        )
    check_device(args.device)
    check_output(Path(args.output))
    if args.quick:
        preset = ReproduceSettings.quick
    elif args.full:
        preset = ReproduceSettings.full
    else:
        preset = ReproduceSettings.default
    try:
        run_reproduction(
            args.output,
            preset(seed=args.seed),
            methods=methods,
            device=args.device,
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    check_device(args.device)
    if args.attack == "random" and args.surrogate_beta is not None:
        raise CommandError("--surrogate-beta does not apply to the random attack")
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


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options that decide the records, bound into their fingerprint.

    Where the output goes, the device, progress bars and ``--resume`` itself
    are left out: a run may be continued elsewhere or more quietly.

    Examples
    --------
    >>> from captum_robust.cli import build_parser, run_settings
    >>> args = build_parser().parse_args(
    ...     ["evaluate", "--model", "m:f", "--quiet", "--steps", "3"])
    >>> settings = run_settings(args)
    >>> settings["steps"], "quiet" in settings, "output" in settings
    (3, False, False)
    """
    return {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in _NOT_FINGERPRINTED
        # Without --certify its settings change no record, and runs from before
        # the certificate existed still resume.
        and not (key.startswith("certify") and getattr(args, "certify", None) is None)
    }


def _evaluate_on_this_rank(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from captum_robust.evaluation import ReportRow
    from captum_robust.evaluation import evaluate_robustness
    from captum_robust.evaluation import format_table
    from captum_robust.evaluation import write_report
    from captum_robust.evaluation._distributed import rank_and_world

    # The factory may draw initial weights: same seed, same model on every rank.
    torch.manual_seed(args.seed)
    inner = load_model(args.model, args.weights, args.device)
    data = load_dataset(args)
    example = data[0][0].unsqueeze(0).to(args.device)
    channels, height, width = example.shape[1:]
    normalization = input_normalization(args, channels)
    model = inner
    if normalization is not None:
        model = NormalizedModel(inner, mean=normalization[0], std=normalization[1])
        model = model.to(args.device)
    k = args.k if args.k is not None else default_k(height, width)
    if k > height * width:
        raise CommandError(f"--k {k} exceeds the {height}x{width} pixels of an image")
    attribution, attribution_kwargs, method = build_attribution(
        args, model, inner, example
    )
    kinds = [args.attack]
    if args.baseline == "random" and args.attack != "random":
        kinds.append("random")
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    output = Path(args.output)
    # Checked once the options are known to be good (no stray folder for a typo)
    # but before any sample is attacked.
    check_output(output)
    settings = run_settings(args)
    settings["k"] = k
    rank = rank_and_world()[0]
    rows = []
    evaluated = None
    for kind in kinds:
        attack = build_attack(args, kind, model, attribution, attribution_kwargs, k)
        figures_dir = output / "figures" if kind == args.attack else None
        figure = output / "figures" / "examples.png"
        if figures_dir is not None and rank == 0 and not args.resume:
            # A fresh run must not leave an older run's figure behind to be
            # reused by a later resume.
            figure.unlink(missing_ok=True)
        reuse_figure = figures_dir is not None and args.resume and figure.is_file()
        if reuse_figure:
            # The finished run's figure stands; redrawing it would attack a
            # batch again.
            figures_dir = None
        records = "records.jsonl" if kind == args.attack else "random_records.jsonl"
        with _mismatch_hint():
            result = evaluate_robustness(
                model,
                loader,
                attribution,
                attack,
                args.metrics,
                k=k,
                attribution_kwargs=attribution_kwargs,
                records_path=output / records,
                resume=args.resume,
                device=args.device,
                figures_dir=figures_dir,
                num_figures=args.num_figures,
                progress=not args.quiet,
                description=f"{kind} attack",
                target=args.target,
                run_settings={**settings, "attack_row": kind},
                # Of the clean inputs: the same for every attack row.
                certify=_certify_options(args) if kind == args.attack else None,
            )
        paths = [figure] if reuse_figure else list(result.figure_paths)
        rows.append(
            ReportRow(args.model, method, ATTACK_NAMES[kind], result.summary, paths)
        )
        if evaluated is None:
            evaluated = result
    if rank != 0:
        return 0
    json_path, html_path = write_report(rows, output, settings=settings)
    print(format_table(rows))
    print(f"report: {html_path} and {json_path}")
    _check_evaluated(args, evaluated)
    return 0


def _certify_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.certify is None:
        return None
    return {
        "radius": args.certify,
        "sigma": args.certify_sigma,
        "n_samples": args.certify_samples,
        "sparsity": args.certify_sparsity,
        "alpha": args.certify_alpha,
        "seed": args.seed,
    }


@contextmanager
def _mismatch_hint() -> Iterator[None]:
    from captum_robust.evaluation import RecordsMismatchError

    try:
        yield
    except RecordsMismatchError as exc:
        raise CommandError(
            f"--resume: {one_line(exc)} (on the command line: pass the options of "
            "the stopped run, or drop --resume, or choose another --output)"
        ) from exc


def _check_evaluated(args: argparse.Namespace, result: Any) -> None:
    """A report over no sample is no result: say why and how to get one."""
    if result is None or result.num_evaluated > 0:
        return
    total = result.num_evaluated + result.num_skipped
    if args.target == "label":
        raise CommandError(
            f"no sample was evaluated: the model classified none of the {total} "
            "samples correctly, and --target label skips misclassified ones. An "
            "untrained model (random weights), wrong --weights or --normalize, or "
            "labels that are not the model's classes (folder indices are not "
            "ImageNet classes) do this; --target predicted explains and attacks the "
            "predicted class instead"
        )
    raise CommandError(f"no sample was evaluated (of {total})")
