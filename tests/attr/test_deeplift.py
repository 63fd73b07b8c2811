"""Differentiable DeepLift: Captum's values, gradchecks, untouched user objects."""

import pytest
import torch
from captum.attr import DeepLift
from captum.attr import DeepLiftShap
from captum.attr import LayerDeepLift
from captum.attr import NoiseTunnel
from helpers.models import TwoInputNet
from helpers.models import bn_cnn
from torch import nn

from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _cnn():
    # No nonlinear module feeds another directly (see test_adjacent_modules).
    return bn_cnn(conv_before_pool=True)


def _pool_net():
    torch.manual_seed(1)
    return (
        nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 1),
            nn.ELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(4, 3),
        )
        .to(F64)
        .eval()
    )


def _mlp():
    torch.manual_seed(2)
    return (
        nn.Sequential(
            nn.Flatten(),
            nn.Linear(72, 8),
            nn.Sigmoid(),
            nn.Linear(8, 8),
            nn.Tanh(),
            nn.Linear(8, 8),
            nn.Softplus(beta=2.0),
            nn.Linear(8, 3),
            nn.Softmax(dim=1),
        )
        .to(F64)
        .eval()
    )


X = torch.randn(4, 2, 6, 6, dtype=F64, generator=_gen(3))
BASELINES = [
    None,
    0.3,
    torch.randn(1, 2, 6, 6, dtype=F64, generator=_gen(4)),
    torch.randn(4, 2, 6, 6, dtype=F64, generator=_gen(5)),
]


@pytest.mark.parametrize("make", [_cnn, _pool_net, _mlp])
@pytest.mark.parametrize("b", range(len(BASELINES)))
def test_equal_captum(make, b):
    m = make()
    base = BASELINES[b]
    target = [0, 1, 2, 0]
    ours, delta = differentiable(DeepLift(m)).attribute(
        X, baselines=base, target=target, return_convergence_delta=True
    )
    theirs, their_delta = DeepLift(m).attribute(
        X, baselines=base, target=target, return_convergence_delta=True
    )
    assert ours.requires_grad
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(delta.detach(), their_delta, rtol=1e-9, atol=1e-12)
    assert theirs.abs().max() > 1e-6  # not trivially equal (softmax maps are small)


def test_equal_captum_options_and_float32():
    m = _cnn()
    for model, kwargs in (
        (m, {"multiply_by_inputs": False}),
        (_pool_net(), {"eps": 1e-2}),
        (_mlp(), {"eps": 1e-2}),
    ):
        ours = differentiable(DeepLift(model, **kwargs)).attribute(X, target=2)
        torch.testing.assert_close(
            ours.detach(), DeepLift(model, **kwargs).attribute(X, target=2)
        )
    # Where |delta_in| < eps at a max pooling Captum takes the first sample's
    # gradient for every sample (grad_input[0]); here each sample's own, so only
    # the first sample agrees.
    ours = differentiable(DeepLift(m, eps=1e-2)).attribute(X, target=2)
    theirs = DeepLift(m, eps=1e-2).attribute(X, target=2)
    torch.testing.assert_close(ours[0].detach(), theirs[0])
    assert not torch.allclose(ours[1:].detach(), theirs[1:])

    def custom(mult, inp, base):
        return tuple(g * (x - b).abs() for g, x, b in zip(mult, inp, base))

    target = torch.tensor([2, 1, 0, 0])
    ours = differentiable(DeepLift(m)).attribute(
        X, target=target, custom_attribution_func=custom
    )
    theirs = DeepLift(m).attribute(X, target=target, custom_attribution_func=custom)
    torch.testing.assert_close(ours.detach(), theirs)
    m32, x32 = _pool_net().float(), X.float()
    ours = differentiable(DeepLift(m32)).attribute(x32, baselines=0.1, target=1)
    theirs = DeepLift(m32).attribute(x32, baselines=0.1, target=1)
    torch.testing.assert_close(ours.detach(), theirs)


def test_tuple_inputs_and_additional_args_equal_captum():
    torch.manual_seed(6)
    m = TwoInputNet(3, 2, hidden=4, classes=2).to(F64).eval()
    xs = (torch.randn(3, 3, dtype=F64), torch.randn(3, 2, dtype=F64))
    bases = (0.5, torch.randn(1, 2, dtype=F64))
    kwargs = dict(baselines=bases, target=1, additional_forward_args=(2.0,))
    ours = differentiable(DeepLift(m)).attribute(xs, **kwargs)
    theirs = DeepLift(m).attribute(xs, **kwargs)
    assert isinstance(ours, tuple) and len(ours) == 2
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o.detach(), t)


def _adjacent(separate):
    torch.manual_seed(7)
    sep = [nn.Flatten(), nn.Unflatten(1, (3, 6, 6))] if separate else []
    return (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            *sep,
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(27, 3),
        )
        .to(F64)
        .eval()
    )


