"""Tiny models and data shared by the regularizer tests."""

import pytest
import torch
from torch import nn


class TinyConv(nn.Module):
    """conv -> act -> linear on (B, 2, 4, 4) inputs, 3 classes."""

    def __init__(self, act: type[nn.Module] = nn.Softplus) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = act()
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def tiny_mlp(dtype=torch.float64, act: type[nn.Module] = nn.Softplus) -> nn.Module:
    """Flatten -> Linear(8, 5) -> act -> Linear(5, 3): few parameters, for gradcheck."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 5), act(), nn.Linear(5, 3)).to(
        dtype
    )


def tiny_conv(dtype=torch.float64, act: type[nn.Module] = nn.Softplus) -> nn.Module:
    torch.manual_seed(0)
    return TinyConv(act).to(dtype)


def batch(shape=(3, 2, 4, 4), dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (shape[0],), generator=g)
    return x, y


@pytest.fixture
def conv_net():
    return tiny_conv()


@pytest.fixture
def mlp_factory():
    return tiny_mlp


@pytest.fixture
def batch_factory():
    return batch


@pytest.fixture
def xy():
    return batch()
