"""Models shared by the benchmark scripts."""

import torch


def small_cnn() -> torch.nn.Module:
    """A seeded, untrained CNN, 3 x H x W -> 10 classes (adaptive pool: any size)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 16, 10),
    ).eval()
