"""The effect Dombrowski et al. show, in miniature, on a digits CNN trained here.

For Saliency, InputXGradient, Integrated Gradients, Guided Backprop, DeepLift
and LRP (epsilon rule, epsilon = 1), ManipulationAttack brings the real model's
explanation of the first 4 correctly classified held-out digits far closer to a
target map (the explanation of other digits, rotated by 180 degrees) than
RandomAttack with the same ball and number of steps, by MSE and by PCC, while
the label is kept and no class probability moves by more than 0.1. With
beta-smoothing (the attack on the explanation of ``softplus_surrogate(model,
1.0)``, the defence of the paper) the same attack closes clearly less of the gap
to the target.

Measured when written (mean over the 4 digits, MSE of sum-1 maps; "closed" is
1 - MSE_after / MSE_before):

=========  ==========  =========  ==========  ======  ==============
method     PCC before  PCC after  PCC random  closed  closed, smooth
=========  ==========  =========  ==========  ======  ==============
saliency   0.83        0.97       0.81        0.86    0.27
x input    0.59        0.92       0.52        0.81    0.34
IG         0.58        0.89       0.55        0.74    0.34
guided bp  0.82        0.92       0.80        0.56    0.31
DeepLift   0.58        0.89       0.55        0.74    0.33
LRP eps 1  0.41        0.87       0.38        0.79    0.31
=========  ==========  =========  ==========  ======  ==============

The PCC gain of the smoothed explanation is 0.005 to 0.15 (0.10 to 0.46
without smoothing); the largest probability change is 0.06. DeepLift (zero
baseline) is within PCC 0.9995 of IG on this network, hence the same row.

The assertions leave margins below these. LRP runs with ``EpsilonRule(1.0)`` on
every conv and linear layer, not Captum's default epsilon of 1e-9: on a ReLU
network LRP-epsilon passes the ratio ``relu(z) / z`` (the step) down, on the
softplus surrogate ``softplus(beta z) / (beta z)``, which is unbounded near
``z = 0``; a tiny epsilon does not bound it. Measured with epsilon 1e-9: the
surrogate's map has PCC 0.47 with the ReLU map at beta 10 (0.97 at beta 100),
its input gradient is 1e4 times larger than with epsilon 1 and correlates
with central finite differences of the ReLU map's loss at 0.14 (beta 10) and
-0.28 (beta 100) over 24 random directions (epsilon 1: 0.995 and 1.000); the
attack moves the PCC 0.59 -> 0.60 (beta 10 or 100), 0.62 with the beta growth
10 -> 100 (a probability then moves by 0.14) and 0.66 with beta 1000, against
0.52 for random noise. With epsilon 0.1: 0.54 -> 0.75.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LRP
from captum.attr import DeepLift
from captum.attr import GuidedBackprop
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import Saliency
from captum.attr._utils.lrp_rules import EpsilonRule
from helpers.digits import train_on_digits
from helpers.models import PooledCNN
from torch import nn

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attr import LRPEpsilonWarning
from captum_robust.attr import differentiable
from captum_robust.attr import softplus_surrogate
from captum_robust.metrics import mean_squared_error
from captum_robust.metrics import pearson_correlation

EPS = 0.3
N_STEPS = 50
# Adam's lr; the output weight is raised from Dombrowski's 1e6 because a 16x16
# map's squared errors are larger than a 224x224 one's: it holds the output.
ATTACK = {"epsilon": EPS, "n_steps": N_STEPS, "step_size": 0.02, "output_weight": 1e8}
SMOOTH_BETA = 1.0
OUTPUT_TOLERANCE = 0.1  # largest change of any class probability
LRP_EPSILON = 1.0  # see the module docstring for Captum's default 1e-9


def lrp_epsilon(model: nn.Module) -> LRP:
    """Captum's LRP with ``EpsilonRule(LRP_EPSILON)`` on every conv and linear layer.

    The rule is set on the model, where LRP reads it (softplus surrogates copy
    it); no other method reads it.
    """
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.rule = EpsilonRule(epsilon=LRP_EPSILON)
    return LRP(model)


METHODS = [
    (Saliency, {}),
    (InputXGradient, {}),
    (IntegratedGradients, {"n_steps": 8}),
    (GuidedBackprop, {}),
    (DeepLift, {}),
    (lrp_epsilon, {}),
]


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model, images, labels = train_on_digits(
        PooledCNN((8, 16), side=16, classes=10), epochs=3
    )
    with torch.no_grad():
        accuracy = (model(images[1500:]).argmax(1) == labels[1500:]).float().mean()
    assert accuracy > 0.8
    with torch.no_grad():
        correct = (model(images[1500:1600]).argmax(1) == labels[1500:1600]).nonzero()
    keep = 1500 + correct.flatten()[:4]
    x, y = images[keep], labels[keep]
    others = images[1600:1604].flip(-1).flip(-2)
    return model, x, y, others


def sum_one_map(method, model, x, y, kwargs):
    attr = differentiable(method(model)).attribute(x, target=y, **kwargs).detach()
    s = attr.abs().sum(dim=1)
    return s / s.sum(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize(
    "method, kwargs", METHODS, ids=lambda m: getattr(m, "__name__", "")
)
def test_manipulation_beats_random_and_beta_smoothing_resists(setting, method, kwargs):
    model, x, y, others = setting
    target = sum_one_map(method, model, others, y, kwargs)

    attack = ManipulationAttack(
        model, method(model), attribution_kwargs=kwargs, **ATTACK
    )
    x_adv, result = attack.perturb(x, y, target_map=target, return_results=True)
    assert result.label_kept.all()
    assert ((x_adv - x).abs() <= EPS + 1e-6).all()
    with torch.no_grad():
        moved = (F.softmax(model(x_adv), 1) - F.softmax(model(x), 1)).abs().max()
    assert moved < OUTPUT_TOLERANCE

    random = RandomAttack(
        model,
        method(model),
        epsilon=EPS,
        n_steps=N_STEPS,
        step_size=EPS / 4,
        attribution_kwargs=kwargs,
    )
    x_rand = random.perturb(x, y)
    rand_map = sum_one_map(method, model, x_rand, y, kwargs)
    rand_mse = mean_squared_error(rand_map, target).mean()
    rand_pcc = pearson_correlation(rand_map, target).mean()

    before, after = result.similarity_before, result.similarity_after
    # Far closer than random, by both measures.
    assert after["mse"].mean() < 0.7 * rand_mse
    assert after["pcc"].mean() > rand_pcc + 0.04
    assert (after["mse"] < before["mse"]).all()
    assert (after["pcc"] > before["pcc"]).all()
    closed = 1 - after["mse"].mean() / before["mse"].mean()
    gain = after["pcc"].mean() - before["pcc"].mean()

    # Beta-smoothing: explain the beta-small surrogate, attack that explanation.
    smooth = softplus_surrogate(model, beta=SMOOTH_BETA)
    smooth_target = sum_one_map(method, smooth, others, y, kwargs)
    defended = ManipulationAttack(
        smooth,
        method(smooth),
        surrogate_beta=None,
        attribution_kwargs=kwargs,
        **ATTACK,
    )
    _, smooth_result = defended.perturb(
        x, y, target_map=smooth_target, return_results=True
    )
    s_before, s_after = smooth_result.similarity_before, smooth_result.similarity_after
    smooth_closed = 1 - s_after["mse"].mean() / s_before["mse"].mean()
    smooth_gain = s_after["pcc"].mean() - s_before["pcc"].mean()
    assert smooth_closed < 0.75 * closed
    assert smooth_gain < 0.6 * gain
    # The user's model is untouched by either attack.
    assert isinstance(model.relu1, nn.ReLU) and not model.training


class MaxPoolNet(nn.Module):
    """Two conv / batch norm / ReLU / max-pool blocks and two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