def test_adjacent_modules_chain_multipliers():
    # Captum's ReLU hook and MaxPool hook share one tensor when the ReLU's output
    # is the pool's input, and the ReLU's rule gets the pool's plain gradient:
    # its attributions stop summing to f(x) - f(baseline). A reshaping layer in
    # between (same function) gives Captum's hooks separate tensors.
    base = BASELINES[3]
    ours, delta = differentiable(DeepLift(_adjacent(False))).attribute(
        X, baselines=base, target=0, return_convergence_delta=True
    )
    separated = DeepLift(_adjacent(True)).attribute(X, baselines=base, target=0)
    torch.testing.assert_close(ours.detach(), separated)
    assert delta.abs().max() < 1e-12
    _, captum_delta = DeepLift(_adjacent(False)).attribute(
        X, baselines=base, target=0, return_convergence_delta=True
    )
    assert captum_delta.abs().max() > 1e-3


def _smooth_net():
    torch.manual_seed(8)
    return (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(3, 3, 3, padding=1),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3),
            nn.LeakyReLU(0.1),
            nn.Flatten(),
            nn.Linear(4, 3),
            nn.Tanh(),
        )
        .to(F64)
        .eval()
    )


def test_surrogate_gradcheck_and_nonzero_gradient():
    m = _smooth_net()
    dl = differentiable(DeepLift(m)).with_forward_func(softplus_surrogate(m, beta=3.0))
    x = X[:1].clone().requires_grad_()
    base = BASELINES[2].clone().requires_grad_()
    f = lambda z, b: dl.attribute(z, baselines=b, target=1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, base))
    assert torch.autograd.gradgradcheck(f, (x, base), fast_mode=True)
    xb = X.clone().requires_grad_()
    (g,) = torch.autograd.grad(dl.attribute(xb, target=0).pow(2).sum(), xb)
    assert g.abs().min() >= 0 and (g.abs().flatten(1).sum(1) > 1e-6).all()
    # On the ReLU network the same input gradient is the rule's piecewise-constant
    # part only: it differs from the surrogate's.
    relu_dl = differentiable(DeepLift(m))
    (g0,) = torch.autograd.grad(relu_dl.attribute(xb, target=0).pow(2).sum(), xb)
    assert not torch.allclose(g, g0)


def _state(m):
    return {
        name: (
            sub.training,
            dict(sub._forward_hooks),
            dict(sub._forward_pre_hooks),
            dict(sub._backward_hooks),
            dict(getattr(sub, "_backward_pre_hooks", {})),
            sorted(sub.__dict__),
        )
        for name, sub in m.named_modules()
    }


def test_user_objects_untouched():
    m = _cnn()
    m[3].train()  # a conv's mode must be kept as it is
    before = _state(m)
    buffers = {k: v.clone() for k, v in m.state_dict().items()}
    dl = DeepLift(m)
    x = X.clone()
    out = differentiable(dl).attribute(x, baselines=0.2, target=1)
    assert _state(m) == before
    assert not x.requires_grad and x.grad is None
    assert all(p.grad is None for p in m.parameters())
    # The graph reaches the parameters.
    (g,) = torch.autograd.grad(out.pow(2).sum(), m[0].weight)
    assert g.abs().sum() > 0
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, buffers[k])
    assert dl.model is m and dl.multiplies_by_inputs


class _Sub(DeepLift):
    pass


def test_refusals():
    m = _cnn()
    with pytest.raises(TypeError, match="DeepLiftShap.*average"):
        differentiable(DeepLiftShap(m))
    with pytest.raises(TypeError, match="_Sub.*DeepLift itself"):
        differentiable(_Sub(m))
    with pytest.raises(TypeError, match="LayerDeepLift"):
        differentiable(LayerDeepLift(m, m[0]))
    with pytest.raises(TypeError, match="NoiseTunnel over DeepLift"):
        differentiable(NoiseTunnel(DeepLift(m)))
    gelu = nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"'1' \(GELU\).*plain gradient"):
        differentiable(DeepLift(gelu))
    pool = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(TypeError, match="returns indices"):
        differentiable(DeepLift(pool))
    train = _cnn().train()
    dl = differentiable(DeepLift(train))  # the mode is checked when it runs
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm2d\).*eval"):
        dl.attribute(X, target=0)
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    with pytest.raises(ValueError, match="more than once"):
        differentiable(DeepLift(twice)).attribute(torch.randn(2, 3), target=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"baselines": "zero"}, TypeError, "`baselines`"),
        ({"baselines": torch.zeros(2, 2, 6, 6, dtype=F64)}, ValueError, "`baselines`"),
        ({"baselines": (0.0, 0.0)}, ValueError, "`baselines`"),
        ({"target": 3}, ValueError, "`target`"),
        ({"return_convergence_delta": 1}, TypeError, "return_convergence_delta"),
        ({"custom_attribution_func": 3}, TypeError, "custom_attribution_func"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    dl = differentiable(DeepLift(_cnn()))
    with pytest.raises(error, match=match):
        dl.attribute(X, **{"target": 0, **kwargs})


def test_with_forward_func_keeps_settings():
    m = _mlp()
    dl = differentiable(DeepLift(m, multiply_by_inputs=False, eps=1e-4))
    other = dl.with_forward_func(softplus_surrogate(m))
    assert other.multiply_by_inputs is False and other.eps == 1e-4
    with pytest.raises(TypeError, match="keyword"):
        dl.with_forward_func(m, beta=2.0)
