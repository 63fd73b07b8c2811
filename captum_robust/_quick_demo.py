"""A short tour: attributions of a small digit classifier and their metrics."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, Saliency
from sklearn.datasets import load_digits
from torch import nn

from captum_robust.metrics import (
    center_of_mass_shift,
    kendall_tau,
    spearman_correlation,
    topk_intersection,
)


def _train_digit_classifier(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for batch in torch.randperm(1500, generator=generator).split(50):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model, images[1500:], labels[1500:]


def run_quick_demo(seed: int = 0) -> dict[str, float]:
    """Train a small digit classifier and print how stable its explanations are.

    Compares Saliency with Integrated Gradients on the same inputs, and each
    method with itself on inputs with small uniform noise.
    """
    print("Training a small CNN on scikit-learn's digits (seconds)...")
    model, images, labels = _train_digit_classifier(seed)
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    print(f"test accuracy: {accuracy:.3f} on {len(labels)} held-out digits")

    generator = torch.Generator().manual_seed(seed)
    noisy = (
        images + (torch.rand(images.shape, generator=generator) - 0.5) * 0.1
    ).clamp(0, 1)
    saliency, gradients = Saliency(model), IntegratedGradients(model)
    saliency_map = saliency.attribute(images, target=labels)
    ig_map = gradients.attribute(images, target=labels, n_steps=32)
    pairs = {
        "Saliency vs IntegratedGradients": (saliency_map, ig_map),
        "Saliency, clean vs noisy input": (
            saliency_map,
            saliency.attribute(noisy, target=labels),
        ),
        "IntegratedGradients, clean vs noisy": (
            ig_map,
            gradients.attribute(noisy, target=labels, n_steps=32),
        ),
    }
    header = f"{'comparison':<37}{'top-8':>8}{'kendall':>9}{'spearman':>10}"
    print(f"\n{header}{'shift px':>10}")
    summary = {}
    for name, (a, b) in pairs.items():
        row = {
            "topk": topk_intersection(a, b, k=8).mean().item(),
            "kendall": kendall_tau(a, b).nanmean().item(),
            "spearman": spearman_correlation(a, b).nanmean().item(),
            "shift": center_of_mass_shift(a, b).nanmean().item(),
        }
        summary[name] = row
        print(
            f"{name:<37}{row['topk']:>8.3f}{row['kendall']:>9.3f}"
            f"{row['spearman']:>10.3f}{row['shift']:>10.2f}"
        )
    return summary
