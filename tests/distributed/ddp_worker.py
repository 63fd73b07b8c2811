"""Train two steps with every regularizer, with or without DistributedDataParallel.

Usage: ``python ddp_worker.py OUT`` (one process, no DDP: the reference) or
``torchrun --nproc_per_node 2 ddp_worker.py OUT`` (gloo, the model wrapped in
plain ``DistributedDataParallel``). Rank ``r`` of ``R`` writes
``OUT/ddp.rank{r}.pt``; the single process writes ``OUT/single.pt``. Each holds,
for every configuration, the loss and the parameter gradients of two training
steps (after DDP's all-reduce, i.e. averaged over the ranks).

Data: a fixed batch of 8; under DDP rank ``r`` takes the contiguous half
``x[4r : 4r + 4]``. All these losses are batch means, so the mean of the two
half-batch losses is the full-batch loss and DDP's averaged gradient is the
full-batch gradient.

* Deterministic configurations ("full"): the single process computes
  ``reg.loss`` on the whole batch.
* Random configurations ("halves": uniform neighbours, Hessian directions,
  random starts): a regularizer's generator draws noise shaped like its batch,
  so rank 1 of a DDP run cannot draw what the second half of a full-batch draw
  would be. Each rank gets its own regularizer seeded ``SEED + rank``, and the
  single process reproduces exactly that: one regularizer per half with the same
  seeds, each half's loss backpropagated separately and the results averaged.
  This still checks that DDP's double backward gives the non-DDP gradient.
  Batch-norm in training mode is compared the same way: each rank normalises
  its own half with that half's statistics.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty
from captum_robust.regularizers import replace_global_pool
from captum_robust.regularizers import top_gap_penalty

BATCH, CLASSES, SIZE, SEED = 8, 3, 8, 100
BN_TRAIN = {"batch_norm": True, "bn_train": True}


def make_model(
    batch_norm: bool = False, bn_train: bool = False, top_gap: bool = False
) -> nn.Module:
    """A small seeded softplus CNN (twice differentiable, no ReLU kinks)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 6, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(6))
    layers += [
        nn.Softplus(beta=3.0),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.Softplus(beta=3.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, CLASSES),
    ]
    model = nn.Sequential(*layers)
    if batch_norm and not bn_train:
        # Non-trivial statistics, then eval mode: batch-norm in training mode
        # has no third derivative (HessianNorm refuses it).
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.2, 0.2)
            model[1].running_var.uniform_(0.5, 1.5)
        model[1].eval()
    if top_gap:
        replace_global_pool(model, 0.25, l1_weight=0.1)
    return model


def make_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen)
    y = torch.arange(BATCH) % CLASSES
    mask = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    return x, y, mask


def ce_with_top_gap(model: nn.Module):
    def loss(model_, x, y, mask):
        return F.cross_entropy(model_(x), y) + top_gap_penalty(model)

    return loss


# name -> (kind, model options, factory(seed) -> loss(model, x, y, mask))
def configs() -> dict:
    # Weights large enough that every term visibly changes the gradient.
    lga = dict(eps=0.5, l2_weight=10.0, cos_weight=10.0)
    ig = dict(eps=0.3, weight=10.0, n_steps=4, approx_factor=2, attack_steps=2)
    ig_step = dict(attack_step_size=0.1)
    return {
        # Plain cross-entropy: the test checks that each term changes it.
        "ce": ("full", {}, lambda s: _cross_entropy),
        "ce_bn": ("full", {"batch_norm": True}, lambda s: _cross_entropy),
        "lga_gradient": (
            "full",
            {},
            lambda s: _plain(
                LocalGradientAlignment(neighbour="gradient", **lga, seed=s)
            ),
        ),
        "lga_gradient_attached": (
            "full",
            {},
            lambda s: _plain(
                LocalGradientAlignment(
                    neighbour="gradient", detach_source=False, **lga, seed=s
                )
            ),
        ),
        "lga_gradient_bn_eval": (
            "full",
            {"batch_norm": True},
            lambda s: _plain(
                LocalGradientAlignment(neighbour="gradient", **lga, seed=s)
            ),
        ),
        "lga_uniform": (
            "halves",
            {},
            lambda s: _plain(LocalGradientAlignment(**lga, seed=s)),
        ),
        "lga_adversarial": (
            "halves",
            {},
            lambda s: _plain(
                LocalGradientAlignment(
                    neighbour="adversarial", **lga, attack_steps=2, seed=s
                )
            ),
        ),
        "hessian": ("halves", {}, lambda s: _plain(HessianNorm(weight=1000.0, seed=s))),
        "hessian_bn_eval": (
            "halves",
            {"batch_norm": True},
            lambda s: _plain(HessianNorm(weight=1000.0, n_samples=2, seed=s)),
        ),
        "ig_norm": (
            "full",
            {},
            lambda s: _plain(IGNorm(**ig, **ig_step, random_start=False, seed=s)),
        ),
        "ig_norm_random": (
            "halves",
            {},
            lambda s: _plain(IGNorm(**ig, **ig_step, seed=s)),
        ),
        "ig_sum_norm": (
            "full",
            {},
            lambda s: _plain(IGSumNorm(**ig, **ig_step, random_start=False, seed=s)),
        ),
        "enhanced": (
            "full",
            {},
            lambda s: _plain(
                EnhancedAttributionRegularizer(
                    **ig, **ig_step, random_start=False, seed=s
                )
            ),
        ),
        "consistency": (
            "full",
            {},
            lambda s: _plain(
                ExplanationConsistencyWeights(
                    eps=0.1, attack_steps=2, random_start=False, seed=s
                )
            ),
        ),
        "consistency_random": (
            "halves",
            {},
            lambda s: _plain(
                ExplanationConsistencyWeights(eps=0.1, attack_steps=2, seed=s)
            ),
        ),
        "masked": (
            "full",
            {},
            lambda s: _masked(MaskedGradientPenalty(weight=1e5)),
        ),
        # Batch-norm in training mode normalises each rank's batch with its own
        # statistics, so the single-process reference is the per-half one.
        "ce_bn_train": ("halves", BN_TRAIN, lambda s: _cross_entropy),
        "lga_gradient_bn_train": (
            "halves",
            BN_TRAIN,
            lambda s: _plain(
                LocalGradientAlignment(neighbour="gradient", **lga, seed=s)
            ),
        ),
        "ig_sum_norm_bn_train": (
            "halves",
            BN_TRAIN,
            lambda s: _plain(IGSumNorm(**ig, **ig_step, seed=s)),
        ),
        "top_gap": ("full", {"top_gap": True}, lambda s: None),
        "top_gap_lga": (
            "full",
            {"top_gap": True},
            lambda s: _plain(
                LocalGradientAlignment(neighbour="gradient", **lga, seed=s)
            ),
        ),
    }


