"""Path integrals processed in passes (same loss and gradients as one pass, against
finite differences too), second-order passes through hardswish / hardsigmoid and
attention (MobileNetV3, ViT), and the shared target and flag checks."""

import pytest
import torch
import torch.nn.functional as F
from helpers.models import small_vit
from torch import nn

from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty

PATH = {
    "ig_norm": lambda **kw: IGNorm(0.1, n_steps=4, approx_factor=2, **kw),
    "ig_sum_norm": lambda **kw: IGSumNorm(0.1, n_steps=4, approx_factor=2, **kw),
    "enhanced": lambda **kw: EnhancedAttributionRegularizer(
        0.1, n_steps=4, approx_factor=2, **kw
    ),
}


class DropNet(nn.Module):
    """conv -> softplus -> dropout -> linear, float64; (B, 2, 4, 4), 3 classes."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        return self.fc(self.drop(F.softplus(self.conv(x)).flatten(1)))


def drop_net(p=0.0):
    torch.manual_seed(0)
    return DropNet(p).double()


def data(b=3):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 2, 4, 4, generator=g, dtype=torch.float64)
    return x, torch.tensor([0, 1, 2, 1, 0][:b])


def loss_and_grads(reg, model, x, y, seed=0):
    reg.manual_seed(seed)
    torch.manual_seed(5)  # the dropout masks
    loss = reg.loss(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads, reg.last_adversarial


@pytest.mark.parametrize("name", sorted(PATH))
@pytest.mark.parametrize("rows", [None, 1, 7])
def test_passes_give_the_single_pass_loss_and_gradients(name, rows):
    # None: half the batch (2 of 3 samples: blocks that do not divide the batch)
    # at one point per pass; 1: one sample per pass; 7: two whole points.
    model, (x, y) = drop_net(), data()
    single = PATH[name](attack_steps=2, internal_batch_size=12)  # 4 points x 3
    chunked = PATH[name](attack_steps=2, internal_batch_size=rows)
    loss, grads, adv = loss_and_grads(single, model, x, y)
    loss_c, grads_c, adv_c = loss_and_grads(chunked, model, x, y)
    torch.testing.assert_close(adv_c, adv)  # the inner maximisation's gradients
    torch.testing.assert_close(loss_c, loss, rtol=1e-12, atol=1e-12)
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PATH))
def test_pass_gradients_match_finite_differences_with_dropout(name):
    # Dropout in training mode: the backward pass must redraw the forward pass's
    # masks. Directional derivative along a random parameter direction.
    model, (x, y) = drop_net(0.3).train(), data()
    reg = PATH[name](attack_steps=1, random_start=False, internal_batch_size=2)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]

    def value():
        reg.manual_seed(0)
        torch.manual_seed(5)
        return reg.loss(model, x, y)

    grads = torch.autograd.grad(value(), params)
    analytic = sum((d * gr).sum() for d, gr in zip(direction, grads))
    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
        up = value().detach()
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
        down = value().detach()
        for p, d in zip(params, direction):
            p.add_(h * d)
    torch.testing.assert_close(analytic, (up - down) / (2 * h), rtol=1e-5, atol=1e-8)


def test_passes_keep_the_model_as_found_and_free_their_graph():
    model, (x, y) = drop_net(0.2).train(), data()
    model.conv = nn.Sequential(model.conv, nn.BatchNorm2d(3).double())
    with torch.no_grad():
        model(torch.rand(6, 2, 4, 4, dtype=torch.float64))  # non-trivial stats
    buffers = [b.clone() for b in model.buffers()]
    reg = IGSumNorm(0.1, n_steps=4, approx_factor=2, attack_steps=1, seed=0)
    term = reg(model, x, y)
    term.backward()  # recomputes every pass: the statistics must not move
    for a, b in zip(buffers, model.buffers()):
        assert torch.equal(a, b)
    assert model.training and all(p.grad is not None for p in model.parameters())


def test_parameters_outside_the_model_are_refused_when_chunked():
    model, (x, y) = drop_net(), data()
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, z):
            return self.inner(z) * scale

    with pytest.raises(ValueError, match="`model` depends on a tensor"):
        IGNorm(0.1, n_steps=4, approx_factor=2, attack_steps=0)(Scaled(), x, y)
    term = IGNorm(0.1, n_steps=4, approx_factor=2, attack_steps=0, seed=0,
                  internal_batch_size=12)(Scaled(), x, y)  # fmt: skip
    (g,) = torch.autograd.grad(term, scale)  # one pass: every leaf is reached
    assert torch.isfinite(g)


# ------------------------------------------------------------------ second order


class HardNet(nn.Module):
    """MobileNetV3's ingredients: hardswish, a hardsigmoid squeeze-excitation gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Hardswish()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.Hardsigmoid()
        )
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.act(self.conv(x))
        return self.fc((h * self.gate(h)).flatten(1))


SECOND_ORDER = {
    "lga": lambda: LocalGradientAlignment(0.05, seed=0),
    "lga_attached": lambda: LocalGradientAlignment(
        0.05, neighbour="adversarial", detach_source=False, seed=0
    ),
    "hessian": lambda: HessianNorm(1.0, seed=0),
    "masked": lambda: MaskedGradientPenalty(10.0),
    "ig_norm": lambda: IGNorm(0.05, n_steps=2, approx_factor=2, attack_steps=1, seed=0),
    "ig_sum_norm": lambda: IGSumNorm(
        0.05, n_steps=2, approx_factor=1, attack_steps=1, seed=0
    ),
    "enhanced": lambda: EnhancedAttributionRegularizer(
        0.05, n_steps=2, approx_factor=2, attack_steps=1, seed=0
    ),
    "consistency": lambda: ExplanationConsistencyWeights(
        eps=0.05, attack_steps=1, seed=0
    ),
}


