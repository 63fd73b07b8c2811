"""The shared loop: per-sample independence, bookkeeping, restarts, Captum tools."""

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr import Saliency
from captum.robust import AttackComparator
from captum.robust import MinParamPerturbation
from captum.robust import Perturbation
from helpers.models import TwoInputNet

from captum_robust.attacks import AttackResult
from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import MassCenterAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TargetedAttack
from captum_robust.attacks import TopKAttack
from captum_robust.metrics import topk_intersection

BUDGET = {"epsilon": 0.06, "step_size": 0.01, "n_steps": 6}


@pytest.mark.parametrize(
    "method, kwargs",
    [
        (Saliency, {}),
        (IntegratedGradients, {"n_steps": 4}),
        # 50 points: on a CPU the attack attributes 2 samples per call.
        (IntegratedGradients, {}),
        (IntegratedGradients, {"n_steps": 4, "internal_batch_size": 12}),
    ],
    ids=["Saliency", "IntegratedGradients", "IG-chunked", "IG-internal-batch"],
)
def test_batch_of_16_equals_one_at_a_time(digits, method, kwargs):
    model, x, y = digits.model, digits.images[:16], digits.labels[:16]
    attack = TopKAttack(model, method(model), k=25, attribution_kwargs=kwargs, **BUDGET)
    batched, result = attack.perturb(x, y, return_results=True)
    singles = [
        attack.perturb(x[i : i + 1], y[i : i + 1], return_results=True)
        for i in range(16)
    ]
    assert torch.equal(batched, torch.cat([s[0] for s in singles]))
    for field in ("criterion_after", "best_step", "improved", "steps"):
        single = torch.cat([getattr(s[1], field) for s in singles])
        assert torch.equal(getattr(result, field), single), field


def test_result_fields(digits):
    model, x, y = digits.model, digits.images[:6], digits.labels[:6]
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    x_adv, result = attack.perturb(x, y, return_results=True)
    assert isinstance(result, AttackResult) and len(result) == 6
    assert result.criterion == "topk" and not result.higher_is_better
    assert result.criterion_after.dtype == torch.float32
    assert result.skipped.dtype == torch.bool and result.steps.dtype == torch.long
    assert torch.equal(result.original_label, y)
    assert (result.steps == 6).all()
    improved = result.improved
    assert ((result.best_step >= 1) & (result.best_step <= 6))[improved].all()
    assert (result.best_restart[improved] == 0).all()
    # The reported criterion is the one of the returned input, on the real model.
    sal = Saliency(model)
    measured = topk_intersection(
        sal.attribute(x, target=y), sal.attribute(x_adv, target=y), k=25
    )
    assert torch.allclose(measured, result.criterion_after)


def test_misclassified_samples_are_skipped_and_reported(digits):
    model, x, y = digits.model, digits.images[:6], digits.labels[:6].clone()
    wrong = torch.tensor([False, True, False, False, True, False])
    y[wrong] = (y[wrong] + 1) % 10
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    x_adv, result = attack.perturb(x, y, return_results=True)
    assert torch.equal(result.skipped, wrong)
    assert torch.equal(x_adv[wrong], x[wrong])
    assert not result.improved[wrong].any()
    assert (result.steps[wrong] == 0).all() and (result.steps[~wrong] == 6).all()
    assert (result.best_restart[wrong] == -1).all()
    assert torch.equal(result.criterion_after[wrong], result.criterion_before[wrong])
    assert result.improved[~wrong].all()
    # The attacked samples get the same result as without the skipped ones.
    alone = attack.perturb(x[~wrong], y[~wrong])
    assert torch.equal(alone, x_adv[~wrong])


def test_all_samples_skipped(digits):
    model, x, y = digits.model, digits.images[:2], digits.labels[:2]
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    x_adv, result = attack.perturb(x, (y + 1) % 10, return_results=True)
    assert torch.equal(x_adv, x) and x_adv is not x
    assert result.skipped.all() and not result.improved.any()


def test_no_improvement_is_reported_honestly(digits):
    model, x, y = digits.model, digits.images[:4], digits.labels[:4]
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    x_adv, result = attack.perturb(x, y, epsilon=0.0, return_results=True)
    assert torch.equal(x_adv, x)
    assert not result.improved.any()
    assert torch.equal(result.criterion_after, result.criterion_before)
    assert (result.criterion_after == 1).all()
    assert (result.best_step == 0).all() and (result.best_restart == -1).all()


def test_early_exit_when_every_sample_is_done(digits):
    model, x, y = digits.model, digits.images[:2], digits.labels[:2]
    attack = TopKAttack(
        model, Saliency(model), k=1, epsilon=0.1, step_size=0.02, n_steps=40
    )
    _, result = attack.perturb(x, y, return_results=True)
    assert (result.criterion_after == 0).all()
    assert (result.steps < 40).all() and (result.steps % 5 == 0).all()


def test_restarts_are_seeded(digits):
    model, x, y = digits.model, digits.images[:4], digits.labels[:4]
    attack = TopKAttack(model, Saliency(model), k=25, restarts=3, seed=3, **BUDGET)
    a, result = attack.perturb(x, y, return_results=True)
    b = attack.perturb(x, y)
    assert torch.equal(a, b)
    assert (result.steps == 18).all()
    assert set(result.best_restart.tolist()) <= {-1, 0, 1, 2}
    other = attack.perturb(x, y, generator=torch.Generator().manual_seed(4))
    c = TopKAttack(model, Saliency(model), k=25, restarts=3, seed=4, **BUDGET)
    assert torch.equal(other, c.perturb(x, y))
    # More restarts never give a worse best criterion: restart 0 is the same run.
    single = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    _, one = single.perturb(x, y, return_results=True)
    assert (result.criterion_after <= one.criterion_after).all()


