"""The one check of class targets and labels that every public entry point uses.

A target (or a label) names one class per sample: an int for the whole batch, an
integer Tensor of shape () or (B,), or a list of B ints. Errors name the argument
(``target``, ``labels``, ...) and say what was expected, before Captum or the
model sees the value.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_class_indices", "check_class_range"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_class_indices(
    target: object,
    batch_size: int,
    device: torch.device | str | None = None,
    *,
    name: str = "target",
    num_classes: int | None = None,
) -> Tensor:
    """``target`` as a LongTensor of shape (batch_size,), checked.

    Parameters
    ----------
    target : int, Tensor or list of int
        One class index for every sample, or one per sample.
    batch_size : int
        Number of samples the target must cover.
    device : torch.device or str, optional
        Device of the returned tensor; defaults to the target's own (CPU for ints
        and lists).
    name : str, default "target"
        Argument name used in error messages.
    num_classes : int, optional
        When given, every index must lie in [0, num_classes); this costs one host
        synchronisation for tensor targets.

    Raises
    ------
    TypeError
        For bools, floats, tuples, strings and other non-integer values.
    ValueError
        For negative indices, indices >= ``num_classes`` and wrong lengths.
    """
    expected = (
        f"an int, an integer Tensor of shape () or ({batch_size},), or a list of "
        f"{batch_size} ints (one class index per sample)"
    )
    if _is_int(target):
        if target < 0:
            raise ValueError(
                f"`{name}` must be a non-negative class index, got {target}."
            )
        indices = torch.full((batch_size,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if (
            target.dtype == torch.bool
            or target.is_floating_point()
            or (target.is_complex())
        ):
            raise TypeError(
                f"`{name}` must hold integer class indices, got {target.dtype}."
            )
        if target.dim() == 0 or (target.dim() == 1 and target.shape[0] == 1):
            indices = target.reshape(1).expand(batch_size)
        elif target.dim() == 1 and target.shape[0] == batch_size:
            indices = target
        else:
            raise ValueError(
                f"`{name}` must be {expected}; got a Tensor of shape "
                f"{tuple(target.shape)}."
            )
        indices = indices.to(device=device if device is not None else target.device)
        indices = indices.long()
        if indices.numel() and bool((indices < 0).any()):
            raise ValueError(
                f"`{name}` must hold non-negative class indices, got "
                f"{int(indices.min())}."
            )
    elif isinstance(target, list):
        if not all(_is_int(t) for t in target):
            bad = next(t for t in target if not _is_int(t))
            raise TypeError(
                f"`{name}` as a list must hold ints, got an element of type "
                f"{type(bad).__name__}."
            )
        if len(target) != batch_size:
            raise ValueError(
                f"`{name}` as a list must hold {batch_size} ints (one per sample), "
                f"got {len(target)}."
            )
        if any(t < 0 for t in target):
            raise ValueError(
                f"`{name}` must hold non-negative class indices, got {min(target)}."
            )
        indices = torch.tensor(target, dtype=torch.long, device=device)
    else:
        raise TypeError(f"`{name}` must be {expected}; got {type(target).__name__}.")
    if num_classes is not None:
        check_class_range(indices, num_classes, name=name)
    return indices


def check_class_range(
    indices: Tensor, num_classes: int, *, name: str = "target"
) -> None:
    """Every index in [0, num_classes); one host synchronisation."""
    if indices.numel() == 0:
        return
    top = int(indices.max())
    if top >= num_classes:
        raise ValueError(
            f"`{name}` must hold class indices in [0, {num_classes - 1}] for a model "
            f"with {num_classes} outputs, got {top}."
        )
