"""Save and restore the training flag of every submodule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "preserved_modes"]


@contextmanager
def preserved_modes(module: nn.Module | None) -> Iterator[None]:
    """Restore each submodule's ``training`` flag on exit, normal or by an exception.

    Flags are restored one by one rather than with ``train(mode)`` so that a model
    in a mixed state (frozen BatchNorm layers in eval inside a training model)
    comes back exactly as it was.
    """
    if module is None:
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def eval_mode(module: nn.Module | None) -> Iterator[None]:
    """Put ``module`` in eval mode for the body; restore every submodule's flag."""
    with preserved_modes(module):
        if module is not None:
            module.eval()
        yield
