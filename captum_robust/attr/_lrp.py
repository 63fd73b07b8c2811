"""Differentiable layer-wise relevance propagation (Captum's ``LRP`` and its rules).

Captum propagates relevance with tensor hooks that read ``.data``, so its map
carries no graph. Here every layer with a rule is, in a second pass of the model,
an autograd function whose backward is the rule written with differentiable
operations (the "gradient x input" form of LRP):

``R_in = a * J_mod(a)^T (R_out / (z_mod + eps * sign(z_mod)))``

with ``a`` the layer's input and ``z_mod`` its output under the rule's modified
weights, both taken from a plain first pass with their autograd graph, and the
vector-Jacobian product taken by ``torch.autograd.grad(..., create_graph=True)``.
Activations (``nn.ReLU``, ``nn.Tanh``, ``nn.Dropout`` and, for the surrogate,
``nn.Softplus``) pass relevance on unchanged, as in Captum. The map is then a
differentiable function of the input and of the parameters.

Unlike Captum, modules that only reshape or copy their input pass relevance on
too, reshaped to their input: ``nn.Flatten``, ``nn.Unflatten``, ``nn.Identity``
and the dropouts (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
``FeatureAlphaDropout``) in eval mode. Captum's LRP has no rule for them
(``nn.Dropout`` aside) and fails on them even with an ``IdentityRule`` (its
input hook changes the gradient's size, or a KeyError where the module returns
its input), while it explains the same network written with ``torch.flatten``;
the values here are that network's. A dropout in training
mode (``p > 0``) is refused: its random mask would make the explanation
random, and differ between the plain pass and the rule pass.

"LRP of a softplus network" (:func:`~captum_robust.attr.softplus_surrogate`) means
the same rules applied to the smooth network, as Dombrowski et al. (2019) do: each
activation's input is ``softplus(beta z)/beta`` of the previous layer and it passes
relevance on unchanged. On a ReLU network ``relu(z)/z`` is the step ``1[z > 0]``;
on the surrogate ``softplus(beta z) / (beta z)`` replaces it, which is smooth but
large where ``|z|`` is small: only the rule's stabiliser bounds it, and Captum's
default ``epsilon=1e-9`` hardly does (input gradients of a loss on the map of
order 1e9 were measured on a small CNN), so for attacks set ``EpsilonRule`` with a
larger ``epsilon`` (or a gamma / alpha-beta rule) on the hidden layers. The
surrogate's map is close to the ReLU map only where pre-activations are not near
zero. Because nothing in the result shows this, differentiating such a map (an
attack's step, a regulariser's loss) issues one
:class:`~captum_robust.attr.LRPEpsilonWarning` that names the layers concerned
(:mod:`captum_robust.attr._lrp_epsilon` has the measurements behind it).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import torch
from captum._utils.common import _format_output
from captum._utils.common import _format_tensor_into_tuples
from captum._utils.common import _run_forward
from captum._utils.common import _select_targets
from captum.attr import LRP
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES
from captum.attr._core.lrp import SUPPORTED_NON_LINEAR_LAYERS
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule
from captum.attr._utils.lrp_rules import EpsilonRule
from captum.attr._utils.lrp_rules import GammaRule
from captum.attr._utils.lrp_rules import IdentityRule
from captum.attr._utils.lrp_rules import PropagationRule
from torch import Tensor
from torch import nn
from torch.func import functional_call

from captum_robust.attr._base import DifferentiableAttribution
from captum_robust.attr._base import TensorOrTuple
from captum_robust.attr._base import check_call
from captum_robust.attr._base import check_module
from captum_robust.attr._base import check_outputs
from captum_robust.attr._base import create_graph_gradients
from captum_robust.attr._base import patched_forwards
from captum_robust.attr._base import tracked_inputs
from captum_robust.attr._lrp_epsilon import DirectUse
from captum_robust.attr._lrp_epsilon import epsilon_warning
from captum_robust.attr._lrp_epsilon import small_epsilons

__all__ = ["LRPAttribution"]

# Identity maps up to a reshape (dropout: in eval mode), which Captum's LRP lacks
# rules for: the plain gradient through them is the relevance, reshaped.
_DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity, *_DROPOUTS)
# Softplus is the activation of softplus_surrogate; like ReLU, relevance passes it.
_PASS_THROUGH = tuple(
    dict.fromkeys((*SUPPORTED_NON_LINEAR_LAYERS, nn.Softplus, *_SHAPE_ONLY))
)
# Exact classes: a subclass of a rule may redefine its hooks.
_RULES = (EpsilonRule, GammaRule, Alpha1_Beta0_Rule, IdentityRule)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Captum's ``LRP._get_layers``: the leaf modules under ``model``, by name."""
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if len(list(child.children())) == 0:
                out.append((full, child))
            else:
                walk(child, f"{full}.")

    walk(model, "")
    return out


