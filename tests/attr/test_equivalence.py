"""The differentiable results equal Captum's own (non-differentiable) results."""

import numpy as np
import pytest
import torch
from captum.attr import GradientShap
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerAttribution
from captum.attr import LayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import Saliency
from helpers.models import make_net
from torch.testing import assert_close

import captum_robust.attr._gradient_shap as gs_module
from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate


def _close(ours, theirs):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_close(a.detach(), b.detach())
    else:
        assert isinstance(ours, torch.Tensor)
        assert_close(ours.detach(), theirs.detach())


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (Saliency, {}),
        (Saliency, {"abs": False}),
        (InputXGradient, {}),
        (IntegratedGradients, {}),
        (IntegratedGradients, {"n_steps": 7, "method": "riemann_right"}),
        (IntegratedGradients, {"n_steps": 6, "internal_batch_size": 9}),
        (IntegratedGradients, {"baselines": 0.5, "n_steps": 5}),
    ],
)
@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_gradient_methods_equal_captum(cls, kwargs, net, xb):
    target = [0, 2, 1]
    ours = differentiable(cls(net)).attribute(xb, target=target, **kwargs)
    theirs = cls(net).attribute(xb, target=target, **kwargs)
    assert ours.requires_grad
    _close(ours, theirs)


def test_ig_convergence_delta_and_tuple_inputs(net, xb):
    def two_inputs(a, b, scale):
        return net(a + b) * scale

    a, b = xb, 0.5 * xb.flip(0)
    ig = IntegratedGradients(two_inputs)
    kwargs = dict(target=1, additional_forward_args=(2.0,), n_steps=8)
    ours, d_ours = differentiable(ig).attribute(
        (a, b), return_convergence_delta=True, **kwargs
    )
    theirs, d_theirs = ig.attribute((a, b), return_convergence_delta=True, **kwargs)
    _close(ours, theirs)
    assert_close(d_ours, d_theirs)


def test_with_forward_func_equals_captum_on_new_model(relu_net, xb):
    smooth = softplus_surrogate(relu_net, beta=5.0)
    wrapper = differentiable(IntegratedGradients(relu_net))
    rebound = wrapper.with_forward_func(smooth)
    assert rebound.forward_func is smooth and wrapper.forward_func is relu_net
    _close(
        rebound.attribute(xb, target=0, n_steps=5),
        IntegratedGradients(smooth).attribute(xb, target=0, n_steps=5),
    )
    _close(
        wrapper.attribute(xb, target=0, n_steps=5),
        IntegratedGradients(relu_net).attribute(xb, target=0, n_steps=5),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"relu_attributions": True},
        {"attr_dim_summation": False},
        {"attribute_to_layer_input": True},
    ],
)
def test_layer_grad_cam_equals_captum(kwargs, net, xb):
    cam = LayerGradCam(net, net.conv2)
    ours = differentiable(cam).attribute(xb, target=[1, 0, 2], **kwargs)
    theirs = cam.attribute(xb, target=[1, 0, 2], **kwargs)
    assert ours.requires_grad
    _close(ours, theirs)


def test_layer_grad_cam_upsampled_equals_captum_interpolate(net, xb):
    cam = LayerGradCam(net, net.conv2)
    ours = differentiable(cam, upsample_to_input=True).attribute(xb, target=2)
    theirs = LayerAttribution.interpolate(
        cam.attribute(xb, target=2), (6, 6), interpolate_mode="bilinear"
    )
    assert ours.shape == (3, 1, 6, 6)
    _close(ours, theirs)
    # The per-call switch overrides the wrapper's setting.
    plain = differentiable(cam, upsample_to_input=True).attribute(
        xb, target=2, upsample_to_input=False
    )
    _close(plain, cam.attribute(xb, target=2))
    nearest = differentiable(cam).attribute(
        xb, target=2, upsample_to_input=True, interpolate_mode="nearest"
    )
    _close(nearest, LayerAttribution.interpolate(cam.attribute(xb, target=2), (6, 6)))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_equals_noise_tunnel(nt_type):
    # float32 so that Captum's noise (float32 normal draws) and ours coincide.
    net = make_net(dtype=torch.float32)
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    kwargs = dict(nt_type=nt_type, nt_samples=6, stdevs=0.3)
    torch.manual_seed(11)
    theirs = NoiseTunnel(Saliency(net)).attribute(x, target=[0, 1, 2], **kwargs)
    gen = torch.Generator().manual_seed(11)
    ours = SmoothGrad(net).attribute(x, target=[0, 1, 2], generator=gen, **kwargs)
    _close(ours, theirs)
    # The same through differentiable(NoiseTunnel(Saliency)).
    wrapped = differentiable(NoiseTunnel(Saliency(net)), seed=11)
    _close(wrapped.attribute(x, target=[0, 1, 2], **kwargs), theirs)


