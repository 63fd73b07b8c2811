"""Differentiable Guided Backprop and Deconvolution.

Captum computes these methods with backward hooks on every ``nn.ReLU``; a hook's
result is not recorded by autograd, so the map cannot be differentiated. Here the
same rules are autograd functions whose backward pass is made of differentiable
operations, so the map carries a graph to the input and the parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import torch
from captum._utils.common import _format_output
from captum._utils.common import _format_tensor_into_tuples
from captum._utils.common import _run_forward
from captum.attr import Deconvolution
from captum.attr import GuidedBackprop
from torch import Tensor
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_module
from captum_robust.attr._base import create_graph_gradients
from captum_robust.attr._base import patched_forwards
from captum_robust.attr._base import tracked_inputs
from captum_robust.attr._graph import has_curvature

__all__ = ["ModifiedReluAttribution"]


def _guided_rule(module: nn.Module, grad: Tensor, x: Tensor) -> Tensor:
    """``relu(grad * act'(x))`` for an nn.ReLU or the surrogate's nn.Softplus."""
    if isinstance(module, nn.Softplus):
        # Softplus' slope. Above its threshold nn.Softplus switches to the identity
        # (slope 1), from which sigmoid differs by under 2e-9 (sigmoid(20) at the
        # default threshold); the switch would cost a comparison and a select in
        # both backward passes for no visible difference.
        scaled = grad * torch.sigmoid(x * module.beta)
    else:
        scaled = torch.ops.aten.threshold_backward(grad, x, 0)
    return torch.relu(scaled)


class _ModifiedRelu(torch.autograd.Function):
    """Value ``y`` of the first (plain) pass; backward to the second pass's input
    ``x2``: the guided or deconvolution rule at the first pass's input ``x``, and
    to ``y`` its incoming gradient unchanged.

    The rule reads ``x`` from the plain pass, so differentiating the map again goes
    through the true activations, not through the rule. The edge to ``y`` carries
    the plain pass's graph into the rule pass: a functional nonlinearity there
    (whose gradient the map keeps, as Captum does) is then differentiated again
    through the true network. That edge is given only when the network is curved
    outside the replaced activations (otherwise the term is zero and following it
    would cost a backward through the rule pass). ``x`` travels outside the
    function's inputs, so the rule pass is tied to the user's inputs only through
    ``y``."""

    @staticmethod
    def forward(
        ctx: Any,
        x2: Tensor,
        y: Tensor,
        x: tuple[Tensor],
        module: nn.Module,
        guided: bool,
        copy: bool,
    ):  # type: ignore[override]
        # A tensor argument would be an input edge of this node; in a tuple it is
        # only read by the backward, whose graph then reaches the plain pass.
        ctx.x = x[0]
        ctx.module = module
        ctx.guided = guided
        ctx.ruled = False
        ctx.set_materialize_grads(False)
        # Without ``copy`` an alias: the rule pass replays the plain pass, where no
        # in-place operation rewrote ``y`` (its version says so).
        return y.detach().clone() if copy else y.detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None):  # type: ignore[override]
        if grad is None:
            return None, None, None, None, None, None
        to_y = grad if ctx.needs_input_grad[1] else None
        # The rule is the map's own backward, taken once inside ``attribute``. A
        # later backward through this node differentiates the map, whose value
        # here is ``y``'s whatever ``x2`` is: passing the rule on to ``x2`` then
        # would add a false term through the rule pass's layers to their weights.
        first, ctx.ruled = not ctx.ruled, True
        if not first or not ctx.needs_input_grad[0]:
            rule = None
        elif ctx.guided:
            rule = _guided_rule(ctx.module, grad, ctx.x)
        else:
            # Deconvolution: the ReLU's backward is a ReLU of the incoming signal.
            rule = torch.relu(grad)
        return rule, to_y, None, None, None, None


@contextlib.contextmanager
def replaced_activations(
    model: nn.Module,
    kinds: tuple[type[nn.Module], ...],
    replace: Callable[[nn.Module, Tensor, Tensor], Tensor],
) -> Iterator[None]:
    """Inside the context, the output ``y`` of every module of a type in ``kinds``
    is replaced by ``replace(module, x, y)``, ``x`` being its input.

    An in-place activation gets a copy of its input, so ``x`` is still the input
    when the output hook runs. Hooks are removed on exit, on success and failure.
    """
    stash: dict[int, list[Tensor]] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        x = args[0]
        stash.setdefault(id(module), []).append(x)
        if getattr(module, "inplace", False):
            return (x.clone(), *args[1:])
        return None

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        x = stash[id(module)].pop()
        return replace(module, x, output)

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, kinds):
                handles.append(m.register_forward_pre_hook(pre_hook))
                handles.append(m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


class ModifiedReluAttribution(DifferentiableAttribution):
    """Guided Backprop or Deconvolution, differentiable.

    Same values as Captum's ``GuidedBackprop`` / ``Deconvolution`` on a ReLU model:
    the gradient of the target output in which every ``nn.ReLU`` module passes back
    ``relu(g * 1[x > 0])`` (guided) or ``relu(g)`` (deconvolution) instead of
    ``g * 1[x > 0]``; functional ReLUs keep their gradient, as in Captum.

    On a :func:`~captum_robust.attr.softplus_surrogate` the rule is applied to the
    smooth activation, as Dombrowski et al. (2019) do: each ``nn.Softplus(beta)``
    passes back ``relu(g * sigmoid(beta x))`` (guided). The map is then twice
    differentiable in the input. Deconvolution's rule does not depend on the
    activations at all, so its map depends on the input only through max-pooling
    switches and functional nonlinearities: its input gradient is genuinely zero
    on most networks (its parameter gradient is not). The model runs forward twice
    (a plain pass, then the rule pass), so use it in eval mode.

    Parameters
    ----------
    forward_func : nn.Module
        The model; its ``nn.ReLU`` (and ``nn.Softplus``) modules get the rule.
    guided : bool
        True for Guided Backprop, False for Deconvolution.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import GuidedBackprop
    >>> from captum_robust.attr import differentiable, softplus_surrogate
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> gb = differentiable(GuidedBackprop(model))
    >>> x = torch.randn(2, 3)
    >>> ref = GuidedBackprop(model).attribute(x, target=0)
    >>> torch.allclose(gb.attribute(x, target=0), ref)
    True
    >>> smooth = gb.with_forward_func(softplus_surrogate(model, beta=5.0))
    >>> x = x.requires_grad_()
    >>> (g,) = torch.autograd.grad(smooth.attribute(x, target=0).pow(2).sum(), x)
    >>> bool(g.abs().sum() > 0)
    True
    """

    def __init__(self, forward_func: nn.Module, guided: bool) -> None:
        check_module(forward_func, "the rule is attached to its ReLU modules")
        super().__init__(forward_func)
        self.guided = guided
        self.method = "GuidedBackprop" if guided else "Deconvolution"

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> TensorOrTuple:
        """Captum's ``attribute`` with the same arguments, differentiable.

        Parameters
        ----------
        inputs, target, additional_forward_args
            As in ``captum.attr.GuidedBackprop.attribute`` (and
            ``Deconvolution.attribute``); the graph reaches the inputs that
            require gradients.

        Returns
        -------
        Tensor or tuple of Tensor
            The map, shaped like ``inputs``, with an autograd graph.
        """
        check_call(inputs, target)
        model = self.forward_func
        assert isinstance(model, nn.Module)
        guided = self.guided

        kinds = (nn.ReLU, nn.Softplus)
        seen: dict[int, list[tuple[Tensor, Tensor, int]]] = {}
        replaced: list[object] = []

        def record(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
            seen.setdefault(id(module), []).append((x, y, y._version))
            if y.grad_fn is not None:
                replaced.append(y.grad_fn)
            return y

        def rule_forward(module: nn.Module) -> Callable[..., Tensor]:
            def forward(x2: Tensor) -> Tensor:
                # The value is the plain pass's; the module's own activation is
                # not computed a second time.
                x, y, version = seen[id(module)].pop(0)
                rewritten = y._version != version
                if rewritten:
                    # The plain output was rewritten in place after the
                    # activation ran: the activation again, on its plain input.
                    inplace = getattr(module, "inplace", False)
                    y = type(module).forward(module, x.clone() if inplace else x)
                return _ModifiedRelu.apply(
                    x2, y if curved else y.detach(), (x,), module, guided, rewritten
                )

            return forward

        tracked = _format_tensor_into_tuples(tracked_inputs(inputs))
        with torch.enable_grad():
            # A plain pass gives the activations' inputs with their true graph.
            with replaced_activations(model, kinds, record):
                outputs = _run_forward(model, tracked, None, additional_forward_args)
        fixed_norms = not any(
            m.training for m in model.modules() if isinstance(m, _BatchNorm)
        )
        # Only a network that is curved outside the replaced activations needs
        # the plain pass's graph inside the rule pass (see ``_ModifiedRelu``).
        curved = isinstance(outputs, Tensor) and has_curvature(
            outputs,
            [t for t in tracked if t.requires_grad],
            skip=replaced,
            fixed_norms=fixed_norms,
        )
        # Floating inputs get a fresh leaf: the map is the gradient at that leaf,
        # and its graph reaches the user's inputs through the plain pass only.
        rule_inputs = tuple(
            t.detach().requires_grad_() if t.is_floating_point() else t for t in tracked
        )
        forwards = {m: rule_forward(m) for m in model.modules() if isinstance(m, kinds)}
        with torch.enable_grad(), patched_forwards(forwards):
            grads = create_graph_gradients(
                model, rule_inputs, target, additional_forward_args
            )
        return _format_output(isinstance(inputs, tuple), grads)

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> ModifiedReluAttribution:
        """The same rule, bound to ``forward_func`` (an nn.Module)."""
        self._check_rebinding(forward_func, kwargs)
        return ModifiedReluAttribution(forward_func, self.guided)  # type: ignore[arg-type]


def from_captum(attribution: GuidedBackprop | Deconvolution) -> ModifiedReluAttribution:
    return ModifiedReluAttribution(
        attribution.model, guided=not attribution.use_relu_grad_output
    )
