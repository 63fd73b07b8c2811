"""The regularizers stay on CUDA; skipped without a CUDA device."""

import pytest
import torch
from torch import nn

from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty
from captum_robust.regularizers import TopGAP

pytestmark = pytest.mark.gpu


def test_regularizers_stay_on_cuda():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(), TopGAP(0.5), nn.Flatten(), nn.Linear(4, 3),
    ).to(device)  # fmt: skip
    x = torch.rand(4, 3, 8, 8, device=device)
    y = torch.tensor([0, 1, 2, 0], device=device)
    mask = torch.zeros(4, 8, 8, dtype=torch.bool, device=device)
    mask[:, 2:6, 2:6] = True
    small = dict(n_steps=2, approx_factor=2, attack_steps=1)
    losses = [
        LocalGradientAlignment(seed=0).loss(model, x, y),
        # A CPU generator may drive a CUDA computation.
        LocalGradientAlignment(generator=torch.Generator().manual_seed(0))(model, x, y),
        HessianNorm(softplus_beta=3.0, seed=0).loss(model, x, y),
        IGSumNorm(0.1, **small, seed=0).loss(model, x, y),
        EnhancedAttributionRegularizer(0.1, **small, seed=0).loss(model, x, y),
        MaskedGradientPenalty().loss(model, x, y, mask),
        ExplanationConsistencyWeights(attack_steps=1, seed=0).loss(model, x, y),
    ]
    for loss in losses:
        assert loss.device.type == "cuda" and torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        assert all(p.grad.device.type == "cuda" for p in model.parameters())
