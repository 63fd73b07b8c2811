"""Every attack at a small budget, for the contract tests on 8x8 inputs."""

import torch

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import MassCenterAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TargetedAttack
from captum_robust.attacks import TopKAttack

FAST = {"epsilon": 0.1, "step_size": 0.05, "n_steps": 2}


def every_attack(model, attribution) -> list[tuple[object, dict]]:
    """One instance of each attack, with the extra arguments its ``perturb`` needs."""
    region = torch.zeros(8, 8)
    region[:2] = 1
    return [
        (TopKAttack(model, attribution, k=5, **FAST), {}),
        (MassCenterAttack(model, attribution, **FAST), {}),
        (TargetedAttack(model, attribution, **FAST), {"target_region": region}),
        (ManipulationAttack(model, attribution, **FAST), {"target_map": region}),
        (RandomAttack(model, attribution, criterion_k=5, **FAST), {}),
    ]
