"""Speed of the attribution attacks: batched loop vs per-image calls, and per-step
overhead against a minimal hand-written PyTorch loop doing the same math.

Prints ratios measured in this run; run with `make bench`.
"""

from __future__ import annotations

import argparse

import torch
from _timing import best_time, report
from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

from captum_robust.attacks import TopKAttack
from captum_robust.attr import softplus_surrogate
from captum_robust.metrics._topk import topk_intersection_flat, topk_mask

EPS, ALPHA, K, BETA = 8 / 255, 1 / 255, 100, 10.0


def make_model(seed: int = 0) -> nn.Module:
    """A small CIFAR-sized CNN (3x32x32 -> 10), the papers' 32x32 setting."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


# ------------------------------------------------- the hand-written reference


def _normalized(attr: Tensor) -> Tensor:
    flat = attr.abs().sum(dim=1).flatten(1)
    return flat / flat.sum(dim=1, keepdim=True).clamp_min(1e-38)


def _saliency(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool):
    out = model(x)
    (grad,) = torch.autograd.grad(
        out.gather(1, y[:, None]).sum(), x, create_graph=create_graph
    )
    return grad, out


def _ig(model: nn.Module, x: Tensor, y: Tensor, n: int, create_graph: bool):
    """Right Riemann sum, zero baseline: points i/n, i = 1..n."""
    alphas = torch.arange(1, n + 1, dtype=x.dtype) / n
    scaled = (alphas.view(n, 1, 1, 1, 1) * x.unsqueeze(0)).flatten(0, 1)
    if not create_graph:
        scaled = scaled.detach().requires_grad_()
    out = model(scaled)
    (grad,) = torch.autograd.grad(
        out.gather(1, y.repeat(n)[:, None]).sum(), scaled, create_graph=create_graph
    )
    return grad.view(n, *x.shape).mean(dim=0) * x, None


def reference_attack(model, surrogate, x0, y, *, method, n_steps, ig_steps=16):
    def attribute(m, x, create_graph):
        if method == "saliency":
            return _saliency(m, x, y, create_graph)
        return _ig(m, x, y, ig_steps, create_graph)

    xr = x0.detach().requires_grad_()
    attr, out = attribute(model, xr, False)
    if out is None:
        with torch.no_grad():
            out = model(x0)
    map0, label = _normalized(attr), out.argmax(dim=1)
    top = topk_mask(map0, K).to(x0.dtype)
    best, best_crit = x0.clone(), torch.ones(len(x0))
    x = x0
    for _ in range(n_steps):
        xg = x.detach().requires_grad_()
        attr, _ = attribute(surrogate, xg, True)
        loss = (_normalized(attr) * top).sum()
        (direction,) = torch.autograd.grad(loss, xg)
        x = (x0 + (x - ALPHA * direction.sign() - x0).clamp(-EPS, EPS)).clamp(0, 1)
        xr = x.detach().requires_grad_()
        attr, out = attribute(model, xr, False)
        if out is None:
            with torch.no_grad():
                out = model(x)
        crit = topk_intersection_flat(map0, _normalized(attr), K)
        better = (out.argmax(dim=1) == label) & (crit < best_crit)
        best = torch.where(better.view(-1, 1, 1, 1), x, best)
        best_crit = torch.where(better, crit, best_crit)
    return best


# ------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="attack steps, Saliency")
    parser.add_argument("--ig-steps", type=int, default=3, help="attack steps, IG")
    parser.add_argument("--ig-points", type=int, default=16, help="IG Riemann points")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"device: cpu, torch threads: {torch.get_num_threads()}")

    model = make_model()
    surrogate = softplus_surrogate(model, beta=BETA).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    print(
        f"TopKAttack on a 3x32x32 CNN, batch {args.batch}, k {K}, eps 8/255, "
        f"softplus beta {BETA}; IG: {args.ig_points} right-Riemann points"
    )

    methods = {
        "Saliency": (Saliency(model), {}, "saliency", args.steps),
        "IntegratedGradients": (
            IntegratedGradients(model),
            {"n_steps": args.ig_points, "method": "riemann_right"},
            "ig",
            args.ig_steps,
        ),
    }
    for name, (attribution, kwargs, ref_method, steps) in methods.items():
        attack = TopKAttack(
            model,
            attribution,
            k=K,
            epsilon=EPS,
            step_size=ALPHA,
            n_steps=steps,
            surrogate_beta=BETA,
            attribution_kwargs=kwargs,
        )

        def ours(a=attack, inputs=x, labels=y):
            return a.perturb(inputs, labels)

        def reference(m=ref_method, n=steps):
            return reference_attack(
                model, surrogate, x, y, method=m, n_steps=n, ig_steps=args.ig_points
            )

        # Same inputs, same result: the two loops do the same computation.
        agree = (ours() - reference()).abs().max().item()
        t_ours = best_time(ours, repeats=args.repeats)
        t_ref = best_time(reference, repeats=args.repeats)
        print(
            f"{name} ({steps} steps): per step ours {t_ours / steps * 1e3:.1f} ms, "
            f"hand-written loop {t_ref / steps * 1e3:.1f} ms: overhead "
            f"{t_ours / t_ref:.3f}x (target <= 1.15x); max |ours - hand-written| = "
            f"{agree:.1e}"
        )

        def one_at_a_time(a=attack):
            for i in range(len(x)):
                a.perturb(x[i : i + 1], y[i : i + 1])

        t_single = best_time(one_at_a_time, repeats=1)
        report(
            f"{name}: batch of {len(x)} vs one image at a time",
            t_ours,
            t_single,
            ">= 5x",
        )


if __name__ == "__main__":
    main()
