"""Tiny models shared by the attr tests: small enough for float64 gradcheck."""

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> act -> conv -> act -> linear on (B, 2, 6, 6) inputs, 3 classes."""

    def __init__(self, act: type[nn.Module] = nn.Softplus) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.act1 = act()
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.act2 = act()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.flatten(1))


def make_net(act: type[nn.Module] = nn.Softplus, dtype=torch.float64) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(act).to(dtype).eval()


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


@pytest.fixture
def net_factory():
    return make_net
