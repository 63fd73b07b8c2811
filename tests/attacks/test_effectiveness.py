"""The attacks do what they claim on a trained CNN, better than random steps."""

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr import Saliency

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import MassCenterAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TargetedAttack
from captum_robust.attacks import TopKAttack

EPS, ALPHA, STEPS, K = 0.06, 0.01, 12, 25
IG_KWARGS = {"n_steps": 8, "method": "riemann_right"}
METHODS = {
    "Saliency": (Saliency, {}),
    "IntegratedGradients": (IntegratedGradients, IG_KWARGS),
}
BUDGET = {"epsilon": EPS, "step_size": ALPHA, "n_steps": STEPS}


def _check_returned(x_adv, x, result, model):
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        kept = model(x_adv).argmax(dim=1) == result.original_label
    # The label constraint: every returned sample keeps its predicted class.
    assert kept.all()
    assert torch.equal(kept, result.label_kept)


@pytest.mark.parametrize("method", list(METHODS))
def test_topk_beats_random(digits, method):
    cls, kwargs = METHODS[method]
    model, x, y = digits.model, digits.images[:16], digits.labels[:16]
    attribution = cls(model)
    topk = TopKAttack(model, attribution, k=K, attribution_kwargs=kwargs, **BUDGET)
    rand = RandomAttack(
        model, attribution, criterion_k=K, attribution_kwargs=kwargs, **BUDGET
    )
    x_adv, result = topk.perturb(x, y, return_results=True)
    _, random_result = rand.perturb(x, y, return_results=True)

    _check_returned(x_adv, x, result, model)
    assert not result.skipped.any()
    assert (result.criterion_before == 1).all()
    attacked = result.criterion_after.mean()
    baseline = random_result.criterion_after.mean()
    assert attacked < baseline - 0.15, (attacked, baseline)
    assert result.improved.float().mean() > 0.9


def test_mass_center_beats_random(digits):
    model, x, y = digits.model, digits.images[:16], digits.labels[:16]
    attack = MassCenterAttack(model, Saliency(model), **BUDGET)
    rand = RandomAttack(model, Saliency(model), criterion="center_shift", **BUDGET)
    x_adv, result = attack.perturb(x, y, return_results=True)
    _, random_result = rand.perturb(x, y, return_results=True)
    _check_returned(x_adv, x, result, model)
    assert result.higher_is_better
    assert (result.criterion_before == 0).all()
    assert result.criterion_after.mean() > 2 * random_result.criterion_after.mean()


def test_targeted_raises_mass_in_region(digits):
    model, x, y = digits.model, digits.images[:16], digits.labels[:16]
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[:, :5] = True
    attack = TargetedAttack(model, Saliency(model), **BUDGET)
    x_adv, result = attack.perturb(x, y, target_region=region, return_results=True)
    _check_returned(x_adv, x, result, model)
    rand = RandomAttack(model, Saliency(model), **BUDGET)
    x_rand = rand.perturb(x, y)

    def mass(inputs):
        s = Saliency(model).attribute(inputs, target=y).sum(1)
        return (s * region).sum((1, 2)) / s.sum((1, 2))

    before, after = mass(x), mass(x_adv)
    assert torch.allclose(after, result.criterion_after, atol=1e-5)
    assert torch.allclose(before, result.criterion_before, atol=1e-5)
    assert after.mean() > before.mean() + 0.05
    assert after.mean() > mass(x_rand).mean() + 0.05


def test_manipulation_moves_map_towards_target(digits):
    model, x, y = digits.model, digits.images[:8], digits.labels[:8]
    frame = torch.ones(16, 16)
    frame[3:-3, 3:-3] = 0
    attack = ManipulationAttack(model, Saliency(model), epsilon=EPS, n_steps=20)
    x_adv, result = attack.perturb(x, y, target_map=frame, return_results=True)
    _check_returned(x_adv, x, result, model)

    def distance(inputs):
        s = Saliency(model).attribute(inputs, target=y).sum(1).flatten(1)
        s = s / s.sum(1, keepdim=True)
        t = frame.flatten() / frame.sum()
        return (s - t).square().mean(1)

    assert torch.allclose(distance(x_adv), result.criterion_after, rtol=1e-4)
    assert (distance(x_adv) <= distance(x)).all()
    assert distance(x_adv).mean() < 0.85 * distance(x).mean()


def test_all_attacks_keep_labels_with_a_mask(digits):
    model, x, y = digits.model, digits.images[16:24], digits.labels[16:24]
    mask = torch.zeros(8, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    region = torch.zeros(16, 16)
    region[:4] = 1
    sal = Saliency(model)
    budget = {"epsilon": 0.15, "step_size": 0.03, "n_steps": 6}
    calls = [
        (TopKAttack(model, sal, k=K, **budget), {}),
        (MassCenterAttack(model, sal, **budget), {}),
        (TargetedAttack(model, sal, **budget), {"target_region": region}),
        (ManipulationAttack(model, sal, **budget), {"target_map": region + 0.1}),
        (RandomAttack(model, sal, **budget), {}),
    ]
    for attack, extra in calls:
        x_adv, result = attack.perturb(x, y, mask=mask, return_results=True, **extra)
        with torch.no_grad():
            assert (model(x_adv).argmax(1) == y).all(), type(attack).__name__
        assert result.label_kept.all()
        changed = (x_adv != x)[:, 0]
        assert not (changed & ~mask).any(), type(attack).__name__
        assert (x_adv - x).abs().max() <= 0.15 + 1e-6
