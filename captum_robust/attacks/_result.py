"""Per-sample record of an attack on attributions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["AttackResult"]


@dataclass(frozen=True)
class AttackResult:
    """What an attack did to each sample; returned by ``perturb(...,
    return_results=True)``.

    Every tensor has shape (B,) and lives on the input's device. The criterion is
    measured on the real model (never the surrogate), between the attribution map
    of the original input and that of the returned input.

    Attributes
    ----------
    criterion : str
        Name of the selection criterion, e.g. ``"topk"`` or ``"center_shift"``.
    higher_is_better : bool
        Whether the attack raises the criterion (``center_shift``,
        ``target_mass``) or lowers it (``topk``, ``kendall``, ``spearman``,
        ``target_mse``).
    criterion_before : Tensor
        The criterion of the original input: 1 for ``topk``, ``kendall`` and
        ``spearman`` (NaN for a constant map), 0 for ``center_shift``, the
        original value for the targeted criteria.
    criterion_after : Tensor
        The criterion of the returned input. Equal to ``criterion_before`` where
        no iterate improved it or the sample was skipped.
    improved : Tensor
        bool: some iterate that kept the label improved the criterion, and the
        returned input is the best such iterate.
    label_kept : Tensor
        bool: the model predicts the same class for the returned input as for the
        original one (checked by a forward pass on the returned inputs).
    skipped : Tensor
        bool: the sample was misclassified before the attack (its prediction
        differed from ``target``), so it was returned unchanged.
    original_label : Tensor
        int64: the class the model predicted for the original input.
    steps : Tensor
        int64: steps run on the sample over all restarts (0 if skipped; fewer
        than ``restarts * n_steps`` after an early exit).
    best_restart : Tensor
        int64: restart (0-based) that produced the returned input; -1 if not
        ``improved``.
    best_step : Tensor
        int64: step (1-based, within ``best_restart``) of the returned input; 0 if
        not ``improved``.
    unmoved : Tensor
        bool: the sample was attacked but no iterate ever differed from the
        input: the mask leaves no pixel free, every step was clipped by the
        bounds, or ``epsilon`` is 0 (steps with a zero gradient are random, see
        ``no_gradient``). Unlike a sample that is not
        ``improved``, such a sample was never explored. ``perturb`` also warns
        with their count (a ``RuntimeWarning``) when ``epsilon`` > 0. False for
        skipped samples.
    no_gradient : Tensor or None
        bool: the sample was attacked but its attack gradient was exactly zero
        at every step (e.g. a ReLU model attacked with ``surrogate_beta=None``).
        Steps with a zero gradient are random sign steps, so such a sample was
        only attacked at random. ``perturb`` warns with their count. None when
        the result was built without it.
    random_steps : Tensor or None
        int64: the steps, over all restarts, at which the sample's attack
        gradient was exactly zero, so that it took a random sign step instead
        (0 for skipped samples). A sample whose every step was random is also
        ``no_gradient``. None when the result was built without it.
    similarity_before, similarity_after : dict of str to Tensor or None
        :class:`ManipulationAttack` only (None for the other attacks): how close
        the real model's map of the original (before) and of the returned input
        (after) is to the target map, as ``{"mse": ..., "pcc": ..., "ssim":
        ...}``, each of shape (B,): the mean squared error (lower is closer),
        Pearson's correlation and the structural similarity (higher is closer)
        between the two maps, each the channel-summed absolute attribution
        normalised to sum 1 (SSIM NaN for maps that are not images of at least
        7x7). Dombrowski et al. report these three.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attacks import AttackResult
    >>> r = AttackResult(
    ...     criterion="topk", higher_is_better=False,
    ...     criterion_before=torch.ones(2), criterion_after=torch.tensor([0.4, 1.0]),
    ...     improved=torch.tensor([True, False]), label_kept=torch.ones(2, dtype=bool),
    ...     skipped=torch.zeros(2, dtype=bool), original_label=torch.tensor([3, 1]),
    ...     steps=torch.tensor([10, 10]), best_restart=torch.tensor([0, -1]),
    ...     best_step=torch.tensor([7, 0]), unmoved=torch.zeros(2, dtype=bool))
    >>> len(r), r.improved.tolist()
    (2, [True, False])
    """

    criterion: str
    higher_is_better: bool
    criterion_before: Tensor
    criterion_after: Tensor
    improved: Tensor
    label_kept: Tensor
    skipped: Tensor
    original_label: Tensor
    steps: Tensor
    best_restart: Tensor
    best_step: Tensor
    unmoved: Tensor
    no_gradient: Tensor | None = None
    random_steps: Tensor | None = None
    similarity_before: dict[str, Tensor] | None = None
    similarity_after: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.criterion_before.shape[0])
