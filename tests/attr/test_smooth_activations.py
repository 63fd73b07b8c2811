"""Smooth replacements of ReLU6 / Hardtanh / Hardsigmoid / Hardswish, and the report."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers.models import FunctionalNet
from torch import nn
from torchvision.ops import SqueezeExcitation

from captum_robust.attr import FunctionalReLUWarning
from captum_robust.attr import PiecewiseLinearWarning
from captum_robust.attr import SmoothHardsigmoid
from captum_robust.attr import SmoothHardswish
from captum_robust.attr import SmoothHardtanh
from captum_robust.attr import SurrogateReport
from captum_robust.attr import softplus_activations
from captum_robust.attr import softplus_surrogate
from captum_robust.attr import surrogate_report

POINTS = (-7.0, -3.0, -1.2, 0.0, 0.4, 2.9, 6.0, 8.5)


def sp(v: float, beta: float) -> float:
    z = beta * v
    return (max(z, 0.0) + math.log1p(math.exp(-abs(z)))) / beta


@pytest.mark.parametrize("beta", [1.0, 7.5])
def test_formulas_by_hand(beta):
    x = torch.tensor(POINTS, dtype=torch.float64)
    tanh = SmoothHardtanh(-2.0, 3.0, beta=beta)(x)
    sig = SmoothHardsigmoid(beta=beta)(x)
    swish = SmoothHardswish(beta=beta)(x)
    for i, v in enumerate(POINTS):
        assert math.isclose(tanh[i].item(), -2 + sp(v + 2, beta) - sp(v - 3, beta))
        hs = (sp(v + 3, beta) - sp(v - 3, beta)) / 6
        assert math.isclose(sig[i].item(), hs, abs_tol=1e-12)
        assert math.isclose(swish[i].item(), v * hs, abs_tol=1e-12)


def test_large_beta_recovers_the_originals():
    x = torch.linspace(-8, 8, 161, dtype=torch.float64)
    pairs = [
        (SmoothHardtanh(0.0, 6.0, beta=1e4), nn.ReLU6()),
        (SmoothHardtanh(-2.0, 3.0, beta=1e4), nn.Hardtanh(-2.0, 3.0)),
        (SmoothHardsigmoid(beta=1e4), nn.Hardsigmoid()),
        (SmoothHardswish(beta=1e4), nn.Hardswish()),
    ]
    for smooth, hard in pairs:
        torch.testing.assert_close(smooth(x), hard(x), atol=1e-4, rtol=0)


def test_double_backward_exists_where_the_original_has_none():
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(nn.Hardsigmoid()(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g.sum(), x)
    for act in (
        SmoothHardtanh(0.0, 6.0, 3.0),
        SmoothHardsigmoid(3.0),
        SmoothHardswish(3.0),
    ):
        assert torch.autograd.gradgradcheck(act, (x,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="`max_val`"):
        SmoothHardtanh(1.0, 1.0)
    with pytest.raises(ValueError, match="`beta`"):
        SmoothHardsigmoid(beta=0.0)
    with pytest.raises(TypeError, match="`smooth_functional`"):
        softplus_surrogate(nn.Linear(2, 2), smooth_functional=1)
    with pytest.raises(TypeError, match="`check_functional`"):
        softplus_surrogate(nn.Linear(2, 2), check_functional="yes")
    with pytest.raises(TypeError, match="`model`"):
        surrogate_report("net")
    with pytest.raises(ValueError, match="`model` is not a softplus surrogate"):
        surrogate_report(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`model` is itself a Hardswish"):
        softplus_surrogate(nn.Hardswish())


class MobileLike(nn.Module):
    """MobileNetV3 ingredients: Hardswish, a Hardsigmoid-gated squeeze-excitation
    block, ReLU6 and Hardtanh, plus a GELU kept as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.Hardswish()
        self.se = SqueezeExcitation(4, 2, scale_activation=nn.Hardsigmoid)
        self.relu6 = nn.ReLU6()
        self.tanh = nn.Hardtanh(-0.5, 2.0)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.tanh(self.relu6(self.se(self.act(self.conv(x)))))
        return self.fc(self.gelu(h).mean(dim=(2, 3)))