def _rule_of(name: str, layer: nn.Module) -> PropagationRule | None:
    """The rule Captum would apply to ``layer``; None for a pass-through layer.

    Raises a TypeError naming the layer where Captum's LRP has no rule or the
    rule is not one whose propagation is reimplemented here.
    """
    if isinstance(layer, _PASS_THROUGH) and type(layer) in _PASS_THROUGH:
        return None
    if hasattr(layer, "rule"):
        rule = layer.rule
        if type(rule) not in _RULES:
            raise TypeError(
                f"`forward_func`: layer {name!r} ({type(layer).__name__}) has rule "
                f"{type(rule).__name__}; differentiable LRP supports exactly "
                "EpsilonRule, GammaRule, Alpha1_Beta0_Rule and IdentityRule (a "
                "custom rule's hooks cannot be differentiated)."
            )
        return rule
    default = SUPPORTED_LAYERS_WITH_RULES.get(type(layer))
    if default is None:
        raise TypeError(
            f"`forward_func`: LRP has no rule for layer {name!r} "
            f"({type(layer).__name__}): Captum's LRP supports "
            f"{', '.join(sorted(t.__name__ for t in SUPPORTED_LAYERS_WITH_RULES))} "
            "with a default rule, passes relevance through "
            f"{', '.join(t.__name__ for t in _PASS_THROUGH)}, and needs an explicit "
            "`layer.rule` for anything else."
        )
    return default()


def lrp_rules(model: nn.Module) -> dict[nn.Module, tuple[str, PropagationRule]]:
    """Every leaf layer of ``model`` that carries a rule, with its name and rule.

    Checks the whole model before anything runs: unsupported layers and rules,
    batch norms in training mode (their relevance would mix samples) and
    dropouts in training mode (a random explanation) are refused with an error
    naming the layer.
    """
    rules: dict[nn.Module, tuple[str, PropagationRule]] = {}
    for name, layer in _layers(model):
        rule = _rule_of(name, layer)
        if isinstance(layer, _DROPOUTS) and layer.training and layer.p > 0:
            raise ValueError(
                f"`forward_func`: dropout {name!r} ({type(layer).__name__}) is in "
                "training mode; its random mask makes the explanation random (and "
                "differ between LRP's two passes): call model.eval() first."
            )
        if rule is None:
            continue
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training:
            raise ValueError(
                f"`forward_func`: batch norm {name!r} is in training mode; LRP "
                "through batch statistics mixes the samples' relevance (and would "
                "update the running statistics): call model.eval() first."
            )
        rules[layer] = (name, rule)
    return rules


def _modified_params(layer: nn.Module, rule: PropagationRule) -> dict[str, Tensor]:
    """The weights the rule computes with (Captum's ``_manipulate_weights``), as
    differentiable functions of the layer's parameters."""
    params: dict[str, Tensor] = {}
    weight = getattr(layer, "weight", None)
    bias = getattr(layer, "bias", None)
    if isinstance(rule, IdentityRule) or type(rule) is EpsilonRule:
        return params
    if isinstance(weight, Tensor):
        if isinstance(rule, GammaRule):
            params["weight"] = weight + rule.gamma * weight.clamp(min=0)
        else:
            params["weight"] = weight.clamp(min=0)
    if rule.set_bias_to_zero and isinstance(bias, Tensor):
        params["bias"] = torch.zeros_like(bias)
    return params


