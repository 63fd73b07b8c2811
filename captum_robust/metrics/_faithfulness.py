"""Insertion and deletion curves: is the explanation faithful to the model?"""

from __future__ import annotations

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.modes import eval_mode
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_float_tensors
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._maps import spatial_attribution


def _pixel_ranks(maps: Tensor) -> Tensor:
    """(B, H*W) rank of every pixel, 0 for the largest; ties by pixel order."""
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def _curve(
    mode: str,
    *,
    model: object,
    inputs: object,
    attributions: TensorOrTuple,
    target: object,
    n_steps: object,
    baseline: object,
    softmax: object,
    abs: object,
    channel_reduction: object,
    max_examples_per_batch: object,
) -> Tensor:
    """The insertion or deletion curve (``mode``); takes the public functions'
    arguments by name."""
    if not isinstance(model, nn.Module) and not callable(model):
        raise TypeError(f"`model` must be callable, got {type(model).__name__}.")
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"`inputs` must be a Tensor (B, C, H, W), got {type(inputs).__name__}."
        )
    check_float_tensors((inputs,), "inputs")
    check_finite((inputs,), "inputs")
    if inputs.dim() != 4:
        raise ValueError(
            f"`inputs` must have shape (B, C, H, W), got {tuple(inputs.shape)}."
        )
    steps = check_positive_int(n_steps, "n_steps")
    fill = check_number(baseline, "baseline")
    check_bool(softmax, "softmax")
    check_map_options(abs, channel_reduction)
    chunk = (
        None
        if max_examples_per_batch is None
        else check_positive_int(max_examples_per_batch, "max_examples_per_batch")
    )
    maps = spatial_attribution(
        attributions, abs=abs, channel_reduction=channel_reduction
    )
    batch, _, height, width = inputs.shape
    if tuple(maps.shape) != (batch, height, width):
        raise ValueError(
            f"`attributions` gives maps {tuple(maps.shape)}, which must match the "
            f"inputs' (B, H, W) = {(batch, height, width)}."
        )
    labels = check_class_indices(target, batch, inputs.device)
    pixels = height * width
    ranks = _pixel_ranks(maps).view(batch, 1, height, width)
    # Joo et al.: step i keeps (insertion) or removes (deletion) the top
    # floor(i * N / n_steps) pixels, i = 0 .. n_steps - 1.
    counts = torch.arange(steps, device=inputs.device) * pixels // steps
    total = batch * steps
    size = total if chunk is None else chunk
    probabilities = []
    with eval_mode(model if isinstance(model, nn.Module) else None), torch.no_grad():
        for start in range(0, total, size):
            flat = torch.arange(start, min(start + size, total), device=inputs.device)
            sample, step = flat // steps, flat % steps
            top = ranks.index_select(0, sample) < counts[step].view(-1, 1, 1, 1)
            keep = top if mode == "insertion" else ~top
            copies = torch.where(keep, inputs.index_select(0, sample), fill)
            logits = model(copies)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ValueError(
                    "`model` must return (B, num_classes) outputs, got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}."
                )
            if start == 0:
                check_class_indices(
                    labels, batch, inputs.device, num_classes=logits.shape[1]
                )
            scores = logits.softmax(dim=1) if softmax else logits
            probabilities.append(scores.gather(1, labels[sample].view(-1, 1))[:, 0])
    return torch.cat(probabilities).view(batch, steps)