def test_noise_tunnel_over_ig_equals_captum():
    net = make_net(dtype=torch.float32)
    x = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    baselines = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(5))
    kwargs = dict(nt_samples=4, stdevs=0.2, n_steps=5, baselines=baselines)
    torch.manual_seed(7)
    nt = NoiseTunnel(IntegratedGradients(net))
    theirs, d_theirs = nt.attribute(
        x, target=1, return_convergence_delta=True, **kwargs
    )
    ours, d_ours = differentiable(nt, seed=7).attribute(
        x, target=1, return_convergence_delta=True, **kwargs
    )
    _close(ours, theirs)
    assert_close(d_ours, d_theirs)


def test_smoothgrad_chunking_and_seed(net, xb):
    sg = SmoothGrad(net, seed=3)
    full = sg.attribute(xb, target=1, nt_samples=7, stdevs=0.2)
    chunked = sg.attribute(
        xb, target=1, nt_samples=7, stdevs=0.2, nt_samples_batch_size=3
    )
    _close(chunked, full)
    _close(sg.attribute(xb, target=1, nt_samples=7, stdevs=0.2), full)
    other = SmoothGrad(net, seed=4).attribute(xb, target=1, nt_samples=7, stdevs=0.2)
    assert not torch.allclose(other, full)
    # A generator advances: two calls with one generator differ, and a fresh
    # generator with the same seed reproduces the first.
    gen = torch.Generator().manual_seed(9)
    first = sg.attribute(xb, target=1, stdevs=0.2, generator=gen)
    second = sg.attribute(xb, target=1, stdevs=0.2, generator=gen)
    assert not torch.allclose(first, second)
    again = sg.attribute(
        xb, target=1, stdevs=0.2, generator=torch.Generator().manual_seed(9)
    )
    _close(again, first)


def test_smoothgrad_independent_reference(net, xb):
    """Mean absolute gradient over the exact noise draws, computed by hand."""
    n, sd = 4, 0.25
    ours = SmoothGrad(net).attribute(
        xb,
        target=2,
        nt_samples=n,
        stdevs=sd,
        generator=torch.Generator().manual_seed(0),
    )
    noise = sd * torch.randn(
        (3, n, 2, 6, 6), generator=torch.Generator().manual_seed(0), dtype=xb.dtype
    )
    expected = torch.zeros_like(xb)
    for i in range(n):
        xi = (xb + noise[:, i]).requires_grad_()
        (g,) = torch.autograd.grad(net(xi)[:, 2].sum(), xi)
        expected += g.abs() / n
    _close(ours, expected)


def test_gradient_shap_equals_captum_with_same_draws(net, monkeypatch):
    """Captum's GradientShap draws with NumPy and torch's global generators; replay
    exactly those draws into ours and compare."""
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1)).double()
    baselines = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    baselines = baselines.double()
    n, sd, batch = 4, 0.2, 3
    np.random.seed(0)  # noqa: NPY002 (Captum draws from the legacy global RNG)
    torch.manual_seed(0)
    gs = GradientShap(net)
    theirs, d_theirs = gs.attribute(
        x,
        baselines,
        n_samples=n,
        stdevs=sd,
        target=[2, 0, 1],
        return_convergence_delta=True,
    )
    # Captum: baseline indices (np.random.choice), then noise (torch.normal, float32),
    # then the interpolation coefficients (np.random.uniform).
    np.random.seed(0)  # noqa: NPY002 (Captum draws from the legacy global RNG)
    index = torch.as_tensor(np.random.choice(5, n * batch))  # noqa: NPY002
    alpha = np.random.uniform(0.0, 1.0, n * batch)  # noqa: NPY002
    alpha = torch.as_tensor(alpha, dtype=x.dtype)
    torch.manual_seed(0)
    noise = torch.normal(0, torch.tensor(sd).repeat((n * batch, 2, 6, 6)))
    monkeypatch.setattr(gs_module, "randint", lambda *a, **k: index)
    monkeypatch.setattr(gs_module, "rand", lambda *a, **k: alpha)
    monkeypatch.setattr(gs_module, "randn", lambda *a, **k: noise.to(x.dtype) / sd)
    ours, d_ours = differentiable(gs).attribute(
        x,
        baselines,
        n_samples=n,
        stdevs=sd,
        target=[2, 0, 1],
        return_convergence_delta=True,
    )
    _close(ours, theirs)
    assert_close(d_ours, d_theirs)