class _RuleLayer(torch.autograd.Function):
    """Forward: ``z_mod`` (Captum's second-pass value). Backward to the second
    pass's inputs: ``vjp(z_mod, a, g / stabilised z_mod)``, built from the first
    pass's ``a`` and ``z_mod`` so it can be differentiated again; the identity
    rule passes ``g``."""

    @staticmethod
    def forward(ctx: Any, spec: tuple[int, float, bool, bool], *tensors: Tensor):  # type: ignore[override]
        n, copy = spec[0], spec[3]
        ctx.spec = spec[:3]
        ctx.save_for_backward(*tensors[n:])
        # Without ``copy`` an alias of the saved z: the rule pass replays the
        # plain pass, where no in-place operation rewrote the layer's output.
        return tensors[-1].detach().clone() if copy else tensors[-1].detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        n, eps, identity = ctx.spec
        saved = ctx.saved_tensors
        acts, z = saved[:n], saved[n]
        nones = (None,) * (n + 1)
        if identity:
            return (None, *(grad for _ in range(n)), *nones)
        # Captum's stabiliser: sign(0) counts as +1, so z = 0 is divided by eps.
        shift = torch.where(z.detach() < 0, z.new_full((), -eps), z.new_full((), eps))
        s = grad / (z + shift)
        with torch.enable_grad():
            vjps = torch.autograd.grad(
                z,
                acts,
                grad_outputs=s,
                create_graph=torch.is_grad_enabled(),
                retain_graph=True,
                allow_unused=True,
            )
        # The product with the activation is taken on the input tensor, see
        # ``_times_activation``.
        rel = tuple(
            torch.zeros_like(a) if c is None else c
            for a, c in zip(acts, vjps, strict=True)
        )
        return (None, *rel, *nones)