def test_modules_replaced_and_reported():
    torch.manual_seed(0)
    model = MobileLike().double().eval()
    smooth = softplus_surrogate(model, beta=5.0)
    assert isinstance(smooth.act, SmoothHardswish) and smooth.act.beta == 5.0
    assert isinstance(smooth.se.scale_activation, SmoothHardsigmoid)
    assert isinstance(smooth.se.activation, nn.Softplus)  # the SE block's ReLU
    assert isinstance(smooth.relu6, SmoothHardtanh)
    assert (smooth.relu6.min_val, smooth.relu6.max_val) == (0.0, 6.0)
    assert (smooth.tanh.min_val, smooth.tanh.max_val) == (-0.5, 2.0)
    assert isinstance(model.act, nn.Hardswish)
    report = surrogate_report(smooth)
    assert report == SurrogateReport(
        replaced={
            "Hardswish": 1,
            "ReLU": 1,
            "Hardsigmoid": 1,
            "ReLU6": 1,
            "Hardtanh": 1,
        },
        kept_smooth={"GELU": 1},
    )
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fully smooth: no warning
        out = smooth(x)
    assert surrogate_report(smooth).checked and surrogate_report(smooth).is_smooth
    # The second derivative exists and is not zero, and close to the model's
    # values for a sharp surrogate.
    (g,) = torch.autograd.grad(out[:, 0].sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.square().sum(), x)
    assert h.abs().sum() > 0
    sharp = softplus_surrogate(model, beta=1e4)
    torch.testing.assert_close(sharp(x), model(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "fn, module, name",
    [
        (F.relu6, nn.ReLU6(), "torch.nn.functional.relu6"),
        (lambda t: F.hardtanh(t, -1.0, 2.0), nn.Hardtanh(-1.0, 2.0), None),
        (F.hardsigmoid, nn.Hardsigmoid(), "torch.nn.functional.hardsigmoid"),
        (F.hardswish, nn.Hardswish(), "torch.nn.functional.hardswish"),
        (lambda t: F.hardswish(t, inplace=True), nn.Hardswish(), None),
        (lambda t: F.hardtanh_(t.clone(), 0.0, 6.0), nn.ReLU6(), None),
    ],
)
def test_functional_hard_calls_match_the_module_replacement(fn, module, name):
    torch.manual_seed(0)
    model = FunctionalNet(fn, scale=4.0).double()
    reference = softplus_surrogate(
        nn.Sequential(model.lin, nn.Identity(), module).double(), beta=3.0
    )
    x = torch.randn(5, 4, dtype=torch.float64)
    smooth = softplus_surrogate(model, beta=3.0)
    expected = reference[2](model.lin(x) * 4.0)
    torch.testing.assert_close(smooth(x), expected)
    calls = surrogate_report(smooth).smoothed_calls
    assert sum(calls.values()) == 1
    if name is not None:
        assert calls == {name: 1}


def test_in_place_call_whose_result_is_ignored_is_smoothed_in_place():
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            h = self.lin(x)
            h.relu_()  # the return value is dropped: h itself must change
            return h * 2.0

    torch.manual_seed(0)
    model = InPlace().double()
    smooth = softplus_surrogate(model, beta=2.0)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(smooth(x), 2.0 * F.softplus(model.lin(x), beta=2.0))
    assert torch.autograd.gradcheck(smooth, (x,))
    assert torch.autograd.gradgradcheck(smooth, (x,))


class Piecewise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.prelu = nn.PReLU()
        self.pool = nn.MaxPool1d(2)

    def forward(self, x):
        h = self.prelu(self.lin(x))
        h = torch.maximum(h, torch.zeros_like(h)).clamp(max=5.0)
        h = self.pool(h.unsqueeze(1)).squeeze(1)
        return F.max_pool1d(h.unsqueeze(1), 2).squeeze(1)


def test_piecewise_parts_reported_and_warned_once():
    torch.manual_seed(0)
    smooth = softplus_surrogate(Piecewise())
    report = surrogate_report(smooth)
    assert report.piecewise_modules == {"PReLU": 1} and not report.checked
    assert report.max_pooling == {"MaxPool1d": 1}
    x = torch.randn(3, 4)
    with pytest.warns(FunctionalReLUWarning) as caught:
        smooth(x)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "PReLU x1" in message and "torch.maximum x1" in message
    assert "Tensor.clamp x1" in message
    report = surrogate_report(smooth)
    # F.prelu inside nn.PReLU and max_pool1d inside nn.MaxPool1d are not
    # counted a second time.
    assert report.piecewise_calls == {"torch.maximum": 1, "Tensor.clamp": 1}
    assert report.max_pooling == {"MaxPool1d": 1, "torch.nn.functional.max_pool1d": 1}
    assert report.checked and not report.is_smooth
    assert "piecewise-linear calls kept" in report.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth(x)
    with pytest.raises(ValueError, match="PReLU"):
        softplus_surrogate(Piecewise(), strict=True)  # modules: at construction


def test_modules_only_warning_and_max_pooling_is_quiet():
    net = nn.Sequential(nn.Linear(3, 3), nn.Hardshrink(), nn.Linear(3, 2))
    smooth = softplus_surrogate(net)
    with pytest.warns(PiecewiseLinearWarning) as caught:
        smooth(torch.randn(2, 3))
    assert [w.category for w in caught] == [PiecewiseLinearWarning]
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softplus_surrogate(pooled)(torch.randn(1, 1, 6, 6))
    quiet = softplus_surrogate(net, check_functional=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(torch.randn(2, 3))
    assert not surrogate_report(quiet).checked


def test_context_manager_keeps_an_instance_forward():
    torch.manual_seed(0)
    model = FunctionalNet(F.relu, scale=4.0)
    own = model.forward
    model.forward = lambda x: own(x) + 1.0  # an instance-level forward
    marker = model.__dict__["forward"]
    x = torch.randn(2, 4)
    with softplus_activations(model, beta=2.0) as smooth:
        torch.testing.assert_close(
            smooth(x), F.softplus(model.lin(x) * 4.0, beta=2.0) + 1.0
        )
    assert model.__dict__["forward"] is marker
    torch.testing.assert_close(model(x), F.relu(model.lin(x) * 4.0) + 1.0)
    assert "_captum_robust_surrogate" not in vars(model)


def test_context_manager_strict_restores_on_refusal():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.PReLU())
    with pytest.raises(ValueError, match="PReLU"):
        with softplus_activations(model, strict=True):
            pass
    assert isinstance(model[1], nn.ReLU) and "forward" not in vars(model)
