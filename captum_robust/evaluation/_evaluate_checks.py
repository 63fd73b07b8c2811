"""The argument and batch checks of evaluate_robustness."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_confidence
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_str
from captum_robust.evaluation._fingerprint import check_json
from captum_robust.evaluation._records import Record
from captum_robust.evaluation._records import check_records_path
from captum_robust.evaluation._summary import METRICS
from captum_robust.metrics import certified_topk_overlap
from captum_robust.metrics._registry import METRICS as METRIC_REGISTRY

TARGETS = ("label", "predicted")


def check_evaluate_arguments(
    model: nn.Module,
    attribution: Any,
    attack: Any,
    metrics: Sequence[str],
    *,
    k: int,
    attribution_kwargs: Mapping[str, Any] | None,
    target: str,
    records_path: str | Path | None,
    resume: bool,
    run_settings: Mapping[str, Any] | None,
    num_figures: int,
    confidence: float,
    progress: bool,
    description: str,
    on_batch: Callable[[list[Record]], None] | None,
    certify: Mapping[str, Any] | None = None,
) -> None:
    """Raise the error that names the first bad argument of evaluate_robustness."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError("`metrics` must be a sequence of metric names, not a str.")
    for name in metrics:
        check_choice(name, METRICS, "metrics")
    if not metrics:
        raise ValueError("`metrics` must name at least one metric.")
    check_positive_int(k, "k")
    check_positive_int(num_figures, "num_figures")
    check_choice(target, TARGETS, "target")
    check_bool(resume, "resume")
    check_bool(progress, "progress")
    check_confidence(confidence)
    check_str(description, "description")
    if on_batch is not None and not callable(on_batch):
        raise TypeError(
            f"`on_batch` must be callable or None, got {type(on_batch).__name__}."
        )
    if not (callable(attack) or hasattr(attack, "perturb")):
        raise TypeError(f"`attack` must be callable, got {type(attack).__name__}.")
    if not (callable(attribution) or hasattr(attribution, "attribute")):
        raise TypeError(
            f"`attribution` must be a Captum attribution or a callable, got "
            f"{type(attribution).__name__}."
        )
    if attribution_kwargs is not None and not isinstance(attribution_kwargs, Mapping):
        raise TypeError(
            "`attribution_kwargs` must be a dict or None, got "
            f"{type(attribution_kwargs).__name__}."
        )
    if run_settings is not None and not isinstance(run_settings, Mapping):
        raise TypeError(
            "`run_settings` must be a mapping or None, got "
            f"{type(run_settings).__name__}."
        )
    check_json(dict(run_settings or {}), "run_settings")
    check_records_path(records_path)
    _check_certify(certify, metrics)


# Keywords of certified_topk_overlap that the evaluation sets itself.
_CERTIFY_SET_HERE = ("k", "explanation_kwargs", "return_details", "generator")


def _check_certify(certify: object, metrics: Sequence[str]) -> None:
    if certify is None:
        if any(METRIC_REGISTRY[name].needs_options for name in metrics):
            raise ValueError(
                '`certify` must give the options of the "certified" metric (at '
                "least radius and sigma), got None."
            )
        return
    if not isinstance(certify, Mapping):
        raise TypeError(
            "`certify` must be a dict of certified_topk_overlap keywords or None, "
            f"got {type(certify).__name__}."
        )
    allowed = [
        name
        for name, parameter in inspect.signature(
            certified_topk_overlap
        ).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in _CERTIFY_SET_HERE
    ]
    for key in certify:
        if key not in allowed:
            raise ValueError(
                f"`certify` takes the keywords {allowed} of certified_topk_overlap, "
                f"got {key!r}."
            )
    missing = [key for key in ("radius", "sigma") if key not in certify]
    if missing:
        raise ValueError(f"`certify` must give {missing}.")
    check_json(dict(certify), "certify")


def _split_batch(batch: Any) -> tuple[Any, Any, Any]:
    if isinstance(batch, dict):
        missing = [key for key in ("image", "label") if key not in batch]
        if missing:
            raise TypeError(
                "`loader` must yield dict batches with 'image' and 'label' keys "
                f"(and optionally 'mask'); missing {missing}."
            )
        return batch["image"], batch["label"], batch.get("mask")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, labels = batch[0], batch[1]
        masks = batch[2] if len(batch) == 3 else None
        return images, labels, masks
    raise TypeError(
        "`loader` must yield (inputs, labels) or (inputs, labels, masks) batches, "
        f"got {type(batch).__name__}."
    )


def checked_batch(
    batch: Any, number: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The batch's inputs, labels and masks on ``device``, checked."""
    images, labels, masks = _split_batch(batch)
    if not isinstance(images, Tensor) or not images.is_floating_point():
        kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(
            f"`loader` must yield floating-point input Tensors, got {kind} in "
            f"batch {number}."
        )
    if images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(
            "`loader` must yield non-empty (B, ...) input batches, got shape "
            f"{tuple(images.shape)} in batch {number}."
        )
    if masks is not None and not isinstance(masks, Tensor):
        raise TypeError(
            f"`loader` must yield masks as Tensors, got {type(masks).__name__} in "
            f"batch {number}."
        )
    images = images.to(device)
    labels = check_class_indices(labels, images.shape[0], device, name="labels")
    try:
        check_finite([images], "inputs")
    except ValueError:
        raise ValueError(
            f"`loader` yields inputs with NaN or inf values (batch {number}); "
            "attributions and attacks of such inputs are undefined."
        ) from None
    masks = None if masks is None else masks.to(device)
    return images, labels, masks
