"""Differentiable Guided Backprop / Deconvolution: Captum's values, gradchecks."""

import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn

from captum_robust.attr import differentiable, softplus_surrogate

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks")


def _net():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
    return m.double().eval()


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvolution])
def test_equal_captum_and_twice_differentiable(cls):
    m = _net()
    x = torch.randn(
        4, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    ours = differentiable(cls(m)).attribute(x, target=[0, 1, 2, 0])
    theirs = cls(m).attribute(x, target=[0, 1, 2, 0])
    torch.testing.assert_close(ours.detach(), theirs)
    assert not x.requires_grad
    smooth = differentiable(cls(m)).with_forward_func(softplus_surrogate(m, beta=3.0))
    xx = x[:1].clone().requires_grad_()
    f = lambda z: smooth.attribute(z, target=1)  # noqa: E731
    # fast_mode: finite differences along random directions (the full Jacobian
    # took a minute here).
    assert torch.autograd.gradcheck(f, (xx,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (xx,), fast_mode=True)


def test_guided_input_gradient_nonzero_and_subclass_refused():
    m = _net()
    smooth = differentiable(GuidedBackprop(m)).with_forward_func(softplus_surrogate(m))
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(smooth.attribute(x, target=0).pow(2).sum(), x)
    assert g.abs().sum() > 0

    class Custom(GuidedBackprop):
        pass

    with pytest.raises(TypeError, match="attribution"):
        differentiable(Custom(m))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_guided_grad_cam_equal_captum_and_differentiable(mode):
    from captum.attr import GuidedGradCam

    m = _net()
    x = torch.randn(
        3, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    ggc = differentiable(GuidedGradCam(m, m[0]))
    ours = ggc.attribute(x, target=[0, 1, 2], interpolate_mode=mode)
    theirs = GuidedGradCam(m, m[0]).attribute(
        x, target=[0, 1, 2], interpolate_mode=mode
    )
    torch.testing.assert_close(ours.detach(), theirs)
    assert ours.abs().sum() > 0 and not x.requires_grad
    smooth = ggc.with_forward_func(softplus_surrogate(m, beta=3.0))
    xx = x[:1].clone().requires_grad_()
    (g,) = torch.autograd.grad(smooth.attribute(xx, target=1).pow(2).sum(), xx)
    assert g.abs().sum() > 0
    f = lambda z: smooth.attribute(z, target=1, interpolate_mode=mode)  # noqa: E731
    assert torch.autograd.gradcheck(f, (xx,), fast_mode=True)
    with pytest.raises(TypeError, match="`interpolate_mode`"):
        ggc.attribute(x, target=0, interpolate_mode=1)
