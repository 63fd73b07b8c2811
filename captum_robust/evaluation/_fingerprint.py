"""What determines an evaluation's records, as JSON that two runs can compare.

A resume is allowed only when every setting here is equal, so that records of
two experiments (another epsilon, another model, other weights, ...) never mix.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import numbers
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch import nn

from captum_robust.evaluation._records import RecordsMismatchError

_DIGEST = 16  # hex characters of a sha256 kept: enough to tell weights apart
_MAX_DEPTH = 4
_LONG = 256  # leaves whose JSON is longer are stored as their hash


def _hash_tensor(tensor: Tensor, cache: dict[int, str]) -> str:
    key = id(tensor)
    if key not in cache:
        data = tensor.detach().reshape(-1).contiguous().cpu()
        digest = hashlib.sha256(f"{data.dtype}{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy())
        cache[key] = digest.hexdigest()[:_DIGEST]
    return cache[key]


def module_digest(module: nn.Module, cache: dict[int, str] | None = None) -> str:
    """Hash of a module's state dict (parameters and persistent buffers)."""
    cache = {} if cache is None else cache
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict(keep_vars=True).items()):
        digest.update(name.encode())
        if isinstance(value, Tensor):
            digest.update(_hash_tensor(value, cache).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:_DIGEST]


def _qualname(value: Any) -> str:
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


class _Describer:
    """JSON description of an object: primitives as they are, tensors and
    modules by hash, other objects by class and public attributes."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cache: dict[int, str] = {}

    def __call__(self, value: Any, depth: int = 0, seen: frozenset = frozenset()):
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else repr(value)
        if isinstance(value, np.ndarray):
            return self(torch.from_numpy(np.ascontiguousarray(value)), depth, seen)
        if isinstance(value, numbers.Number) and hasattr(value, "item"):
            return self(value.item(), depth, seen)  # numpy and 0-dim scalars
        if isinstance(value, enum.Enum):
            return f"{_qualname(value)}.{value.name}"
        if isinstance(value, (torch.device, torch.dtype)):
            return str(value)
        if isinstance(value, Tensor):
            return {
                "tensor": list(value.shape),
                "dtype": str(value.dtype),
                "sha256": _hash_tensor(value, self.cache),
            }
        if value is self.model:
            return "<evaluated model>"
        if isinstance(value, nn.Module):
            return {
                "class": _qualname(value),
                "weights": module_digest(value, self.cache),
            }
        if isinstance(value, (types.BuiltinFunctionType, type)):
            return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
        if isinstance(value, types.FunctionType):
            return self._function(value, depth, seen)
        if isinstance(value, functools.partial):
            return {
                "partial": self(value.func, depth + 1, seen),
                "args": self(list(value.args), depth + 1, seen),
                "keywords": self(dict(value.keywords), depth + 1, seen),
            }
        if isinstance(value, types.MethodType):
            return {
                "method": value.__func__.__qualname__,
                "of": self(value.__self__, depth + 1, seen),
            }
        if id(value) in seen or depth >= _MAX_DEPTH:
            return _qualname(value)
        seen = seen | {id(value)}
        if isinstance(value, Mapping):
            return {
                str(key): self._leaf(self(item, depth + 1, seen))
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple)):
            return self._leaf([self(item, depth + 1, seen) for item in value])
        if isinstance(value, torch.Generator):
            return {"class": "torch.Generator", "initial_seed": value.initial_seed()}
        attributes = {
            name: item
            for name, item in sorted(getattr(value, "__dict__", {}).items())
            if not name.startswith("_")
        }
        described = {"class": _qualname(value)}
        # Captum keeps this flag private, but it changes every map.
        multiplies = getattr(type(value), "multiplies_by_inputs", None)
        if isinstance(multiplies, property):
            try:
                described["multiplies_by_inputs"] = bool(value.multiplies_by_inputs)
            except (AttributeError, NotImplementedError):
                pass  # Captum's base class leaves it undefined
        for name, item in attributes.items():
            described[name] = self._leaf(self(item, depth + 1, seen))
        return described

    def _function(self, value: types.FunctionType, depth: int, seen: frozenset):
        name = f"{value.__module__}.{value.__qualname__}"
        # A closure's captured values and a function's defaults are settings too
        # (an epsilon bound in a factory, say).
        cells = []
        for cell in value.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append(None)
        if not cells and not value.__defaults__ and not value.__kwdefaults__:
            return name
        if id(value) in seen or depth >= _MAX_DEPTH:
            return name
        seen = seen | {id(value)}
        described: dict[str, Any] = {"function": name}
        if cells:
            described["closure"] = self._leaf(
                [self(cell, depth + 1, seen) for cell in cells]
            )
        if value.__defaults__:
            described["defaults"] = self._leaf(
                [self(item, depth + 1, seen) for item in value.__defaults__]
            )
        if value.__kwdefaults__:
            described["kwdefaults"] = self(value.__kwdefaults__, depth + 1, seen)
        return described

    @staticmethod
    def _leaf(value: Any) -> Any:
        if isinstance(value, (list, str)):
            text = json.dumps(value)
            if len(text) > _LONG:
                return {"sha256": hashlib.sha256(text.encode()).hexdigest()[:_DIGEST]}
        return value


def describe(value: Any, model: nn.Module, cache: dict[int, str] | None = None) -> Any:
    """JSON-serialisable description of ``value`` (references to ``model`` are
    written as ``"<evaluated model>"``). ``cache`` keeps tensor hashes between
    calls (a surrogate sharing the model's weights is hashed once)."""
    describer = _Describer(model)
    if cache is not None:
        describer.cache = cache
    return describer(value)


def sample_digest(inputs: Tensor, label: Any) -> str:
    """Hash of one sample (its input and label), to recognise the data set."""
    digest = hashlib.sha256(_hash_tensor(inputs, {}).encode())
    digest.update(repr(label).encode())
    return digest.hexdigest()[:_DIGEST]


def check_json(value: Any, name: str) -> None:
    """``value`` must survive a JSON round trip unchanged."""
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be JSON-serialisable (str keys; str, finite numbers, "
            f"bools, None, lists and dicts as values): {error}."
        ) from None
    if json.loads(text) != value:
        raise TypeError(
            f"`{name}` must survive a JSON round trip unchanged (use lists, not "
            "tuples, and str keys)."
        )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


_ABSENT = "<absent>"


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """``{setting: (old, new)}`` for each leaf setting that differs."""
    flat_old, flat_new = _flatten(dict(old)), _flatten(dict(new))
    found = {}
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, _ABSENT), flat_new.get(key, _ABSENT)
        if before != after:
            found[key] = (before, after)
    return found


def check_same_settings(
    stored: Mapping[str, Any] | None, current: Mapping[str, Any], path: Any
) -> None:
    """Raise RecordsMismatchError unless the records were made under ``current``."""
    if stored is None:
        raise RecordsMismatchError(
            f"`records_path` {path} holds records without the settings that "
            "produced them (written by an earlier version of captum_robust), so "
            "they cannot be checked against this run; start afresh with "
            "resume=False or use another records_path."
        )
    found = differences(stored, current)
    if not found:
        return
    lines = "\n".join(
        f"  {key}: {json.dumps(old)} in the records, {json.dumps(new)} now"
        for key, (old, new) in found.items()
    )
    raise RecordsMismatchError(
        f"`records_path` {path} holds records made under other settings; resuming "
        f"would mix two experiments. Differing settings ({len(found)}):\n{lines}\n"
        "Run with the settings of the records, or start afresh with resume=False "
        "or another records_path.",
        found,
    )
