"""Differentiable DeepLift (Captum's ``DeepLift``, rescale rule).

Captum computes DeepLift with backward hooks on the nonlinear modules that replace
the gradient by the finite-difference multiplier ``delta_out / delta_in`` between
the input and the baseline; a hook's result is not recorded by autograd, so the
map cannot be differentiated. Here the input and baseline batches run through the
model once with their true graph (a plain pass), then once more with every
nonlinear module replaced by an autograd function whose backward is Captum's
rule written with differentiable operations on the plain pass's activations. The
multipliers are the gradient of that second pass (taken with
``create_graph=True``), so the map is a differentiable function of the input, the
baseline and the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import ExpansionTypes
from captum._utils.common import _expand_additional_forward_args
from captum._utils.common import _expand_target
from captum._utils.common import _format_additional_forward_args
from captum._utils.common import _format_output
from captum._utils.common import _format_tensor_into_tuples
from captum._utils.common import _run_forward
from captum._utils.common import _select_targets
from captum.attr import DeepLift
from captum.attr._utils.common import _call_custom_attribution_func
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number
from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_module
from captum_robust.attr._base import check_outputs
from captum_robust.attr._base import target_outputs
from captum_robust.attr._base import tracked_inputs
from captum_robust.attr._propagation import replaced_activations
from captum_robust.attr._smooth_activations import LeakySoftplus

__all__ = ["DeepLiftAttribution"]

# Captum's SUPPORTED_NON_LINEAR (captum.attr._core.deep_lift), by rule.
_RESCALE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    # The surrogate's LeakyReLU; elementwise, so the rescale rule applies to it as
    # to the LeakyReLU it replaces.
    LeakySoftplus,
)
_SOFTMAX = (nn.Softmax,)
_MAXPOOL: dict[type[nn.Module], tuple[Callable[..., Any], Callable[..., Any]]] = {
    nn.MaxPool1d: (F.max_pool1d, F.max_unpool1d),
    nn.MaxPool2d: (F.max_pool2d, F.max_unpool2d),
    nn.MaxPool3d: (F.max_pool3d, F.max_unpool3d),
}
_RULE_TYPES = (*_RESCALE, *_SOFTMAX, *_MAXPOOL)
# Layers through which the multipliers are the plain gradient, as in Captum: they
# are affine (batch norm and dropout in eval mode), so the gradient is exactly
# delta_out / delta_in.
_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.modules.batchnorm._BatchNorm,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
    nn.modules.padding._ConstantPadNd,
    nn.ZeroPad2d,
)
_STOCHASTIC = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def _check_layers(model: nn.Module, modes: bool = True) -> None:
    """Refuse, naming the layer, what the rescale rule cannot be applied to.

    Only leaf modules are checked: the code of a container's ``forward``
    (``F.relu``, ``x + y``) is not visible and gets the plain gradient, as in
    Captum. ``modes``: also refuse batch norm and dropout in training mode.
    """
    for name, m in model.named_modules():
        if list(m.children()):
            continue
        label = f"{name!r} ({type(m).__name__})" if name else type(m).__name__
        if type(m) in _RULE_TYPES:
            if type(m) in _MAXPOOL and m.return_indices:
                raise TypeError(
                    f"`forward_func`: max pooling {label} returns indices; "
                    "DeepLift's maxpool rule needs a layer with one output."
                )
            continue
        if not isinstance(m, _LINEAR):
            raise TypeError(
                f"`forward_func`: layer {label} is neither one of the "
                "nonlinearities DeepLift's rules support "
                f"({', '.join(t.__name__ for t in _RULE_TYPES)}) nor a linear "
                f"layer ({', '.join(t.__name__ for t in _LINEAR)}); Captum would "
                "silently back-propagate its plain gradient, which is not "
                "DeepLift's rule. Replace it by a supported module, or use "
                "another attribution method."
            )
        if modes and m.training and isinstance(m, _STOCHASTIC):
            raise ValueError(
                f"`forward_func`: {label} is in training mode; DeepLift runs the "
                "inputs and the baselines as one batch, whose statistics (or "
                "dropout masks) would mix them: call model.eval() first."
            )


def _safe_ratio(num: Tensor, den: Tensor, small: Tensor) -> Tensor:
    # The unused branch of torch.where still enters the backward pass: a division
    # by a tiny delta would put NaN into the second derivative.
    return num / torch.where(small, torch.ones_like(den), den)


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    a, b = t.chunk(2)
    return a, b


def _rule_gradient(
    module: nn.Module, x: Tensor, y: Tensor, grad: Tensor, eps: float
) -> Tensor:
    """Captum's multiplier rule for ``module`` at the stacked (inputs, baselines)
    batch: ``x`` its input and ``y`` its output from the plain pass, ``grad`` the
    multipliers arriving at its output. Differentiable in all three."""
    x_in, x_ref = _halves(x)
    delta_in = torch.cat(2 * [x_in - x_ref])
    small = delta_in.abs() < eps

    def local_gradient() -> Tensor:
        # Captum's fallback where the input hardly changes: the module's own
        # gradient (its backward hook's grad_input).
        (g,) = torch.autograd.grad(
            y,
            x,
            grad_outputs=grad,
            create_graph=torch.is_grad_enabled(),
            retain_graph=True,
        )
        return g

    fallback = local_gradient() if bool(small.any()) else torch.zeros_like(x)
    kind = type(module)
    if kind in _MAXPOOL:
        pool, unpool = _MAXPOOL[kind]
        y_in, y_ref = _halves(y)
        y_max = torch.max(y_in, y_ref)
        delta_out = torch.cat([y_max - y_ref, y_in - y_max])
        with torch.no_grad():
            _, indices = pool(
                x.detach(),
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.ceil_mode,
                True,
            )
        spread = unpool(
            grad * delta_out,
            indices,
            module.kernel_size,
            module.stride,
            module.padding,
            list(x.shape),
        )
        s_in, s_ref = _halves(spread)
        total = torch.cat(2 * [s_in + s_ref])
        # Captum takes the fallback from grad_input[0], the first sample only (a
        # leftover of the tuple-valued grad_input of old module hooks); here each
        # sample's own gradient is used.
        return torch.where(small, fallback, _safe_ratio(total, delta_in, small))
    y_in, y_ref = _halves(y)
    delta_out = torch.cat(2 * [y_in - y_ref])
    rescaled = torch.where(
        small, fallback, grad * _safe_ratio(delta_out, delta_in, small)
    )
    if kind in _SOFTMAX:
        # Captum's normalisation: the mean over the whole stacked batch.
        return rescaled - rescaled.sum() / rescaled.numel()
    return rescaled


class _Rescale(torch.autograd.Function):
    """Value ``y`` of the plain pass; backward to the rule pass's input ``x2``:
    Captum's rule at the plain pass's ``x``, ``y``, so that differentiating the
    multipliers again goes through the true activations, not through the rule."""

    @staticmethod
    def forward(
        ctx: Any, x2: Tensor, x: Tensor, y: Tensor, module: nn.Module, eps: float
    ):  # type: ignore[override]
        ctx.save_for_backward(x, y)
        ctx.module = module
        ctx.eps = eps
        return y.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        x, y = ctx.saved_tensors
        with torch.enable_grad():
            g = _rule_gradient(ctx.module, x, y, grad, ctx.eps)
        return g, None, None, None, None


def _format_baselines(baselines: object, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Captum's DeepLift baselines as one tensor per input, shaped like it."""
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in xs)
    bases = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(bases) != len(xs):
        raise ValueError(
            f"`baselines` has {len(bases)} entries but there are {len(xs)} input "
            "tensors; give one baseline (tensor or number) per input."
        )
    out = []
    for i, (b, x) in enumerate(zip(bases, xs, strict=True)):
        label = "baselines" if len(xs) == 1 else f"baselines[{i}]"
        if isinstance(b, (int, float)) and not isinstance(b, bool):
            out.append(torch.full_like(x, float(b)))
            continue
        if not isinstance(b, Tensor):
            raise TypeError(
                f"`{label}` must be a Tensor or a number, got {type(b).__name__}."
            )
        if (
            b.dim() != x.dim()
            or b.shape[1:] != x.shape[1:]
            or (b.shape[0] not in (1, x.shape[0]))
        ):
            raise ValueError(
                f"`{label}` must have the input's shape {tuple(x.shape)} or a "
                f"batch of 1, got {tuple(b.shape)}."
            )
        if b.device != x.device:
            raise ValueError(f"`{label}` is on {b.device} but the input on {x.device}.")
        out.append(b.to(x.dtype).expand_as(x))
    return tuple(out)