def _cross_entropy(model, x, y, mask):
    return F.cross_entropy(model(x), y)


def _plain(reg):
    return lambda model, x, y, mask: reg.loss(model, x, y)


def _masked(reg):
    return lambda model, x, y, mask: reg.loss(model, x, y, mask)


def run_config(name, kind, options, factory, rank, world):
    """Two SGD steps; returns [(loss, {param: grad}), ...] for both steps."""
    model = make_model(**options)
    inner = model
    if world > 1:
        model = DistributedDataParallel(model)
    step_fn = factory(SEED + rank)
    if step_fn is None:  # Top-GAP alone: its L1 penalty lives on the inner model
        step_fn = ce_with_top_gap(inner)
    elif options.get("top_gap"):
        reg_fn = step_fn

        def step_fn(m, x, y, mask):
            return reg_fn(m, x, y, mask) + top_gap_penalty(inner)

    optimizer = torch.optim.SGD(inner.parameters(), lr=0.1)
    x, y, mask = make_batch()
    out = []
    for step in range(2):
        xs = x + 0.01 * step  # a different batch on the second step
        optimizer.zero_grad()
        if world > 1:
            half = slice(BATCH // world * rank, BATCH // world * (rank + 1))
            loss = step_fn(model, xs[half], y[half], mask[half])
            loss.backward()
            # DDP averaged the gradients; average the loss for the record.
            record = loss.detach().clone()
            dist.all_reduce(record)
            record /= world
        elif kind == "full":
            loss = step_fn(model, xs, y, mask)
            loss.backward()
            record = loss.detach()
        else:
            raise AssertionError("halves are computed by run_halves")
        grads = {n: p.grad.detach().clone() for n, p in inner.named_parameters()}
        out.append((float(record), grads))
        optimizer.step()
    return out


def run_halves(name, options, factory, world=2):
    """One process, no DDP: what ``world`` DDP ranks with seeds SEED + r compute."""
    model = make_model(**options)
    step_fns = [factory(SEED + r) for r in range(world)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, mask = make_batch()
    out = []
    for step in range(2):
        xs = x + 0.01 * step
        optimizer.zero_grad()
        total = 0.0
        for r in range(world):
            half = slice(BATCH // world * r, BATCH // world * (r + 1))
            loss = step_fns[r](model, xs[half], y[half], mask[half]) / world
            loss.backward()
            total += float(loss.detach())
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        out.append((total, grads))
        optimizer.step()
    return out


def main(output: Path) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    results = {}
    only = os.environ.get("DDP_WORKER_ONLY")
    for name, (kind, options, factory) in configs().items():
        if only and name not in only.split(","):
            continue
        if world == 1 and kind == "halves":
            results[name] = run_halves(name, options, factory)
        else:
            results[name] = run_config(name, kind, options, factory, rank, world)
    if world > 1:
        # A training-mode batch-norm layer is refused through the DDP wrapper too.
        bn = make_model(batch_norm=True)
        bn.train()
        try:
            HessianNorm(seed=0).loss(DistributedDataParallel(bn), *make_batch()[:2])
        except ValueError as err:
            results["_bn_train_refused"] = str(err)
        # SyncBatchNorm in training mode is refused by every regularizer (its
        # backward is not twice differentiable); checked before any forward pass,
        # so it shows on CPU ranks too, where SyncBatchNorm itself cannot run.
        sync = nn.SyncBatchNorm.convert_sync_batchnorm(make_model(**BN_TRAIN))
        refused = []
        for reg in (
            LocalGradientAlignment(seed=0),
            IGSumNorm(seed=0),
            MaskedGradientPenalty(),
        ):
            try:
                if isinstance(reg, MaskedGradientPenalty):
                    reg.loss(sync, *make_batch())
                else:
                    reg.loss(sync, *make_batch()[:2])
            except ValueError as err:
                refused.append(str(err))
        results["_sync_bn_refused"] = refused
        dist.barrier()
        dist.destroy_process_group()
    name = f"ddp.rank{rank}.pt" if world > 1 else "single.pt"
    torch.save(results, output / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
