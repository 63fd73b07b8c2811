"""Training-step time of each regularizer, against a plain cross-entropy step and
against a minimal hand-written implementation of the same formula.

Every step is zero_grad + loss + backward + SGD step on the same model and batch.
The hand-written references follow the papers' code (Joo et al.'s PyTorch code for
local gradient alignment and the Hessian norm, Ross et al.'s penalty, Chen et al.'s
and Sarkar et al.'s objectives batched over the path points) without argument
checks, state bookkeeping or options. Prints ratios measured in this run; run with
`make bench`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import best_time, report
from torch import nn

from captum_robust.regularizers import (
    EnhancedAttributionRegularizer,
    ExplanationConsistencyWeights,
    HessianNorm,
    IGNorm,
    IGSumNorm,
    LocalGradientAlignment,
    MaskedGradientPenalty,
    TopGAP,
)

EPS = 8 / 255
TARGET = ">= 0.91x (ours <= 1.1x the reference)"


class LeNet(nn.Module):
    """Joo et al.'s CIFAR-10 LeNet, softplus(beta=3) activations."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.Softplus(3.0), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Softplus(3.0), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(400, 120), nn.Softplus(3.0),
            nn.Linear(120, 84), nn.Softplus(3.0), nn.Linear(84, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.head(self.features(x))


class PoolNet(nn.Module):
    """A small all-convolutional net with global pooling, for Top-GAP."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = pool
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class HandTopK(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x):
        return x.flatten(2).topk(self.k, dim=2).values.mean(2)[..., None, None]


# ------------------------------------------------------------ hand-written formulas


def ref_lga(model, x, y, gen, l2_w=0.01, cos_w=1.0):
    x = x.clone().requires_grad_(True)
    out = model(x)
    ce = F.cross_entropy(out, y)
    (g,) = torch.autograd.grad(out[torch.arange(len(y)), y].sum(), x, retain_graph=True)
    z = EPS * (2 * torch.rand(x.shape, generator=gen, device=x.device) - 1)
    x_r = (x + z).detach().requires_grad_(True)
    out_r = model(x_r)
    (g_r,) = torch.autograd.grad(
        out_r[torch.arange(len(y)), y].sum(), x_r, create_graph=True
    )
    cos = F.cosine_similarity(g.flatten(1), g_r.flatten(1), eps=1e-8).mean()
    l2 = (g - g_r).flatten(1).norm(dim=1).square().mean()
    return ce + l2_w * l2 + cos_w * (1 - cos) / 2


def ref_hessian(model, x, y, gen, lamb=1e-3):
    x = x.clone().requires_grad_(True)
    out = model(x)
    ce = F.cross_entropy(out, y)
    v = torch.randn(x.shape, generator=gen, device=x.device)
    (g,) = torch.autograd.grad(out[torch.arange(len(y)), y].sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad((v * g).sum(), x, create_graph=True)
    return ce + lamb * hv.flatten(1).pow(2).sum(1).mean()


def ref_masked(model, x, y, mask, weight=1000.0):
    x = x.clone().requires_grad_(True)
    log_probs = model(x).log_softmax(dim=1)
    (g,) = torch.autograd.grad(log_probs.sum(), x, create_graph=True)
    outside = (~mask).unsqueeze(1).to(x.dtype)
    return (
        F.nll_loss(log_probs, y)
        + weight * (g * outside).flatten(1).pow(2).sum(1).mean()
    )


def path_ig(model, start, end, y, alphas, fn, create_graph):
    z = start[None] + alphas.view(-1, 1, 1, 1, 1) * (end - start)[None]
    z = z.flatten(0, 1)
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(
        fn(model(z), y.repeat(len(alphas))).sum(), z, create_graph=create_graph
    )
    return (end - start) * g.view(len(alphas), *start.shape).mean(0)


def ce_rows(out, y):
    return F.cross_entropy(out, y, reduction="none")


def prob_rows(out, y):
    return out.softmax(1).gather(1, y[:, None])[:, 0]


def ref_inner_max(model, x, y, gen, cfg, beta, with_loss):
    n, af, steps, step = cfg["n_steps"], cfg["approx_factor"], cfg["steps"], cfg["a"]
    approx = torch.arange(af, n + 1, af, device=x.device) / n
    adv = x + EPS * (2 * torch.rand(x.shape, generator=gen, device=x.device) - 1)
    adv = adv.clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        obj = beta * path_ig(model, x, adv, y, approx, ce_rows, True).abs().sum()
        if with_loss:
            obj = obj + F.cross_entropy(model(adv), y, reduction="sum")
        (g,) = torch.autograd.grad(obj, adv)
        adv = torch.min(torch.max(adv.detach() + step * g.sign(), x - EPS), x + EPS)
        adv = adv.clamp(0, 1)
    return adv.detach()


def ref_ig_norm(model, x, y, gen, cfg, lamb=1.0):
    adv = ref_inner_max(model, x, y, gen, cfg, 1.0, False)
    full = torch.arange(1, cfg["n_steps"] + 1, device=x.device) / cfg["n_steps"]
    ig = path_ig(model, x, adv, y, full, ce_rows, True)
    return F.cross_entropy(model(x), y) + lamb * ig.abs().flatten(1).sum(1).mean()


def ref_ig_sum_norm(model, x, y, gen, cfg, beta=0.1):
    adv = ref_inner_max(model, x, y, gen, cfg, beta, True)
    full = torch.arange(1, cfg["n_steps"] + 1, device=x.device) / cfg["n_steps"]
    ig = path_ig(model, x, adv, y, full, ce_rows, True)
    return F.cross_entropy(model(adv), y) + beta * ig.abs().flatten(1).sum(1).mean()


def ref_enhanced(model, x, y, gen, cfg, lamb=0.1):
    adv = ref_inner_max(model, x, y, gen, cfg, lamb, True)
    m = cfg["n_steps"]
    full = torch.arange(1, m + 1, device=x.device) / m
    zero = torch.zeros_like(x)
    b = path_ig(model, zero, x, y, full, prob_rows, True).flatten(1)
    c = -path_ig(model, x, adv, y, full, ce_rows, True).flatten(1)
    z = (full.view(-1, 1, 1, 1, 1) * adv[None]).flatten(0, 1).requires_grad_(True)
    probs = model(z).softmax(1)
    yy = y.repeat(m)
    neg = probs.detach().scatter(1, yy[:, None], -1.0).argmax(1)
    (gt,) = torch.autograd.grad(
        probs.gather(1, yy[:, None]).sum(), z, create_graph=True
    )
    (gn,) = torch.autograd.grad(
        probs.gather(1, neg[:, None]).sum(), z, create_graph=True
    )
    ig_t = (adv * gt.view(m, *x.shape).mean(0)).sum(1).flatten(1)
    ig_n = (adv * gn.view(m, *x.shape).mean(0)).sum(1).flatten(1)
    r_class = (ig_t.log_softmax(1) - ig_n.log_softmax(1)).mean(1)
    same = torch.sign(b.detach()) == torch.sign(c.detach())
    r_change = torch.where(same, b * c, c.abs()).sum(1)
    return F.cross_entropy(model(adv), y) + lamb * (r_class + r_change).mean()


def saliency(model, x, y, create_graph):
    leaf = x if x.requires_grad else x.detach().requires_grad_(True)
    out = model(leaf)
    (g,) = torch.autograd.grad(
        out[torch.arange(len(y)), y].sum(), leaf, create_graph=create_graph
    )
    return g.abs().sum(1).flatten(1), out.detach()


def ref_consistency(model, x, y, gen, steps=10, a=2 / 255, q=0.5):
    ref, out = saliency(model, x, y, False)
    pred = out.argmax(1)
    k = round(q * ref.shape[1])
    bg = torch.zeros_like(ref, dtype=torch.bool)
    bg.scatter_(1, torch.argsort(ref, dim=1, stable=True)[:, :k], True)
    bg = bg.view(x.shape[0], 1, *x.shape[2:]).to(x.dtype)
    noise = EPS * (2 * torch.rand(x.shape, generator=gen, device=x.device) - 1)
    adv = x + ((x + noise).clamp(0, 1) - x) * bg
    best = torch.ones(x.shape[0], device=x.device)
    for step in range(steps + 1):
        leaf = adv.detach().requires_grad_(True)
        heat, out = saliency(model, leaf, y, True)
        sim = F.cosine_similarity(heat, ref, eps=1e-12)
        keep = (out.argmax(1) == pred) & (sim.detach() < best)
        best = torch.where(keep, sim.detach(), best)
        if step == steps:
            break
        (g,) = torch.autograd.grad(sim.sum(), leaf)
        adv = leaf.detach() - a * g.sign()
        adv = torch.min(torch.max(adv, x - EPS), x + EPS).clamp(0, 1)
        adv = x + (adv - x) * bg
    v = 1 - best
    return (v * F.cross_entropy(model(x), y, reduction="none")).mean()


# ------------------------------------------------------------------------ driver


def stepper(model, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def paired(ours, reference, repeats, device):
    """Best times of two steps measured in alternation, so that a change in the load
    of a shared machine affects both alike."""
    best_ours = best_ref = float("inf")
    for _ in range(repeats):
        best_ours = min(best_ours, best_time(ours, repeats=1, device=device))
        best_ref = min(best_ref, best_time(reference, repeats=1, device=device))
    return best_ours, best_ref


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads on the CPU (default 2)"
    )
    args = parser.parse_args()
    torch.set_num_threads(
        args.threads if args.device == "cpu" else torch.get_num_threads()
    )
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"device: {device}, torch threads: {threads}, batch {args.batch}")

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    mask = torch.zeros(args.batch, 32, 32, dtype=torch.bool, device=device)
    mask[:, 8:24, 10:22] = True
    torch.manual_seed(0)
    model = LeNet().to(device)
    cfg = {"n_steps": 10, "approx_factor": 5, "steps": 3, "a": 2 / 255}
    ig_kw = dict(
        n_steps=cfg["n_steps"], approx_factor=cfg["approx_factor"],
        attack_steps=cfg["steps"], attack_step_size=cfg["a"],
    )  # fmt: skip

    def ref_gen():
        return torch.Generator(device=device).manual_seed(0)

    def time_step(loss_fn, repeats=args.repeats):
        return best_time(stepper(model, loss_fn), repeats=repeats, device=device)

    plain = time_step(lambda: F.cross_entropy(model(x), y))
    print(f"{'plain cross-entropy step':<48} {plain * 1e3:9.1f} ms")

    cases = []
    lga, g1 = LocalGradientAlignment(EPS, seed=0), ref_gen()
    cases.append(
        (
            "LocalGradientAlignment.loss",
            lambda: lga.loss(model, x, y),
            lambda: ref_lga(model, x, y, g1),
        )
    )
    hess, g2 = HessianNorm(seed=0), ref_gen()
    cases.append(
        (
            "HessianNorm.loss",
            lambda: hess.loss(model, x, y),
            lambda: ref_hessian(model, x, y, g2),
        )
    )
    rrr = MaskedGradientPenalty()
    cases.append(
        (
            "MaskedGradientPenalty.loss",
            lambda: rrr.loss(model, x, y, mask),
            lambda: ref_masked(model, x, y, mask),
        )
    )
    ign, g3 = IGNorm(EPS, **ig_kw, seed=0), ref_gen()
    cases.append(
        (
            "IGNorm.loss (m=10, 3 PGD steps)",
            lambda: ign.loss(model, x, y),
            lambda: ref_ig_norm(model, x, y, g3, cfg),
        )
    )
    igs, g4 = IGSumNorm(EPS, **ig_kw, seed=0), ref_gen()
    cases.append(
        (
            "IGSumNorm.loss (m=10, 3 PGD steps)",
            lambda: igs.loss(model, x, y),
            lambda: ref_ig_sum_norm(model, x, y, g4, cfg),
        )
    )
    enh, g5 = EnhancedAttributionRegularizer(EPS, **ig_kw, seed=0), ref_gen()
    cases.append(
        (
            "EnhancedAttributionRegularizer.loss (m=10)",
            lambda: enh.loss(model, x, y),
            lambda: ref_enhanced(model, x, y, g5, cfg),
        )
    )
    ecw = ExplanationConsistencyWeights(eps=EPS, softplus_beta=None, seed=0)
    g6 = ref_gen()
    cases.append(
        (
            "ExplanationConsistencyWeights.loss (10 steps)",
            lambda: ecw.loss(model, x, y),
            lambda: ref_consistency(model, x, y, g6),
        )
    )
    for name, ours_fn, ref_fn in cases:
        ours, reference = paired(
            stepper(model, ours_fn), stepper(model, ref_fn), args.repeats, device
        )
        print(f"  {name}: {ours / plain:.1f}x a plain step")
        report(f"  {name} vs hand-written", ours, reference, TARGET)

    # Top-GAP: a step of a net pooled by TopGAP against one with GAP and one with a
    # hand-written top-k pooling.
    torch.manual_seed(0)
    nets = {
        "gap": PoolNet(nn.AdaptiveAvgPool2d(1)).to(device),
        "topgap": PoolNet(TopGAP(0.25)).to(device),
        "hand": PoolNet(HandTopK(16)).to(device),
    }
    steps = {
        key: stepper(net, lambda net=net: F.cross_entropy(net(x), y))
        for key, net in nets.items()
    }
    times = {}
    times["topgap"], times["gap"] = paired(
        steps["topgap"], steps["gap"], args.repeats, device
    )
    _, times["hand"] = paired(steps["topgap"], steps["hand"], args.repeats, device)
    print(f"  TopGAP(0.25) step: {times['topgap'] / times['gap']:.2f}x a GAP step")
    report(
        "  TopGAP vs hand-written top-k pooling", times["topgap"], times["hand"], TARGET
    )


if __name__ == "__main__":
    main()
