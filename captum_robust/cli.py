"""The ``captum-robust`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from captum_robust._quick_demo import run_quick_demo

    run_quick_demo(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-robust",
        description="Robustness metrics, attacks and regularizers for Captum.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="score Captum attributions of a small model trained on the spot",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of every random step")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captum-robust`` command.

    Examples
    --------
    >>> from captum_robust.cli import build_parser
    >>> build_parser().parse_args(["demo", "--seed", "3"]).seed
    3
    """
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
