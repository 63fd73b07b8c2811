"""Differentiable LayerGradCam, with optional differentiable upsampling."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import Tensor, nn

from captum_robust._utils.validation import as_tensor_tuple, check_choice
from captum_robust.attr._base import (
    DifferentiableAttribution,
    TensorOrTuple,
    as_module,
    check_forward_func,
)

INTERPOLATE_MODES = (
    "nearest",
    "nearest-exact",
    "linear",
    "bilinear",
    "bicubic",
    "trilinear",
    "area",
)
_DEFAULT_MODE = {3: "linear", 4: "bilinear", 5: "trilinear"}


def upsample(maps: Tensor, size: tuple[int, ...], mode: str | None) -> Tensor:
    """Interpolate ``(B, C, *spatial)`` maps to ``size``, differentiably."""
    if maps.dim() not in _DEFAULT_MODE:
        raise ValueError(
            "`upsample_to_input` needs a layer map of shape (B, C, L), (B, C, H, W) or "
            f"(B, C, D, H, W), got {tuple(maps.shape)}."
        )
    if len(size) != maps.dim() - 2:
        raise ValueError(
            f"`upsample_to_input`: the layer map has {maps.dim() - 2} spatial "
            f"dimensions but the first input has {len(size)}."
        )
    mode = _DEFAULT_MODE[maps.dim()] if mode is None else mode
    align = False if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    return F.interpolate(maps, size=size, mode=mode, align_corners=align)


def _module_name(root: nn.Module, layer: nn.Module) -> str | None:
    for name, module in root.named_modules(remove_duplicate=False):
        if module is layer:
            return name
    return None


class LayerGradCamAttribution(DifferentiableAttribution):
    """Differentiable ``LayerGradCam``.

    Captum computes the layer gradients with ``torch.autograd.grad(**grad_kwargs)``;
    a shallow copy of the user's object is called with ``create_graph=True`` in
    ``grad_kwargs``, so both the layer activations and the channel weights (mean
    gradients) keep their graph. ``upsample_to_input`` interpolates the layer map to
    the spatial size of the first input with ``F.interpolate`` (bilinear for 2-D
    maps by default), which is differentiable.

    Note that ``relu_attributions=True`` applies a ReLU to the map; its gradient is
    exact but zero wherever the map is negative.
    """

    method = "LayerGradCam"

    def __init__(
        self,
        attribution: LayerGradCam,
        *,
        upsample_to_input: bool = False,
        interpolate_mode: str | None = None,
    ) -> None:
        super().__init__(attribution.forward_func)
        self._captum = copy.copy(attribution)
        if not isinstance(upsample_to_input, bool):
            raise TypeError(
                "`upsample_to_input` must be a bool, got "
                f"{type(upsample_to_input).__name__}."
            )
        if interpolate_mode is not None:
            check_choice(interpolate_mode, INTERPOLATE_MODES, "interpolate_mode")
        self.upsample_to_input = upsample_to_input
        self.interpolate_mode = interpolate_mode

    @property
    def layer(self) -> nn.Module:
        """The layer whose activations are weighted."""
        return self._captum.layer

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
        *,
        upsample_to_input: bool | None = None,
        interpolate_mode: str | None = None,
    ) -> TensorOrTuple:
        """Grad-CAM maps with an autograd graph.

        Parameters
        ----------
        inputs, target, additional_forward_args, attribute_to_layer_input, \
relu_attributions, attr_dim_summation, grad_kwargs
            As in ``captum.attr.LayerGradCam.attribute``; ``grad_kwargs`` is passed
            on with ``create_graph=True`` added.
        upsample_to_input : bool or None
            Interpolate the map to the spatial size of the (first) input; None uses
            the wrapper's setting.
        interpolate_mode : str or None
            ``F.interpolate`` mode; None uses the wrapper's setting, whose default
            picks linear / bilinear / trilinear from the map's dimension.

        Returns
        -------
        Tensor or tuple of Tensor
            ``(B, 1, h, w)`` layer maps (``(B, C, h, w)`` without summation), or
            ``(B, 1, H, W)`` when upsampled.
        """
        xs = as_tensor_tuple(inputs, "inputs")
        if upsample_to_input is None:
            upsample_to_input = self.upsample_to_input
        if interpolate_mode is None:
            interpolate_mode = self.interpolate_mode
        else:
            check_choice(interpolate_mode, INTERPOLATE_MODES, "interpolate_mode")
        if grad_kwargs is not None and not isinstance(grad_kwargs, dict):
            raise TypeError(
                "`grad_kwargs` must be a dict or None, got "
                f"{type(grad_kwargs).__name__}."
            )
        kwargs = {**(grad_kwargs or {}), "create_graph": True}
        with torch.enable_grad():
            maps = self._captum.attribute(
                inputs,
                target=target,
                additional_forward_args=additional_forward_args,
                attribute_to_layer_input=attribute_to_layer_input,
                relu_attributions=relu_attributions,
                attr_dim_summation=attr_dim_summation,
                grad_kwargs=kwargs,
            )
            if upsample_to_input:
                size = tuple(xs[0].shape[2:])
                if isinstance(maps, tuple):
                    maps = tuple(upsample(m, size, interpolate_mode) for m in maps)
                else:
                    maps = upsample(maps, size, interpolate_mode)
        return maps

    def with_forward_func(
        self, forward_func: Callable[..., Any], *, layer: nn.Module | None = None
    ) -> LayerGradCamAttribution:
        """The same settings, bound to ``forward_func``, with the layer found there.

        Parameters
        ----------
        forward_func : callable
            The new model, e.g. a :func:`softplus_surrogate` of the old one.
        layer : nn.Module or None
            The layer in the new model. None looks it up by name: the old layer's
            name in the old model (``named_modules``) must exist in the new one, so
            both forward functions must be modules or bound methods of modules.
        """
        check_forward_func(forward_func)
        if layer is None:
            old_root = as_module(self.forward_func)
            new_root = as_module(forward_func)
            if old_root is None or new_root is None:
                raise TypeError(
                    "`layer` is needed: the LayerGradCam layer is looked up by module "
                    "name, which needs both the old and the new `forward_func` to be "
                    "nn.Modules (or their bound methods)."
                )
            name = _module_name(old_root, self.layer)
            if name is None:
                raise ValueError(
                    "`layer` is needed: the LayerGradCam layer is not a submodule of "
                    "the old `forward_func`, so it cannot be found by name."
                )
            layer = dict(new_root.named_modules(remove_duplicate=False)).get(name)
            if layer is None:
                raise ValueError(
                    f"`forward_func` has no submodule named {name!r}, the name of the "
                    "LayerGradCam layer in the old model; pass `layer` explicitly."
                )
        elif not isinstance(layer, nn.Module):
            raise TypeError(
                f"`layer` must be an nn.Module, got {type(layer).__name__}."
            )
        rebound = copy.copy(self._captum)
        rebound.forward_func = forward_func
        rebound.layer = layer
        return LayerGradCamAttribution(
            rebound,
            upsample_to_input=self.upsample_to_input,
            interpolate_mode=self.interpolate_mode,
        )
