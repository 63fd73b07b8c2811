"""IG regularizers on a softplus surrogate, with the path in several passes.

Each pass is a checkpoint recomputed in the backward pass of the inner
maximisation, which runs inside the regulariser's own softplus block: the
recomputation enters a second block on the same model. That recursed without
end (RecursionError) before nested blocks wrapped the original forward.
"""

import pytest
import torch
from torch import nn

from captum_robust.attr import softplus_activations
from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm


def _loss_and_grads(regularizer_cls, internal_batch_size):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    regularizer = regularizer_cls(
        0.1,
        n_steps=4,
        approx_factor=2,
        attack_steps=1,
        softplus_beta=5.0,
        internal_batch_size=internal_batch_size,
        seed=0,
    )
    loss = regularizer.loss(model, x, y)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    # The model is left as it was: its ReLU, and no instance-level forward.
    assert isinstance(model[1], nn.ReLU) and "forward" not in model.__dict__
    return loss.detach(), grads


@pytest.mark.parametrize(
    "regularizer_cls", [IGNorm, IGSumNorm, EnhancedAttributionRegularizer]
)
def test_several_passes_equal_one_pass_on_the_surrogate(regularizer_cls):
    # 4 samples x (4 x 2) path points: 4 rows per pass means 8 passes.
    loss_passes, grads_passes = _loss_and_grads(regularizer_cls, 4)
    loss_one, grads_one = _loss_and_grads(regularizer_cls, 10**6)
    torch.testing.assert_close(loss_passes, loss_one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads_passes, grads_one, rtol=1e-10, atol=1e-12)


def test_nested_softplus_blocks_on_one_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(2, 3)
    with softplus_activations(model, beta=5.0) as outer:
        expected = outer(x)
        with softplus_activations(model, beta=5.0) as inner:
            torch.testing.assert_close(inner(x), expected)
        torch.testing.assert_close(outer(x), expected)
    assert isinstance(model[1], nn.ReLU) and "forward" not in model.__dict__
    assert not torch.allclose(model(x), expected)
