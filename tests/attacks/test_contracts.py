"""User objects are left as found; bad arguments are refused with clear errors."""

import warnings

import pytest
import torch
from captum.attr import DeepLiftShap
from captum.attr import GradientShap
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import Occlusion
from captum.attr import Saliency
from helpers.attacks import FAST
from helpers.attacks import every_attack
from torch import nn

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import MassCenterAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TargetedAttack
from captum_robust.attacks import TopKAttack
from captum_robust.attr import differentiable


def _snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [
            None if p.grad is None else p.grad.clone() for p in model.parameters()
        ],
        "buffers": [b.clone() for b in model.buffers()],
    }


def _assert_same(before, after):
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["params"], after["params"]):
        assert torch.equal(a, b)
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(before["buffers"], after["buffers"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_user_objects_left_as_found(tiny, tiny_x, index, input_requires_grad):
    # A training-mode model with one BatchNorm frozen in eval, a frozen weight and
    # existing .grad fields: all of it must come back exactly as it was.
    tiny.train()
    tiny.bn.eval()
    tiny.conv.weight.requires_grad_(False)
    tiny.fc.weight.grad = torch.full_like(tiny.fc.weight, 0.5)
    before = _snapshot(tiny)
    ig = IntegratedGradients(tiny)
    ig_vars = dict(vars(ig))
    x = tiny_x.clone().requires_grad_(input_requires_grad)
    x_before = x.detach().clone()

    attack, extra = every_attack(tiny, ig)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Captum flipping requires_grad
        out, result = attack.perturb(
            x, attribution_kwargs={"n_steps": 3}, return_results=True, **extra
        )
    _assert_same(before, _snapshot(tiny))
    assert tiny.training and not tiny.bn.training
    assert vars(ig) == ig_vars
    assert ig.gradient_func.__name__ == "compute_gradients"
    assert torch.equal(x.detach(), x_before)
    assert x.requires_grad is input_requires_grad and x.grad is None
    assert not out.requires_grad
    assert out.data_ptr() != x.data_ptr()
    assert result.label_kept.all()


def test_running_stats_untouched_while_training_mode(digits):
    model, x = digits.model, digits.images[:4]
    model.train()
    try:
        before = _snapshot(model)
        TopKAttack(model, Saliency(model), k=25, **FAST).perturb(x)
        _assert_same(before, _snapshot(model))
        assert all(m.training for m in model.modules())
    finally:
        model.eval()


def test_refuses_non_differentiable_attributions(tiny):
    for attribution in (Occlusion(tiny), DeepLiftShap(tiny)):
        name = type(attribution).__name__
        with pytest.raises(TypeError, match=f"attribution.*{name}"):
            TopKAttack(tiny, attribution)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epsilon": -0.1}, ValueError, "epsilon"),
        ({"step_size": 0.0}, ValueError, "step_size"),
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"restarts": 0}, ValueError, "restarts"),
        ({"k": 0}, ValueError, "`k`"),
        ({"k": 2.5}, TypeError, "`k`"),
        ({"lower_bound": 1.0, "upper_bound": 0.0}, ValueError, "lower_bound"),
        ({"criterion": "pearson"}, ValueError, "criterion"),
        ({"criterion": "target_mass"}, ValueError, "criterion"),
        ({"surrogate_beta": 0.0}, ValueError, "surrogate_beta"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"random_start": 1}, TypeError, "random_start"),
        ({"attribution_kwargs": {"target": 1}}, ValueError, "attribution_kwargs"),
        ({"attribution_kwargs": [1]}, TypeError, "attribution_kwargs"),
    ],
)
def test_bad_constructor_arguments(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        TopKAttack(tiny, Saliency(tiny), **kwargs)


def test_bad_perturb_arguments(tiny, tiny_x):
    attack = TopKAttack(tiny, Saliency(tiny), k=5, **FAST)
    with pytest.raises(ValueError, match="`k`.*64"):
        TopKAttack(tiny, Saliency(tiny), k=65, **FAST).perturb(tiny_x)
    with pytest.raises(ValueError, match="criterion_k"):
        RandomAttack(tiny, Saliency(tiny), criterion_k=65, **FAST).perturb(tiny_x)
    with pytest.raises(ValueError, match="epsilon"):
        attack.perturb(tiny_x, epsilon=-1.0)
    with pytest.raises(ValueError, match="mask.*shape"):
        attack.perturb(tiny_x, mask=torch.ones(4, 1, 7, 8))
    with pytest.raises(ValueError, match="mask.*binary"):
        attack.perturb(tiny_x, mask=torch.full((4, 1, 8, 8), 0.5))
    with pytest.raises(TypeError, match="mask"):
        attack.perturb(tiny_x, mask=[1])
    with pytest.raises(ValueError, match="lower_bound"):
        attack.perturb(tiny_x * 2 - 1)
    with pytest.raises(ValueError, match="NaN"):
        attack.perturb(torch.full_like(tiny_x, float("nan")))
    with pytest.raises(TypeError, match="inputs"):
        attack.perturb(tiny_x.long())
    with pytest.raises(TypeError, match="inputs"):
        attack.perturb("image")
    with pytest.raises(ValueError, match="target"):
        attack.perturb(tiny_x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="target"):
        attack.perturb(tiny_x, torch.zeros(4))
    with pytest.raises(TypeError, match="generator"):
        attack.perturb(tiny_x, generator=0)
    with pytest.raises(TypeError, match="return_results"):
        attack.perturb(tiny_x, return_results=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        attack.perturb(tiny_x, radius=0.1)


def test_bad_target_region_and_map(tiny, tiny_x):
    targeted = TargetedAttack(tiny, Saliency(tiny), **FAST)
    with pytest.raises(ValueError, match="target_region.*required"):
        targeted.perturb(tiny_x)
    with pytest.raises(ValueError, match="target_region.*shape"):
        targeted.perturb(tiny_x, target_region=torch.ones(7, 8))
    with pytest.raises(ValueError, match="target_region.*binary"):
        targeted.perturb(tiny_x, target_region=torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="target_region.*empty"):
        targeted.perturb(tiny_x, target_region=torch.zeros(4, 8, 8))
    manipulation = ManipulationAttack(tiny, Saliency(tiny), **FAST)
    with pytest.raises(ValueError, match="target_map.*required"):
        manipulation.perturb(tiny_x)
    with pytest.raises(ValueError, match="target_map.*non-negative"):
        manipulation.perturb(tiny_x, target_map=-torch.ones(8, 8))
    with pytest.raises(ValueError, match="target_map.*zero"):
        manipulation.perturb(tiny_x, target_map=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="target_map"):
        manipulation.perturb(tiny_x, target_map=torch.ones(3, 8, 8))


def test_mass_center_needs_an_image_map():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    attack = MassCenterAttack(model, Saliency(model), **FAST)
    with pytest.raises(ValueError, match="image attribution"):
        attack.perturb(torch.rand(3, 6))


def test_model_mismatch_and_non_module_forward(tiny):
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match="different model"):
        TopKAttack(tiny, Saliency(other))

    def forward(x):
        return tiny(x)

    with pytest.raises(TypeError, match="surrogate"):
        TopKAttack(forward, Saliency(forward))
    # A bound method of the model is the same model; its surrogate is the same
    # method of the smooth copy.
    attack = TopKAttack(tiny.forward, Saliency(tiny), k=5, **FAST)
    assert isinstance(attack.surrogate.__self__.act, nn.Softplus)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(
        attack.perturb(x), TopKAttack(tiny, Saliency(tiny), k=5, **FAST).perturb(x)
    )


def test_plain_callable_attribution(tiny, tiny_x):
    smooth = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 8), nn.Softplus(), nn.Linear(8, 3)
    )

    def saliency(inputs, target=None, additional_forward_args=None):
        out = smooth(inputs).gather(1, target[:, None]).sum()
        return torch.autograd.grad(out, inputs, create_graph=True)[0]

    with pytest.raises(TypeError, match="surrogate_beta=None"):
        TopKAttack(smooth, saliency, k=5)
    attack = TopKAttack(
        smooth, saliency, k=5, criterion="kendall", surrogate_beta=None, **FAST
    )
    out, result = attack.perturb(tiny_x, return_results=True)
    assert result.improved.any()
    assert (out - tiny_x).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("make", ["GradientShap", "NoiseTunnel", "LayerGradCam"])
