"""``differentiable()``: Captum attributions that can be back-propagated."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import LRP
from captum.attr import Attribution
from captum.attr import Deconvolution
from captum.attr import DeepLift
from captum.attr import DeepLiftShap
from captum.attr import GradientShap
from captum.attr import GuidedBackprop
from captum.attr import GuidedGradCam
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerDeepLift
from captum.attr import LayerDeepLiftShap
from captum.attr import LayerGradCam
from captum.attr import NeuronDeconvolution
from captum.attr import NeuronDeepLift
from captum.attr import NeuronDeepLiftShap
from captum.attr import NeuronGuidedBackprop
from captum.attr import NoiseTunnel
from captum.attr import PerturbationAttribution
from captum.attr import Saliency
from captum.attr._core.guided_backprop_deconvnet import ModifiedReluGradientAttribution
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_seed
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_forward_func
from captum_robust.attr._deeplift import from_captum as _deeplift
from captum_robust.attr._grad_cam import LayerGradCamAttribution
from captum_robust.attr._gradient import CaptumGradientAttribution
from captum_robust.attr._gradient_shap import GradientShapAttribution
from captum_robust.attr._guided_grad_cam import from_captum as _guided_grad_cam
from captum_robust.attr._lrp import from_captum as _lrp
from captum_robust.attr._propagation import from_captum as _modified_relu
from captum_robust.attr._smoothgrad import NoiseTunnelAttribution

__all__ = ["differentiable", "is_differentiable"]

_GRADIENT_FUNC_METHODS = (Saliency, InputXGradient, IntegratedGradients)
_NOISE_TUNNEL_INNER = _GRADIENT_FUNC_METHODS
# Exact classes: a subclass may change the rule Captum's hooks apply.
_MODIFIED_RELU = (GuidedBackprop, Deconvolution)
_SUPPORTED = (
    "Saliency, InputXGradient, IntegratedGradients, GradientShap, LayerGradCam, "
    "GuidedBackprop, Deconvolution, LRP, GuidedGradCam, DeepLift, "
    "NoiseTunnel over Saliency / InputXGradient / IntegratedGradients, "
    "captum_robust.attr.SmoothGrad, or a plain callable "
    "fn(inputs, target=None, additional_forward_args=None) that is differentiable"
)

# (classes, why they cannot be differentiated), checked in order.
_REFUSALS: tuple[tuple[tuple[type, ...], str], ...] = (
    (
        (GuidedGradCam,),
        "only captum.attr.GuidedGradCam itself is reimplemented; a subclass may "
        "change how its maps are combined",
    ),
    (
        (ModifiedReluGradientAttribution, NeuronGuidedBackprop, NeuronDeconvolution),
        "it replaces the backward pass of every ReLU by a hook (guided "
        "backpropagation / deconvolution rule); the map is not the gradient of any "
        "function, so differentiating through the hooks does not give its derivative",
    ),
    (
        (DeepLiftShap, LayerDeepLiftShap, NeuronDeepLiftShap),
        "DeepLiftShap averages DeepLift over a baseline distribution; use "
        "differentiable(DeepLift(model)) with each baseline and average the maps",
    ),
    (
        (LayerDeepLift, NeuronDeepLift),
        "only captum.attr.DeepLift itself (attributions to the input) is "
        "reimplemented; layer and neuron DeepLift are not",
    ),
    (
        (DeepLift,),
        "only captum.attr.DeepLift itself is reimplemented; a subclass may change "
        "the rules its hooks apply",
    ),
    (
        (LRP,),
        "only captum.attr.LRP itself is reimplemented; a subclass may change how "
        "its rules propagate relevance",
    ),
    (
        (PerturbationAttribution,),
        "it is perturbation-based: it evaluates the model on perturbed copies of the "
        "input under torch.no_grad (LIME and KernelShap also fit a linear model "
        "outside autograd), so its result carries no gradient",
    ),
)


def _refusal(attribution: object) -> str | None:
    """Why ``attribution`` cannot be made differentiable, or None if it can."""
    if isinstance(attribution, DifferentiableAttribution):
        return None
    name = type(attribution).__name__
    if isinstance(attribution, NoiseTunnel):
        inner = attribution.attribution_method
        inner_name = type(inner).__name__
        if isinstance(inner, _NOISE_TUNNEL_INNER):
            return None
        inner_reason = _refusal(inner)
        detail = f": {inner_name} {inner_reason}" if inner_reason else ""
        return (
            f"NoiseTunnel over {inner_name} is not supported (only over Saliency, "
            f"InputXGradient and IntegratedGradients; Captum's NoiseTunnel itself runs "
            f"under torch.no_grad and is reimplemented here){detail}"
        )
    if type(attribution) in _MODIFIED_RELU or type(attribution) in (
        LRP,
        GuidedGradCam,
        DeepLift,
    ):
        return None
    if isinstance(attribution, (*_GRADIENT_FUNC_METHODS, GradientShap, LayerGradCam)):
        return None
    for classes, reason in _REFUSALS:
        if isinstance(attribution, classes):
            return f"{name} cannot be made differentiable: {reason}"
    if isinstance(attribution, Attribution):
        return (
            f"{name} is not supported by differentiable(); its gradients are not "
            "computed through a function that can be given create_graph=True"
        )
    if isinstance(attribution, type):
        return (
            f"the class {attribution.__name__} was given; pass an instance, e.g. "
            f"{attribution.__name__}(model)"
        )
    if isinstance(attribution, nn.Module):
        return (
            f"a model ({name}) is not an attribution; pass a Captum attribution "
            "built on it, e.g. Saliency(model)"
        )
    owner = getattr(attribution, "__self__", None)
    if isinstance(owner, (Attribution, DifferentiableAttribution)):
        return (
            f"the bound method {type(owner).__name__}."
            f"{getattr(attribution, '__name__', '?')} was given; pass the "
            f"{type(owner).__name__} object itself (its method would run without "
            "create_graph and its gradients would be silently lost)"
        )
    if callable(attribution):
        return None
    return f"a {name} is neither a Captum attribution nor a callable"


def is_differentiable(attribution: object) -> bool:
    """Whether :func:`differentiable` accepts ``attribution``.

    Parameters
    ----------
    attribution : object
        A Captum attribution object, a :class:`DifferentiableAttribution`, or a
        callable.

    Returns
    -------
    bool

    Examples
    --------
    >>> from torch import nn
    >>> from captum.attr import IntegratedGradients, Occlusion
    >>> from captum_robust.attr import is_differentiable
    >>> model = nn.Linear(4, 2)
    >>> is_differentiable(IntegratedGradients(model))
    True
    >>> is_differentiable(Occlusion(model))
    False
    """
    return _refusal(attribution) is None


class CallableAttribution(DifferentiableAttribution):
    """A user function ``fn(inputs, target=None, additional_forward_args=None)``.

    Trusted to return attributions that carry an autograd graph; it is called with
    gradients enabled. It cannot be rebound to another model.
    """

    def __init__(
        self, fn: Callable[..., Any], forward_func: Callable[..., Any] | None
    ) -> None:
        super().__init__(forward_func)
        self._fn = fn
        self.method = getattr(fn, "__name__", type(fn).__name__)

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Call the wrapped function with gradients enabled.

        It runs under ``second_order_safe()`` (twice-differentiable hardsigmoid /
        hardswish, the math attention kernel) like the built-in methods; its
        arguments are passed on unchecked, since their meaning is the callable's.

        Warns (``RuntimeWarning``) if none of the returned tensors carries an
        autograd graph, since gradients through it would then be silently absent.
        """
        with torch.enable_grad():
            out = self._fn(
                inputs,
                target=target,
                additional_forward_args=additional_forward_args,
                **kwargs,
            )
        tensors = out if isinstance(out, tuple) else (out,)
        if not any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
            warnings.warn(
                f"the attribution callable {self.method!r} returned tensors without "
                "an autograd graph: nothing can be back-propagated through them. "
                "Compute the gradients inside it with create_graph=True.",
                RuntimeWarning,
                stacklevel=2,
            )
        return out

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> DifferentiableAttribution:
        """Not possible: a plain callable is bound to its own model."""
        raise TypeError(
            f"the attribution {self.method!r} is a plain callable and cannot be bound "
            "to another `forward_func`; wrap a Captum attribution object instead, or "
            "build a new callable for the other model."
        )


