"""A small digit CNN trained on the spot (seconds), shared by the attack tests."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


def make_cnn() -> nn.Module:
    """1x16x16 -> 10 classes; BatchNorm so that buffer preservation is tested."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


@dataclass
class Digits:
    model: nn.Module
    images: torch.Tensor  # (N, 1, 16, 16) in [0, 1], held out, correctly classified
    labels: torch.Tensor


def train_on_digits(
    model: nn.Module, epochs: int
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Train ``model`` on the first 1,500 scikit-learn digits (16x16, seeded Adam).

    Returns the model in eval mode with no ``.grad`` left, and every digit image
    (N, 1, 16, 16) in [0, 1] with its label; images 1,500 onwards are held out.
    """
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=16, mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0)
    labels = torch.tensor(data.target)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(1500, generator=generator).split(64):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, images, labels


@pytest.fixture(scope="session")
def digit_trainer():
    """:func:`train_on_digits`, for test modules that train their own model."""
    return train_on_digits


@pytest.fixture(scope="session")
def digits() -> Digits:
    torch.manual_seed(0)
    model, images, labels = train_on_digits(make_cnn(), epochs=2)
    test_x, test_y = images[1500:], labels[1500:]
    with torch.no_grad():
        correct = model(test_x).argmax(dim=1) == test_y
    assert correct.float().mean() > 0.8
    return Digits(model, test_x[correct][:64], test_y[correct][:64])


class TinyNet(nn.Module):
    """Untrained, for fast contract tests: 1x8x8 -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_x() -> torch.Tensor:
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
