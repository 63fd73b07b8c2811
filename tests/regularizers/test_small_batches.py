"""Small batches through batch normalisation in training mode: no pass a
regularizer makes over path points or copies holds a single sample, so a batch
of two (BatchNorm's smallest in training mode) trains as a larger one does."""

import pytest
import torch
from torch import nn

from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty

BATCH = 2


def bn_net() -> nn.Module:
    """Flatten -> Linear -> BatchNorm1d -> ReLU -> Linear, in training mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)
    ).train()


def pair():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, 2, 2, 2, generator=g)
    return x, torch.tensor([0, 2])


def path(cls, **kw):
    return cls(0.1, n_steps=4, approx_factor=2, attack_steps=1, seed=0, **kw)


CASES = {
    "ig_norm": lambda: path(IGNorm),
    "ig_norm_rows_1": lambda: path(IGNorm, internal_batch_size=1),
    "ig_norm_rows_3": lambda: path(IGNorm, internal_batch_size=3),
    "ig_sum_norm": lambda: path(IGSumNorm),
    "ig_sum_norm_rows_1": lambda: path(IGSumNorm, internal_batch_size=1),
    "enhanced": lambda: path(EnhancedAttributionRegularizer),
    "enhanced_rows_1": lambda: path(
        EnhancedAttributionRegularizer, internal_batch_size=1
    ),
    "lga": lambda: LocalGradientAlignment(0.05, seed=0),
    "lga_adversarial": lambda: LocalGradientAlignment(
        0.05, neighbour="adversarial", attack_steps=1, seed=0
    ),
    "masked": lambda: MaskedGradientPenalty(10.0),
    "consistency": lambda: ExplanationConsistencyWeights(
        eps=0.1, attack_steps=1, seed=0
    ),
}


def loss_of(reg, model, x, y):
    if isinstance(reg, MaskedGradientPenalty):
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[:, 0] = True
        return reg.loss(model, x, y, mask)
    return reg.loss(model, x, y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_batch_of_two_trains_through_batch_norm(name):
    model, (x, y) = bn_net(), pair()
    rows = []
    model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    reg = CASES[name]()
    loss = loss_of(reg, model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    # Every pass, the recomputations of the backward pass included, holds the
    # whole batch of two at one or more path points.
    assert rows and all(n >= BATCH and n % BATCH == 0 for n in rows), rows


@pytest.mark.parametrize("cls", [IGNorm, IGSumNorm, EnhancedAttributionRegularizer])
def test_internal_batch_size_below_the_batch_means_one_point_per_pass(cls):
    # Rounded up to two samples, the whole batch here: the same passes, hence the
    # same loss and gradients with batch normalisation in training mode.
    x, y = pair()
    results = []
    for rows in (1, BATCH):
        model = bn_net()
        loss = path(cls, internal_batch_size=rows).loss(model, x, y)
        results.append((loss.detach(), torch.autograd.grad(loss, model.parameters())))
    (loss_1, grads_1), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_1, loss_b, rtol=0, atol=0)
    for a, b in zip(grads_1, grads_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_hessian_norm_refuses_training_batch_norm_by_name():
    # Third derivatives: batch_norm has none in training mode, refused up front
    # with a message rather than BatchNorm's own error.
    model, (x, y) = bn_net(), pair()
    with pytest.raises(ValueError, match="`model` has a batch-norm layer"):
        HessianNorm(seed=0).loss(model, x, y)


def test_sample_blocks_hold_two_samples_only_with_a_training_batch_norm():
    from captum_robust.regularizers._paths import _PathSpec

    def blocks(b, rows, min_block):
        spec = _PathSpec(None, torch.zeros(2), None, None, rows, False, False, None,
                         min_block=min_block)  # fmt: skip
        return sorted({(s0, s1) for s0, s1, _, _ in spec.chunks(b)})

    # Unchanged without a training batch norm: blocks of `rows` samples.
    assert blocks(5, 2, 1) == [(0, 2), (2, 4), (4, 5)]
    assert blocks(2, 1, 1) == [(0, 1), (1, 2)]
    # With one, no block of a single sample: a short last block joins its
    # neighbour, and one row per pass becomes two samples.
    assert blocks(5, 2, 2) == [(0, 2), (2, 5)]
    assert blocks(2, 1, 2) == [(0, 2)]
    assert blocks(3, 1, 2) == [(0, 3)]
    assert blocks(1, 1, 2) == [(0, 1)]  # a batch of one stays one


def test_a_batch_of_three_never_reaches_batch_norm_one_sample_at_a_time():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 2, 2, 2, generator=g), torch.tensor([0, 1, 2])
    model = bn_net()
    rows = []
    model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    loss = path(IGNorm, internal_batch_size=1).loss(model, x, y)
    loss.backward()
    assert rows and min(rows) >= 2, rows
