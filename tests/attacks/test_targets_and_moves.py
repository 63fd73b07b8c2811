"""Targets are validated by name; no sample is left at x0 for lack of a gradient,
and every sample that never moved is reported."""

import warnings

import pytest
import torch
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import Saliency
from helpers.attacks import FAST
from helpers.attacks import every_attack
from torch import nn

from captum_robust.attacks import MassCenterAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TopKAttack
from captum_robust.metrics import center_of_mass

BAD_TARGETS = [
    (-1, ValueError, "target.*non-negative"),
    (torch.tensor([0, -1, 0, 0]), ValueError, "target.*non-negative"),
    ([0, 1, -2, 0], ValueError, "target.*non-negative"),
    (3, ValueError, r"target.*\[0, 2\].*3 outputs"),
    (torch.tensor([0, 1, 2, 7]), ValueError, r"target.*\[0, 2\]"),
    ([0, 1, 2, 3], ValueError, r"target.*\[0, 2\]"),
    (torch.zeros(4), TypeError, "target.*integer"),
    (1.0, TypeError, "target"),
    ([0, 1.0, 0, 0], TypeError, "target.*float"),
    (True, TypeError, "target"),
    (torch.zeros(3, dtype=torch.long), ValueError, r"target.*shape \(3,\)"),
    ([0, 1], ValueError, "target.*4 ints"),
    ((0, 1), TypeError, "target"),
]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("method", [Saliency, IntegratedGradients])
def test_every_attack_refuses_bad_targets(tiny, tiny_x, index, method):
    attack, extra = every_attack(tiny, method(tiny))[index]
    kwargs = {"attribution_kwargs": {"n_steps": 2}} if method is not Saliency else {}
    for target, error, match in BAD_TARGETS:
        with pytest.raises(error, match=match):
            attack.perturb(tiny_x, target, **extra, **kwargs)


def test_valid_targets_are_equivalent(tiny, tiny_x):
    attack = TopKAttack(tiny, Saliency(tiny), k=5, **FAST)
    with torch.no_grad():
        y = tiny(tiny_x).argmax(dim=1)
    expected, result = attack.perturb(tiny_x, y, return_results=True)
    assert not result.skipped.any()
    for same in (y.tolist(), y.int(), y.view(4)):
        assert torch.equal(attack.perturb(tiny_x, same), expected)
    # A scalar target: the samples of other classes are skipped, not attacked.
    _, r = attack.perturb(tiny_x, 2, return_results=True)
    assert torch.equal(r.skipped, y != 2)