class _Relay(torch.autograd.Function):
    """Forward: a given value (in a list, so autograd does not take it for an
    input). Backward: the gradient unchanged, to ``x`` (reshaped to it, for
    ``nn.Flatten`` and ``nn.Unflatten``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: list[Tensor]) -> Tensor:  # type: ignore[override]
        ctx.shape = x.shape
        return value[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        return grad.reshape(ctx.shape), None


class LRPAttribution(DifferentiableAttribution):
    """Captum's ``LRP``, differentiable.

    Same rules and values as ``captum.attr.LRP(model).attribute``: the rule of each
    leaf layer is ``layer.rule`` when the user set one (``EpsilonRule``,
    ``GammaRule``, ``Alpha1_Beta0_Rule``, ``IdentityRule``, with their
    ``epsilon`` / ``gamma`` / ``set_bias_to_zero``), otherwise Captum's default
    (``EpsilonRule(1e-9)`` for conv, linear, pooling and ``BatchNorm2d``); ReLU,
    Tanh, Dropout and Softplus pass relevance on unchanged; the relevance
    starts from the target output and sums to it up to what the stabiliser
    absorbs. Layers Captum has no rule for, and custom rules, are refused with a
    ``TypeError`` naming the layer. Unlike Captum, the model is left untouched
    (no ``rule`` attributes added or removed, no weights rewritten), and
    ``nn.Flatten``, ``nn.Unflatten``, ``nn.Identity`` and every dropout in eval
    mode pass relevance on, reshaped to their input, where Captum fails: the
    values are Captum's for the same network written with ``torch.flatten``.
    Batch norms and dropouts (``p > 0``) in training mode are refused with a
    ``ValueError`` naming the layer.

    Differentiating the map through a layer whose ``EpsilonRule`` epsilon is
    below ``LRPEpsilonWarning.threshold`` (Captum's default 1e-9 is) and whose
    output feeds a softplus issues one
    :class:`~captum_robust.attr.LRPEpsilonWarning` naming the layers: on a
    softplus surrogate such a map's gradients are dominated by the stabiliser,
    see the module docstring.

    The map carries an autograd graph to the input and the parameters. On a ReLU
    network its input gradient vanishes almost everywhere; on a
    :func:`~captum_robust.attr.softplus_surrogate` the rules are applied to the
    smooth network (Dombrowski et al., 2019), see the module docstring, and the
    map is twice differentiable. The model runs twice (a plain pass, then the
    rule pass); every layer with a rule may run only once per forward, as in
    Captum.

    Parameters
    ----------
    forward_func : nn.Module
        The model; rules are read from its leaf modules at each call.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum.attr import LRP
    >>> from captum.attr._utils.lrp_rules import GammaRule
    >>> from captum_robust.attr import differentiable, softplus_surrogate
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    >>> model[0].rule = GammaRule(gamma=0.25)
    >>> x = torch.randn(2, 3)
    >>> lrp = differentiable(LRP(model))
    >>> ours = lrp.attribute(x, target=0)
    >>> torch.allclose(ours, LRP(model).attribute(x, target=0), atol=1e-6)
    True
    >>> model[0].rule = GammaRule(gamma=0.25)  # Captum's LRP deletes the rules
    >>> smooth = lrp.with_forward_func(softplus_surrogate(model, beta=5.0))
    >>> x = x.requires_grad_()
    >>> (g,) = torch.autograd.grad(smooth.attribute(x, target=0).pow(2).sum(), x)
    >>> bool(g.abs().sum() > 0)
    True
    """

    method = "LRP"

    def __init__(self, forward_func: nn.Module) -> None:
        check_module(forward_func, "LRP's rules belong to its layers")
        super().__init__(forward_func)
        # Up front: an unsupported layer is an error now, not in the first call.
        _rules_without_mode_check(forward_func)
        # Shared with the copies with_forward_func makes: an attack that rebuilds
        # its surrogate (and this attribution) at every step warns only once.
        self._epsilon_warned = [False]

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Captum's ``LRP.attribute`` with the same arguments, differentiable.

        Parameters
        ----------
        inputs : Tensor or tuple of Tensor
            Batch(es) to explain; the graph reaches those that require gradients.
        target : int, tuple, Tensor or list, optional
            Captum's target (class index per sample).
        additional_forward_args : Any, optional
            Extra arguments of the model, as in Captum.
        return_convergence_delta : bool, default False
            Also return, per sample, the target output minus the summed relevance
            (Captum's ``compute_convergence_delta``).
        verbose : bool, default False
            Print the rule applied to each layer, as Captum does.

        Returns
        -------
        Tensor or tuple of Tensor, or (attributions, delta)
            The relevance, shaped like ``inputs``, with an autograd graph.
        """
        check_call(
            inputs,
            target,
            return_convergence_delta=return_convergence_delta,
            verbose=verbose,
        )
        model = self.forward_func
        assert isinstance(model, nn.Module)
        rules = lrp_rules(model)
        if verbose:
            for layer, (_, rule) in rules.items():
                print(f"Applied {rule} on layer {layer}")
        passes = tuple(_layers_pass_through(model))
        small = {} if self._epsilon_warned[0] else small_epsilons(rules)
        use = DirectUse(small) if small else None

        records: dict[nn.Module, tuple[Any, ...]] = {}
        # Outside the model's forward, so that a surrogate's function mode does not
        # take the weights' clamp for a piecewise-linear activation.
        with torch.enable_grad():
            modified = {m: _modified_params(m, rule) for m, (_, rule) in rules.items()}
        busy = [False]
        # Without modified weights the rule pass sees the plain pass's values, so
        # an activation's output there is the one recorded here (unless an
        # in-place operation has rewritten it since).
        same_values = not any(modified.values())
        values: dict[nn.Module, list[tuple[Tensor, int]]] = {}

        def record_value(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, Tensor):
                shape = args[0].shape if args and isinstance(args[0], Tensor) else None
                values.setdefault(module, []).append(
                    (output.detach(), output._version, shape)
                )

        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            if busy[0]:
                return None
            if use is not None:
                use.read(args)
            # The rule's vjp is taken through the first pass from each input: a
            # fresh alias per layer keeps it local (an input that also feeds
            # another input, as on a skip connection, would add that path).
            return tuple(
                _local(a) if isinstance(a, Tensor) and a.is_floating_point() else a
                for a in args
            )

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Any:
            if busy[0]:
                return None
            name, rule = rules[module]
            if module in records:
                raise ValueError(
                    f"`forward_func`: layer {name!r} runs more than once in one "
                    "forward pass, which LRP does not support (as in Captum); give "
                    "each use its own module."
                )
            acts = tuple(a for a in args if isinstance(a, Tensor))
            params = modified[module]
            if params:
                busy[0] = True
                try:
                    z = functional_call(module, params, args, strict=False)
                finally:
                    busy[0] = False
            else:
                z = output
            # Later in-place operations (an in-place ReLU, resnet's `out +=`) may
            # rewrite the output: its version tells the rule pass.
            records[module] = (args, acts, z, output, output._version)
            if use is not None:
                use.produced(module, output)
            return None

        tracked = _format_tensor_into_tuples(tracked_inputs(inputs))
        handles = []
        try:
            for layer in rules:
                handles.append(layer.register_forward_pre_hook(pre_hook))
                handles.append(layer.register_forward_hook(hook))
            if same_values:
                for layer in passes:
                    handles.append(layer.register_forward_hook(record_value))
            if use is not None:
                handles.extend(use.hook(passes, _SHAPE_ONLY))
            with torch.enable_grad():
                outputs = _run_forward(model, tracked, None, additional_forward_args)
        finally:
            for h in handles:
                h.remove()
        if use is not None:
            use.read((outputs,))
        outputs = check_outputs(outputs, target, "LRP")
        score = outputs if target is None else _select_targets(outputs, target)

        def rule_forward(module: nn.Module) -> Callable[..., Tensor]:
            name, rule = rules[module]
            identity = isinstance(rule, IdentityRule)
            eps = float(rule.STABILITY_FACTOR)

            def forward(*args: Any, **kwargs: Any) -> Tensor:
                if module not in records:
                    raise RuntimeError(
                        f"layer {name!r} ran in the rule pass but not in the plain "
                        "pass; LRP needs a deterministic forward."
                    )
                plain_args, acts, z, output, version = records.pop(module)
                a2 = tuple(a for a in args if isinstance(a, Tensor))
                if len(a2) != len(acts):
                    raise RuntimeError(f"layer {name!r} got different inputs.")
                for t, a in zip(a2, acts, strict=True):
                    _times_activation(t, a, identity)
                rewritten = output._version != version
                if rewritten and z is output:
                    # The plain output was rewritten in place: the layer again,
                    # on the plain pass's inputs (its forward, not the patch).
                    z = type(module).forward(module, *plain_args)
                spec = (len(acts), eps, identity, rewritten)
                return _RuleLayer.apply(spec, *a2, *acts, z)

            return forward

        def pass_forward(module: nn.Module) -> Callable[..., Tensor]:
            cls_forward = type(module).forward

            def forward(x: Tensor) -> Tensor:
                queue = values.get(module)
                value = None
                if queue:
                    recorded, version, shape = queue.pop(0)
                    if recorded._version == version and shape == x.shape:
                        value = recorded
                if value is None:
                    with torch.no_grad():
                        # On a copy: the layer may return its input (Dropout in
                        # eval mode) and the rule pass may rewrite this output.
                        value = cls_forward(module, x.detach().clone())
                # Relevance passes unchanged; the value is Captum's second pass's.
                return _Relay.apply(x, [value])

            return forward

        hooked: dict[int, Tensor] = {}
        handles = []

        def _times_activation(t: Tensor, a: Tensor, identity: bool) -> None:
            # Captum multiplies by the activation in a hook on the layer's input
            # tensor, registered by the first layer that reads it: the product
            # applies to the tensor's whole gradient, skip connections included.
            if id(t) in hooked or not t.requires_grad:
                return
            hooked[id(t)] = t
            if not identity:
                handles.append(t.register_hook(lambda g: g * a))

        def wrapped(*xs: Any, **kwargs: Any) -> Any:
            # Captum's `input + 0`: the first layer's input is not the leaf.
            return model(*(x + 0 if isinstance(x, Tensor) else x for x in xs), **kwargs)

        forwards: dict[nn.Module, Callable[..., Any]] = {
            m: rule_forward(m) for m in rules
        }
        forwards.update({m: pass_forward(m) for m in passes})
        try:
            with torch.enable_grad(), patched_forwards(forwards):
                grads = create_graph_gradients(
                    wrapped, tracked, target, additional_forward_args
                )
        finally:
            for h in handles:
                h.remove()
        scale = score.reshape(-1)
        relevance = tuple(
            g * scale.reshape((-1,) + (1,) * (g.dim() - 1)) for g in grads
        )
        flagged = [] if use is None else use.flagged()
        if flagged:
            # A backward pass through the map itself is what tells a second-order
            # use (an attack's step, a regulariser's loss) from Captum's plain one.
            warn = epsilon_warning(flagged, self._epsilon_warned)
            for r in relevance:
                if r.requires_grad:
                    r.register_hook(warn)
        result = _format_output(isinstance(inputs, tuple), relevance)
        if not return_convergence_delta:
            return result
        total = sum(r.reshape(r.shape[0], -1).sum(1) for r in relevance)
        return result, scale - total

    def with_forward_func(
        self, forward_func: Callable[..., Any], **kwargs: Any
    ) -> LRPAttribution:
        """The same method bound to ``forward_func`` (an nn.Module; its own rules)."""
        self._check_rebinding(forward_func, kwargs)
        bound = LRPAttribution(forward_func)  # type: ignore[arg-type]
        bound._epsilon_warned = self._epsilon_warned
        return bound


def _local(a: Tensor) -> Tensor:
    if a.requires_grad:
        return a.view_as(a)
    return a.detach().requires_grad_()


def _layers_pass_through(model: nn.Module) -> Iterator[nn.Module]:
    for _, layer in _layers(model):
        if type(layer) in _PASS_THROUGH:
            yield layer


def _rules_without_mode_check(model: nn.Module) -> None:
    for name, layer in _layers(model):
        _rule_of(name, layer)


def from_captum(attribution: LRP) -> LRPAttribution:
    return LRPAttribution(attribution.model)
