"""The cross-entropy PGD adversary and the robust accuracy it measures."""

import copy

import pytest
import torch
import torch.nn.functional as F
from captum.robust import PGD
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import TensorDataset

from captum_robust.attacks import pgd_cross_entropy
from captum_robust.attacks import robust_accuracy

EPS = 0.3


def _captum_pgd_accuracy(model, x, y, loss_func=None):
    attack = PGD(model, loss_func=loss_func, lower_bound=0.0, upper_bound=1.0)
    torch.manual_seed(0)
    adv = attack.perturb(
        x.clone().requires_grad_(True), EPS, 0.01, 40, y, random_start=True
    )
    with torch.no_grad():
        return (model(adv).argmax(1) == y).double().mean().item()


def _shift_logits(model, offset):
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted[-1].bias += offset
    return shifted


@pytest.fixture(scope="module")
def natural(digits):
    return digits.model, digits.images[:48], digits.labels[:48]


def test_defeats_a_natural_model_where_captums_default_loss_does_not(natural):
    model, x, y = natural
    shifted = _shift_logits(model, -5.0)
    with torch.no_grad():  # the same classifier: argmax ignores a common offset
        assert torch.equal(model(x).argmax(1), shifted(x).argmax(1))
    ours = robust_accuracy(shifted, (x, y), epsilon=EPS, steps=40, step_size=0.01)
    assert ours.clean_accuracy == 1.0
    assert ours.accuracy <= 0.05
    # Captum's -log(output) stops pushing once the true logit reaches 0.
    default = _captum_pgd_accuracy(shifted, x, y)
    assert default >= ours.accuracy + 0.5
    # With a cross-entropy loss_func Captum agrees with the helper.
    with_ce = _captum_pgd_accuracy(
        shifted,
        x,
        y,
        loss_func=lambda out, t: F.cross_entropy(out, t, reduction="none"),
    )
    assert with_ce <= 0.1


def test_does_not_depend_on_a_logit_offset(natural):
    model, x, y = natural
    kwargs = {"epsilon": 0.1, "steps": 10, "step_size": 0.02, "seed": 3}
    plain = robust_accuracy(model, (x, y), **kwargs)
    for offset in (-5.0, 5.0):
        shifted = robust_accuracy(_shift_logits(model, offset), (x, y), **kwargs)
        assert torch.equal(plain.correct, shifted.correct)


def test_no_zero_gradient_threshold_where_the_softmax_saturates(natural):
    model, x, y = natural
    # Logits x 40: the softmax saturates and most cross-entropy gradients fall
    # below Captum's 1e-6 threshold, which then leaves those pixels untouched.
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        sharp[-1].weight *= 40
        sharp[-1].bias *= 40
    ours = robust_accuracy(sharp, (x, y), epsilon=EPS, steps=40, step_size=0.01)
    assert ours.accuracy <= 0.1
    captum_ce = _captum_pgd_accuracy(
        sharp, x, y, loss_func=lambda out, t: F.cross_entropy(out, t, reduction="none")
    )
    assert captum_ce > ours.accuracy


def test_pgd_stays_in_the_ball_and_bounds_and_is_seeded(natural):
    model, x, y = natural
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    adv = pgd_cross_entropy(model, x, y, epsilon=0.2, steps=5, generator=g())
    assert adv.shape == x.shape and not adv.requires_grad
    assert ((adv - x).abs() <= 0.2 + 1e-6).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert torch.equal(
        adv, pgd_cross_entropy(model, x, y, epsilon=0.2, steps=5, generator=g())
    )
    # No random start and no step: the inputs themselves.
    same = pgd_cross_entropy(model, x, y, epsilon=0.2, steps=0, random_start=False)
    assert torch.equal(same, x)
    # Each step raises the loss of a natural model (sum of per-sample losses).
    with torch.no_grad():
        before = F.cross_entropy(model(x), y, reduction="sum")
        after = F.cross_entropy(model(adv), y, reduction="sum")
    assert after > before