class DeepLiftAttribution(DifferentiableAttribution):
    """Captum's ``DeepLift`` (rescale rule), differentiable.

    Same values as ``captum.attr.DeepLift(model).attribute``: the inputs and the
    baselines run through the model as one stacked batch, and the multipliers are
    the gradient of the target output in which each nonlinear module passes back

    * ``nn.ReLU``, ``nn.ELU``, ``nn.LeakyReLU``, ``nn.Sigmoid``, ``nn.Tanh``,
      ``nn.Softplus``: ``g * delta_out / delta_in`` (rescale rule);
    * ``nn.Softmax``: the same, minus its mean over the whole stacked batch
      (Captum's normalisation);
    * ``nn.MaxPool1d/2d/3d``: Captum's maxpool rule (the output differences,
      routed to the arg-max of the input and of the baseline, divided by
      ``delta_in``),

    falling back to the module's own gradient where ``|delta_in| < eps`` (the
    ``eps`` of the ``DeepLift`` object). Linear layers (conv, linear, average
    pooling, flatten; batch norm and dropout in eval mode) pass the plain
    gradient. Other leaf modules are refused with a ``TypeError`` naming the
    layer (Captum would silently use their gradient); nonlinear *functional*
    calls in a ``forward`` (``F.relu``) cannot be seen and get the plain
    gradient, as in Captum.

    Two differences from Captum, both where Captum's hooks deviate from the
    rule: (1) when a nonlinear module's output is directly the input of another
    (``nn.ReLU`` then ``nn.MaxPool2d``, ``nn.Tanh`` then ``nn.ReLU``), Captum's
    two hooks sit on the same tensor and the first module's rule receives the
    second module's plain gradient instead of its multipliers, so Captum's
    attributions no longer sum to ``f(inputs) - f(baselines)``; here the
    multipliers chain as DeepLift defines them (the result equals Captum's on
    the same network with a reshaping layer between the two modules) and the
    convergence delta stays at rounding level. (2) Where ``|delta_in| < eps``
    at a max pooling, Captum uses the first sample's gradient for the whole
    batch; here each sample's own. Unlike Captum, the model and the inputs are left
    untouched (no hooks or attributes remain, ``requires_grad`` unchanged).

    The map carries an autograd graph to the inputs, the baselines and the
    parameters. On a ReLU network its input gradient vanishes almost everywhere;
    on a :func:`~captum_robust.attr.softplus_surrogate` the rule is applied to
    the smooth activations (``nn.Softplus`` is in Captum's list;
    :class:`~captum_robust.attr.LeakySoftplus` is rescaled like the
    ``nn.LeakyReLU`` it replaces), as Dombrowski et al. (2019) do for their
    propagation methods, and the map is twice differentiable in the input. The
    model runs twice (a plain pass, then the rule pass); each nonlinear module
    may run only once per forward, as in Captum.

    Parameters
    ----------
    forward_func : nn.Module
        The model.
    multiply_by_inputs : bool, default True
        Multiply the multipliers by ``inputs - baselines`` (Captum's global
        attribution); False returns the multipliers.
    eps : float, default 1e-10
        Where ``|delta_in| < eps`` the module's gradient is used.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import DeepLift
    >>> from captum_robust.attr import differentiable, softplus_surrogate
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    >>> x = torch.randn(2, 3)
    >>> dl = differentiable(DeepLift(model))
    >>> ours = dl.attribute(x, baselines=0.5, target=0)
    >>> torch.allclose(ours, DeepLift(model).attribute(x, baselines=0.5, target=0))
    True
    >>> smooth = dl.with_forward_func(softplus_surrogate(model, beta=5.0))
    >>> x = x.requires_grad_()
    >>> (g,) = torch.autograd.grad(smooth.attribute(x, target=0).pow(2).sum(), x)
    >>> bool(g.abs().sum() > 0)
    True
    """

    method = "DeepLift"

    def __init__(
        self,
        forward_func: nn.Module,
        multiply_by_inputs: bool = True,
        eps: float = 1e-10,
    ) -> None:
        check_module(forward_func, "DeepLift's rules belong to its layers")
        super().__init__(forward_func)
        self.multiply_by_inputs = check_bool(multiply_by_inputs, "multiply_by_inputs")
        self.eps = check_number(eps, "eps", minimum=0.0)
        # Up front: an unsupported layer is an error now, not in the first call.
        _check_layers(forward_func, modes=False)

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable[..., tuple[Tensor, ...]] | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Captum's ``DeepLift.attribute`` with the same arguments, differentiable.

        Parameters
        ----------
        inputs : Tensor or tuple of Tensor
            Batch(es) to explain; the graph reaches those that require gradients.
        baselines : None, number, Tensor or tuple of them, optional
            References, one per input tensor: None is zero, a number fills the
            input's shape, a tensor has the input's shape or a batch of 1.
        target : int, tuple, Tensor or list, optional
            Captum's target (class index per sample).
        additional_forward_args : Any, optional
            Extra arguments of the model, as in Captum.
        return_convergence_delta : bool, default False
            Also return, per sample, the summed attribution minus
            ``f(inputs) - f(baselines)`` at the target (Captum's delta).
        custom_attribution_func : callable, optional
            Captum's ``custom_attribution_func(multipliers[, inputs[, baselines]])``;
            differentiable if it is.

        Returns
        -------
        Tensor or tuple of Tensor, or (attributions, delta)
            Shaped like ``inputs``, with an autograd graph.
        """
        xs = check_call(
            inputs, target, return_convergence_delta=return_convergence_delta
        )
        if custom_attribution_func is not None and not callable(
            custom_attribution_func
        ):
            raise TypeError(
                "`custom_attribution_func` must be callable or None, got "
                f"{type(custom_attribution_func).__name__}."
            )
        bases = _format_baselines(baselines, xs)
        model = self.forward_func
        assert isinstance(model, nn.Module)
        _check_layers(model)
        eps = self.eps

        tracked = _format_tensor_into_tuples(tracked_inputs(inputs))
        extra = _format_additional_forward_args(additional_forward_args)
        if extra is not None:
            extra = _expand_additional_forward_args(extra, 2, ExpansionTypes.repeat)
        stacked_target = _expand_target(target, 2, expansion_type=ExpansionTypes.repeat)
        batch = xs[0].shape[0]

        def stacked() -> tuple[Tensor, ...]:
            return tuple(torch.cat([x, b]) for x, b in zip(tracked, bases, strict=True))

        seen: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}

        def record(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            if module in seen:
                raise ValueError(
                    f"`forward_func`: {type(module).__name__} module {module} runs "
                    "more than once in one forward pass, which DeepLift does not "
                    "support (as in Captum); give each use its own module."
                )
            seen[module] = [(x, y)]
            # Later in-place operations must not rewrite the saved output.
            return y.clone()

        def rule(module: nn.Module, x2: Tensor, y2: Tensor) -> Tensor:
            if not seen.get(module):
                raise RuntimeError(
                    f"{type(module).__name__} module {module} ran in the rule pass "
                    "but not in the plain pass; DeepLift needs a deterministic "
                    "forward."
                )
            x, y = seen[module].pop()
            return _Rescale.apply(x2, x, y, module, eps)

        with torch.enable_grad():
            with replaced_activations(model, _RULE_TYPES, record):
                plain = _run_forward(model, stacked(), None, extra)
            plain = check_outputs(plain, target, "DeepLift")
            with replaced_activations(model, _RULE_TYPES, rule):
                out = _run_forward(model, stacked(), None, extra)
                out = target_outputs(out, stacked_target)
                grads = torch.autograd.grad(out.sum(), tracked, create_graph=True)
        if custom_attribution_func is not None:
            attrs = _call_custom_attribution_func(
                custom_attribution_func, grads, tracked, bases
            )
        elif self.multiply_by_inputs:
            attrs = tuple(
                (x - b) * g for x, b, g in zip(tracked, bases, grads, strict=True)
            )
        else:
            attrs = tuple(grads)
        result = _format_output(isinstance(inputs, tuple), tuple(attrs))
        if not return_convergence_delta:
            return result
        scores = (
            plain if stacked_target is None else _select_targets(plain, stacked_target)
        )
        scores = scores.reshape(2 * batch, -1).sum(1)
        total = sum(a.reshape(batch, -1).sum(1) for a in attrs)
        return result, total - (scores[:batch] - scores[batch:])

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> DeepLiftAttribution:
        """The same method and settings bound to ``forward_func`` (an nn.Module)."""
        self._check_rebinding(forward_func, kwargs)
        return DeepLiftAttribution(
            forward_func,  # type: ignore[arg-type]
            multiply_by_inputs=self.multiply_by_inputs,
            eps=self.eps,
        )


def from_captum(attribution: DeepLift) -> DeepLiftAttribution:
    return DeepLiftAttribution(
        attribution.model,
        multiply_by_inputs=attribution.multiplies_by_inputs,
        eps=attribution.eps,
    )
