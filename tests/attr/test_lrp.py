"""Differentiable LRP: Captum's values per rule, surrogate gradcheck, refusals."""

import pytest
import torch
from captum.attr import LRP
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import (
    Alpha1_Beta0_Rule,
    EpsilonRule,
    GammaRule,
    IdentityRule,
)
from torch import nn

from captum_robust.attr import differentiable, softplus_surrogate

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks")


class _Net(nn.Module):
    """conv-bn-relu-pool, a residual conv (Addition_Module), avg-pool, dropout,
    linear: every layer type Captum's LRP has a default rule for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.add = Addition_Module()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.pool(self.relu1(self.bn(self.conv1(x))))
        h = self.add(self.relu2(self.conv2(h)), h)
        return self.fc(self.drop(self.gap(h)).flatten(1))


def _net():
    torch.manual_seed(0)
    m = _Net()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.double().eval()


def _set_rules(m, kind):
    # Captum's LRP deletes every `rule` attribute after a call: set them each time.
    if kind == "epsilon":
        m.conv1.rule = EpsilonRule(epsilon=0.1)
        m.fc.rule = EpsilonRule(epsilon=0.01)
    elif kind == "gamma":
        m.conv1.rule = GammaRule(gamma=0.25)
        m.conv2.rule = GammaRule(gamma=0.5, set_bias_to_zero=True)
        m.fc.rule = EpsilonRule(epsilon=0.2)
    elif kind == "alpha_beta":
        m.conv1.rule = Alpha1_Beta0_Rule()
        m.conv2.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
        m.bn.rule = IdentityRule()
    return m


def _x(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, 6, 6, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("kind", ["default", "epsilon", "gamma", "alpha_beta"])
def test_equal_captum_per_rule(kind):
    m = _set_rules(_net(), kind)
    x = _x()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rules = {n: getattr(mod, "rule", None) for n, mod in m.named_modules()}
    ours, delta = differentiable(LRP(m)).attribute(
        x, target=[0, 1, 2, 0], return_convergence_delta=True
    )
    # The model is left exactly as found: rules, weights, no patched forwards.
    assert {n: getattr(mod, "rule", None) for n, mod in m.named_modules()} == rules
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())
    assert not any("forward" in mod.__dict__ for mod in m.modules())
    assert all(p.grad is None for p in m.parameters()) and not x.requires_grad
    _set_rules(m, kind)
    theirs, their_delta = LRP(m).attribute(
        x, target=[0, 1, 2, 0], return_convergence_delta=True
    )
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(delta.detach(), their_delta, rtol=1e-9, atol=1e-12)


def test_surrogate_twice_differentiable_gradcheck():
    m = _set_rules(_net(), "gamma")
    smooth = differentiable(LRP(m)).with_forward_func(softplus_surrogate(m, beta=3.0))
    x = _x(2).requires_grad_()
    (g,) = torch.autograd.grad(smooth.attribute(x, target=1).pow(2).sum(), x)
    assert g.abs().sum() > 0
    f = lambda z: smooth.attribute(z, target=1)  # noqa: E731
    z = x[:1].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (z,), fast_mode=True)


def test_parameter_gradient_matches_finite_difference():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2.0), nn.Linear(4, 2))
    m = m.double()
    m[0].rule = GammaRule(gamma=0.3)
    x = torch.randn(3, 3, dtype=torch.float64)
    lrp = differentiable(LRP(m))
    loss = lambda: lrp.attribute(x, target=1).pow(2).sum()  # noqa: E731
    (gw,) = torch.autograd.grad(loss(), m[0].weight)
    h = 1e-6
    with torch.no_grad():
        m[0].weight[1, 2] += h
        up = loss()
        m[0].weight[1, 2] -= 2 * h
        down = loss()
        m[0].weight[1, 2] += h
    assert torch.isclose(gw[1, 2], (up - down) / (2 * h), rtol=1e-5, atol=1e-8)


def test_refusals_name_the_layer():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(48, 2))
    with pytest.raises(TypeError, match=r"layer '1' \(Flatten\)"):
        differentiable(LRP(m))

    class Custom(EpsilonRule):
        pass

    m = _net()
    m.conv2.rule = Custom()
    with pytest.raises(TypeError, match=r"'conv2'.*Custom"):
        differentiable(LRP(m))
    m = _net()
    lrp = differentiable(LRP(m))
    m.bn.train()
    with pytest.raises(ValueError, match="'bn' is in training mode"):
        lrp.attribute(_x(2), target=0)
    assert m.bn.num_batches_tracked == 0
    m.eval()

    class Sub(LRP):
        pass

    with pytest.raises(TypeError, match="`attribution`: Sub"):
        differentiable(Sub(m))
    with pytest.raises(ValueError, match="`target`"):
        lrp.attribute(_x(2), target=5)
    with pytest.raises(TypeError, match="`return_convergence_delta`"):
        lrp.attribute(_x(2), target=0, return_convergence_delta=1)


def test_layer_used_twice_refused():
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin).double()
    with pytest.raises(ValueError, match="runs more than once"):
        differentiable(LRP(m)).attribute(torch.randn(2, 3, dtype=torch.float64), 0)


class _RewrittenActivation(nn.Module):
    """An (eval-mode) Dropout output shifted in place, then a functional ReLU whose
    mask reads the shifted value: the rule pass must not reuse the value recorded
    before the shift."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.Dropout()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.act(self.fc1(x))
        h -= 0.7
        return self.fc2(torch.relu(h))


def test_activation_rewritten_in_place_is_recomputed():
    torch.manual_seed(0)
    m = _RewrittenActivation().double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    ours = differentiable(LRP(m)).attribute(x, target=1)
    torch.testing.assert_close(ours.detach(), LRP(m).attribute(x, target=1))


class _ResidualInPlace(nn.Module):
    """resnet's block: an in-place ReLU on a batch norm's output and `out +=` on
    another's, so both plain outputs are rewritten after their layers ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2)
        self.relu2 = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.fc(self.gap(self.relu2(out)).flatten(1))


@pytest.mark.parametrize("gamma", [False, True])
def test_outputs_rewritten_in_place_equal_captum(gamma):
    torch.manual_seed(0)
    m = _ResidualInPlace().double()
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    m.eval()

    def set_rules():
        if gamma:
            m.bn2.rule = GammaRule(gamma=0.3)
            m.conv1.rule = GammaRule(gamma=0.2)

    x = _x(3)
    set_rules()
    ours = differentiable(LRP(m)).attribute(x, target=[0, 1, 2])
    set_rules()
    theirs = LRP(m).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-9, atol=1e-12)
    set_rules()
    smooth = differentiable(LRP(m)).with_forward_func(softplus_surrogate(m, beta=3.0))
    z = x[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: smooth.attribute(t, target=1), (z,), fast_mode=True
    )
