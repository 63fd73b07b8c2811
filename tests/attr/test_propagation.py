"""Differentiable Guided Backprop / Deconvolution: Captum's values, gradchecks."""

import pytest
import torch
from captum.attr import Deconvolution
from captum.attr import GuidedBackprop
from helpers.models import bn_cnn
from torch import nn

from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks")


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvolution])
def test_equal_captum_and_twice_differentiable(cls):
    m = bn_cnn()
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
    m = bn_cnn()
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

    m = bn_cnn()
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


class _Gated(nn.Module):
    """ReLU modules plus nonlinearities Guided Backprop keeps: a squeeze-excitation
    gate (a product of two data-dependent factors), a functional SiLU and a
    layer norm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.gate = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.conv(x))
        h = h * torch.sigmoid(self.gate(h.mean((2, 3))))[:, :, None, None]
        h = nn.functional.silu(h).mean((2, 3))
        return self.head(self.relu(self.norm(h)))


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvolution])
def test_second_derivative_follows_nonlinearities_the_rule_keeps(cls):
    torch.manual_seed(0)
    m = _Gated().double().eval()
    x = torch.randn(
        3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    ours = differentiable(cls(m)).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(ours.detach(), cls(m).attribute(x, target=[0, 1, 2]))
    smooth = differentiable(cls(m)).with_forward_func(softplus_surrogate(m, beta=3.0))
    xx = x[:1].clone().requires_grad_()
    f = lambda z: smooth.attribute(z, target=1)  # noqa: E731
    # Without the plain pass's graph inside the rule pass, the gate's, SiLU's and
    # the layer norm's curvature would be missing from this Jacobian.
    assert torch.autograd.gradcheck(f, (xx,))


def test_curvature_is_told_from_the_first_pass_graph():
    from captum_robust.attr._graph import has_curvature

    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    flat = nn.functional.max_pool2d(torch.relu(nn.functional.conv2d(x, w)), 2)
    assert not has_curvature(flat.flatten(1) @ torch.randn(5, 2), [x])
    assert not has_curvature((x * w.sum()).mean(), [x])  # parameter factor
    assert has_curvature(x * x, [x])
    assert has_curvature(torch.sigmoid(x), [x])
    assert has_curvature(torch.ones(3) / x.sum(), [x])  # denominator
    assert not has_curvature(x.sum() / torch.full((3,), 2.0), [x])
    s = nn.functional.softplus(x)
    assert not has_curvature(s.sum(), [x], skip=[s.grad_fn])
    assert has_curvature(s.sum(), [x])
    # Curvature that does not reach the inputs does not count.
    assert not has_curvature(x.sum() * torch.sigmoid(w).sum(), [x])
    bn = nn.functional.batch_norm(x, None, None, training=True)
    assert has_curvature(bn.sum(), [x], fixed_norms=False)
    # A non-leaf input stops the walk: what produced it is not the model's.
    z = torch.sigmoid(x)
    assert not has_curvature(2 * z, [z])


@pytest.mark.parametrize("make", [bn_cnn, lambda: _Gated().double().eval()])
def test_parameter_gradient_matches_finite_difference(make):
    # Regularizers differentiate the map in the weights: with or without the
    # plain pass's graph inside the rule pass, that derivative must be exact.
    torch.manual_seed(0)
    m = softplus_surrogate(make(), beta=3.0)
    gb = differentiable(GuidedBackprop(m))
    g = torch.Generator().manual_seed(4)
    shape = (2, 2, 6, 6) if make is bn_cnn else (2, 2, 5, 5)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    weight = next(p for p in m.parameters() if p.dim() == 4)
    direction = torch.randn(weight.shape, dtype=torch.float64, generator=g)

    def loss() -> torch.Tensor:
        return gb.attribute(x, target=1).pow(2).sum()

    (grad,) = torch.autograd.grad(loss(), weight)
    h = 1e-6
    with torch.no_grad():
        weight += h * direction
        up = loss()
        weight -= 2 * h * direction
        down = loss()
        weight += h * direction
    numeric = (up - down) / (2 * h)
    torch.testing.assert_close((grad * direction).sum(), numeric, rtol=1e-5, atol=1e-9)


class _ShiftedActivation(nn.Module):
    """Softplus outputs shifted after the activation ran, in place or not."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.Softplus(beta=3.0)
        self.fc2 = nn.Linear(6, 3)
        self.inplace = inplace

    def forward(self, x):
        h = self.act(self.fc1(x))
        if self.inplace:
            h += 0.3
        else:
            h = h + 0.3
        return self.fc2(h * h)


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvolution])
def test_activation_output_rewritten_in_place(cls):
    # The rule pass must not hand on an alias of an output that the plain pass
    # rewrote: the in-place network gives the out-of-place one's map and gradient.
    x = torch.randn(5, 4, dtype=torch.float64)
    results = []
    for inplace in (True, False):
        m = _ShiftedActivation(inplace).double()
        z = x.clone().requires_grad_()
        attr = differentiable(cls(m)).attribute(z, target=1)
        (g,) = torch.autograd.grad(attr.pow(2).sum(), z)
        results.append((attr.detach(), g))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
