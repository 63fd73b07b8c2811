"""The differentiable attributions stay on CUDA; skipped without a CUDA device."""

import pytest
import torch
from captum.attr import GradientShap
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import Saliency
from helpers.models import make_net
from helpers.models import tiny_vit
from torch import nn

from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate

pytestmark = pytest.mark.gpu


def test_methods_stay_on_cuda():
    device = torch.device("cuda")
    model = softplus_surrogate(make_net(nn.ReLU)).to(device)
    x = torch.randn(4, 2, 6, 6, device=device, dtype=torch.float64, requires_grad=True)
    results = [
        SmoothGrad(model, seed=0).attribute(x, target=1, nt_samples=3, stdevs=0.1),
        # A CPU generator may drive a CUDA computation.
        SmoothGrad(model).attribute(
            x, target=1, stdevs=0.1, generator=torch.Generator().manual_seed(0)
        ),
        differentiable(GradientShap(model), seed=0).attribute(
            x, torch.zeros_like(x), target=1, n_samples=3
        ),
        differentiable(IntegratedGradients(model)).attribute(x, target=1, n_steps=4),
        differentiable(Saliency(model)).attribute(x, target=1),
        differentiable(
            LayerGradCam(model, model.conv2), upsample_to_input=True
        ).attribute(x, target=1),
    ]
    for attr in results:
        assert attr.device == device and attr.requires_grad
        (g,) = torch.autograd.grad(attr.sum(), x)
        assert g.device == device and torch.isfinite(g).all()
    cpu = SmoothGrad(model.cpu(), seed=0).attribute(
        x.detach().cpu(), target=1, nt_samples=3, stdevs=0.1
    )
    assert cpu.device.type == "cpu"


def test_second_order_and_token_maps_on_cuda():
    device = torch.device("cuda")
    vit = tiny_vit().to(device).eval()
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    sal = differentiable(Saliency(vit)).attribute(x, target=1, abs=False)
    cam = differentiable(
        LayerGradCam(vit, vit.encoder.layers[-1]), upsample_to_input=True
    ).attribute(x, target=1)
    assert cam.shape == (2, 1, 8, 8) and cam.device == device
    for attr in (sal, cam):
        (g,) = torch.autograd.grad(attr.square().sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    mobile = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Hardswish(),
        nn.Hardsigmoid(),
        nn.Flatten(),
        nn.Linear(144, 3),
    ).to(device)
    sg = SmoothGrad(mobile, seed=0).attribute(x, target=0, nt_samples=2, stdevs=0.1)
    (g,) = torch.autograd.grad(sg.sum(), x)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="`target`"):
        differentiable(Saliency(vit)).attribute(x, target=3)
