"""Differentiable LRP: Captum's values per rule, surrogate gradcheck, refusals,
shape-only layers, the small-epsilon warning."""

import copy
import warnings
from collections import OrderedDict

import pytest
import torch
from captum.attr import LRP
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule
from captum.attr._utils.lrp_rules import EpsilonRule
from captum.attr._utils.lrp_rules import GammaRule
from captum.attr._utils.lrp_rules import IdentityRule
from helpers.models import PooledCNN
from torch import nn

from captum_robust.attacks import ManipulationAttack
from captum_robust.attr import LRPEpsilonWarning
from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate

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
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(48, 2))
    with pytest.raises(TypeError, match=r"layer '1' \(Sigmoid\)"):
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


# --------------------------------------------------- shape-only pass-through layers


def _shapes_net():
    """Flatten, Unflatten, Identity and two dropouts (eval mode) between layers
    with rules: Captum's LRP fails on all of these modules but nn.Dropout."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(2, 3, 3, padding=1),
            relu1=nn.ReLU(),
            drop2d=nn.Dropout2d(0.3),
            pool=nn.MaxPool2d(2),
            flat=nn.Flatten(),
            fc1=nn.Linear(27, 18),
            ident=nn.Identity(),
            relu2=nn.ReLU(),
            drop=nn.Dropout(0.5),
            unflat=nn.Unflatten(1, (2, 3, 3)),
            conv2=nn.Conv2d(2, 2, 3, padding=1),
            flat2=nn.Flatten(),
            fc2=nn.Linear(18, 3),
        )
    ).double()


class _FunctionalShapes(nn.Module):
    """The layers of ``_shapes_net`` with the shape-only modules written as
    functions (and the eval-mode dropouts left out), which Captum's LRP explains."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        for name in ("conv", "relu1", "pool", "fc1", "relu2", "conv2", "fc2"):
            setattr(self, name, getattr(seq, name))

    def forward(self, x):
        h = self.pool(self.relu1(self.conv(x)))
        h = self.relu2(self.fc1(torch.flatten(h, 1)))
        h = self.conv2(h.reshape(-1, 2, 3, 3))
        return self.fc2(torch.flatten(h, 1))


def _set_shape_rules(m, kind):
    if kind == "gamma":
        m.conv.rule = GammaRule(gamma=0.25)
        m.fc1.rule = GammaRule(gamma=0.5, set_bias_to_zero=True)
        m.conv2.rule = Alpha1_Beta0_Rule()
        m.fc2.rule = EpsilonRule(epsilon=0.1)
    return m


@pytest.mark.parametrize("kind", ["default", "gamma"])
def test_shape_only_layers_pass_relevance_like_functional_reshapes(kind):
    seq = _shapes_net().eval()
    reference = _FunctionalShapes(copy.deepcopy(seq))
    x = _x(4)
    _set_shape_rules(seq, kind)
    ours, delta = differentiable(LRP(seq)).attribute(
        x, target=[0, 1, 2, 0], return_convergence_delta=True
    )
    _set_shape_rules(reference, kind)
    theirs, their_delta = LRP(reference).attribute(
        x, target=[0, 1, 2, 0], return_convergence_delta=True
    )
    assert theirs.abs().sum() > 0
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(delta.detach(), their_delta, rtol=1e-9, atol=1e-12)


def test_shape_only_layers_surrogate_gradcheck():
    seq = _set_shape_rules(_shapes_net().eval(), "gamma")
    smooth = differentiable(LRP(seq)).with_forward_func(
        softplus_surrogate(seq, beta=3.0)
    )
    z = _x(1).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LRPEpsilonWarning)
        assert torch.autograd.gradcheck(
            lambda t: smooth.attribute(t, target=1), (z,), fast_mode=True
        )


def test_dropout_in_training_mode_refused():
    seq = _shapes_net().eval()
    lrp = differentiable(LRP(seq))
    seq.drop.train()
    with pytest.raises(ValueError, match=r"dropout 'drop' \(Dropout\) is in training"):
        lrp.attribute(_x(2), target=0)
    seq.drop.p = 0.0  # no random mask: nothing to refuse
    lrp.attribute(_x(2), target=0)