class SmoothNet(nn.Module):
    """SiLU/GELU CNN: its softplus surrogate would be the model itself."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 5),
        )

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def smooth():
    torch.manual_seed(0)
    return SmoothNet().eval()


@pytest.fixture
def smooth_x():
    return torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


class _SquaredMassCenter(MassCenterAttack):
    """The literal loss -||C(S(x)) - C0||^2 (the code before the fix)."""

    def _loss(self, maps, b, xg):
        centers = center_of_mass(maps.view(-1, 1, *b.shape), abs=False)
        return -(centers - b.state["center0"]).square().sum(dim=1)


def test_mass_center_leaves_no_sample_at_x0_on_a_smooth_model(smooth, smooth_x):
    budget = {"epsilon": 0.05, "step_size": 0.01, "n_steps": 4}
    # The literal squared loss has zero gradient at x0 (for all samples, or all
    # but those where rounding noise between the plain and the differentiable
    # attribution gives one; it varies with the thread count). Its first step
    # there is the random fallback step, after which the gradient exists: no
    # sample stays at x0 and none is reported without a gradient.
    old = _SquaredMassCenter(smooth, Saliency(smooth), surrogate_beta=None, **budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        moved, old_result = old.perturb(smooth_x, return_results=True)
    assert not old_result.unmoved.any() and not old_result.no_gradient.any()
    assert (moved != smooth_x).flatten(1).any(dim=1).all()

    attack = MassCenterAttack(smooth, Saliency(smooth), surrogate_beta=None, **budget)
    out, result = attack.perturb(smooth_x, return_results=True)
    assert (out != smooth_x).flatten(1).any(dim=1).all()
    assert not result.unmoved.any() and result.improved.all()
    # The reported shift is the one measured independently on the returned input.
    sal = Saliency(smooth)
    y = result.original_label
    shift = (
        center_of_mass(sal.attribute(out, target=y))
        - center_of_mass(sal.attribute(smooth_x, target=y))
    ).norm(dim=1)
    assert torch.allclose(shift, result.criterion_after, atol=1e-4)
    random = RandomAttack(smooth, sal, criterion="center_shift", **budget)
    _, random_result = random.perturb(smooth_x, return_results=True)
    assert result.criterion_after.mean() > 2 * random_result.criterion_after.mean()


def test_mass_center_steps_unchanged_where_the_center_has_moved(digits):
    # On a ReLU model the surrogate's center differs from the real one already at
    # x0, so the squared loss has a gradient; the linearised loss must take the
    # same sign steps (its gradient is the squared loss's over 2 ||d|| > 0).
    model, x, y = digits.model, digits.images[:8], digits.labels[:8]
    budget = {"epsilon": 0.06, "step_size": 0.01, "n_steps": 4}
    new = MassCenterAttack(model, Saliency(model), **budget).perturb(x, y)
    old = _SquaredMassCenter(model, Saliency(model), **budget).perturb(x, y)
    assert torch.equal(new, old)


def test_samples_without_an_attack_gradient_are_reported(tiny, tiny_x):
    # A ReLU model attacked without a surrogate: the saliency map's input
    # gradient is zero at every step, so every step is a random sign step.
    attack = TopKAttack(tiny, Saliency(tiny), k=5, surrogate_beta=None, **FAST)
    with pytest.warns(RuntimeWarning, match="4 of 4 attacked samples had no attack"):
        out, result = attack.perturb(tiny_x, return_results=True)
    assert result.no_gradient.all() and not result.unmoved.any()
    # Every step of every sample was a random one, and is counted.
    assert torch.equal(result.random_steps, result.steps)
    assert ((out - tiny_x).abs() <= FAST["epsilon"] + 1e-6).all()
    # The random steps are those of the generator: the same seed, the same input.
    again = TopKAttack(tiny, Saliency(tiny), k=5, surrogate_beta=None, **FAST)
    with pytest.warns(RuntimeWarning):
        assert torch.equal(again.perturb(tiny_x), out)


def test_a_flat_start_gets_a_random_step_then_the_gradient(digits):
    # Input x Gradient of a digit on a black background is 0 off the strokes;
    # with every stroke pixel inside the top-k set the normalised top-k mass is 1
    # at the input and its gradient is exactly 0 (|a| has derivative 0 at 0).
    model, x = digits.model, digits.images[:8]
    black = x.clone()
    black[black < 0.5] = 0.0
    k = int((black != 0).flatten(1).sum(1).max()) + 1
    attack = TopKAttack(model, InputXGradient(model), k=k, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out, result = attack.perturb(black, return_results=True)
    attacked = ~result.skipped
    assert attacked.any()
    assert not result.no_gradient[attacked].any()
    # A flat start costs random steps, and the gradient takes over.
    assert (result.random_steps[attacked] >= 1).any()
    assert (result.random_steps[attacked] < result.steps[attacked]).all()
    assert (result.random_steps[result.skipped] == 0).all()
    assert not result.unmoved[attacked].any()
    assert result.improved[attacked].any()


def test_unmoved_samples_are_reported(tiny, tiny_x):
    # With the surrogate every sample moves; a sample whose mask is empty does not,
    # and a skipped sample is reported as skipped, not unmoved.
    attack = TopKAttack(tiny, Saliency(tiny), k=5, **FAST)
    with torch.no_grad():
        y = tiny(tiny_x).argmax(dim=1)
    y[3] = (y[3] + 1) % 3
    mask = torch.ones(4, 1, 8, 8, dtype=torch.bool)
    mask[1] = False
    with pytest.warns(RuntimeWarning, match="1 of 3 attacked"):
        _, result = attack.perturb(tiny_x, y, mask=mask, return_results=True)
    assert result.unmoved.tolist() == [False, True, False, False]
    assert result.skipped.tolist() == [False, False, False, True]


def test_no_warning_for_a_zero_budget(tiny, tiny_x, recwarn):
    attack = TopKAttack(tiny, Saliency(tiny), k=5, **FAST)
    _, result = attack.perturb(tiny_x, epsilon=0.0, return_results=True)
    assert result.unmoved.all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_hard_activations_get_a_second_order_direction(tiny_x):
    # Hardswish and a Hardsigmoid gate (MobileNetV3's) have no double backward in
    # torch; the attack reroutes them for its direction.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Hardswish(),
        nn.Conv2d(4, 4, 1),
        nn.Hardsigmoid(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    ).eval()
    attack = TopKAttack(model, Saliency(model), k=5, surrogate_beta=None, **FAST)
    out, result = attack.perturb(tiny_x, return_results=True)
    assert not result.unmoved.any()
    assert (out - tiny_x).abs().max() <= 0.1 + 1e-6
