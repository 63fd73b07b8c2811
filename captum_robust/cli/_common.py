"""The command line's user errors and the checks every subcommand makes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


class CommandError(Exception):
    """An error the user can fix; reported as one line, without a traceback."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, cut to 400 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def check_output(output: Path) -> None:
    """Fail at once, in one line, when the output folder cannot be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        # A unique name: the ranks of a distributed run probe the same folder.
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write_test"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CommandError(f"--output {output}: cannot write there ({reason})") from exc


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {device} requested but CUDA is not available")
