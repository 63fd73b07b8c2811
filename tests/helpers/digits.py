"""Models trained on the spot (seconds) on scikit-learn's digits, upsampled to 16x16."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

# Images from here onwards are never trained on.
HELD_OUT = 1500


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
        for batch in torch.randperm(HELD_OUT, generator=generator).split(64):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, images, labels