def test_gradient_shap_seed_and_options(net, xb):
    baselines = torch.zeros(2, 2, 6, 6, dtype=xb.dtype)
    wrapper = differentiable(GradientShap(net), seed=1)
    a = wrapper.attribute(xb, baselines, target=0, n_samples=3, stdevs=0.1)
    b = wrapper.attribute(xb, baselines, target=0, n_samples=3, stdevs=0.1)
    _close(a, b)
    assert a.shape == xb.shape and a.requires_grad
    # multiply_by_inputs=False gives the expected gradients alone (a zero
    # baseline with stdevs=0 and the same alpha draws: scaled by x).
    g = torch.Generator().manual_seed(4)
    local = differentiable(GradientShap(net, multiply_by_inputs=False))
    grads = local.attribute(xb, baselines, target=0, n_samples=1, generator=g)
    g = torch.Generator().manual_seed(4)
    full = differentiable(GradientShap(net)).attribute(
        xb, baselines, target=0, n_samples=1, generator=g
    )
    _close(full, grads * xb)
    # Callable baselines are called with the inputs.
    c = wrapper.attribute(
        xb,
        lambda inp: torch.zeros(2, *inp.shape[1:]).double(),
        target=0,
        n_samples=3,
        stdevs=0.1,
    )
    _close(c, a)


def test_noise_tunnel_draws_baselines_from_distribution(net, xb):
    base = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(0)).double()
    # Identical rows: whatever is drawn, the result is IG from that baseline.
    distribution = base.expand(5, 2, 6, 6)
    nt = differentiable(NoiseTunnel(IntegratedGradients(net)), seed=0)
    ours = nt.attribute(
        xb,
        nt_samples=3,
        nt_samples_batch_size=2,
        stdevs=0.0,
        draw_baseline_from_distrib=True,
        baselines=distribution,
        target=0,
        n_steps=5,
    )
    theirs = IntegratedGradients(net).attribute(xb, baselines=base, target=0, n_steps=5)
    _close(ours, theirs)


def _input_gradient(wrapper, inputs, weights, **kwargs):
    leaves = tuple(t.detach().requires_grad_() for t in inputs)
    attr, delta = wrapper.attribute(leaves, return_convergence_delta=True, **kwargs)
    loss = sum((a * w).sum() for a, w in zip(attr, weights)) + delta.sum()
    return attr, delta, torch.autograd.grad(loss, leaves)


def test_ig_internal_batch_size_keeps_every_gradient(net, xb):
    # Captum's own internal batching detaches every part of the path but the
    # first; the differentiable version splits the samples instead, so values
    # and gradients are those of one call, with per-sample baselines, targets
    # and additional arguments split along.
    def two_inputs(a, b, scale):
        return net(a + b) * scale.view(-1, 1)

    g = torch.Generator().manual_seed(7)
    inputs = (xb, 0.5 * xb.flip(0))
    weights = tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in inputs)
    kwargs = dict(
        baselines=(torch.zeros_like(xb), 0.1 * torch.ones_like(xb)),
        target=torch.tensor([0, 2, 1]),
        additional_forward_args=(torch.tensor([1.0, 2.0, 0.5], dtype=xb.dtype),),
        n_steps=6,
    )
    wrapper = differentiable(IntegratedGradients(two_inputs))
    attr, delta, grads = _input_gradient(wrapper, inputs, weights, **kwargs)
    for internal_batch_size in (6, 12, 7):  # 1, 2 and 1 samples per call
        chunked = _input_gradient(
            wrapper, inputs, weights, internal_batch_size=internal_batch_size, **kwargs
        )
        _close(chunked[0], attr)
        assert_close(chunked[1], delta)
        _close(chunked[2], grads)
    with pytest.raises(ValueError, match="internal_batch_size"):
        wrapper.attribute(inputs, internal_batch_size=0, **kwargs)
