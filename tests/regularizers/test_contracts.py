"""Contracts shared by all regularizers: the model is left as found, gradients reach
the parameters, graphs are freed, random draws are reproducible, bad input is refused
with a message that names the argument."""

import gc
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from captum.attr import Occlusion
from captum.attr import Saliency
from torch import nn

from captum_robust.attr import FunctionalReLUWarning
from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty


class BNNet(nn.Module):
    """Conv-BN-ReLU twice, dropout, linear; (B, 3, 6, 6) inputs, 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.act2 = nn.ReLU()
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        h = self.act1(self.bn1(self.conv1(x)))
        h = self.act2(self.bn2(self.conv2(h)))
        return self.fc(self.drop(h.flatten(1)))


def make_model(name=None):
    torch.manual_seed(0)
    model = BNNet().train()
    model.bn2.eval()  # mixed modes must survive too
    if name == "hessian":
        model.bn1.eval()  # third derivatives: batch_norm must be in eval mode
    model.conv1.bias.requires_grad_(False)  # so must frozen parameters
    # Non-trivial running statistics, so that an update would be visible.
    with torch.no_grad():
        model(torch.rand(8, 3, 6, 6))
    return model


def make_batch(b=4):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(b, 3, 6, 6, generator=g)
    y = torch.randint(0, 4, (b,), generator=g)
    mask = torch.zeros(b, 6, 6, dtype=torch.bool)
    mask[:, 2:5, 1:4] = True
    return x, y, mask


FACTORIES = {
    "lga": lambda: LocalGradientAlignment(0.05, seed=0),
    "lga_adversarial": lambda: LocalGradientAlignment(
        0.05, neighbour="adversarial", detach_source=False, seed=0
    ),
    "lga_softplus": lambda: LocalGradientAlignment(0.05, softplus_beta=3.0, seed=0),
    "hessian": lambda: HessianNorm(1.0, softplus_beta=3.0, seed=0),
    "ig_norm": lambda: IGNorm(0.1, n_steps=4, approx_factor=2, attack_steps=2, seed=0),
    "ig_sum_norm": lambda: IGSumNorm(
        0.1, n_steps=4, approx_factor=2, attack_steps=2, seed=0
    ),
    "enhanced": lambda: EnhancedAttributionRegularizer(
        0.1, n_steps=2, approx_factor=2, attack_steps=1, seed=0
    ),
    "masked": lambda: MaskedGradientPenalty(10.0),
    "masked_softplus": lambda: MaskedGradientPenalty(10.0, softplus_beta=5.0),
    "consistency": lambda: ExplanationConsistencyWeights(
        eps=0.1, attack_steps=2, seed=0
    ),
}
RANDOM = {"lga", "lga_softplus", "hessian", "ig_norm", "ig_sum_norm", "enhanced"}


def call(reg, model, x, y, mask):
    if isinstance(reg, MaskedGradientPenalty):
        return reg(model, x, y, mask)
    return reg(model, x, y)


def full_loss(reg, model, x, y, mask):
    if isinstance(reg, MaskedGradientPenalty):
        return reg.loss(model, x, y, mask)
    return reg.loss(model, x, y)


def state(model):
    return {
        "modes": [m.training for m in model.modules()],
        "types": [type(m) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
    }


def assert_same_state(before, after, buffers=True):
    assert before["modes"] == after["modes"]
    assert before["types"] == after["types"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["buffers"], after["buffers"] if buffers else []):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_model_left_as_found_and_gradients_reach_parameters(name):
    model, (x, y, mask) = make_model(name), make_batch()
    x_before = x.clone()
    before = state(model)
    reg = FACTORIES[name]()
    out = call(reg, model, x, y, mask)
    assert_same_state(before, state(model))
    assert all(p.grad is None for p in model.parameters())  # no inner .grad writes
    assert torch.equal(x, x_before) and x.grad is None and not x.requires_grad
    if name == "consistency":
        assert out.shape == (4,) and not out.requires_grad
        out = reg.loss(model, x, y)
    assert out.dim() == 0 and out.dtype == x.dtype and torch.isfinite(out)
    out.backward()
    # A term may not depend on every parameter (a bias before a ReLU does not move
    # an input gradient), but some gradient must arrive and none may be broken.
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert model.conv1.bias.grad is None  # frozen
    # reg.loss (used for the weights) runs the task forward pass, which updates them.
    assert_same_state(before, state(model), buffers=name != "consistency")


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_loss_updates_running_statistics_once(name):
    model, (x, y, mask) = make_model(name), make_batch()
    reference = make_model(name)
    reg = FACTORIES[name]()
    if name == "consistency":
        reg.loss(model, x, y)
    else:
        full_loss(reg, model, x, y, mask)
    task_input = getattr(reg, "last_adversarial", None)
    if not isinstance(reg, (IGSumNorm, EnhancedAttributionRegularizer)):
        task_input = x
    with torch.no_grad():
        reference(task_input)  # the task loss's forward pass, nothing more
    for a, b in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b)


def live_tensors():
    gc.collect()
    # type() rather than isinstance(): no attribute lookups on arbitrary objects.
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def train_step(name, reg, model, x, y, mask):
    loss = (
        reg.loss(model, x, y)
        if name == "consistency"
        else full_loss(reg, model, x, y, mask)
    )
    loss.backward()
    ref = weakref.ref(loss)
    del loss
    assert ref() is None, f"{name}: the loss outlives the step"
    held = [v for v in vars(reg).values() if isinstance(v, torch.Tensor)]
    assert not any(v.requires_grad for v in held), f"{name} keeps a graph"


def test_graphs_are_freed_and_memory_does_not_grow():
    (x, y, mask) = make_batch()
    runs = [(name, FACTORIES[name](), make_model(name)) for name in sorted(FACTORIES)]
    for _ in range(2):  # warm-up: caches, generators, .grad fields
        for name, reg, model in runs:
            train_step(name, reg, model, x, y, mask)
    before = live_tensors()
    for _ in range(3):
        for name, reg, model in runs:
            train_step(name, reg, model, x, y, mask)
    assert live_tensors() == before


@pytest.mark.parametrize("name", sorted(RANDOM | {"consistency"}))
def test_seeded_runs_repeat_and_successive_calls_differ(name):
    model, (x, y, mask) = make_model(), make_batch()
    model.eval()  # dropout off: only the regularizer's draws vary
    a, b = FACTORIES[name](), FACTORIES[name]()
    first = call(a, model, x, y, mask)
    torch.testing.assert_close(first, call(b, model, x, y, mask))
    assert not torch.equal(first, call(a, model, x, y, mask))
    a.manual_seed(0)
    torch.testing.assert_close(first, call(a, model, x, y, mask))


def test_seed_none_follows_torch_manual_seed():
    model, (x, y, _) = make_model(), make_batch()
    model.eval()
    torch.manual_seed(1)
    first = LocalGradientAlignment()(model, x, y)
    torch.manual_seed(1)
    torch.testing.assert_close(first, LocalGradientAlignment()(model, x, y))


def test_user_generator_is_used():
    model, (x, y, _) = make_model(), make_batch()
    model.eval()
    first = HessianNorm(generator=torch.Generator().manual_seed(4))(model, x, y)
    again = HessianNorm(generator=torch.Generator().manual_seed(4))(model, x, y)
    torch.testing.assert_close(first, again)


def test_works_inside_no_grad():
    model, (x, y, mask) = make_model(), make_batch()
    with torch.no_grad():
        term = MaskedGradientPenalty()(model, x, y, mask)
        weights = ExplanationConsistencyWeights(attack_steps=1, seed=0)(model, x, y)
    assert term.requires_grad and weights.shape == (4,)


def test_relu_hessian_vanishes_without_surrogate_and_not_with_it():
    model, (x, y, _) = make_model(), make_batch()
    model.eval()
    assert HessianNorm(seed=0)(model, x, y).item() == 0.0
    assert HessianNorm(softplus_beta=3.0, seed=0)(model, x, y).item() > 0.0
    assert isinstance(model.act1, nn.ReLU)


def test_functional_relu_warning_once_per_model():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            # F.relu is smoothed by the surrogate now; a clamp stays piecewise.
            return self.fc2(torch.clamp(self.fc1(x), min=0.0))

    model, reg = Functional(), HessianNorm(softplus_beta=3.0, seed=0)
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg(model, x, y)
        reg(model, x, y)
    assert [w.category for w in caught] == [FunctionalReLUWarning]


def test_consistency_accepts_captum_attributions():
    model, (x, y, _) = make_model(), make_batch()
    model.eval()
    reg = ExplanationConsistencyWeights(Saliency(model), attack_steps=1, seed=0)
    default = ExplanationConsistencyWeights(attack_steps=1, seed=0)
    torch.testing.assert_close(reg(model, x, y), default(model, x, y))
    strided = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(36, 4),
    )
    cam = LayerGradCam(strided, strided[0])  # 3x3 maps for 6x6 inputs
    with pytest.raises(ValueError, match="`attribution`"):
        ExplanationConsistencyWeights(cam, attack_steps=1)(strided, x, y)
    with pytest.raises(ValueError, match="`model`"):
        reg(make_model(), x, y)
    with pytest.raises(TypeError, match="Occlusion"):
        ExplanationConsistencyWeights(Occlusion(model))


# ------------------------------------------------------------------ bad input


def _model_3d_output(x):
    return x.flatten(1)[:, :12].view(-1, 3, 4)


class ThreeD(nn.Module):
    def forward(self, x):
        return _model_3d_output(x)


BAD_CALLS = [
    (
        lambda m, x, y: LocalGradientAlignment()(lambda z: m(z), x, y),
        TypeError,
        "model",
    ),
    (lambda m, x, y: LocalGradientAlignment()(m, (x,), y), TypeError, "inputs"),
    (lambda m, x, y: HessianNorm()(m, x.long(), y), TypeError, "inputs"),
    (lambda m, x, y: HessianNorm()(m, x[0, 0, 0], y), ValueError, "inputs"),
    (
        lambda m, x, y: HessianNorm()(m, x.masked_fill(x > 0.5, float("nan")), y),
        ValueError,
        "inputs",
    ),
    (lambda m, x, y: HessianNorm()(m, x, y.float()), TypeError, "target"),
    (lambda m, x, y: HessianNorm()(m, x, y[:2]), ValueError, "target"),
    (lambda m, x, y: LocalGradientAlignment()(m, x, y + 4), ValueError, "target"),
    (lambda m, x, y: HessianNorm()(m, x, "cat"), TypeError, "target"),
    (lambda m, x, y: HessianNorm()(ThreeD(), x, y), ValueError, "model"),
    (lambda m, x, y: HessianNorm()(m, x, y), ValueError, "model"),  # BN training
    (
        lambda m, x, y: IGNorm(n_steps=2, approx_factor=1, attack_steps=1)(m, x, y + 9),
        ValueError,
        "target",
    ),
    (
        lambda m, x, y: LocalGradientAlignment().loss(m, x, y, loss_fn=3),
        TypeError,
        "loss_fn",
    ),
    (
        lambda m, x, y: MaskedGradientPenalty()(m, x, y, torch.ones(4, 5, 5)),
        ValueError,
        "mask",
    ),
    (
        lambda m, x, y: MaskedGradientPenalty()(m, x, y, torch.full((4, 6, 6), 0.5)),
        ValueError,
        "mask",
    ),
    (lambda m, x, y: MaskedGradientPenalty()(m, x, y, [1]), TypeError, "mask"),
    (
        lambda m, x, y: ExplanationConsistencyWeights(background="mask")(m, x, y),
        ValueError,
        "mask",
    ),
    (
        lambda m, x, y: ExplanationConsistencyWeights()(
            m, x, y, torch.ones(4, 6, 6, dtype=torch.bool)
        ),
        ValueError,
        "mask",
    ),
    (
        lambda m, x, y: ExplanationConsistencyWeights(attack_steps=0).loss(
            m, x, y, loss_fn=F.cross_entropy
        ),
        ValueError,
        "loss_fn",
    ),
]


@pytest.mark.parametrize("index", range(len(BAD_CALLS)))
def test_bad_calls_are_refused(index):
    fn, error, name = BAD_CALLS[index]
    model, (x, y, _) = make_model(), make_batch()
    with pytest.raises(error, match=f"`{name}"):
        fn(model, x, y)


BAD_CONSTRUCTORS = [
    (lambda: LocalGradientAlignment(-0.1), ValueError, "eps"),
    (lambda: LocalGradientAlignment(torch.tensor([-1.0])), ValueError, "eps"),
    (lambda: LocalGradientAlignment(l2_weight=-1), ValueError, "l2_weight"),
    (lambda: LocalGradientAlignment(cos_weight="a"), TypeError, "cos_weight"),
    (lambda: LocalGradientAlignment(neighbour="adv"), ValueError, "neighbour"),
    (lambda: LocalGradientAlignment(detach_source=1), TypeError, "detach_source"),
    (lambda: LocalGradientAlignment(bounds=(1.0, 0.0)), ValueError, "bounds"),
    (lambda: LocalGradientAlignment(bounds=0.5), TypeError, "bounds"),
    (lambda: LocalGradientAlignment(softplus_beta=0), ValueError, "softplus_beta"),
    (lambda: LocalGradientAlignment(seed=True), TypeError, "seed"),
    (lambda: LocalGradientAlignment(seed=-1), ValueError, "seed"),
    (lambda: LocalGradientAlignment(generator=3), TypeError, "generator"),
    (
        lambda: LocalGradientAlignment(seed=1, generator=torch.Generator()),
        ValueError,
        "seed",
    ),
    (lambda: HessianNorm(n_samples=0), ValueError, "n_samples"),
    (lambda: HessianNorm(weight=float("nan")), ValueError, "weight"),
    (lambda: IGNorm(n_steps=10, approx_factor=3), ValueError, "approx_factor"),
    (lambda: IGNorm(attack_steps=-1), ValueError, "attack_steps"),
    (lambda: IGSumNorm(attack_step_size=float("inf")), ValueError, "attack_step_size"),
    (lambda: IGSumNorm(random_start="yes"), TypeError, "random_start"),
    (
        lambda: EnhancedAttributionRegularizer(attack_weight=-1),
        ValueError,
        "attack_weight",
    ),
    (lambda: MaskedGradientPenalty(log_prob="max"), ValueError, "log_prob"),
    (lambda: ExplanationConsistencyWeights(similarity="l2"), ValueError, "similarity"),
    (lambda: ExplanationConsistencyWeights(background="x"), ValueError, "background"),
    (lambda: ExplanationConsistencyWeights(quantile=0.0), ValueError, "quantile"),
    (lambda: ExplanationConsistencyWeights(normalize=None), TypeError, "normalize"),
    (lambda: ExplanationConsistencyWeights(attribution=3), TypeError, "attribution"),
]


@pytest.mark.parametrize("index", range(len(BAD_CONSTRUCTORS)))
def test_bad_settings_are_refused(index):
    fn, error, name = BAD_CONSTRUCTORS[index]
    with pytest.raises(error, match=f"`{name}"):
        fn()
