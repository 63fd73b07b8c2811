"""Gradients of every supported attribution, checked by finite differences (float64)."""

import pytest
import torch
from captum.attr import GradientShap
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import Saliency
from torch.autograd import gradcheck
from torch.func import functional_call

from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable


def _baselines():
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64)


def _methods(model):
    """(name, wrapper, kwargs) for every supported method, deterministic."""
    return [
        ("saliency", differentiable(Saliency(model)), {"abs": False}),
        ("saliency_abs", differentiable(Saliency(model)), {}),
        ("input_x_gradient", differentiable(InputXGradient(model)), {}),
        (
            "integrated_gradients",
            differentiable(IntegratedGradients(model)),
            {"n_steps": 4, "method": "riemann_right"},
        ),
        (
            "gradient_shap",
            differentiable(GradientShap(model), seed=0),
            {"baselines": _baselines(), "n_samples": 3, "stdevs": 0.1},
        ),
        (
            "layer_grad_cam",
            differentiable(LayerGradCam(model, model.conv2), upsample_to_input=True),
            {},
        ),
        ("smoothgrad", SmoothGrad(model, seed=0), {"nt_samples": 3, "stdevs": 0.2}),
        (
            "noise_tunnel_ig",
            differentiable(NoiseTunnel(IntegratedGradients(model)), seed=0),
            {"nt_samples": 2, "stdevs": 0.1, "n_steps": 3, "nt_type": "smoothgrad_sq"},
        ),
    ]


NAMES = [
    "saliency",
    "saliency_abs",
    "input_x_gradient",
    "integrated_gradients",
    "gradient_shap",
    "layer_grad_cam",
    "smoothgrad",
    "noise_tunnel_ig",
]


@pytest.mark.parametrize("name", NAMES)
def test_gradient_wrt_input(name, net, x):
    _, method, kwargs = next(m for m in _methods(net) if m[0] == name)

    def f(inp):
        return method.attribute(inp, target=1, **kwargs)

    x = x.clone().requires_grad_()
    assert gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("name", ["saliency", "layer_grad_cam", "smoothgrad"])
def test_gradient_wrt_parameter(name, net, x):
    weight = net.fc.weight.detach().clone().requires_grad_()

    def f(w):
        def forward(inp):
            return functional_call(net, {"fc.weight": w}, (inp,))

        # The attribution is rebound to a forward that reads the parameter under test.
        _, method, kwargs = next(m for m in _methods(net) if m[0] == name)
        bound = method.with_forward_func(forward, **_layer_kwargs(method, net))
        return bound.attribute(x, target=2, **kwargs)

    assert gradcheck(f, (weight,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _layer_kwargs(method, model):
    return {"layer": model.conv2} if method.method == "LayerGradCam" else {}


def test_backward_reaches_parameters(net, x):
    attr = differentiable(IntegratedGradients(net)).attribute(x, target=0, n_steps=5)
    attr.square().sum().backward()
    for name, p in net.named_parameters():
        # The last bias shifts every logit alike: the gradients do not depend on it.
        if name != "fc.bias":
            assert p.grad is not None and p.grad.abs().sum() > 0, name