def test_a_sample_step_does_not_depend_on_the_batch(natural):
    model, x, y = natural
    alone = pgd_cross_entropy(
        model, x[:1], y[:1], epsilon=0.1, steps=3, random_start=False
    )
    batch = pgd_cross_entropy(model, x, y, epsilon=0.1, steps=3, random_start=False)
    assert torch.allclose(alone, batch[:1], atol=1e-6)


def test_restarts_can_only_lower_the_accuracy_and_loaders_agree(natural):
    model, x, y = natural
    kwargs = {"epsilon": 0.08, "steps": 3, "step_size": 0.03, "seed": 0}
    one = robust_accuracy(model, (x, y), restarts=1, **kwargs)
    three = robust_accuracy(model, (x, y), restarts=3, **kwargs)
    assert not (three.correct & ~one.correct).any()
    assert three.accuracy <= one.accuracy <= one.clean_accuracy
    loader = DataLoader(TensorDataset(x, y), batch_size=48)
    assert torch.equal(robust_accuracy(model, loader, **kwargs).correct, one.correct)
    assert float(one) == one.accuracy


def test_leaves_model_inputs_and_gradients_as_found(digits):
    model = copy.deepcopy(digits.model).train()
    model[1].eval()  # a mixed state must come back exactly
    x, y = digits.images[:8].clone(), digits.labels[:8]
    x0 = x.clone()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    robust_accuracy(model, (x, y), epsilon=0.1, steps=2, step_size=0.05)
    assert model.training and not model[1].training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    assert torch.equal(x, x0) and not x.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epsilon": -0.1}, ValueError, "epsilon"),
        ({"epsilon": float("inf")}, ValueError, "epsilon"),
        ({"epsilon": 0.1, "steps": 1.5}, TypeError, "steps"),
        ({"epsilon": 0.1, "restarts": 0}, ValueError, "restarts"),
        ({"epsilon": 0.1, "step_size": -1.0}, ValueError, "step_size"),
        ({"epsilon": 0.1, "bounds": (1.0, 0.0)}, ValueError, "bounds"),
        ({"epsilon": 0.1, "bounds": 1.0}, TypeError, "bounds"),
        ({"epsilon": 0.1, "seed": "0"}, TypeError, "seed"),
        ({"epsilon": 0.1, "generator": 3}, TypeError, "generator"),
    ],
)
def test_robust_accuracy_rejects_bad_arguments(natural, kwargs, error, match):
    model, x, y = natural
    with pytest.raises(error, match=match):
        robust_accuracy(model, (x, y), **kwargs)


def test_bad_models_data_and_labels_are_named(natural):
    model, x, y = natural
    with pytest.raises(TypeError, match="`model`"):
        robust_accuracy(lambda t: t, (x, y), epsilon=0.1)
    with pytest.raises(TypeError, match="`data`"):
        robust_accuracy(model, 3, epsilon=0.1)
    with pytest.raises(ValueError, match="no batch"):
        robust_accuracy(model, [], epsilon=0.1)
    with pytest.raises(ValueError, match="`labels`"):
        robust_accuracy(model, (x, y[:3]), epsilon=0.1)
    with pytest.raises(TypeError, match="`labels`"):
        robust_accuracy(model, (x, y.float()), epsilon=0.1)
    with pytest.raises(ValueError, match="`labels`"):
        robust_accuracy(model, (x, y + 10), epsilon=0.1)
    with pytest.raises(ValueError, match="`inputs`"):
        robust_accuracy(model, (x * float("nan"), y), epsilon=0.1)
    with pytest.raises(TypeError, match="`inputs`"):
        pgd_cross_entropy(model, x.long(), y, epsilon=0.1)
    with pytest.raises(TypeError, match="`model` must return"):
        pgd_cross_entropy(nn.Flatten(0), x, y, epsilon=0.1, steps=1)
    with pytest.raises(TypeError, match="`random_start`"):
        pgd_cross_entropy(model, x, y, epsilon=0.1, random_start=1)
