"""Fixtures of the attr tests: tiny models small enough for float64 gradcheck."""

import pytest
import torch
from helpers.models import TinyNet
from helpers.models import make_net
from torch import nn


@pytest.fixture
def net() -> TinyNet:
    return make_net()


@pytest.fixture
def relu_net() -> TinyNet:
    return make_net(nn.ReLU)


@pytest.fixture
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)


@pytest.fixture
def xb() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
