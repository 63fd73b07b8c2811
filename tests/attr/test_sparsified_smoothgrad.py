"""SparsifiedSmoothGrad: the map against hand-computed indicators, the
differentiable form, and Captum-style use."""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr import Occlusion
from captum.attr import Saliency
from torch import nn

from captum_robust.attacks import TopKAttack
from captum_robust.attr import SparsifiedSmoothGrad
from captum_robust.attr import differentiable
from captum_robust.attr import is_differentiable
from captum_robust.attr import relaxed_top_indicator
from captum_robust.attr import softplus_surrogate


def tiny_cnn(dtype=torch.float32):
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.Softplus(),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
        )
        .to(dtype)
        .eval()
    )


INPUTS = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([2, 0])


def hand_computed(model, x, target, *, sigma, n, sparsity, seed):
    """Mean over draws of the top-s indicator of |Saliency| summed over channels,
    the draws made round by round from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    saliency = Saliency(model)
    d = x.shape[2] * x.shape[3]
    s = int(np.ceil(round(sparsity * d, 9)))
    total = np.zeros((x.shape[0], d))
    for _ in range(n):
        noisy = x + sigma * torch.randn(x.shape, generator=gen)
        grads = saliency.attribute(noisy, target=target, abs=False)
        maps = grads.abs().sum(1).flatten(1).detach().numpy()
        for i, row in enumerate(maps):
            # Descending, ties to the lower index.
            total[i, np.argsort(-row, kind="stable")[:s]] += 1
    return total / n


def test_equals_the_mean_of_hand_computed_indicators():
    model = tiny_cnn()
    ssg = SparsifiedSmoothGrad(Saliency(model), seed=4)
    p = ssg.attribute(
        INPUTS, TARGET, sigma=0.2, n_samples=12, sparsity=0.15, create_graph=False
    )
    expected = hand_computed(
        model, INPUTS, TARGET, sigma=0.2, n=12, sparsity=0.15, seed=4
    )
    assert p.shape == (2, 6, 6)
    np.testing.assert_array_equal(p.flatten(1).numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("batch_size", [1, 5, 24, None])
def test_batch_size_does_not_change_the_map(batch_size):
    ssg = SparsifiedSmoothGrad(tiny_cnn(), seed=0)
    options = dict(sigma=0.1, n_samples=12, create_graph=False)
    reference = ssg.attribute(INPUTS, TARGET, batch_size=7, **options)
    p = ssg.attribute(INPUTS, TARGET, batch_size=batch_size, **options)
    assert torch.equal(p, reference)


def test_seed_and_generator():
    model = tiny_cnn()
    options = dict(sigma=0.1, n_samples=8, create_graph=False)
    a = SparsifiedSmoothGrad(model, seed=1).attribute(INPUTS, TARGET, **options)
    b = SparsifiedSmoothGrad(model, seed=1).attribute(INPUTS, TARGET, **options)
    c = SparsifiedSmoothGrad(model).attribute(
        INPUTS, TARGET, generator=torch.Generator().manual_seed(1), **options
    )
    assert torch.equal(a, b) and torch.equal(a, c)


def test_captum_style_use():
    model = tiny_cnn()
    x = INPUTS.clone()
    ssg = SparsifiedSmoothGrad(model, seed=0)  # a model is explained by Saliency
    assert ssg.forward_func is model
    with torch.no_grad():
        p = ssg.attribute(x, target=1, sigma=0.1, n_samples=10, sparsity=0.25)
    assert p.shape == (2, 6, 6) and not p.requires_grad
    assert torch.equal(x, INPUTS)
    # s = 9 of 36 features in each draw's top set.
    assert torch.allclose(p.sum(dim=(1, 2)), torch.full((2,), 9.0))
    assert ((p >= 0) & (p <= 1)).all()
    full = SparsifiedSmoothGrad(model, channel_reduction="none", seed=0).attribute(
        x, target=1, sigma=0.1, n_samples=4, create_graph=False
    )
    assert full.shape == x.shape
    ig = SparsifiedSmoothGrad(IntegratedGradients(model), seed=0).attribute(
        x, target=1, sigma=0.1, n_samples=4, n_steps=8, create_graph=False
    )
    assert ig.shape == (2, 6, 6)
    # A perturbation method has no graph but gives a map.
    occlusion = SparsifiedSmoothGrad(Occlusion(model), seed=0)
    p = occlusion.attribute(
        x,
        target=1,
        sigma=0.1,
        n_samples=2,
        sliding_window_shapes=(3, 2, 2),
        create_graph=False,
    )
    assert p.shape == (2, 6, 6)
    with pytest.raises(TypeError, match="Occlusion"):
        occlusion.attribute(x, target=1, sigma=0.1, n_samples=2, create_graph=True)


def test_tuple_inputs_give_a_tuple_of_maps():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)
            self.b = nn.Linear(3, 2)

        def forward(self, a, b):
            return self.a(a) + self.b(b).tanh()

    model = TwoInputs()
    xs = (torch.rand(2, 4), torch.rand(2, 3))
    maps = SparsifiedSmoothGrad(model, seed=0).attribute(
        xs, target=0, sigma=0.1, n_samples=6, sparsity=2 / 7, create_graph=False
    )
    assert isinstance(maps, tuple) and [m.shape for m in maps] == [(2, 4), (2, 3)]
    total = maps[0].sum(1) + maps[1].sum(1)
    assert torch.allclose(total, torch.full((2,), 2.0))


def test_straight_through_values_and_gradients():
    model = tiny_cnn()
    ssg = SparsifiedSmoothGrad(model, seed=2)
    options = dict(sigma=0.1, n_samples=6, sparsity=0.2)
    exact = ssg.attribute(INPUTS, TARGET, create_graph=False, **options)
    x = INPUTS.clone().requires_grad_(True)
    p = ssg.attribute(x, TARGET, **options)
    assert p.requires_grad and torch.equal(p.detach(), exact)
    (grad,) = torch.autograd.grad((p * torch.rand_like(p)).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The model's parameters get gradients too (regularizers need this).
    params = [q for q in model.parameters()]
    grads = torch.autograd.grad(
        ssg.attribute(INPUTS, TARGET, **options).square().sum(),
        params,
        allow_unused=True,  # the last bias does not enter a gradient map
    )
    grads = [g for g in grads if g is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    relaxed = ssg.attribute(x, TARGET, relaxed=True, **options)
    assert relaxed.shape == p.shape and not torch.equal(relaxed.detach(), exact)
    assert (relaxed.detach() - exact).abs().max() < 0.5


def test_gradcheck_of_the_relaxation():
    model = nn.Sequential(nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 2)).double()
    ssg = SparsifiedSmoothGrad(model, temperature=0.5, seed=0)
    x = torch.rand(2, 6, dtype=torch.float64, requires_grad=True)

    def relaxed(inputs):
        return ssg.attribute(
            inputs, target=0, sigma=0.1, n_samples=2, sparsity=0.5, relaxed=True
        )

    assert torch.autograd.gradcheck(relaxed, (x,), eps=1e-6, atol=1e-5)


def test_relaxed_top_indicator():
    maps = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 4.0, -1.0]])
    soft = relaxed_top_indicator(maps, 2, 0.01)
    assert torch.equal(soft.round(), torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0]]))
    # Scale-free, and the threshold sits halfway between ranks s and s + 1.
    scaled = relaxed_top_indicator(7 * maps, 2, 0.3)
    assert torch.allclose(scaled, relaxed_top_indicator(maps, 2, 0.3))
    pair = relaxed_top_indicator(torch.tensor([[2.0, 1.0, 0.0]]), 1, 1.0)
    assert (pair[0, 0] + pair[0, 1]).item() == pytest.approx(1.0)
    assert torch.equal(relaxed_top_indicator(maps, 4, 0.1), torch.ones_like(maps))
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: relaxed_top_indicator(m, 3, 0.2), (x,))


def test_differentiable_and_attacks_accept_it():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)
    ).eval()
    ssg = SparsifiedSmoothGrad(Saliency(model), seed=0)
    assert differentiable(ssg) is ssg and is_differentiable(ssg)
    rebound = ssg.with_forward_func(softplus_surrogate(model))
    assert isinstance(rebound, SparsifiedSmoothGrad)
    assert rebound.seed == 0 and rebound.forward_func is not model
    attack = TopKAttack(
        model,
        ssg,
        k=8,
        n_steps=10,
        epsilon=0.1,
        step_size=0.025,
        attribution_kwargs={"sigma": 0.05, "n_samples": 8, "sparsity": 0.25},
    )
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x_adv, result = attack.perturb(x, return_results=True)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    # The relaxation's gradient moves the exact map's top set.
    assert not result.no_gradient.any()
    assert (result.criterion_after < result.criterion_before).all()


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(sigma=-0.1), ValueError, "`sigma`"),
        (dict(n_samples=0), ValueError, "`n_samples`"),
        (dict(sparsity=0.0), ValueError, "`sparsity`"),
        (dict(sparsity=1.1), ValueError, "`sparsity`"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(generator=1), TypeError, "`generator`"),
        (dict(relaxed="no"), TypeError, "`relaxed`"),
        (dict(create_graph=1), TypeError, "`create_graph`"),
    ],
)
def test_bad_arguments_are_named(options, error, match):
    arguments = dict(sigma=0.1, n_samples=2)
    arguments.update(options)
    with pytest.raises(error, match=match):
        SparsifiedSmoothGrad(tiny_cnn()).attribute(INPUTS, TARGET, **arguments)


def test_bad_construction_is_named():
    with pytest.raises(TypeError, match="`attribution`"):
        SparsifiedSmoothGrad(3)
    with pytest.raises(ValueError, match="`temperature`"):
        SparsifiedSmoothGrad(tiny_cnn(), temperature=0.0)
    with pytest.raises(ValueError, match="`channel_reduction`"):
        SparsifiedSmoothGrad(tiny_cnn(), channel_reduction="median")
    with pytest.raises(TypeError, match="`seed`"):
        SparsifiedSmoothGrad(tiny_cnn(), seed=1.5)


@pytest.mark.parametrize(
    "maps, s, temperature, error, match",
    [
        (torch.rand(2, 3, 4), 2, 0.1, TypeError, "`maps`"),
        (torch.arange(6).view(2, 3), 2, 0.1, TypeError, "`maps`"),
        (torch.rand(2, 3), 0, 0.1, ValueError, "`s`"),
        (torch.rand(2, 3), 4, 0.1, ValueError, "`s`"),
        (torch.rand(2, 3), 2, 0.0, ValueError, "`temperature`"),
        (torch.rand(2, 3), 2, "0.1", TypeError, "`temperature`"),
    ],
)
def test_relaxed_top_indicator_names_bad_arguments(maps, s, temperature, error, match):
    with pytest.raises(error, match=match):
        relaxed_top_indicator(maps, s, temperature)
