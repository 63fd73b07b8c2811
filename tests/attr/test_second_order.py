"""Second-order gradients through MobileNetV3 and ViT building blocks.

Hardsigmoid has no double backward and neither has the fused CPU attention kernel;
every differentiable attribution records its graph under second_order_safe(). The
second derivative is checked against central finite differences of the
first-order attribution.
"""

import inspect

import pytest
import torch
from captum.attr import GradientShap
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import Saliency
from helpers.models import tiny_vit
from torch import nn
from torchvision.ops import SqueezeExcitation

from captum_robust._utils.second_order import second_order_safe
from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable


class MobileLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Hardswish()
        self.se = SqueezeExcitation(4, 2, scale_activation=nn.Hardsigmoid)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.se(self.act(self.conv(x))).flatten(1))


def mobile():
    torch.manual_seed(0)
    return MobileLike().double().eval(), lambda m: m.se


def vit():
    return tiny_vit().double().eval(), lambda m: m.encoder.layers[-1]


def _input():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)


def _methods(model, layer):
    def saliency(inputs, target=None, additional_forward_args=None):
        x = inputs if inputs.requires_grad else inputs.detach().requires_grad_()
        out = model(x)[:, target].sum()
        return torch.autograd.grad(out, x, create_graph=True)[0]

    zeros = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    return {
        "Saliency": (differentiable(Saliency(model)), {"abs": False}),
        "InputXGradient": (differentiable(InputXGradient(model)), {}),
        "IG": (differentiable(IntegratedGradients(model)), {"n_steps": 3}),
        "GradientShap": (
            differentiable(GradientShap(model), seed=0),
            {"baselines": zeros, "n_samples": 2},
        ),
        "LayerGradCam": (
            differentiable(LayerGradCam(model, layer), upsample_to_input=True),
            {},
        ),
        "NoiseTunnel": (
            differentiable(NoiseTunnel(Saliency(model)), seed=0),
            {"nt_samples": 2, "stdevs": 0.1, "abs": False},
        ),
        "SmoothGrad": (
            SmoothGrad(model, seed=0),
            {"nt_samples": 2, "stdevs": 0.1, "abs": False},
        ),
        "callable": (differentiable(saliency, forward_func=model), {}),
    }


METHODS = list(_methods(nn.Linear(1, 1), None))


@pytest.mark.parametrize("build", [mobile, vit], ids=["mobilenet", "vit"])
def test_the_blocker_is_real(build):
    model, _ = build()
    x = _input().requires_grad_()
    (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g.square().sum(), x)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("build", [mobile, vit], ids=["mobilenet", "vit"])
def test_second_derivative_matches_finite_differences(build, name):
    model, layer = build()
    wrapper, kwargs = _methods(model, layer(model))[name]
    x = _input()
    weights = torch.randn(
        x.shape if name != "LayerGradCam" else (2, 1, 8, 8),
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    direction = torch.randn(
        x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )

    def value(point):
        return (wrapper.attribute(point, target=1, **kwargs) * weights).sum()

    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(value(xg), xg)
    eps = 1e-6
    with torch.no_grad():
        fd = (value(x + eps * direction) - value(x - eps * direction)) / (2 * eps)
    torch.testing.assert_close((grad * direction).sum(), fd, rtol=1e-5, atol=1e-7)


def test_first_order_values_equal_plain_captum():
    model, _ = mobile()
    x = _input()
    for captum_obj, kwargs in (
        (Saliency(model), {"abs": True}),
        (IntegratedGradients(model), {"n_steps": 3}),
        (LayerGradCam(model, model.se), {}),
    ):
        plain = captum_obj.attribute(x, target=2, **kwargs)
        ours = differentiable(captum_obj).attribute(x, target=2, **kwargs)
        torch.testing.assert_close(ours, plain, rtol=1e-7, atol=1e-10)


def _sdpa_flags():
    b = torch.backends.cuda
    return (
        b.flash_sdp_enabled(),
        b.mem_efficient_sdp_enabled(),
        b.math_sdp_enabled(),
        b.cudnn_sdp_enabled(),
    )


def test_global_state_restored_on_success_and_failure():
    model, layer = vit()
    x = _input()
    torch.backends.cuda.enable_mem_efficient_sdp(False)  # a user's own setting
    try:
        before = _sdpa_flags()
        for wrapper, kwargs in _methods(model, layer(model)).values():
            wrapper.attribute(x, target=1, **kwargs)
            assert _sdpa_flags() == before
            assert torch._C._len_torch_function_stack() == 0
        with pytest.raises(ValueError, match="`target`"):
            # Fails inside the forward pass, under the context.
            differentiable(Saliency(model)).attribute(x, target=7)
        assert _sdpa_flags() == before
        assert torch._C._len_torch_function_stack() == 0
    finally:
        torch.backends.cuda.enable_mem_efficient_sdp(True)


class _RecomputeInBackward(torch.autograd.Function):
    """Like a checkpoint: the backward recomputes the forward with a graph."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return nn.functional.hardsigmoid(x).detach()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad(), second_order_safe():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(
                nn.functional.hardsigmoid(z).sum(), z, create_graph=True
            )
            (h,) = torch.autograd.grad(g.square().sum(), z)
        return grad * h


def test_a_backward_run_inside_the_context_gets_the_context_again():
    # torch.autograd.grad is itself routed through the mode, whose handler runs
    # with the mode off: a custom backward that enters the context again must get
    # the rerouting, not a no-op because the context is lexically open.
    x = torch.linspace(-2.5, 2.5, 7, requires_grad=True)
    with second_order_safe():
        y = _RecomputeInBackward.apply(x).sum()
        (gx,) = torch.autograd.grad(y, x)
        assert torch._C._len_torch_function_stack() == 1
    assert torch.isfinite(gx).all()
    assert torch._C._len_torch_function_stack() == 0


def test_a_user_subclass_records_its_graph_under_the_context():
    # The base class wraps every subclass's ``attribute``: a user's own
    # DifferentiableAttribution gets the context without a decorator, once.
    from captum_robust.attr import DifferentiableAttribution

    class HardswishGradient(DifferentiableAttribution):
        method = "HardswishGradient"

        def attribute(self, inputs, target=None):
            """The input gradient of the target score."""
            depth = torch._C._len_torch_function_stack()
            score = self.forward_func(inputs)[:, target].sum()
            (grad,) = torch.autograd.grad(score, inputs, create_graph=True)
            return grad, depth

    class Subclassed(HardswishGradient):
        def attribute(self, inputs, target=None):
            return super().attribute(inputs, target)

    model, _ = mobile()
    x = _input().requires_grad_(True)
    for cls in (HardswishGradient, Subclassed):
        grad, depth = cls(model).attribute(x, target=1)
        assert depth == 1  # the mode is on, and not pushed twice
        (second,) = torch.autograd.grad(grad.square().sum(), x)
        assert torch.isfinite(second).all() and second.abs().sum() > 0
    assert torch._C._len_torch_function_stack() == 0
    sig = inspect.signature(HardswishGradient.attribute)
    assert list(sig.parameters) == ["self", "inputs", "target"]
    assert (
        HardswishGradient.attribute.__doc__ == "The input gradient of the target score."
    )
