"""softplus_surrogate, softplus_activations and LeakySoftplus."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers.models import FunctionalNet
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from torch import nn

from captum_robust.attr import FunctionalReLUWarning
from captum_robust.attr import LeakySoftplus
from captum_robust.attr import softplus_activations
from captum_robust.attr import softplus_surrogate
from captum_robust.attr import surrogate_report


class MixedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Linear(4 * 36, 8), nn.LeakyReLU(0.1), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        return self.head(self.block(h.flatten(1)))


@pytest.fixture
def mixed():
    torch.manual_seed(0)
    return MixedNet().double().eval()


@pytest.fixture
def inp():
    return torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(0)).double()


def test_modules_replaced_and_parameters_shared(mixed):
    smooth = softplus_surrogate(mixed, beta=7.0, leaky_beta=2.0)
    assert isinstance(smooth.act, nn.Softplus) and smooth.act.beta == 7.0
    assert isinstance(smooth.block[1], LeakySoftplus)
    assert smooth.block[1].negative_slope == 0.1 and smooth.block[1].beta == 2.0
    assert isinstance(smooth.block[2], nn.Softplus)
    # The original keeps its modules.
    assert isinstance(mixed.act, nn.ReLU) and isinstance(mixed.block[1], nn.LeakyReLU)
    assert smooth is not mixed and smooth.block is not mixed.block
    own = dict(mixed.named_parameters())
    for name, p in smooth.named_parameters():
        assert p is own[name] and p.data_ptr() == own[name].data_ptr()
    own_buffers = dict(mixed.named_buffers())
    for name, b in smooth.named_buffers():
        assert b is own_buffers[name]
    assert sorted(own) == sorted(dict(smooth.named_parameters()))
    assert smooth.training is False


def test_surrogate_gradients_land_on_shared_parameters(mixed, inp):
    smooth = softplus_surrogate(mixed)
    smooth(inp).sum().backward()
    assert mixed.conv.weight.grad is not None
    # Later weight updates are seen by the surrogate.
    with torch.no_grad():
        mixed.head.bias.add_(1.0)
    torch.testing.assert_close(
        smooth(inp), softplus_surrogate(mixed)(inp), rtol=0, atol=0
    )


def test_outputs_close_to_relu_model_for_large_beta(mixed, inp):
    reference = mixed(inp)
    smooth = softplus_surrogate(mixed, beta=1e4)
    torch.testing.assert_close(smooth(inp), reference, atol=1e-3, rtol=1e-3)
    rough = softplus_surrogate(mixed, beta=1.0)
    assert (rough(inp) - reference).abs().max() > 1e-2
    torch.testing.assert_close(mixed(inp), reference, rtol=0, atol=0)


def test_shared_activation_instances_stay_shared():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    smooth = softplus_surrogate(model)
    assert smooth[1] is smooth[3] and isinstance(smooth[1], nn.Softplus)


def test_context_manager_swaps_and_restores(mixed, inp):
    originals = [mixed.act, mixed.block[1], mixed.block[2]]
    reference = mixed(inp)
    with softplus_activations(mixed, beta=3.0) as model:
        assert model is mixed
        assert isinstance(mixed.act, nn.Softplus) and mixed.act.beta == 3.0
        assert isinstance(mixed.block[1], LeakySoftplus)
        smooth_out = mixed(inp)
    assert [mixed.act, mixed.block[1], mixed.block[2]] == originals
    assert all(a is b for a, b in zip([mixed.act, mixed.block[1]], originals))
    torch.testing.assert_close(
        smooth_out, softplus_surrogate(mixed, beta=3.0)(inp), rtol=0, atol=0
    )
    torch.testing.assert_close(mixed(inp), reference, rtol=0, atol=0)
    assert "forward" not in vars(mixed)


def test_context_manager_restores_on_exception(mixed):
    originals = [mixed.act, mixed.block[1], mixed.block[2]]
    with pytest.raises(RuntimeError, match="boom"):
        with softplus_activations(mixed):
            assert isinstance(mixed.act, nn.Softplus)
            raise RuntimeError("boom")
    assert all(
        a is b for a, b in zip([mixed.act, mixed.block[1], mixed.block[2]], originals)
    )
    assert "forward" not in vars(mixed)


FUNCTIONAL_RELUS = [
    (F.relu, "torch.nn.functional.relu", None),
    (torch.relu, "torch.relu", None),
    (lambda t: t.relu(), "Tensor.relu", None),
    (lambda t: F.relu(t, inplace=True), "torch.nn.functional.relu", None),
    (lambda t: t.clone().relu_(), "Tensor.relu_", None),
    (lambda t: F.leaky_relu(t, 0.2), "torch.nn.functional.leaky_relu", 0.2),
]


@pytest.mark.parametrize("fn, name, slope", FUNCTIONAL_RELUS)
def test_functional_relu_is_smoothed_by_default(fn, name, slope):
    torch.manual_seed(0)
    model = FunctionalNet(fn).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    smooth = softplus_surrogate(model, beta=4.0, leaky_beta=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = smooth(x)
    h = model.lin(x)
    if slope is None:
        expected = torch.log1p(torch.exp(4.0 * h)) / 4.0
    else:
        expected = slope * h + (1 - slope) * torch.log1p(torch.exp(2.0 * h)) / 2.0
    torch.testing.assert_close(out, expected)
    report = surrogate_report(smooth)
    assert report.smoothed_calls == {name: 1} and report.is_smooth and report.checked
    torch.testing.assert_close(model(x), fn(h))  # the original is untouched
    with softplus_activations(model, beta=4.0, leaky_beta=2.0) as inside:
        torch.testing.assert_close(inside(x), expected)
        assert surrogate_report(inside).smoothed_calls == {name: 1}
    assert "forward" not in vars(model)


@pytest.mark.parametrize("fn, name, slope", FUNCTIONAL_RELUS)
def test_functional_relu_is_reported_when_not_smoothed(fn, name, slope):
    torch.manual_seed(0)
    model = FunctionalNet(fn)
    x = torch.randn(2, 4)
    smooth = softplus_surrogate(model, smooth_functional=False)
    with pytest.warns(FunctionalReLUWarning, match=name.replace(".", r"\.")):
        smooth(x)
    assert surrogate_report(smooth).piecewise_calls == {name: 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth(x)  # reported once, on the first forward pass
    with pytest.raises(ValueError, match="`model`.*" + name.replace(".", r"\.")):
        softplus_surrogate(model, strict=True, smooth_functional=False)(x)
    with pytest.warns(FunctionalReLUWarning):
        with softplus_activations(model, smooth_functional=False):
            model(x)


def test_check_survives_failing_forward_and_deepcopy():
    model = FunctionalNet(lambda t: t.clamp(min=0.0))
    smooth = softplus_surrogate(model)
    with pytest.raises(RuntimeError):
        smooth(torch.randn(2, 5))  # wrong width
    with pytest.warns(FunctionalReLUWarning, match=r"Tensor\.clamp x1"):
        smooth(torch.randn(2, 4))
    # A copy made before the first forward checks itself, not the original.
    fresh = softplus_surrogate(model)
    twin = copy.deepcopy(fresh)
    with pytest.warns(FunctionalReLUWarning):
        twin(torch.randn(2, 4))
    with pytest.warns(FunctionalReLUWarning):
        fresh(torch.randn(2, 4))


def test_no_report_for_module_relus(mixed, inp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softplus_surrogate(mixed, strict=True)(inp)
        with softplus_activations(mixed, strict=True):
            mixed(inp)
    quiet = softplus_surrogate(FunctionalNet(F.relu), check_functional=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(torch.randn(2, 4))


def test_root_hooks_run_once_on_checked_forward(mixed, inp):
    calls = []
    smooth = softplus_surrogate(mixed)
    smooth.register_forward_hook(lambda *_: calls.append(1))
    smooth(inp)
    assert calls == [1]


def test_leaky_softplus_known_values():
    act = LeakySoftplus(0.1, beta=1.0)
    x = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64)
    expected = [0.1 * v + 0.9 * math.log1p(math.exp(v)) for v in (-3.0, 0.0, 2.0)]
    torch.testing.assert_close(act(x), torch.tensor(expected, dtype=torch.float64))
    assert "negative_slope=0.1" in repr(act)


@settings(max_examples=60, deadline=None)
@given(
    slope=st.floats(0.0, 0.5),
    beta=st.floats(0.1, 50.0),
    value=st.floats(-5.0, 5.0),
)
def test_leaky_softplus_formula(slope, beta, value):
    out = LeakySoftplus(slope, beta=beta)(torch.tensor([value], dtype=torch.float64))
    z = beta * value
    # Stable log(1 + e^z) / beta, by hand.
    soft = (max(z, 0.0) + math.log1p(math.exp(-abs(z)))) / beta
    expected = slope * value + (1.0 - slope) * soft
    assert math.isclose(out.item(), expected, rel_tol=1e-9, abs_tol=1e-9)


def test_bad_input():
    with pytest.raises(TypeError, match="`model`"):
        softplus_surrogate("net")
    with pytest.raises(TypeError, match="`model`"):
        with softplus_activations(lambda x: x):
            pass
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match="`beta`"):
            softplus_surrogate(nn.Linear(2, 2), beta=beta)
        with pytest.raises(ValueError, match="`beta`"):
            LeakySoftplus(0.1, beta=beta)
    with pytest.raises(TypeError, match="`beta`"):
        softplus_surrogate(nn.Linear(2, 2), beta="10")
    with pytest.raises(ValueError, match="`leaky_beta`"):
        softplus_surrogate(nn.Linear(2, 2), leaky_beta=0)
    with pytest.raises(TypeError, match="`strict`"):
        softplus_surrogate(nn.Linear(2, 2), strict=1)
    with pytest.raises(ValueError, match="`model` is itself a ReLU"):
        softplus_surrogate(nn.ReLU())
