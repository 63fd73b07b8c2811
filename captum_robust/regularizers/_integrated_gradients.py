"""Integrated-gradients regularizers: IG-NORM, IG-SUM-NORM (Chen et al., NeurIPS
2019) and the enhanced regularizers of Sarkar et al. (AAAI 2021)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.ball import Bounds
from captum_robust._utils.ball import Radius
from captum_robust.regularizers._base import Regularizer
from captum_robust.regularizers._checks import check_weight
from captum_robust.regularizers._gradients import flat_l1_norm
from captum_robust.regularizers._gradients import per_sample_ce
from captum_robust.regularizers._gradients import target_prob
from captum_robust.regularizers._inner_max import AdversarialIG
from captum_robust.regularizers._paths import path_alphas

__all__ = ["EnhancedAttributionRegularizer", "IGNorm", "IGSumNorm"]


class IGNorm(AdversarialIG):
    r"""IG-NORM: penalise the integrated gradients of the loss towards a worst x'.

    Chen et al. (NeurIPS 2019). The term is

    .. math::
        \lambda\, \operatorname{mean}_i \lVert \mathrm{IG}^{\ell}(x_i \to x'_i)
        \rVert_1, \qquad
        \mathrm{IG}^{\ell}(x \to x') = (x' - x) \odot \frac{1}{m} \sum_{k=1}^{m}
        \nabla_z \ell(z_k, y), \quad z_k = x + \tfrac{k}{m} (x' - x),

    with :math:`\ell` the per-sample cross-entropy and :math:`x'` found first by PGD
    with random start in the L-inf ball of radius ``eps``, maximising the cheap
    approximation that keeps every ``approx_factor``-th path point. The full loss
    of the paper is ``CE(x) + term``: :meth:`loss` returns it.

    Parameters
    ----------
    eps : float or Tensor, default 0.3
        L-inf radius of the inner maximisation (Chen's MNIST value; Fashion-MNIST
        0.1, GTSRB 8/255). A Tensor broadcast against the inputs gives one radius
        per channel.
    weight : float, default 1.0
        :math:`\lambda` (Chen's MNIST and GTSRB value).
    n_steps : int, default 50
        Path points :math:`m` of the Riemann sum (right end points k/m).
    approx_factor : int, default 5
        The inner maximisation uses the points k/m with k a multiple of
        ``approx_factor`` (MNIST 5, GTSRB 10); it must divide ``n_steps``.
    attack_steps : int, default 40
        PGD steps (MNIST 40, Fashion-MNIST 20, GTSRB 7).
    attack_step_size : float or Tensor, default 0.01
        PGD step (MNIST and Fashion-MNIST 0.01, GTSRB 2/255).
    random_start : bool, default True
        Start the PGD at a uniform draw in the ball, as the paper does.
    bounds : (low, high) or None, default (0.0, 1.0)
        Valid input range that x' is clamped to; None for no clamping.
    softplus_beta : float or None, default None
        Compute the inner maximisation and the term on the model with ReLU modules
        swapped for softplus(beta). Not needed: for ReLU networks the term's
        gradients do not vanish (Chen et al. train the ReLU network itself).
    seed, generator
        Source of the random starts; see :class:`LocalGradientAlignment`.
    internal_batch_size : int or None, default None
        Rows (path points times samples) per pass through the model. None: half
        the batch (rounded up) at one path point per pass, which keeps a
        resnet18 step at 224x224 within 3x the memory of a cross-entropy step.
        With a batch norm in training mode a pass holds at least two samples
        (it cannot normalise one alone), so a batch of two is never split.
        A number >= ``n_steps`` times the batch size runs the path in one pass,
        without recomputation (the fastest, memory growing with ``n_steps``).

    Attributes
    ----------
    last_adversarial : Tensor or None
        The (detached) x' of the last call.

    Notes
    -----
    Losses are batch means (the paper sums over the batch; the ratio of the two
    terms, hence the meaning of :math:`\lambda`, is the same). The path goes
    through the model in passes of ``internal_batch_size`` rows. The forward
    computation keeps no graph; the backward pass recomputes one pass at a time
    with its double-backward graph and frees it before the next, so memory does
    not grow with ``n_steps``, at the price of one more forward and backward
    pass over the path. On the CPU freed pages are handed back to the system
    between passes (glibc's ``malloc_trim``, at most once a second), so that
    heap fragmentation does not make the peak resident memory grow with the
    number of passes either. Loss and gradients are those of a single pass up
    to rounding, dropout included (each pass's random state is
    replayed); batch normalisation in training mode normalises each pass with
    its own statistics. Under DistributedDataParallel the passes run on the
    wrapped module (a recomputation must not call the wrapper); the gradients
    are still averaged, because the task loss's forward pass goes through the
    wrapper. The parameters reached by the passes must be the model's own
    ``nn.Parameter`` objects; other tensors that require gradients are refused
    unless the path runs in one pass. The inner maximisation takes gradients
    with respect to x' only: it never writes a parameter's ``.grad``, leaves the
    model's mode and the running statistics of its normalisation layers as they
    were, and the term's own forward passes do not update them either. Cost per
    call: about ``attack_steps * n_steps / approx_factor + n_steps`` forward
    passes with double back-propagation, times the batch size, each path done
    twice when it runs in more than one pass.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import IGNorm
    >>> model = nn.Sequential(
    ...     nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)
    ... )
    >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    >>> reg = IGNorm(eps=0.1, n_steps=10, approx_factor=5, attack_steps=3, seed=0)
    >>> loss = reg.loss(model, x, y)  # CE(x) + lambda * ||IG(x -> x')||_1
    >>> loss.backward()
    >>> bool((reg.last_adversarial - x).abs().max() <= 0.1 + 1e-6)
    True
    """

    _loss_at_adversarial = False

    # Named here for this class's API page (see Regularizer).
    __call__ = Regularizer.__call__
    loss = Regularizer.loss

    def __init__(
        self,
        eps: Radius = 0.3,
        *,
        weight: float = 1.0,
        n_steps: int = 50,
        approx_factor: int = 5,
        attack_steps: int = 40,
        attack_step_size: Radius = 0.01,
        random_start: bool = True,
        bounds: Bounds | None = (0.0, 1.0),
        softplus_beta: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        internal_batch_size: int | None = None,
    ) -> None:
        self.weight = check_weight(weight, "weight")
        self._init_attack(
            eps,
            n_steps,
            approx_factor,
            attack_steps,
            attack_step_size,
            random_start,
            bounds,
            softplus_beta,
            seed,
            generator,
            internal_batch_size,
        )

    def _term(self, model: nn.Module, x: Tensor, t: Tensor, adv: Tensor) -> Tensor:
        alphas = path_alphas(self.n_steps, 1, x)
        (ig,) = self._ig(
            model, x, adv, alphas, t, per_sample_ce, check=self.attack_steps == 0
        )
        return self.weight * flat_l1_norm(ig).mean()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps!r}, weight={self.weight}, "
            f"n_steps={self.n_steps}, approx_factor={self.approx_factor}, "
            f"attack_steps={self.attack_steps}, "
            f"attack_step_size={self.attack_step_size!r})"
        )


class IGSumNorm(IGNorm):
    r"""IG-SUM-NORM: the loss at a worst x' plus the IG norm towards it.

    Chen et al. (NeurIPS 2019). The training objective is

    .. math::
        \operatorname{mean}_i \ell(x'_i, y_i) + \beta\, \operatorname{mean}_i
        \lVert \mathrm{IG}^{\ell}(x_i \to x'_i) \rVert_1,

    with :math:`x'` maximising :math:`\ell(x') + \beta \lVert
    \mathrm{IG}^{\ell}_{approx}(x \to x') \rVert_1` by PGD with random start
    (see :class:`IGNorm` for the path and the approximation). The clean task loss
    is *replaced* by the loss at :math:`x'`, so:

    * ``reg.loss(model, x, y)`` returns the whole objective: use it *instead of*
      the task loss;
    * ``reg(model, x, y)`` returns only :math:`\beta\,\mathrm{mean}\lVert
      \mathrm{IG}\rVert_1` and stores :math:`x'` in ``reg.last_adversarial``; the
      equivalent objective is then
      ``F.cross_entropy(model(reg.last_adversarial), y) + term``.

    Parameters
    ----------
    eps : float or Tensor, default 0.3
        L-inf radius (MNIST; Fashion-MNIST 0.1, GTSRB 8/255).
    weight : float, default 0.1
        :math:`\beta` of the objective and of the inner maximisation (MNIST 0.1,
        GTSRB 1).
    n_steps, approx_factor, attack_steps, attack_step_size, random_start, bounds, \
softplus_beta, seed, generator, internal_batch_size
        As for :class:`IGNorm` (defaults: Chen's MNIST configuration, 50 points,
        factor 5, 40 steps of 0.01 with random start, bounds (0, 1)).

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> from captum_robust.regularizers import IGSumNorm
    >>> model = nn.Sequential(
    ...     nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)
    ... )
    >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    >>> reg = IGSumNorm(eps=0.1, n_steps=10, approx_factor=5, attack_steps=3, seed=0)
    >>> loss = reg.loss(model, x, y)  # replaces the task loss
    >>> loss.backward()
    >>> term = reg(model, x, y)  # or: combine by hand
    >>> loss = F.cross_entropy(model(reg.last_adversarial), y) + term
    """

    _loss_at_adversarial = True

    # Named here for this class's API page (see Regularizer).
    __call__ = Regularizer.__call__
    loss = Regularizer.loss

    def __init__(
        self,
        eps: Radius = 0.3,
        *,
        weight: float = 0.1,
        n_steps: int = 50,
        approx_factor: int = 5,
        attack_steps: int = 40,
        attack_step_size: Radius = 0.01,
        random_start: bool = True,
        bounds: Bounds | None = (0.0, 1.0),
        softplus_beta: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        internal_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            eps,
            weight=weight,
            n_steps=n_steps,
            approx_factor=approx_factor,
            attack_steps=attack_steps,
            attack_step_size=attack_step_size,
            random_start=random_start,
            bounds=bounds,
            softplus_beta=softplus_beta,
            seed=seed,
            generator=generator,
            internal_batch_size=internal_batch_size,
        )


def _spatial(t: Tensor) -> Tensor:
    """Channel sum of (B, C, ...) image attributions, flattened; (B, N) as is."""
    if t.dim() >= 4:
        t = t.sum(dim=1)
    return t.flatten(1)


def _other_class(logits: Tensor, target: Tensor) -> Tensor:
    """The most likely class other than the target, per row (no gradient)."""
    masked = logits.detach().scatter(1, target.unsqueeze(1), float("-inf"))
    return masked.argmax(dim=1)


def _class_pair(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: probability of the target and of the most likely other class."""
    probs = logits.softmax(dim=1)
    other = _other_class(probs, target)
    return (
        probs.gather(1, target.unsqueeze(1)).squeeze(1),
        probs.gather(1, other.unsqueeze(1)).squeeze(1),
    )


class EnhancedAttributionRegularizer(AdversarialIG):
    r"""Sarkar et al.'s enhanced attributional-robustness regularizer (AAAI 2021).

    On top of IG-SUM-NORM's inner maximisation (:math:`x'` maximising
    :math:`\ell(x') + \beta_{att} \lVert \mathrm{IG}^{\ell}_{approx}(x\to x')
    \rVert_1`), the objective is :math:`\operatorname{mean}_i \ell(x'_i, y_i) +
    \lambda\, \operatorname{mean}_i R_i` with :math:`R = w_{class} R_{class} +
    w_{change} R_{change}`:

    * :math:`R_{class} = \mathrm{KL}(U \Vert P_{neg}) - \mathrm{KL}(U \Vert
      P_{true})`, where :math:`P_{true}` and :math:`P_{neg}` are the softmax over
      pixels of the channel-summed integrated gradients, from a zero baseline to
      :math:`x'`, of the softmax probability of the true class and of the most
      likely other class (chosen at each path point, as the reference code does),
      and :math:`U` is uniform over pixels;
    * :math:`R_{change} = \sum_{\mathrm{sign}(b)=\mathrm{sign}(c)} b\,c +
      \sum_{\mathrm{sign}(b)\ne\mathrm{sign}(c)} |c|` over features, with
      :math:`b` the IG of the true-class probability from 0 to :math:`x` and
      :math:`c = -\mathrm{IG}^{\ell}(x \to x')`.

    As for :class:`IGSumNorm`, ``reg.loss(model, x, y)`` returns the whole
    objective (use it instead of the task loss) and ``reg(model, x, y)`` returns
    :math:`\lambda\,\operatorname{mean} R` with :math:`x'` in
    ``reg.last_adversarial``.

    Parameters
    ----------
    eps : float or Tensor, default 8/255
        L-inf radius of the inner maximisation (Sarkar's Flower configuration, in
        [0, 1] pixel units).
    weight : float, default 0.1
        :math:`\lambda` (Flower configuration).
    n_steps : int, default 20
        Path points of every integrated gradient (Flower: 20).
    approx_factor : int, default 4
        Every ``approx_factor``-th point in the inner maximisation (Flower: 4).
    attack_steps : int, default 7
        PGD steps (Flower: 7).
    attack_step_size : float or Tensor, default 2/255
        PGD step (Flower: 2/255).
    attack_weight : float or None, default None
        :math:`\beta_{att}` of the inner maximisation; None uses ``weight``, as the
        reference code does.
    class_weight : float, default 1.0
        Weight of :math:`R_{class}` inside :math:`R` (the paper adds the two).
    change_weight : float, default 1.0
        Weight of :math:`R_{change}` inside :math:`R`.
    random_start, bounds, softplus_beta, seed, generator, internal_batch_size
        As for :class:`IGNorm` (bounds default (0, 1)); every path, the inner
        maximisation's included, runs in passes (see :class:`IGNorm`'s notes).

    Notes
    -----
    Terms are batch means (the reference code sums over a batch of one). Each call
    runs the inner maximisation plus three paths of ``n_steps * B`` points with
    double back-propagation (0 -> x, x -> x', 0 -> x' with two gradients), each
    in passes of ``internal_batch_size`` rows as described for :class:`IGNorm`.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import EnhancedAttributionRegularizer
    >>> model = nn.Sequential(
    ...     nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)
    ... )
    >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    >>> reg = EnhancedAttributionRegularizer(n_steps=4, approx_factor=2, seed=0)
    >>> loss = reg.loss(model, x, y)  # CE(x') + lambda * (R_class + R_change)
    >>> loss.backward()
    >>> reg.last_adversarial.shape
    torch.Size([4, 3, 2, 2])
    """

    # Named here for this class's API page (see Regularizer).
    __call__ = Regularizer.__call__
    loss = Regularizer.loss

    def __init__(
        self,
        eps: Radius = 8 / 255,
        *,
        weight: float = 0.1,
        n_steps: int = 20,
        approx_factor: int = 4,
        attack_steps: int = 7,
        attack_step_size: Radius = 2 / 255,
        attack_weight: float | None = None,
        class_weight: float = 1.0,
        change_weight: float = 1.0,
        random_start: bool = True,
        bounds: Bounds | None = (0.0, 1.0),
        softplus_beta: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        internal_batch_size: int | None = None,
    ) -> None:
        self.weight = check_weight(weight, "weight")
        self.attack_weight = (
            None
            if attack_weight is None
            else check_weight(attack_weight, "attack_weight")
        )
        self.class_weight = check_weight(class_weight, "class_weight")
        self.change_weight = check_weight(change_weight, "change_weight")
        self._init_attack(
            eps,
            n_steps,
            approx_factor,
            attack_steps,
            attack_step_size,
            random_start,
            bounds,
            softplus_beta,
            seed,
            generator,
            internal_batch_size,
        )

    @torch.enable_grad()
    def components(
        self, model: nn.Module, inputs: Tensor, target: Tensor | int
    ) -> tuple[Tensor, Tensor]:
        """Per-sample (R_class, R_change), shape (B,) each, unweighted, for a new x'.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> from captum_robust.regularizers import EnhancedAttributionRegularizer
        >>> model = nn.Sequential(nn.Linear(6, 8), nn.Softplus(), nn.Linear(8, 3))
        >>> reg = EnhancedAttributionRegularizer(n_steps=4, approx_factor=2, seed=0)
        >>> r_class, r_change = reg.components(model, torch.rand(2, 6), 1)
        >>> r_class.shape, r_change.shape
        (torch.Size([2]), torch.Size([2]))
        """
        model, x, t = self._prepare(model, inputs, target)
        with self._contexts(model):
            return self._components(model, x, t, self._adversarial(model, x, t))

    def _ig_weight(self) -> float:
        return self.weight if self.attack_weight is None else self.attack_weight

    def _components(
        self, model: nn.Module, x: Tensor, t: Tensor, adv: Tensor
    ) -> tuple[Tensor, Tensor]:
        alphas = path_alphas(self.n_steps, 1, x)
        zero = torch.zeros_like(x)
        (b,) = self._ig(
            model, zero, x, alphas, t, target_prob, check=self.attack_steps == 0
        )
        (ig_loss,) = self._ig(model, x, adv, alphas, t, per_sample_ce)
        c = -ig_loss
        # One forward pass per path point, two gradients: the true class's and
        # the most likely other class's probability (chosen per point).
        ig_true, ig_neg = self._ig(model, zero, adv, alphas, t, _class_pair)
        # KL(U || P) = -log N - mean_j log P_j, so the difference needs no constants.
        log_true = _spatial(ig_true).log_softmax(dim=1)
        log_neg = _spatial(ig_neg).log_softmax(dim=1)
        r_class = (log_true - log_neg).mean(dim=1)
        b, c = b.flatten(1), c.flatten(1)
        matched = torch.sign(b.detach()) == torch.sign(c.detach())
        r_change = torch.where(matched, b * c, c.abs()).sum(dim=1)
        return r_class, r_change

    def _term(self, model: nn.Module, x: Tensor, t: Tensor, adv: Tensor) -> Tensor:
        r_class, r_change = self._components(model, x, t, adv)
        return (
            self.weight
            * (self.class_weight * r_class + self.change_weight * r_change).mean()
        )

    def __repr__(self) -> str:
        return (
            f"EnhancedAttributionRegularizer(eps={self.eps!r}, weight={self.weight}, "
            f"n_steps={self.n_steps}, approx_factor={self.approx_factor}, "
            f"attack_steps={self.attack_steps}, "
            f"attack_step_size={self.attack_step_size!r}, "
            f"attack_weight={self.attack_weight})"
        )
