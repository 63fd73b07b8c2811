"""Argument checks shared by every public call.

Each check raises a ``TypeError`` or ``ValueError`` whose message starts with the
argument's name, so that a user sees at once which argument is wrong. The checks
that more than one subpackage needs live here, once; a subpackage keeps only
the checks of its own contracts (a model, a mask, a loss function).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tensor_tuple(value: object, name: str) -> tuple[Tensor, ...]:
    """Return ``value`` as a non-empty tuple of tensors or raise ``TypeError``."""
    if isinstance(value, Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and len(value) > 0:
        if all(isinstance(v, Tensor) for v in value):
            return tuple(value)
    raise TypeError(
        f"`{name}` must be a Tensor or a non-empty tuple of Tensors, "
        f"got {type(value).__name__}."
    )


def check_float_tensors(tensors: Sequence[Tensor], name: str) -> None:
    """Check floating dtype, a batch dimension and one batch size across a tuple."""
    for i, t in enumerate(tensors):
        label = name if len(tensors) == 1 else f"{name}[{i}]"
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"`{label}` must have a floating dtype (float16, bfloat16, float32 or "
                f"float64), got {t.dtype}."
            )
        if t.dim() < 2:
            raise ValueError(
                f"`{label}` must have a batch dimension and at least one feature: "
                f"shape (B, ...), got shape {tuple(t.shape)}."
            )
        if t.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"`{label}` has batch size {t.shape[0]}, but `{name}[0]` has "
                f"{tensors[0].shape[0]}; all tensors of a tuple share the batch size."
            )
        if t.numel() == 0:
            raise ValueError(f"`{label}` is empty (shape {tuple(t.shape)}).")


def check_finite(tensors: Sequence[Tensor], name: str) -> None:
    """Reject NaN and inf. This costs one host synchronisation per call."""
    # min and max propagate NaN and expose inf, in one pass without a mask copy.
    # Widening to float64 is exact for every floating dtype; a cast to float32
    # would turn finite float64 values beyond 3.4e38 into inf.
    extremes = torch.stack([torch.stack(torch.aminmax(t)).double() for t in tensors])
    if not bool(torch.isfinite(extremes).all()):
        raise ValueError(f"`{name}` contains NaN or inf values.")


def check_same_device(**named: Tensor | Sequence[Tensor]) -> torch.device:
    """All tensors must live on one device; returns that device."""
    device = None
    first = None
    for name, value in named.items():
        tensors = (value,) if isinstance(value, Tensor) else tuple(value)
        for t in tensors:
            if device is None:
                device, first = t.device, name
            elif t.device != device:
                raise ValueError(
                    f"`{name}` is on {t.device} but `{first}` is on {device}; "
                    "move them to one device."
                )
    assert device is not None
    return device


def check_bool(value: object, name: str) -> bool:
    """A flag must be a bool: ``abs="no"`` is a mistake, not True."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}.")
    return value


def check_str(value: object, name: str, *, optional: bool = False) -> str | None:
    """A str, or also None when ``optional``."""
    if optional and value is None:
        return None
    if not isinstance(value, str):
        expected = "a str or None" if optional else "a str"
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__}.")
    return value


def check_path(value: object, name: str) -> str | Path:
    """A file or folder given as a str or a Path, returned as given."""
    if not isinstance(value, (str, Path)):
        raise TypeError(
            f"`{name}` must be a str or a Path, got {type(value).__name__}."
        )
    return value


def check_choice(value: object, choices: Sequence[object], name: str) -> None:
    """Any value that compares equal to one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")


def check_str_choice(value: object, choices: Sequence[str], name: str) -> str:
    """A str that is one of ``choices``; anything else is a TypeError first."""
    if not isinstance(value, str):
        allowed = ", ".join(repr(c) for c in choices)
        raise TypeError(
            f"`{name}` must be a str (one of {allowed}), got {type(value).__name__}."
        )
    check_choice(value, choices, name)
    return value


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return value


def check_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    value = float(value)
    if value != value:
        raise ValueError(f"`{name}` must not be NaN.")
    if minimum is not None:
        if strict_minimum and not value > minimum:
            raise ValueError(f"`{name}` must be > {minimum}, got {value}.")
        if not strict_minimum and value < minimum:
            raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}.")
    return value


def check_confidence(value: object, name: str = "confidence") -> float:
    """A level strictly inside (0, 1), as a float."""
    level = check_number(value, name, minimum=0.0, maximum=1.0)
    if not 0.0 < level < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1), got {value}.")
    return level


def check_seed(seed: object, *, non_negative: bool = False) -> int | None:
    """An int seed or None; ``non_negative`` also refuses seeds below 0."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int or None, got {type(seed).__name__}.")
    if non_negative and seed < 0:
        raise ValueError(f"`seed` must be >= 0, got {seed}.")
    return seed


def check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "`generator` must be a torch.Generator or None, got "
            f"{type(generator).__name__}."
        )
    return generator


def resolve_generator(
    generator: object, seed: int | None, device: torch.device
) -> torch.Generator | None:
    """The generator a random draw uses: given one, else a fresh seeded one, else None.

    ``None`` means torch's global generator for ``device``. ``seed`` is used as
    given: check it first (:func:`check_seed`) where its contract needs it.
    """
    if generator is not None:
        return check_generator(generator)
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)
