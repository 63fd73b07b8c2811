"""Differentiable LRP-epsilon and Guided Backprop steps against hand-written ones.

One step: the map of a softplus network, a loss on the map, and its backward to
the input (what an attack does per iteration). The reference is the same rule
written by hand for the same Sequential network: a recorded forward pass, then
a reverse loop of ``torch.autograd.grad(..., create_graph=True)`` per layer.
Prints the time ratio ours / hand-written (target <= 1.2x) and the largest
absolute difference of the two input gradients.

    python benchmarks/bench_propagation.py [--size 32] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved_best_times
from _timing import synchronize
from captum.attr import LRP
from captum.attr import GuidedBackprop
from torch import nn

from captum_robust.attr import differentiable


class _Flat(nn.Sequential):
    """A Sequential whose flatten before the classifier is functional (Captum's
    LRP has no rule for nn.Flatten)."""

    def forward(self, x):
        for layer in self:
            if isinstance(layer, nn.Linear):
                x = x.flatten(1)
            x = layer(x)
        return x


def make_cnn(size: int, beta: float) -> nn.Module:
    torch.manual_seed(0)
    act = lambda: nn.Softplus(beta=beta)  # noqa: E731
    return _Flat(
        nn.Conv2d(3, 32, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), act(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), act(), nn.AdaptiveAvgPool2d(4),
        nn.Linear(64 * 16, 10),
    ).eval()  # fmt: skip


def hand_lrp(model: nn.Sequential, x: torch.Tensor, target: torch.Tensor):
    """LRP-epsilon (1e-9, Captum's default) by hand: R_in = a * J^T (R / z)."""
    acts, outs = [], []
    h = x
    for layer in model:
        if isinstance(layer, nn.Softplus):
            h = layer(h)
            continue
        if isinstance(layer, nn.Linear):
            h = h.flatten(1)
        a = h.view_as(h)
        h = layer(a)
        acts.append(a)
        outs.append(h)
    score = h.gather(1, target[:, None])
    grad = torch.zeros_like(h).scatter(1, target[:, None], 1.0)
    for a, z in zip(reversed(acts), reversed(outs), strict=True):
        grad = grad.reshape(z.shape)
        shift = torch.where(z.detach() < 0, -1e-9, 1e-9)
        (c,) = torch.autograd.grad(z, a, grad / (z + shift), create_graph=True)
        grad = a * c
    rel = grad.reshape(x.shape)
    # Relevance propagated from 1 at the target, scaled by the output (Captum).
    return rel * score.reshape(-1, 1, 1, 1)


def hand_guided(model: nn.Sequential, x: torch.Tensor, target: torch.Tensor):
    """Guided Backprop by hand: relu(g * softplus') at every activation."""
    pres, layers = [], []
    h = x
    for layer in model:
        if isinstance(layer, nn.Linear):
            h = h.flatten(1)
        if isinstance(layer, nn.Softplus):
            pres.append(h)
        layers.append((layer, h))
        h = layer(h)
    grad = torch.zeros_like(h).scatter(1, target[:, None], 1.0)
    for layer, a in reversed(layers):
        if isinstance(layer, nn.Softplus):
            grad = torch.relu(grad * torch.sigmoid(layer.beta * a))
            continue
        a_ = a.detach().requires_grad_()
        out = layer(a_)
        (grad,) = torch.autograd.grad(
            out, a_, grad.reshape(out.shape), create_graph=True
        )
        grad = grad.reshape(a.shape)
    return grad.reshape(x.shape)


def step(attr_fn, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    loss = attr_fn(x, target).pow(2).sum()
    (g,) = torch.autograd.grad(loss, x)
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    dev = torch.device(args.device)
    model = make_cnn(args.size, beta=10.0).to(dev)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    target = torch.arange(args.batch, device=dev) % 10
    lrp = differentiable(LRP(model))
    gb = differentiable(GuidedBackprop(model))
    cases = [
        ("LRP-epsilon", lambda z, t: lrp.attribute(z, target=t), hand_lrp),
        ("GuidedBackprop", lambda z, t: gb.attribute(z, target=t), hand_guided),
    ]
    for name, ours_fn, ref_fn in cases:
        g_ours = step(ours_fn, x, target)
        g_ref = step(lambda z, t, f=ref_fn: f(model, z, t), x, target)
        diff = (g_ours - g_ref).abs().max().item()
        scale = g_ref.abs().max().item()
        t_ours, t_ref = interleaved_best_times(
            [
                lambda f=ours_fn: step(f, x, target),
                lambda r=ref_fn: step(lambda z, t: r(model, z, t), x, target),
            ],
            repeats=args.repeats,
            device=dev,
        )
        synchronize(dev)
        print(
            f"{name:<16} {args.size}px batch {args.batch}: ours {t_ours * 1e3:8.1f} ms"
            f"  hand-written {t_ref * 1e3:8.1f} ms  ratio {t_ours / t_ref:5.2f}x"
            f" (target <= 1.2x)  max |diff| {diff:.2e} (max |grad| {scale:.2e})"
        )


if __name__ == "__main__":
    main()