def differentiable(
    attribution: Any,
    *,
    seed: int | None = None,
    upsample_to_input: bool = False,
    interpolate_mode: str | None = None,
    layout: str | None = None,
    token_grid: tuple[int, int] | None = None,
    forward_func: Callable[..., Any] | None = None,
) -> DifferentiableAttribution:
    """An attribution whose result can be back-propagated to inputs and parameters.

    The user's object is never modified. Gradient methods get, on a shallow copy, a
    gradient function that calls ``torch.autograd.grad(..., create_graph=True)``;
    methods that Captum runs under ``torch.no_grad`` (GradientShap, NoiseTunnel) are
    reimplemented, batched and seedable. The returned object's ``attribute`` takes
    the Captum method's own arguments (plus ``generator`` for the random methods) and
    returns the same values as Captum, with an autograd graph.

    Supported:

    * ``Saliency``, ``InputXGradient``, ``IntegratedGradients``: Captum's own code
      with a ``create_graph=True`` gradient function.
    * ``GradientShap``: same estimator, all samples in one pass; random draws from
      ``generator`` / ``seed`` (see ``GradientShapAttribution``).
    * ``LayerGradCam``: Captum's code with ``grad_kwargs={"create_graph": True}``;
      ``upsample_to_input`` interpolates the map to the input size.
    * ``NoiseTunnel`` over ``Saliency``, ``InputXGradient`` or
      ``IntegratedGradients`` (``smoothgrad``, ``smoothgrad_sq``, ``vargrad``):
      reimplemented, all noise samples in one pass (or chunks of
      ``nt_samples_batch_size``); see :class:`SmoothGrad`.
    * :class:`DifferentiableAttribution` objects (returned as they are) and plain
      callables ``fn(inputs, target=None, additional_forward_args=None)``, trusted
      to be differentiable.

    * ``GuidedBackprop``, ``Deconvolution``: the rule of Captum's ReLU hooks as
      an autograd function with a double backward (see
      ``ModifiedReluAttribution``); on a :func:`softplus_surrogate` the rule is
      applied to the smooth activations, as Dombrowski et al. (2019) do.
    * ``LRP``: Captum's per-layer rules (``layer.rule``: ``EpsilonRule``,
      ``GammaRule``, ``Alpha1_Beta0_Rule``, ``IdentityRule``; Captum's defaults
      otherwise) written as differentiable vector-Jacobian products (see
      ``LRPAttribution``). A layer Captum has no rule for is refused when
      ``differentiable`` is called, naming the layer, except ``nn.Flatten``,
      ``nn.Unflatten``, ``nn.Identity`` and eval-mode dropouts, which pass
      relevance on (Captum fails on them). "The LRP of a softplus
      network" is the same rules applied to the :func:`softplus_surrogate`, whose
      activations pass relevance on unchanged as ReLUs do (Dombrowski et al.,
      2019): the ReLU step ``relu(z)/z`` becomes the smooth but, near ``z = 0``,
      large ``softplus(beta z)/(beta z)``.

    * ``GuidedGradCam``: the differentiable Guided Backprop map times the
      differentiable Grad-CAM map interpolated to the input, as Captum combines
      them (see ``GuidedGradCamAttribution``).

    * ``DeepLift`` (``multiply_by_inputs`` either way, ``custom_attribution_func``
      too): Captum's rescale rule for its nonlinearities (ReLU, ELU, LeakyReLU,
      Sigmoid, Tanh, Softplus, Softmax) and its maxpool rule, written as an
      autograd function with a double backward; linear layers pass the plain
      gradient and any other leaf module is refused, naming it (see
      ``DeepLiftAttribution``). On a :func:`softplus_surrogate` the rescale rule
      is applied to the smooth activations, so the map is twice differentiable.

    Refused with a ``TypeError`` that says why: DeepLiftShap (use DeepLift per
    baseline), subclasses of DeepLift, layer and neuron DeepLift, every
    perturbation method (Occlusion, FeatureAblation, Lime,
    KernelShap, ShapleyValueSampling, ...: no autograd graph), and any other Captum
    class (layer and neuron methods other than LayerGradCam).

    For ReLU networks the second derivatives vanish almost everywhere; bind the
    result to a :func:`softplus_surrogate` with :meth:`with_forward_func` to get
    useful gradients of the attribution.

    Parameters
    ----------
    attribution : captum.attr.Attribution or callable
        The attribution to make differentiable.
    seed : int or None, default None
        For GradientShap and NoiseTunnel: when ``attribute`` gets no
        ``generator``, draw from a fresh generator seeded with ``seed`` on every call
        (deterministic). None uses torch's global generator. Ignored by the
        deterministic methods and by objects that are already differentiable.
    upsample_to_input : bool, default False
        LayerGradCam only: interpolate the layer map to the input's spatial size.
    interpolate_mode : str or None, default None
        LayerGradCam only: ``F.interpolate`` mode for ``upsample_to_input``
        (default: linear, bilinear or trilinear by the map's dimension).
    layout : {"auto", "channels_first", "channels_last", "tokens"} or None
        LayerGradCam only: the layout of the layer's tensor (None: ``"auto"``).
        Token maps (B, N, D) of a ViT block and channels-last maps (B, H, W, C)
        of a Swin stage become spatial maps; see
        ``LayerGradCamAttribution.attribute``.
    token_grid : (int, int) or None
        LayerGradCam only: the (h, w) patch grid of a token map (None: inferred
        from the input's aspect ratio, leading class tokens dropped).
    forward_func : callable or None, default None
        Plain callables only: the model the callable explains, exposed as
        ``forward_func`` for code that needs it (e.g. to check predictions).

    Returns
    -------
    DifferentiableAttribution

    Raises
    ------
    TypeError
        For a method that cannot be made differentiable (the message names it and
        says why), or arguments of the wrong type.
    ValueError
        For options that do not apply to the method.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import IntegratedGradients
    >>> from captum_robust.attr import differentiable, softplus_surrogate
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> ig = IntegratedGradients(model)
    >>> dig = differentiable(ig).with_forward_func(softplus_surrogate(model))
    >>> x = torch.randn(2, 3, requires_grad=True)
    >>> attr = dig.attribute(x, target=0, n_steps=16)
    >>> (grad,) = torch.autograd.grad(attr.abs().sum(), x)
    >>> grad.shape
    torch.Size([2, 3])
    >>> ig.gradient_func.__name__  # the user's object is untouched
    'compute_gradients'
    """
    reason = _refusal(attribution)
    if reason is not None:
        raise TypeError(f"`attribution`: {reason}. Supported: {_SUPPORTED}.")
    seed = check_seed(seed)
    check_bool(upsample_to_input, "upsample_to_input")
    options = {
        "upsample_to_input": upsample_to_input,
        "interpolate_mode": interpolate_mode is not None,
        "layout": layout is not None,
        "token_grid": token_grid is not None,
    }
    if any(options.values()):
        option = next(name for name, given in options.items() if given)
        if not isinstance(attribution, LayerGradCam):
            raise ValueError(
                f"`{option}` applies to a captum.attr.LayerGradCam object only, not "
                f"to {type(attribution).__name__}."
            )
    is_callable = not isinstance(attribution, (Attribution, DifferentiableAttribution))
    if forward_func is not None:
        if not is_callable:
            raise ValueError(
                "`forward_func` is only for plain callables; a Captum attribution "
                "already has one (use .with_forward_func() to change it)."
            )
        check_forward_func(forward_func)

    if isinstance(attribution, DifferentiableAttribution):
        return attribution
    if isinstance(attribution, NoiseTunnel):
        inner = CaptumGradientAttribution(attribution.attribution_method)
        return NoiseTunnelAttribution(inner, seed=seed)
    if isinstance(attribution, _GRADIENT_FUNC_METHODS):
        return CaptumGradientAttribution(attribution)
    if type(attribution) in _MODIFIED_RELU:
        return _modified_relu(attribution)
    if type(attribution) is LRP:
        return _lrp(attribution)
    if type(attribution) is GuidedGradCam:
        return _guided_grad_cam(attribution)
    if type(attribution) is DeepLift:
        return _deeplift(attribution)
    if isinstance(attribution, GradientShap):
        return GradientShapAttribution(
            attribution.forward_func,
            multiply_by_inputs=attribution.multiplies_by_inputs,
            seed=seed,
        )
    if isinstance(attribution, LayerGradCam):
        return LayerGradCamAttribution(
            attribution,
            upsample_to_input=upsample_to_input,
            interpolate_mode=interpolate_mode,
            layout="auto" if layout is None else layout,
            token_grid=token_grid,
        )
    return CallableAttribution(attribution, forward_func)
