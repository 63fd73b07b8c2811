"""Attacks on attributions, as ``captum.robust.Perturbation`` subclasses.

Each attack perturbs inputs inside an L-inf ball so that their attribution
changes while the model's prediction does not (Ghorbani et al., 2019;
Dombrowski et al., 2019): :class:`TopKAttack` removes the most important
features, :class:`MassCenterAttack` moves the explanation's center of mass,
:class:`TargetedAttack` raises it in a chosen region, :class:`ManipulationAttack`
makes it match a target map, and :class:`RandomAttack` is the random baseline
with the same budget. All run one shared loop, vectorised over the batch, with
directions from a softplus surrogate and selection on the real model; they work
with ``captum.robust.AttackComparator`` and ``MinParamPerturbation``.

:func:`robust_accuracy` (with :func:`pgd_cross_entropy`) measures the
prediction's own robustness with a cross-entropy PGD on the logits, the
adversary to use where ``captum.robust.PGD``'s default loss, written for
probabilities, would give a number that depends on the logits' offset.
"""

from captum_robust.attacks._adversary import RobustAccuracy
from captum_robust.attacks._adversary import pgd_cross_entropy
from captum_robust.attacks._adversary import robust_accuracy
from captum_robust.attacks._ghorbani import MassCenterAttack
from captum_robust.attacks._ghorbani import TargetedAttack
from captum_robust.attacks._ghorbani import TopKAttack
from captum_robust.attacks._manipulation import ManipulationAttack
from captum_robust.attacks._random import RandomAttack
from captum_robust.attacks._result import AttackResult

__all__ = [
    "AttackResult",
    "ManipulationAttack",
    "MassCenterAttack",
    "RandomAttack",
    "RobustAccuracy",
    "TargetedAttack",
    "TopKAttack",
    "pgd_cross_entropy",
    "robust_accuracy",
]