def test_random_attack_seeded(digits):
    model, x, y = digits.model, digits.images[:4], digits.labels[:4]
    a = RandomAttack(model, Saliency(model), criterion_k=25, seed=1, **BUDGET)
    b = RandomAttack(model, Saliency(model), criterion_k=25, seed=2, **BUDGET)
    assert torch.equal(a.perturb(x, y), a.perturb(x, y))
    assert not torch.equal(a.perturb(x, y), b.perturb(x, y))


def test_criteria_are_selectable(digits):
    model, x, y = digits.model, digits.images[:4], digits.labels[:4]
    for criterion in ("kendall", "spearman", "center_shift"):
        attack = TopKAttack(model, Saliency(model), k=25, criterion=criterion, **BUDGET)
        _, result = attack.perturb(x, y, return_results=True)
        assert result.criterion == criterion
        if criterion == "center_shift":
            assert (result.criterion_after >= result.criterion_before).all()
        else:
            assert (result.criterion_after <= result.criterion_before).all()
            assert result.improved.any()


def test_target_none_attacks_predicted_class(digits):
    model, x, y = digits.model, digits.images[:4], digits.labels[:4]
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    assert torch.equal(attack.perturb(x), attack.perturb(x, y))
    assert torch.equal(attack.perturb(x, y.tolist()), attack.perturb(x, y))


def test_saliency_scoring_reuses_the_forward_pass(digits):
    # Saliency runs the real model on the iterate itself: its logits give the label
    # for free. One forward for the original, one per step, one for the results.
    model, x, y = digits.model, digits.images[:2], digits.labels[:2]
    attack = TopKAttack(model, Saliency(model), k=25, **BUDGET)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        attack.perturb(x, y, return_results=True)
    finally:
        handle.remove()
    assert len(calls) == 1 + 6 + 1


def test_tuple_inputs_and_additional_forward_args():
    torch.manual_seed(0)
    model = TwoInputNet(6, 3, hidden=5, classes=3).eval()
    g = torch.Generator().manual_seed(0)
    x, z = torch.rand(5, 6, generator=g), torch.rand(5, 3, generator=g)
    scale = torch.full((5, 1), 2.0)
    attack = TopKAttack(model, Saliency(model), k=3, **BUDGET)
    mask = (torch.ones(1, 6), torch.zeros(1, 3))
    out, result = attack.perturb((x, z), None, (scale,), mask=mask, return_results=True)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == x.shape and torch.equal(out[1], z)
    assert (out[0] - x).abs().max() <= 0.06 + 1e-6
    assert result.label_kept.all()
    # Per-sample forward arguments are selected with the samples they belong to.
    y = result.original_label.clone()
    y[0] = (y[0] + 1) % 3
    out2, r2 = attack.perturb((x, z), y, scale, mask=mask, return_results=True)
    assert r2.skipped.tolist() == [True, False, False, False, False]
    assert torch.equal(out2[0][1:], out[0][1:])


def test_are_captum_perturbations(digits, tiny):
    for cls in (
        TopKAttack,
        MassCenterAttack,
        TargetedAttack,
        ManipulationAttack,
        RandomAttack,
    ):
        assert issubclass(cls, Perturbation)
    x = digits.images[:4]
    attack = TopKAttack(digits.model, Saliency(digits.model), k=25, **BUDGET)
    assert torch.equal(
        attack(x, digits.labels[:4]), attack.perturb(x, digits.labels[:4])
    )


def _topk_stability(sal, x, y):
    """The top-25 intersection with the map of ``x``: Captum's forward_func for
    its attack tools, which then measure the explanation, not the prediction."""
    original = sal.attribute(x, target=y)
    return lambda inputs: topk_intersection(
        original, sal.attribute(inputs, target=y), k=25
    )


def test_attack_comparator(digits):
    model, x, y = digits.model, digits.images[:8], digits.labels[:8]
    sal = Saliency(model)
    stability = _topk_stability(sal, x, y)
    comparator = AttackComparator(
        forward_func=stability, metric=lambda out, target: out
    )
    comparator.add_attack(
        TopKAttack(model, sal, k=25, **BUDGET),
        "TopK",
        additional_attack_arg_names=["target"],
    )
    comparator.add_attack(
        RandomAttack(model, sal, criterion_k=25, **BUDGET),
        "Random",
        additional_attack_arg_names=["target"],
    )
    results = comparator.evaluate(x, target=y)
    assert torch.allclose(results["Original"], torch.tensor(1.0))
    # Per-sample values, averaged over attempts by Captum.
    assert results["TopK"]["mean"].mean() < results["Random"]["mean"].mean() - 0.1


def test_min_param_perturbation_searches_epsilon(digits):
    model, x, y = digits.model, digits.images[:1], digits.labels[:1]
    sal = Saliency(model)
    stability = _topk_stability(sal, x, y)
    search = MinParamPerturbation(
        forward_func=stability,
        attack=TopKAttack(model, sal, k=25, step_size=0.01, n_steps=6),
        arg_name="epsilon",
        arg_min=0.0,
        arg_max=0.1,
        arg_step=0.01,
        mode="binary",
        # "Correct" while the explanation keeps more than half of its top pixels.
        correct_fn=lambda out: bool((out > 0.5).all()),
    )
    x_adv, epsilon = search.evaluate(x, attack_kwargs={"target": y})
    assert epsilon is not None and 0.0 < epsilon < 0.1
    assert stability(x_adv).item() <= 0.5
    assert (x_adv - x).abs().max() <= epsilon + 1e-6