# ------------------------------------------------ small epsilon under differentiation


def _eps_net():
    """On the surrogate both convolutions feed a softplus; the pool feeds a
    convolution and the linear layer is the output, where the stabiliser cancels."""
    torch.manual_seed(0)
    return PooledCNN((4, 4), side=8, classes=3).eval()


def _differentiate(lrp, x):
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(lrp.attribute(xg, target=1).pow(2).sum(), xg)
    return g


def _epsilon_warnings(caught):
    return [w for w in caught if issubclass(w.category, LRPEpsilonWarning)]


def test_small_epsilon_warns_once_when_the_map_is_differentiated():
    m = _eps_net()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    lrp = differentiable(LRP(m)).with_forward_func(softplus_surrogate(m, beta=10.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Plain use, as Captum's (no second backward): no warning, and the one
        # warning is not used up.
        lrp.attribute(x.clone().requires_grad_(), target=1)
        assert _epsilon_warnings(caught) == []
        _differentiate(lrp, x)
        _differentiate(lrp, x)
        # A copy for another beta (the attacks rebuild it at every step) shares it.
        _differentiate(lrp.with_forward_func(softplus_surrogate(m, beta=20.0)), x)
    (w,) = _epsilon_warnings(caught)
    message = str(w.message)
    assert "'conv1'" in message and "'conv2'" in message
    assert "'pool'" not in message and "'fc'" not in message
    assert "EpsilonRule(epsilon=1.0)" in message
    assert issubclass(LRPEpsilonWarning, UserWarning)


def test_no_epsilon_warning_at_or_above_the_threshold():
    m = _eps_net()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The ReLU network itself: ReLU passes relu(z) / z <= 1, whatever epsilon.
        lrp = differentiable(LRP(m))
        loss = lrp.attribute(x, target=1).pow(2).sum()
        torch.autograd.grad(loss, m.conv1.weight)
        # Tutorial 5's rules: epsilon 1 on convolutions and linear layers, the
        # pool keeps Captum's 1e-9 (it feeds a convolution directly).
        m.conv1.rule = EpsilonRule(epsilon=LRPEpsilonWarning.threshold)
        m.conv2.rule = EpsilonRule(epsilon=1.0)
        m.fc.rule = EpsilonRule(epsilon=1.0)
        smooth = softplus_surrogate(m, beta=10.0)
        _differentiate(differentiable(LRP(m)).with_forward_func(smooth), x)
    assert _epsilon_warnings(caught) == []


def test_manipulation_attack_on_default_lrp_warns_once():
    m = _eps_net()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    frame = torch.ones(8, 8)
    frame[2:-2, 2:-2] = 0
    # Beta growth: a new surrogate, and attribution, at every step.
    attack = ManipulationAttack.dombrowski(m, LRP(m), n_steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attack.perturb(x, target_map=frame)
    (w,) = _epsilon_warnings(caught)
    assert "'conv1'" in str(w.message)


def test_max_pool_before_the_activation_is_never_named():
    # The pool's output goes into a softplus on the surrogate, but its rule's
    # ratio a / (z + eps sign(z)) is at most 1 in size: z is the selected a. A
    # batch norm in the same place is named: its output is centred.
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for middle, side, named in (
        (nn.MaxPool2d(2), 4, None),
        (nn.BatchNorm2d(4), 8, "'1' (BatchNorm2d"),
    ):
        torch.manual_seed(0)
        conv, act, head = (
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Linear(4 * side**2, 3),
        )
        m = nn.Sequential(conv, middle, act, nn.Flatten(), head).eval()
        conv.rule = head.rule = EpsilonRule(epsilon=1.0)
        smooth = softplus_surrogate(m, beta=10.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _differentiate(differentiable(LRP(m)).with_forward_func(smooth), x)
        found = [str(w.message) for w in _epsilon_warnings(caught)]
        if named is None:
            assert found == []
        else:
            assert len(found) == 1 and named in found[0]
