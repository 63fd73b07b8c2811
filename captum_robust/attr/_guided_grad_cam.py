"""Differentiable Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from captum._utils.common import _format_output
from captum.attr import GuidedGradCam
from captum.attr import LayerAttribution
from captum.attr import LayerGradCam
from torch import nn

from captum_robust._utils.validation import check_str
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_forward_func
from captum_robust.attr._base import check_module
from captum_robust.attr._grad_cam import LayerGradCamAttribution
from captum_robust.attr._propagation import ModifiedReluAttribution

__all__ = ["GuidedGradCamAttribution"]


class GuidedGradCamAttribution(DifferentiableAttribution):
    """Captum's ``GuidedGradCam``, differentiable.

    As in Captum, the map of input ``i`` is the Guided Backprop map times the
    layer's Grad-CAM map (ReLU applied, channels summed) interpolated to the
    input's spatial size with ``LayerAttribution.interpolate``. Both factors
    carry a graph: Grad-CAM from ``LayerGradCamAttribution``, Guided Backprop
    from ``ModifiedReluAttribution`` (on a softplus surrogate the guided rule is
    applied to the smooth activations). Unlike Captum, an input whose size the
    map cannot be interpolated to raises instead of returning an empty tensor.

    Parameters
    ----------
    forward_func : nn.Module
        The model.
    layer : nn.Module
        The layer of the Grad-CAM factor.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import GuidedGradCam
    >>> from captum_robust.attr import differentiable
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(
    ...     nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)
    ... ).eval()
    >>> x = torch.randn(2, 1, 4, 4)
    >>> ggc = differentiable(GuidedGradCam(model, model[0]))
    >>> ref = GuidedGradCam(model, model[0]).attribute(x, target=1)
    >>> torch.allclose(ggc.attribute(x, target=1), ref, atol=1e-6)
    True
    """

    method = "GuidedGradCam"

    def __init__(self, forward_func: nn.Module, layer: nn.Module) -> None:
        super().__init__(forward_func)
        self._cam = LayerGradCamAttribution(
            LayerGradCam(forward_func, layer), layout="channels_first"
        )
        self._guided = ModifiedReluAttribution(forward_func, guided=True)

    @property
    def layer(self) -> nn.Module:
        """The layer of the Grad-CAM factor."""
        return self._cam.layer

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        interpolate_mode: str = "nearest",
        attribute_to_layer_input: bool = False,
    ) -> TensorOrTuple:
        """Captum's ``GuidedGradCam.attribute`` with the same arguments.

        Parameters
        ----------
        inputs, target, additional_forward_args, interpolate_mode, \
attribute_to_layer_input
            As in ``captum.attr.GuidedGradCam.attribute``.

        Returns
        -------
        Tensor or tuple of Tensor
            Maps shaped like ``inputs``, with an autograd graph.
        """
        xs = check_call(
            inputs, target, attribute_to_layer_input=attribute_to_layer_input
        )
        check_str(interpolate_mode, "interpolate_mode")
        cam = self._cam.attribute(
            inputs,
            target,
            additional_forward_args,
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=True,
        )
        if isinstance(cam, tuple):
            if len(cam) != 1:
                raise ValueError(
                    "`attribute_to_layer_input`: the layer has several inputs or "
                    "outputs; Guided Grad-CAM needs one map (as in Captum)."
                )
            cam = cam[0]
        guided = self._guided.attribute(xs, target, additional_forward_args)
        maps = tuple(
            g * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode)
            for g, x in zip(guided, xs, strict=True)
        )
        return _format_output(isinstance(inputs, tuple), maps)

    def with_forward_func(
        self, forward_func: Callable[..., Any], *, layer: nn.Module | None = None
    ) -> GuidedGradCamAttribution:
        """The same method bound to ``forward_func``; the layer is looked up by
        name as in ``LayerGradCamAttribution.with_forward_func``."""
        check_forward_func(forward_func)
        check_module(forward_func)
        cam = self._cam.with_forward_func(forward_func, layer=layer)
        return GuidedGradCamAttribution(forward_func, cam.layer)


def from_captum(attribution: GuidedGradCam) -> GuidedGradCamAttribution:
    if not isinstance(attribution.grad_cam.forward_func, nn.Module):
        raise TypeError(
            "`attribution`: GuidedGradCam needs an nn.Module model for its guided "
            "backpropagation rule."
        )
    return GuidedGradCamAttribution(
        attribution.grad_cam.forward_func, attribution.grad_cam.layer
    )
