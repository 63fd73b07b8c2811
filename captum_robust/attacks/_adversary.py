"""A cross-entropy PGD on the prediction, and the robust accuracy it measures.

Captum's ``captum.robust.PGD`` is written for models that return
probabilities: its default loss is ``-log(output)``. On logits that loss stops
pushing once the true logit reaches 0 (and pulls it back up below 0), so the
"robust accuracy" it gives depends on an arbitrary offset of the logits. Its
FGSM step also leaves every input element whose gradient is at most 1e-6
untouched, which stalls the attack where the softmax saturates. The PGD here
ascends the cross-entropy of the logits with sign steps, from a random start,
with no such threshold, as Madry et al. train and evaluate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.ball import check_bounds_pair
from captum_robust._utils.ball import check_radius
from captum_robust._utils.ball import pgd_ascent
from captum_robust._utils.modes import eval_mode
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.targets import check_class_range
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int

__all__ = ["RobustAccuracy", "pgd_cross_entropy", "robust_accuracy"]


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    return model


def _check_batch(inputs: object, labels: object) -> tuple[Tensor, Tensor]:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise TypeError(
            "`inputs` must be a floating-point Tensor of shape (B, ...), got "
            f"{type(inputs).__name__}"
            + (f" of dtype {inputs.dtype}" if isinstance(inputs, Tensor) else "")
            + "."
        )
    if inputs.dim() < 2:
        raise ValueError(
            f"`inputs` must have shape (B, ...), got {tuple(inputs.shape)}."
        )
    check_finite([inputs], "inputs")
    labels = check_class_indices(labels, inputs.shape[0], inputs.device, name="labels")
    return inputs, labels


def _check_logits(logits: object, labels: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
        raise TypeError(f"`model` must return (B, num_classes) logits, got {shape}.")
    check_class_range(labels, logits.shape[1], name="labels")
    return logits


def _ascent_objective(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy, or the margin where its gradient is exactly zero.

    Where the softmax saturates, the true class's probability rounds to 1 and
    every other one to 0, so the cross-entropy's gradient is exactly zero and a
    sign step stays put. Its direction then tends to that of the margin
    ``max_{j != y} z_j - z_y``, which is ascended instead: same sign steps in
    the limit, none lost to rounding.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    margin = others.amax(dim=1) - true
    with torch.no_grad():
        saturated = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1) == 1
    return torch.where(saturated, margin, ce)


def pgd_cross_entropy(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    steps: int = 40,
    step_size: float = 0.01,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Madry et al.'s L-inf PGD: sign ascent of the cross-entropy of the logits.

    Starts at a uniform draw in the ball (``random_start``), takes ``steps``
    sign steps of ``step_size`` on the per-sample cross-entropy, projecting
    into the ball around ``inputs`` and into ``bounds`` after each. Unlike
    ``captum.robust.PGD`` with its default loss, the result does not depend on
    an offset of the logits, and no small gradient is zeroed. A sample whose
    softmax is saturated (its cross-entropy gradient is exactly zero in
    floating point) ascends the margin ``max_{j != y} z_j - z_y`` instead, the
    direction the cross-entropy's tends to there. The model runs
    in the mode it is in (train mode during adversarial training, so batch
    norm sees the adversarial batch); only gradients with respect to the
    perturbed inputs are taken, so no parameter's ``.grad`` changes.

    Parameters
    ----------
    model : nn.Module
        Returns (B, num_classes) logits.
    inputs : Tensor
        (B, ...) batch, left unchanged.
    labels : Tensor
        (B,) true classes; their cross-entropy is maximised.
    epsilon : float
        Radius of the L-inf ball.
    steps : int, default 40
        Number of sign steps (0: the random start only).
    step_size : float, default 0.01
        Length of each sign step.
    random_start : bool, default True
        Start from a uniform draw in the ball instead of ``inputs``.
    bounds : (float, float) or None, default (0.0, 1.0)
        Valid input range, enforced after every step.
    generator : torch.Generator, optional
        Source of the random start (on the inputs' device); seed it for a
        reproducible attack.

    Returns
    -------
    Tensor
        The adversarial inputs, detached, same shape, dtype and device.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attacks import pgd_cross_entropy
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> g = torch.Generator().manual_seed(0)
    >>> adv = pgd_cross_entropy(model, x, y, epsilon=0.1, steps=5, generator=g)
    >>> bool(((adv - x).abs() <= 0.1 + 1e-6).all())
    True
    """
    _check_model(model)
    inputs, labels = _check_batch(inputs, labels)
    epsilon = check_radius(epsilon, "epsilon")
    steps = check_positive_int(steps, "steps", minimum=0)
    step_size = check_number(step_size, "step_size", minimum=0.0)
    bounds = check_bounds_pair(bounds)
    if not isinstance(random_start, bool):
        raise TypeError(f"`random_start` must be a bool, got {random_start!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError("`generator` must be a torch.Generator or None.")
    x = inputs.detach()
    start = None
    if random_start:
        start = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    checked = False

    def objective(adv: Tensor) -> Tensor:
        nonlocal checked
        logits = model(adv)
        if not checked:  # one host synchronisation per attack, not one per step
            _check_logits(logits, labels)
            checked = True
        # Summed, not averaged: each sample's step is its own, whatever the batch.
        return _ascent_objective(logits.float(), labels).sum()

    with torch.enable_grad():
        return pgd_ascent(
            objective,
            x,
            eps=epsilon,
            step_size=step_size,
            steps=steps,
            bounds=bounds,
            random_start=start,
        )


@dataclass(frozen=True)
class RobustAccuracy:
    """What :func:`robust_accuracy` measured.

    Attributes
    ----------
    accuracy : float
        Share of samples classified correctly at every attacked point (and at
        the clean input).
    clean_accuracy : float
        Share classified correctly without attack.
    correct : Tensor
        (N,) bool per sample, in loader order, on the CPU.
    clean_correct : Tensor
        (N,) bool per sample without attack.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attacks import RobustAccuracy
    >>> correct = torch.tensor([True, False])
    >>> r = RobustAccuracy(0.5, 1.0, correct, torch.ones(2, dtype=torch.bool))
    >>> float(r), int(r.correct.sum())
    (0.5, 1)
    """

    accuracy: float
    clean_accuracy: float
    correct: Tensor
    clean_correct: Tensor

    def __float__(self) -> float:
        return self.accuracy


def _batches(data: Any) -> Iterable[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(isinstance(t, Tensor) for t in data):
            yield data[0], data[1]
            return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            "`data` must be an (inputs, labels) pair of Tensors or an iterable of "
            f"(inputs, labels, ...) batches such as a DataLoader, got "
            f"{type(data).__name__}."
        ) from None
    for batch in iterator:
        if isinstance(batch, dict):
            batch = (batch.get("image"), batch.get("label"))
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(
                "each batch of `data` must be (inputs, labels, ...), got "
                f"{type(batch).__name__}."
            )
        yield batch[0], batch[1]


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    return _check_logits(model(x), labels).argmax(dim=1) == labels


def robust_accuracy(
    model: nn.Module,
    data: Any,
    *,
    epsilon: float,
    steps: int = 40,
    step_size: float = 0.01,
    restarts: int = 1,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> RobustAccuracy:
    """Accuracy of ``model`` under a cross-entropy PGD attack, over a data set.

    A sample counts as robust when the model classifies it correctly at the
    clean input and at the end point of every restart of
    :func:`pgd_cross_entropy` (each restart from its own random start). This is
    the number to quote as "PGD accuracy": unlike ``captum.robust.PGD`` with its
    default ``-log(output)`` loss, it does not depend on an offset of the
    logits, and no small gradient is zeroed by a threshold. The model is put in
    eval mode for the measurement and every submodule's mode is restored.

    Parameters
    ----------
    model : nn.Module
        Returns (B, num_classes) logits.
    data : DataLoader, iterable of batches, or (inputs, labels)
        Batches ``(inputs, labels, ...)`` (dicts with ``image`` and ``label``
        too), or one pair of Tensors.
    epsilon : float
        L-inf radius (e.g. 0.3 for MNIST in [0, 1], 8/255 for CIFAR-10).
    steps : int, default 40
        PGD steps per restart (Madry's MNIST evaluation: 40 of 0.01 at 0.3,
        or 100 with restarts for a stronger estimate).
    step_size : float, default 0.01
        Length of each sign step.
    restarts : int, default 1
        Random starts per sample; more restarts can only lower the accuracy.
    bounds : (float, float) or None, default (0.0, 1.0)
        Valid input range.
    seed : int or None, default 0
        Seeds the random starts (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Source of the random starts, on the data's device.
    device : str or torch.device, optional
        Where to move each batch (default: where it is).
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    RobustAccuracy
        ``accuracy``, ``clean_accuracy`` and the per-sample booleans.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.attacks import robust_accuracy
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> result = robust_accuracy(model, (x, y), epsilon=0.3, steps=10, step_size=0.05)
    >>> result.accuracy <= result.clean_accuracy
    True
    """
    _check_model(model)
    epsilon = check_radius(epsilon, "epsilon")
    steps = check_positive_int(steps, "steps", minimum=0)
    step_size = check_number(step_size, "step_size", minimum=0.0)
    restarts = check_positive_int(restarts, "restarts")
    bounds = check_bounds_pair(bounds)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError("`generator` must be a torch.Generator or None.")
    if seed is not None and not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int or None, got {seed!r}.")
    from captum_robust._utils.progress import progress_bar

    robust_parts, clean_parts = [], []
    with eval_mode(model):
        batches = progress_bar(
            _batches(data), desc="robust accuracy", disable=not progress, unit="batch"
        )
        for inputs, labels in batches:
            if device is not None:
                inputs, labels = inputs.to(device), labels.to(device)
            inputs, labels = _check_batch(inputs, labels)
            if generator is None:
                generator = torch.Generator(device=inputs.device)
                if seed is not None:
                    generator.manual_seed(seed)
                else:
                    generator.seed()
            clean = _predict(model, inputs, labels)
            robust = clean.clone()
            for _ in range(restarts):
                adv = pgd_cross_entropy(
                    model,
                    inputs,
                    labels,
                    epsilon=epsilon,
                    steps=steps,
                    step_size=step_size,
                    bounds=bounds,
                    generator=generator,
                )
                robust &= _predict(model, adv, labels)
            robust_parts.append(robust)
            clean_parts.append(clean)
    if not robust_parts:
        raise ValueError("`data` yielded no batch.")
    correct = torch.cat(robust_parts).cpu()
    clean_correct = torch.cat(clean_parts).cpu()
    if correct.numel() == 0:
        raise ValueError("`data` yielded no sample.")
    return RobustAccuracy(
        accuracy=correct.double().mean().item(),
        clean_accuracy=clean_correct.double().mean().item(),
        correct=correct,
        clean_correct=clean_correct,
    )
