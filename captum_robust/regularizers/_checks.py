"""Argument checks of the regularizers; each error names the argument."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import FLOAT_DTYPES
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int

LossFn = Callable[[Tensor, Tensor], Tensor]


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    _check_no_synchronised_batch_norm(model)
    return model


def _check_no_synchronised_batch_norm(model: nn.Module) -> None:
    # Every regularizer trains through an input gradient (a double backward).
    # SyncBatchNorm's backward is a hand-written kernel with collective calls,
    # not twice differentiable; fail before the user's backward pass does.
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, module in model.named_modules():
        if not (isinstance(module, nn.SyncBatchNorm) and module.training):
            continue
        group = module.process_group or torch.distributed.group.WORLD
        if torch.distributed.get_world_size(group) > 1:
            raise ValueError(
                f"`model` has a SyncBatchNorm layer in training mode ({name}); the "
                "regularizers back-propagate through input gradients, which "
                "SyncBatchNorm does not support. Keep per-rank nn.BatchNorm2d "
                "layers (each rank normalises its own batch), put the layer in "
                "eval mode, or use GroupNorm / LayerNorm."
            )


def check_input_batch(inputs: object, name: str = "inputs") -> Tensor:
    """``inputs`` as one finite floating (B, ...) Tensor, detached."""
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"`{name}` must be a single Tensor of shape (B, ...), got "
            f"{type(inputs).__name__}; the regularizers take models with one input."
        )
    if inputs.dtype not in FLOAT_DTYPES:
        raise TypeError(f"`{name}` must have a floating dtype, got {inputs.dtype}.")
    if inputs.dim() < 2 or inputs.numel() == 0:
        raise ValueError(
            f"`{name}` must have shape (B, ...) with a batch dimension and at least "
            f"one feature, got {tuple(inputs.shape)}."
        )
    check_finite((inputs,), name)
    # The regularizers differentiate with respect to their own copies of the inputs;
    # a graph the caller built up to `inputs` is not extended.
    return inputs.detach()


def check_target_indices(target: object, inputs: Tensor) -> Tensor:
    """``target`` as a LongTensor (B,) on the inputs' device (the shared check)."""
    return check_class_indices(target, inputs.shape[0], inputs.device, name="target")


def check_class_scores(logits: object, target: Tensor) -> Tensor:
    """The model must return (B, num_classes) scores; `target` must index them."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            "`model` must return a Tensor of class scores, got "
            f"{type(logits).__name__}."
        )
    if logits.dim() != 2 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            "`model` must return class scores of shape (B, num_classes) = "
            f"({target.shape[0]}, C), got {tuple(logits.shape)}."
        )
    num_classes = logits.shape[1]
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"`target` must hold class indices in [0, {num_classes - 1}] for a model "
            f"with {num_classes} outputs, got values from {int(target.min())} to "
            f"{int(target.max())}."
        )
    return logits


def check_loss_fn(loss_fn: object) -> LossFn:
    if loss_fn is None:
        return F.cross_entropy
    if not callable(loss_fn):
        raise TypeError(
            "`loss_fn` must be callable as loss_fn(logits, target), got "
            f"{type(loss_fn).__name__}."
        )
    return loss_fn  # type: ignore[return-value]


def check_weight(value: object, name: str) -> float:
    return check_number(value, name, minimum=0.0)


def check_softplus_beta(value: object) -> float | None:
    if value is None:
        return None
    return check_number(value, "softplus_beta", minimum=0.0, strict_minimum=True)


def check_mask(mask: object, inputs: Tensor, name: str = "mask") -> Tensor:
    """An object mask (B, H, W), (B, 1, H, W) or shaped like `inputs`, as bool.

    Returned with a shape that broadcasts against `inputs`.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"`{name}` must be a Tensor, got {type(mask).__name__}.")
    if mask.is_complex():
        raise TypeError(f"`{name}` must be bool or real, got {mask.dtype}.")
    if mask.device != inputs.device:
        raise ValueError(
            f"`{name}` is on {mask.device} but `inputs` is on {inputs.device}; move "
            "them to one device."
        )
    shape = tuple(inputs.shape)
    if tuple(mask.shape) == shape:
        out = mask
    elif inputs.dim() >= 3 and tuple(mask.shape) == (shape[0],) + shape[2:]:
        out = mask.unsqueeze(1)
    elif inputs.dim() >= 3 and tuple(mask.shape) == (shape[0], 1) + shape[2:]:
        out = mask
    else:
        spatial = "(B, H, W), (B, 1, H, W) or " if inputs.dim() >= 3 else ""
        raise ValueError(
            f"`{name}` must have shape {spatial}the shape of `inputs` "
            f"{shape}, got {tuple(mask.shape)}."
        )
    if out.dtype != torch.bool:
        if not bool(((out == 0) | (out == 1)).all()):
            raise ValueError(f"`{name}` must be binary (bool or only 0 and 1 values).")
        out = out != 0
    return out


def check_internal_batch_size(value: object) -> int | None:
    if value is None:
        return None
    return check_positive_int(value, "internal_batch_size")
