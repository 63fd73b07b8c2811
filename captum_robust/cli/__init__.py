"""The ``captum-robust`` command: ``demo``, ``reproduce`` and ``evaluate``.

``main`` is the entry point of the console script and of
``python -m captum_robust.cli``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The names of the docstring examples (`from captum_robust.cli import default_k`).
# The `name as name` form marks them as re-exports: an __all__ would also make the
# command a subpackage of the API reference, which it is not.
from captum_robust.cli._builders import default_k as default_k
from captum_robust.cli._commands import run_settings as run_settings
from captum_robust.cli._common import CommandError
from captum_robust.cli._common import one_line
from captum_robust.cli._data import silhouette_digits as silhouette_digits
from captum_robust.cli._models import IMAGENET_MEAN as IMAGENET_MEAN
from captum_robust.cli._models import IMAGENET_STD as IMAGENET_STD
from captum_robust.cli._models import NormalizedModel as NormalizedModel
from captum_robust.cli._models import default_layer as default_layer
from captum_robust.cli._models import load_model as load_model
from captum_robust.cli._parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``captum-robust``; user errors end in one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"captum-robust: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # An unwritable output folder, a missing file: the system's reason suffices.
        reason = exc.strerror or one_line(exc)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"captum-robust: error: {reason}{where}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        # The library's argument errors already name the argument and the fix.
        print(f"captum-robust: error: {one_line(exc)}", file=sys.stderr)
        return 2