def test_other_attribution_methods(tiny, tiny_x, make):
    if make == "GradientShap":
        attribution = GradientShap(tiny)
        kwargs = {"baselines": torch.zeros(1, 1, 8, 8), "n_samples": 3}
    elif make == "NoiseTunnel":
        attribution = NoiseTunnel(Saliency(tiny))
        kwargs = {"nt_samples": 3, "stdevs": 0.05}
    else:
        attribution = LayerGradCam(tiny, tiny.conv)
        kwargs = {}
    attack = TopKAttack(tiny, attribution, k=5, attribution_kwargs=kwargs, **FAST)
    out, result = attack.perturb(tiny_x, return_results=True)
    # Random methods are seeded: the original input compared with itself is 1.
    assert (result.criterion_before == 1).all()
    assert torch.equal(out, attack.perturb(tiny_x))


def test_differentiable_attribution_accepted(tiny, tiny_x):
    wrapped = differentiable(Saliency(tiny))
    a = TopKAttack(tiny, wrapped, k=5, **FAST).perturb(tiny_x)
    b = TopKAttack(tiny, Saliency(tiny), k=5, **FAST).perturb(tiny_x)
    assert torch.equal(a, b)


def test_float64(tiny, tiny_x):
    model = tiny.double()
    attack = TopKAttack(model, Saliency(model), k=5, **FAST)
    out, result = attack.perturb(tiny_x.double(), return_results=True)
    assert out.dtype == torch.float64
    assert result.criterion_after.dtype == torch.float64