def test_lrp_manipulation_on_max_pools_needs_batch_norms_at_epsilon_one():
    # Measured: with the batch norms at Captum's 1e-9 the attack ends 15% closer
    # to the target than random noise; with them at epsilon 1, 75% (3 seeds).
    torch.manual_seed(0)
    model, images, labels = train_on_digits(MaxPoolNet(), epochs=4)
    with torch.no_grad():
        correct = (model(images[1500:1600]).argmax(1) == labels[1500:1600]).nonzero()
    keep = 1500 + correct.flatten()[:4]
    x, y = images[keep], labels[keep]
    others = images[1600:1604].flip(-1).flip(-2)

    def attack_and_random(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in model.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.rule = EpsilonRule(epsilon=1.0)
            elif isinstance(layer, nn.BatchNorm2d):
                layer.rule = EpsilonRule(epsilon=1.0 if kind == "bn" else 1e-9)
        target = sum_one_map(LRP, model, others, y, {})
        attack = ManipulationAttack(model, LRP(model), **ATTACK)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x_adv = attack.perturb(x, y, target_map=target)
        named = [str(w.message) for w in caught if w.category is LRPEpsilonWarning]
        x_rand = RandomAttack(
            model, LRP(model), epsilon=EPS, n_steps=N_STEPS, step_size=EPS / 4
        ).perturb(x, y)
        after = mean_squared_error(sum_one_map(LRP, model, x_adv, y, {}), target)
        rand = mean_squared_error(sum_one_map(LRP, model, x_rand, y, {}), target)
        return after.mean(), rand.mean(), named

    after, rand, named = attack_and_random("default")
    # The warning names the batch norms, and never the max pools, whose rule's
    # ratio is at most 1 whatever epsilon is.
    assert len(named) == 1
    assert "'bn1'" in named[0] and "'bn2'" in named[0]
    assert "pool" not in named[0]
    assert after > 0.6 * rand

    after, rand, named = attack_and_random("bn")
    assert named == []
    assert after < 0.5 * rand
