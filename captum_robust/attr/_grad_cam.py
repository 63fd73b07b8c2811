"""Differentiable LayerGradCam, with optional differentiable upsampling."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _format_additional_forward_args
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerGradCam
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import as_module
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_forward_func
from captum_robust.attr._base import check_target_range

LAYOUTS = ("auto", "channels_first", "channels_last", "tokens")
# Leading tokens that may precede the patch grid when it is inferred: a class
# token (ViT), a distillation token (DeiT), register tokens.
MAX_PREFIX_TOKENS = 8

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


def _grid_of(n_tokens: int, height: int, width: int) -> tuple[int, int] | None:
    """(h, w) with h * w == n_tokens and h / w == height / width, if any."""
    if n_tokens <= 0 or (n_tokens * height) % width:
        return None
    h = math.isqrt(n_tokens * height // width)
    if h == 0 or h * h != n_tokens * height // width or n_tokens % h:
        return None
    w = n_tokens // h
    return (h, w) if h * width == w * height else None


def check_token_grid(token_grid: object) -> tuple[int, int] | None:
    if token_grid is None:
        return None
    if (
        not isinstance(token_grid, (tuple, list))
        or len(token_grid) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in token_grid)
        or min(token_grid) < 1
    ):
        raise TypeError(
            "`token_grid` must be None or a pair of positive ints (h, w), got "
            f"{token_grid!r}."
        )
    return (token_grid[0], token_grid[1])


def resolve_layout(
    shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    layout: str,
    token_grid: tuple[int, int] | None,
) -> tuple[str, int, tuple[int, int] | None]:
    """The layout of a layer tensor: (layout, leading tokens to drop, token grid).

    ``auto``: a 3-D (B, N, D) map of a 4-D image input is a token sequence; a
    4-D map of an image input is channels-last (B, H, W, C) when dims 1-2 have
    the input's aspect ratio and dims 2-3 do not; everything else is
    channels-first, Captum's convention.
    """
    image = len(input_shape) == 4
    if layout == "auto":
        if len(shape) == 3 and image:
            layout = "tokens"
        elif len(shape) == 4 and image:
            height, width = input_shape[2], input_shape[3]
            last = shape[1] * width == shape[2] * height
            first = shape[2] * width == shape[3] * height
            layout = "channels_last" if last and not first else "channels_first"
        else:
            layout = "channels_first"
    if layout == "channels_first":
        return layout, 0, None
    if layout == "channels_last":
        if len(shape) < 3:
            raise ValueError(
                "`layout`='channels_last' needs a layer map of shape (B, *spatial, C), "
                f"got {shape}."
            )
        return layout, 0, None
    if len(shape) != 3:
        raise ValueError(
            f"`layout`='tokens' needs a layer map of shape (B, N, D), got {shape}."
        )
    n_tokens = shape[1]
    if token_grid is not None:
        prefix = n_tokens - token_grid[0] * token_grid[1]
        if prefix < 0:
            raise ValueError(
                f"`token_grid` {token_grid} has {token_grid[0] * token_grid[1]} "
                f"cells but the layer map has only {n_tokens} tokens."
            )
        return layout, prefix, token_grid
    if not image:
        raise ValueError(
            "`token_grid` is needed: the patch grid of a (B, N, D) layer map is "
            "inferred from the spatial size of a (B, C, H, W) input, got an input of "
            f"shape {input_shape}."
        )
    for prefix in range(min(MAX_PREFIX_TOKENS, n_tokens - 1) + 1):
        grid = _grid_of(n_tokens - prefix, input_shape[2], input_shape[3])
        if grid is not None:
            return layout, prefix, grid
    raise ValueError(
        f"`token_grid` cannot be inferred: no count of up to {MAX_PREFIX_TOKENS} "
        f"leading tokens leaves a grid of the input's aspect ratio "
        f"{input_shape[2]}:{input_shape[3]} among {n_tokens} tokens; pass "
        "`token_grid=(h, w)` (the last h * w tokens are the patches, row-major)."
    )


def to_channels_first(
    t: Tensor, layout: str, prefix: int, grid: tuple[int, int] | None
) -> Tensor:
    if layout == "channels_first":
        return t
    if layout == "channels_last":
        return t.movedim(-1, 1)
    assert grid is not None
    patches = t[:, prefix:, :]
    return patches.reshape(t.shape[0], grid[0], grid[1], t.shape[2]).permute(0, 3, 1, 2)


class _RangeCheckedForward:
    """The model, with the target's class range checked on its output.

    Captum selects the target inside its layer-gradient helper; checking here
    comes first, so a bad index is a ValueError naming ``target``.
    """

    def __init__(self, forward_func: Callable[..., Any], target: Any) -> None:
        self.forward_func = forward_func
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward_func(*args, **kwargs)
        if isinstance(out, Tensor):
            check_target_range(out, self.target)
        return out


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

    Transformer layers work too: a (B, N, D) token map (ViT encoder block, class
    token first) is reshaped to its (h, w) patch grid without the class token, and
    a channels-last (B, H, W, C) map (Swin) is permuted, before the channel
    weights are taken, so the map is spatial and ``upsample_to_input`` applies;
    see ``layout`` in :meth:`attribute`.

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
        layout: str = "auto",
        token_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(attribution.forward_func)
        self._captum = copy.copy(attribution)
        check_bool(upsample_to_input, "upsample_to_input")
        if interpolate_mode is not None:
            check_choice(interpolate_mode, INTERPOLATE_MODES, "interpolate_mode")
        check_choice(layout, LAYOUTS, "layout")
        self.upsample_to_input = upsample_to_input
        self.interpolate_mode = interpolate_mode
        self.layout = layout
        self.token_grid = check_token_grid(token_grid)

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
        layout: str | None = None,
        token_grid: tuple[int, int] | None = None,
    ) -> TensorOrTuple:
        """Grad-CAM maps with an autograd graph.

        Parameters
        ----------
        inputs, target, additional_forward_args, attribute_to_layer_input, \
