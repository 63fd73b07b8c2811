"""Device placement on CUDA (skipped where no CUDA device is present)."""

import pytest
import torch
from captum.attr import GradientShap, IntegratedGradients, LayerGradCam, Saliency

from captum_robust.attr import SmoothGrad, differentiable, softplus_surrogate

pytestmark = pytest.mark.gpu


def test_methods_stay_on_cuda(net_factory):
    device = torch.device("cuda")
    model = softplus_surrogate(net_factory(torch.nn.ReLU)).to(device)
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
