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


# name -> model -> (wrapper, kwargs): every supported method, deterministic.
METHODS = {
    "saliency": lambda m: (differentiable(Saliency(m)), {"abs": False}),
    "saliency_abs": lambda m: (differentiable(Saliency(m)), {}),
    "input_x_gradient": lambda m: (differentiable(InputXGradient(m)), {}),
    "integrated_gradients": lambda m: (
        differentiable(IntegratedGradients(m)),
        {"n_steps": 4, "method": "riemann_right"},
    ),
    "gradient_shap": lambda m: (
        differentiable(GradientShap(m), seed=0),
        {"baselines": _baselines(), "n_samples": 3, "stdevs": 0.1},
    ),
    "layer_grad_cam": lambda m: (
        differentiable(LayerGradCam(m, m.conv2), upsample_to_input=True),
        {},
    ),
    "smoothgrad": lambda m: (SmoothGrad(m, seed=0), {"nt_samples": 3, "stdevs": 0.2}),
    "noise_tunnel_ig": lambda m: (
        differentiable(NoiseTunnel(IntegratedGradients(m)), seed=0),
        {"nt_samples": 2, "stdevs": 0.1, "n_steps": 3, "nt_type": "smoothgrad_sq"},
    ),
}


@pytest.mark.parametrize("name", METHODS)
def test_gradient_wrt_input(name, net, x):
    method, kwargs = METHODS[name](net)

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
        method, kwargs = METHODS[name](net)
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
