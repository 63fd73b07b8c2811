"""Half and double precision: the attacks work in the input's dtype."""

import pytest
import torch
from captum.attr import Saliency

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import TopKAttack
from captum_robust.attacks._precision import input_gradients

EPS = 0.06


def _frame():
    frame = torch.ones(16, 16)
    frame[3:-3, 3:-3] = 0
    return frame


def _in_ball(out, x):
    # Half-precision rounding (1e-4 to 1e-3 near 0.06) must not leave the ball;
    # 1e-7 allows the rounding of eps itself.
    delta = (out.double() - x.double()).abs()
    return (
        bool(delta.max() <= EPS + 1e-7)
        and bool(out.min() >= 0)
        and bool(out.max() <= 1)
    )


@pytest.fixture(scope="module")
def reference(digits):
    model, x, y = digits.model, digits.images[:16], digits.labels[:16]
    attack = ManipulationAttack(model, Saliency(model), epsilon=EPS, n_steps=10)
    _, result = attack.perturb(x, y, target_map=_frame(), return_results=True)
    return result


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_manipulation_in_other_precisions(digits, reference, dtype):
    # float16 used to move nothing: the weights 1e11 and 1e6 overflowed the loss,
    # and the Adam steps rounded away on half-precision iterates.
    model = digits.model.to(dtype)
    try:
        x, y = digits.images[:16].to(dtype), digits.labels[:16]
        attack = ManipulationAttack(model, Saliency(model), epsilon=EPS, n_steps=10)
        out, result = attack.perturb(
            x, y, target_map=_frame().to(dtype), return_results=True
        )
    finally:
        digits.model.float()
    assert out.dtype == dtype and _in_ball(out, x)
    assert result.label_kept.all() and not result.unmoved.any()
    # The improvement count is close to float32's (16 of 16 samples there).
    assert int(reference.improved.sum()) >= 15
    assert result.improved.sum() >= reference.improved.sum() - 1
    ratio = (result.criterion_after / result.criterion_before).mean()
    ratio32 = (reference.criterion_after / reference.criterion_before).mean()
    assert ratio < ratio32 + 0.05, (ratio, ratio32)
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    assert result.criterion_after.dtype == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_topk_in_half_precision(digits, dtype):
    x, y = digits.images[:8], digits.labels[:8]
    budget = {"k": 25, "epsilon": EPS, "step_size": 0.01, "n_steps": 6}
    model = digits.model
    _, r32 = TopKAttack(model, Saliency(model), **budget).perturb(
        x, y, return_results=True
    )
    model = digits.model.to(dtype)
    try:
        out, result = TopKAttack(model, Saliency(model), **budget).perturb(
            x.to(dtype), y, return_results=True
        )
    finally:
        digits.model.float()
    assert _in_ball(out, x.to(dtype)) and result.label_kept.all()
    assert result.improved.all()
    assert result.criterion_after.mean() < r32.criterion_after.mean() + 0.1


@pytest.mark.parametrize("weight", [1e11, 1e-9])
def test_float16_gradients_are_loss_scaled(weight):
    # Against the float64 gradient of the same per-sample loss: unscaled, 1e11
    # overflows float16 and 1e-9 flushes to zero.
    x64 = torch.tensor([[0.1, -0.5, 0.25], [0.3, 0.2, -0.7]], dtype=torch.float64)
    expected = weight * torch.tensor([1.0, 1e-3])[:, None].double() * 2 * x64
    x = x64.half().requires_grad_()
    loss = weight * (torch.tensor([1.0, 1e-3]) * x.float().square().sum(dim=1))
    plain = torch.autograd.grad(loss.sum(), x, retain_graph=True)[0]
    assert not torch.isfinite(plain).all() or (plain == 0).any()
    optimizer: dict = {}
    (grad,) = input_gradients(loss, (x,), optimizer)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad.double(), expected, rtol=2e-3, atol=0.0)
    # The next step's scale moves the largest scaled gradient towards 2^10 (by at
    # most 2^8 per step, which leaves the second row just short).
    scaled = (grad.abs().amax(dim=1) * optimizer["scale"]).log2()
    assert ((scaled > 8) & (scaled <= 10.5)).all(), scaled