def step(name, reg, model, x, y):
    mask = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    if name == "masked":
        loss = reg.loss(model, x, y, mask)
    else:
        loss = reg.loss(model, x, y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_hardswish_and_hardsigmoid_models_train(name):
    torch.manual_seed(0)
    model = HardNet()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        # Without the rerouting there is no double backward at all.
        z = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(z)[:, 0].sum(), z, create_graph=True)
        torch.autograd.grad(g.square().sum(), list(model.parameters()))
    step(name, SECOND_ORDER[name](), model, x, y)
    assert isinstance(model.act, nn.Hardswish)  # the model is left as it was


@pytest.mark.parametrize("name", ["lga", "hessian", "ig_sum_norm", "consistency"])
def test_vision_transformer_trains(name):
    model = small_vit()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
    step(name, SECOND_ORDER[name](), model, x, y)


# ------------------------------------------------------------ targets and flags

ALL = {
    **SECOND_ORDER,
    "consistency_loss": lambda: ExplanationConsistencyWeights(attack_steps=1),
}


def call(name, reg, model, x, target):
    if name == "masked":
        return reg(model, x, target, torch.ones(2, 8, 8))
    if name == "consistency_loss":
        return reg.loss(model, x, target)
    return reg(model, x, target)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
    "target, error",
    [
        (True, TypeError),
        (1.0, TypeError),
        (torch.tensor([0.0, 1.0]), TypeError),
        (torch.tensor([True, False]), TypeError),
        ([0, 1.5], TypeError),
        ((0, 1), TypeError),
        ([0, 1, 2], ValueError),
        (-1, ValueError),
        (torch.tensor([0, -1]), ValueError),
        (torch.tensor([[0, 1]]), ValueError),
        (3, ValueError),  # out of range for 3 classes
    ],
)
def test_every_regularizer_checks_targets_by_name(name, target, error):
    torch.manual_seed(0)
    model, x = HardNet(), torch.rand(2, 3, 8, 8)
    with pytest.raises(error, match="`target`"):
        call(name, ALL[name](), model, x, target)


@pytest.mark.parametrize("name", ["lga", "ig_norm", "consistency", "masked"])
def test_list_and_scalar_tensor_targets_equal_a_tensor(name):
    torch.manual_seed(0)
    model, x = HardNet(), torch.rand(2, 3, 8, 8)
    model.eval()
    expected = call(name, ALL[name](), model, x, torch.tensor([1, 1]))
    for target in ([1, 1], 1, torch.tensor(1)):
        torch.testing.assert_close(call(name, ALL[name](), model, x, target), expected)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: IGNorm(random_start=1), "random_start"),
        (lambda: IGSumNorm(random_start=None), "random_start"),
        (lambda: EnhancedAttributionRegularizer(random_start="no"), "random_start"),
        (lambda: ExplanationConsistencyWeights(random_start=0), "random_start"),
        (lambda: ExplanationConsistencyWeights(normalize=1), "normalize"),
        (lambda: LocalGradientAlignment(detach_source=0), "detach_source"),
    ],
)
def test_flags_must_be_bools(build, name):
    with pytest.raises(TypeError, match=f"`{name}` must be a bool"):
        build()


@pytest.mark.parametrize("cls", [IGNorm, IGSumNorm, EnhancedAttributionRegularizer])
@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_internal_batch_size_is_checked(cls, value, error):
    with pytest.raises(error, match="`internal_batch_size`"):
        cls(internal_batch_size=value)


def test_every_pass_reports_to_the_host_memory_guard(monkeypatch):
    # Without the guard the peak resident set grows with the number of passes
    # (glibc fragmentation): each pass, forward and recomputation, reports.
    from captum_robust.regularizers import _paths

    passes = []

    class Counting(_paths.HostMemoryGuard):
        def after_pass(self):
            passes.append(self.active)

    monkeypatch.setattr(_paths, "HostMemoryGuard", Counting)
    model, (x, y) = drop_net(), data()
    reg = IGNorm(0.1, n_steps=4, approx_factor=2, attack_steps=0, seed=0)
    reg.internal_batch_size = 3  # one point (3 samples) per pass: 4 passes
    reg.loss(model, x, y).backward()
    assert len(passes) == 8


def test_host_memory_guard_trims_at_most_once_per_interval(monkeypatch):
    from captum_robust._utils import memory

    calls = []
    monkeypatch.setattr(memory, "_MALLOC_TRIM", calls.append)
    clock = iter([0.0, 0.5, 1.2, 1.2, 1.5, 2.3, 2.3, 3.0])
    monkeypatch.setattr(memory.time, "monotonic", lambda: next(clock))
    guard = memory.HostMemoryGuard(torch.device("cpu"), interval=1.0)  # t = 0
    for _ in range(4):  # at t = 0.5 (no), 1.2 (trim), 1.5 (no), 2.3 (trim)
        guard.after_pass()
    assert calls == [0, 0] and guard.trims == 2
    off = memory.HostMemoryGuard(torch.device("meta"))
    off.after_pass()
    assert not off.active and off.trims == 0