relu_attributions, attr_dim_summation, grad_kwargs
            As in ``captum.attr.LayerGradCam.attribute``; ``grad_kwargs`` is passed
            on with ``create_graph=True`` added. ``target`` is checked first
            (integer class indices, one per sample, below the model's class count).
        upsample_to_input : bool or None
            Interpolate the map to the spatial size of the (first) input; None uses
            the wrapper's setting.
        interpolate_mode : str or None
            ``F.interpolate`` mode; None uses the wrapper's setting, whose default
            picks linear / bilinear / trilinear from the map's dimension.
        layout : {"auto", "channels_first", "channels_last", "tokens"} or None
            How the layer's tensor is laid out; None uses the wrapper's setting
            (default ``"auto"``). ``channels_first`` is Captum's (B, C, *spatial);
            ``channels_last`` is (B, *spatial, C) (Swin stages);
            ``tokens`` is (B, N, D) with the patch tokens last, row-major, after
            any class / distillation / register tokens, which are dropped (ViT
            encoder blocks). ``auto``: a 3-D map of a (B, C, H, W) input is tokens;
            a 4-D map of an image input is channels-last when its dims 1-2 have
            the input's aspect ratio and dims 2-3 do not; anything else is
            channels-first.
        token_grid : (int, int) or None
            For tokens: the patch grid (h, w); the leading ``N - h * w`` tokens
            are dropped. None infers it: the fewest leading tokens (at most 8)
            whose removal leaves ``h * w`` tokens with ``h / w = H / W``.

        Returns
        -------
        Tensor or tuple of Tensor
            ``(B, 1, h, w)`` layer maps (``(B, C, h, w)`` without summation, in
            channels-first order for every layout), or ``(B, 1, H, W)`` when
            upsampled.

        Raises
        ------
        ValueError
            Naming ``layout`` or ``token_grid`` when the layer's tensor does not
            fit the layout or its grid cannot be inferred.
        """
        xs = check_call(
            inputs,
            target,
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            attr_dim_summation=attr_dim_summation,
        )
        if upsample_to_input is None:
            upsample_to_input = self.upsample_to_input
        check_bool(upsample_to_input, "upsample_to_input")
        if interpolate_mode is None:
            interpolate_mode = self.interpolate_mode
        else:
            check_choice(interpolate_mode, INTERPOLATE_MODES, "interpolate_mode")
        if layout is None:
            layout = self.layout
        check_choice(layout, LAYOUTS, "layout")
        grid = self.token_grid if token_grid is None else check_token_grid(token_grid)
        if grad_kwargs is not None and not isinstance(grad_kwargs, dict):
            raise TypeError(
                "`grad_kwargs` must be a dict or None, got "
                f"{type(grad_kwargs).__name__}."
            )
        kwargs = {**(grad_kwargs or {}), "create_graph": True}
        with torch.enable_grad():
            # Captum's LayerGradCam computation, with the layer tensors brought to
            # channels-first order before the channel weights are taken.
            layer_gradients, layer_evals = compute_layer_gradients_and_eval(
                _RangeCheckedForward(self.forward_func, target),
                self.layer,
                xs,
                target,
                _format_additional_forward_args(additional_forward_args),
                device_ids=self._captum.device_ids,
                attribute_to_layer_input=attribute_to_layer_input,
                grad_kwargs=kwargs,
            )
            maps = []
            for grad, act in zip(layer_gradients, layer_evals):
                how, prefix, cells = resolve_layout(
                    tuple(act.shape), tuple(xs[0].shape), layout, grid
                )
                grad = to_channels_first(grad, how, prefix, cells)
                act = to_channels_first(act, how, prefix, cells)
                if grad.dim() > 2:
                    grad = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
                cam = grad * act
                if attr_dim_summation:
                    cam = cam.sum(dim=1, keepdim=True)
                if relu_attributions:
                    cam = F.relu(cam)
                if upsample_to_input:
                    cam = upsample(cam, tuple(xs[0].shape[2:]), interpolate_mode)
                maps.append(cam)
        return tuple(maps) if len(maps) > 1 else maps[0]

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
            layout=self.layout,
            token_grid=self.token_grid,
        )