def insertion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: TensorOrTuple,
    *,
    target: object,
    n_steps: int = 20,
    baseline: float = 0.0,
    softmax: bool = True,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Class probability as the most relevant pixels are kept, per sample.

    Joo et al.'s insertion curve: step ``i`` (``i = 0 .. n_steps - 1``) keeps the
    top ``floor(i * N / n_steps)`` of the N pixels of the map (all channels of a
    pixel together) and sets the others to ``baseline``; the value is the
    softmax probability of the target class. Pixels rank by the map of
    ``spatial_attribution`` (magnitude, channel sum), ties broken by pixel
    order. The masked copies of a chunk go through the model in one forward;
    the model runs in eval mode and its modes are restored. A faithful
    explanation gives a curve that rises early.

    Parameters
    ----------
    model : nn.Module or callable
        Returns (B, num_classes) logits.
    inputs : Tensor
        Images (B, C, H, W).
    attributions : Tensor
        Their explanations, (B, C, H, W), (B, 1, H, W) or (B, H, W).
    target : int, Tensor or list of int
        The class scored per sample (Joo: the true class).
    n_steps : int, default 20
        Points of the curve.
    baseline : float, default 0.0
        Value of the removed pixels (Joo: zero).
    softmax : bool, default True
        Probabilities; False scores the raw logits.
    abs, channel_reduction
        Map preparation, as for every metric.
    max_examples_per_batch : int, optional
        Most masked copies per forward (default: all ``B * n_steps``).

    Returns
    -------
    Tensor
        Shape (B, n_steps), the scores at fractions ``i / n_steps``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import insertion_curve, insertion_area
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> inputs = torch.rand(3, 1, 4, 4)
    >>> attr = torch.rand(3, 1, 4, 4)
    >>> insertion_curve(model, inputs, attr, target=0, n_steps=4).shape
    torch.Size([3, 4])
    >>> insertion_area(model, inputs, attr, target=0).shape
    torch.Size([3])
    """
    return _curve("insertion", **locals())


def deletion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: TensorOrTuple,
    *,
    target: object,
    n_steps: int = 20,
    baseline: float = 0.0,
    softmax: bool = True,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Class probability as the most relevant pixels are removed, per sample.

    The complement of :func:`insertion_curve`: step ``i`` sets the top
    ``floor(i * N / n_steps)`` pixels to ``baseline`` and keeps the rest. A
    faithful explanation gives a curve that falls early (a low area).

    Parameters
    ----------
    model, inputs, attributions, target, n_steps, baseline, softmax
        As in :func:`insertion_curve`.
    abs, channel_reduction, max_examples_per_batch
        As in :func:`insertion_curve`.

    Returns
    -------
    Tensor
        Shape (B, n_steps).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import deletion_curve
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> inputs = torch.ones(1, 1, 2, 2)
    >>> curve = deletion_curve(model, inputs, inputs, target=0, n_steps=2)
    >>> curve.shape
    torch.Size([1, 2])
    """
    return _curve("deletion", **locals())


def insertion_area(
    model: nn.Module,
    inputs: Tensor,
    attributions: TensorOrTuple,
    *,
    target: object,
    n_steps: int = 20,
    baseline: float = 0.0,
    softmax: bool = True,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Area under :func:`insertion_curve`: the mean of its points, per sample.

    The left Riemann sum over fractions ``i / n_steps`` (Joo et al.'s mean
    probability). In [0, 1] with ``softmax=True``; higher is more faithful.

    Parameters
    ----------
    model, inputs, attributions, target, n_steps, baseline, softmax
        As in :func:`insertion_curve`.
    abs, channel_reduction, max_examples_per_batch
        As in :func:`insertion_curve`.

    Returns
    -------
    Tensor
        Shape (B,); in [0, 1] with ``softmax=True``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import insertion_area
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> _ = torch.nn.init.zeros_(model[1].weight)  # ignores its input
    >>> _ = torch.nn.init.zeros_(model[1].bias)
    >>> insertion_area(model, torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2), target=0)
    tensor([0.5000])
    """
    return insertion_curve(**locals()).mean(dim=1)


def deletion_area(
    model: nn.Module,
    inputs: Tensor,
    attributions: TensorOrTuple,
    *,
    target: object,
    n_steps: int = 20,
    baseline: float = 0.0,
    softmax: bool = True,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """Area under :func:`deletion_curve`, per sample; lower is more faithful.

    The mean of its points, as for :func:`insertion_area`.

    Parameters
    ----------
    model, inputs, attributions, target, n_steps, baseline, softmax
        As in :func:`deletion_curve`.
    abs, channel_reduction, max_examples_per_batch
        As in :func:`deletion_curve`.

    Returns
    -------
    Tensor
        Shape (B,); in [0, 1] with ``softmax=True``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import deletion_area
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> _ = torch.nn.init.zeros_(model[1].weight)  # ignores its input
    >>> _ = torch.nn.init.zeros_(model[1].bias)
    >>> deletion_area(model, torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2), target=0)
    tensor([0.5000])
    """
    return deletion_curve(**locals()).mean(dim=1)
