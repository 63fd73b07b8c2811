"""Certified top-k robustness of sparsified SmoothGrad (Levine, Singla and Feizi).

"Certifiably Robust Interpretation in Deep Learning" (arXiv 1905.12105). The
base map of an input ``z`` is the top-s indicator of its attribution:
``s(z)_i = 1`` on the ``s = ceil(sparsity * d)`` largest entries of the
flattened map (ties to the lower index), 0 elsewhere. Its Gaussian smoothing
``g(x) = E[s(x + e)]``, ``e ~ N(0, sigma^2 I)``, is estimated by the mean
``p`` over ``n`` draws, and every ``g_i`` is a function into [0, 1], so
``Phi(Phi^-1(g_i(x)) - rho/sigma) <= g_i(x') <= Phi(Phi^-1(g_i(x)) +
rho/sigma)`` for ``||x' - x||_2 <= rho`` (Salman et al., 2019).

The sampler is shared with :class:`captum_robust.attr.SparsifiedSmoothGrad`.
Round ``r`` draws ``torch.randn(x.shape, generator=g)`` for the batch ``x`` (per
input tensor, in order); copy ``j`` is round ``j // B`` of sample ``j % B``.
Chunks of ``batch_size`` copies (one attribution call each) change neither the
draws nor the counts (sums of 0 and 1, exact in any order).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Literal
from typing import NamedTuple

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from captum_robust._utils.validation import as_tensor_tuple
from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_finite
from captum_robust._utils.validation import check_float_tensors
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_str_choice
from captum_robust._utils.validation import resolve_generator
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import check_map_options
from captum_robust.metrics._maps import flatten_attribution
from captum_robust.metrics._maps import reduced_shape
from captum_robust.metrics._perturbation import _check_kwargs
from captum_robust.metrics._perturbation import _check_target
from captum_robust.metrics._perturbation import _explain_callable
from captum_robust.metrics._ranking import order_keys
from captum_robust.metrics._topk import _top_indices
from captum_robust.metrics._topk import topk_mask

Bound = Literal["hoeffding", "binomial"]
BOUNDS = ("hoeffding", "binomial")


class CertifiedTopK(NamedTuple):
    """What :func:`certified_topk_overlap` certifies, per sample.

    Attributes
    ----------
    overlap : Tensor
        (B,) certified fraction ``m / K``.
    kept : Tensor
        (B,) int64, the certified count ``m`` of the ``K`` features kept.
    radii : Tensor
        (B, K) float64: column ``m - 1`` is the L2 radius below which at least
        ``m`` are kept, ``(sigma/2) [Phi^-1(lower) - Phi^-1(upper)]``; ``inf``
        where ``2K - m + 1 > d`` (kept by counting alone), 0 for never.
    smoothed_map : Tensor
        (B, d) the estimate ``p``, features in the order of
        :func:`~captum_robust.metrics.flatten_attribution`.
    topk_indices : Tensor
        (B, K) int64, the certified set: the K largest entries of ``p`` in
        decreasing order, ties to the lower index.
    lower, upper : Tensor
        (B, K) float64 confidence bounds on ``g``: lower at the m-th ranked
        feature, upper at the (2K-m+1)-th (``-inf`` where there is none).
    err : float or None
        The Hoeffding half-width of every entry; None for ``"binomial"``.
    """

    overlap: Tensor
    kept: Tensor
    radii: Tensor
    smoothed_map: Tensor
    topk_indices: Tensor
    lower: Tensor
    upper: Tensor
    err: float | None


# ---------------------------------------------------------------------------
# The sampler, shared with SparsifiedSmoothGrad


class SparsifiedSamples(NamedTuple):
    """Sums over the draws of the top-s indicators (B, d), of the relaxation
    or None, of the draws with a constant map (B,); map shapes and ``s``."""

    counts: Tensor
    relaxed: Tensor | None
    constant: Tensor
    shapes: tuple[tuple[int, ...], ...]
    s: int


def top_count(sparsity: float, d: int) -> int:
    """``ceil(sparsity * d)``, the product rounded first: 0.1 * 30 gives 3."""
    return max(1, min(d, math.ceil(round(sparsity * d, 9))))


def check_sparsity(sparsity: object) -> float:
    value = check_number(sparsity, "sparsity")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"`sparsity` must be in (0, 1], got {value}.")
    return value


def _normal(shape: torch.Size, generator: torch.Generator | None, x: Tensor) -> Tensor:
    # A generator on another device draws there; the draws then move.
    device = x.device if generator is None else generator.device
    out = torch.randn(shape, generator=generator, device=device, dtype=x.dtype)
    return out if out.device == x.device else out.to(x.device)


def _noisy_chunks(
    xs: tuple[Tensor, ...],
    n: int,
    sigma: float,
    chunk: int,
    generator: torch.Generator | None,
) -> Iterator[tuple[int, Tensor, tuple[Tensor, ...]]]:
    """(first copy, sample of each copy, copies) chunks of the round-major
    sequence ``x + sigma * e``, written into one buffer per chunk."""
    batch = xs[0].shape[0]
    total = n * batch
    carry: tuple[Tensor, ...] = ()  # draws of the last round not used yet
    for start in range(0, total, chunk):
        rows = min(chunk, total - start)
        bufs = tuple(x.new_empty((rows, *x.shape[1:])) for x in xs)
        filled = 0
        while filled < rows:
            if not carry:
                carry = tuple(_normal(x.shape, generator, x) for x in xs)
            take = min(rows - filled, carry[0].shape[0])
            for buf, draw in zip(bufs, carry):
                buf[filled : filled + take] = draw[:take]
            carry = tuple(c[take:] for c in carry) if take < len(carry[0]) else ()
            filled += take
        index = torch.arange(start, start + rows, device=xs[0].device) % batch
        aligned = start % batch == 0 and rows % batch == 0
        noisy = []
        for x, buf in zip(xs, bufs):
            scaled = buf.mul_(sigma)  # then + x: x + sigma * e, rounded as written
            if x.requires_grad:  # keep the graph to the inputs
                noisy.append(x.index_select(0, index) + scaled)
            elif aligned:  # broadcast in place: no copy of the inputs
                noisy.append(scaled.view(-1, *x.shape).add_(x).view_as(scaled))
            else:
                noisy.append(scaled.add_(x.index_select(0, index)))
        yield start, index, tuple(noisy)


def _rows(value: Any, index: Tensor, start: int, batch: int) -> Any:
    """Per-copy rows of a per-sample argument (Captum's convention)."""
    if isinstance(value, Tensor):
        if value.dim() >= 1 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, list) and len(value) == batch:
        return [value[(start + c) % batch] for c in range(len(index))]
    if isinstance(value, tuple):
        return tuple(_rows(v, index, start, batch) for v in value)
    return value


def _top_set(values: Tensor, s: int) -> Tensor:
    """``topk_mask(values, s)``. On a CPU integer keys select faster, and only
    rows with a tie at the cut need the tie rule (the flags cost no sync)."""
    if values.device.type != "cpu" or s == values.shape[1]:
        return topk_mask(values, s)
    top, tied = _top_indices(order_keys(values), s)
    mask = torch.zeros_like(values, dtype=torch.bool).scatter_(1, top, True)
    rows = tied.nonzero().flatten()
    if len(rows):
        mask[rows] = topk_mask(values[rows], s)
    return mask


def _parts(out: object, rows: int, name: str) -> tuple[Tensor, ...]:
    parts = as_tensor_tuple(out, f"{name} output")
    for t in parts:
        if t.dim() < 2 or t.shape[0] != rows or not t.is_floating_point():
            raise TypeError(
                f"`{name}` must return floating Tensors with a row per input and "
                f"at least one feature ({rows} rows), got shape {tuple(t.shape)} "
                f"and dtype {t.dtype}."
            )
    return parts


def sparsified_samples(
    attribute: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    per_sample: Mapping[str, Any],
    *,
    is_tuple: bool,
    n_samples: int,
    sigma: float,
    sparsity: float,
    batch_size: int | None,
    generator: torch.Generator | None,
    abs: bool,
    channel_reduction: str,
    relax: Callable[[Tensor, int], Tensor] | None = None,
    create_graph: bool = False,
    on_features: Callable[[int], None] | None = None,
    name: str = "explanation_func",
) -> SparsifiedSamples:
    """Explain ``n_samples`` noisy copies of every sample; sum their top-s sets.

    ``attribute(noisy, **kwargs)`` gets a chunk of copies, ``kwargs`` being
    ``per_sample`` with the rows of each copy's sample. Without
    ``create_graph`` the inputs and maps are detached; with it the copies keep
    the inputs' graph and ``relaxed`` (``relax(flat_map, s)`` summed) carries
    it. ``on_features(d)`` runs once the first chunk gives the map's size.
    """
    xs = inputs if create_graph else tuple(x.detach() for x in inputs)
    batch = xs[0].shape[0]
    chunk = n_samples * batch if batch_size is None else batch_size
    counts = relaxed = nonfinite = constant = None
    shapes: tuple[tuple[int, ...], ...] = ()
    s = 0
    grad_mode = torch.enable_grad() if create_graph else contextlib.nullcontext()
    with grad_mode:
        for start, index, noisy in _noisy_chunks(
            xs, n_samples, sigma, chunk, generator
        ):
            rows = noisy[0].shape[0]
            kwargs = {k: _rows(v, index, start, batch) for k, v in per_sample.items()}
            with warnings.catch_warnings():
                # Captum warns on every call that it switched on requires_grad of
                # the fresh noisy copies, which is expected here.
                warnings.filterwarnings(
                    "ignore", message="Input Tensor .* did not already"
                )
                out = attribute(noisy if is_tuple else noisy[0], **kwargs)
            parts = _parts(out, rows, name)
            if not create_graph:
                parts = tuple(t.detach() for t in parts)
            flat = flatten_attribution(
                parts, abs=abs, channel_reduction=channel_reduction, validate=False
            )
            if counts is None:
                shapes = tuple(reduced_shape(t, channel_reduction)[1:] for t in parts)
                s = top_count(sparsity, flat.shape[1])
                if on_features is not None:
                    on_features(flat.shape[1])
                counts = flat.new_zeros((batch, flat.shape[1]), requires_grad=False)
                constant = counts.new_zeros(batch)
                nonfinite = torch.zeros((), dtype=torch.bool, device=flat.device)
            elif flat.shape[1] != counts.shape[1]:
                raise ValueError(
                    f"`{name}` returned maps of {flat.shape[1]} features for some "
                    f"noisy copies and {counts.shape[1]} for others."
                )
            values = flat.detach()
            # aminmax propagates NaN and shows inf, without a mask of the map.
            low, high = torch.aminmax(values, dim=1)
            nonfinite |= ~(low.isfinite() & high.isfinite()).all()
            index = index.to(flat.device)
            constant.index_add_(0, index, (low == high).to(constant.dtype))
            counts.index_add_(0, index, _top_set(values, s).to(counts.dtype))
            if relax is not None:
                soft = relax(flat if create_graph else values, s)
                if relaxed is None:
                    relaxed = torch.zeros_like(counts, dtype=soft.dtype)
                relaxed = relaxed.index_add(0, index, soft)
    assert counts is not None and nonfinite is not None and constant is not None
    # One host synchronisation for the whole run rather than one per chunk.
    if bool(nonfinite):
        raise ValueError(f"`{name}` returned NaN or inf values for noisy copies.")
    return SparsifiedSamples(counts, relaxed, constant, shapes, s)


# ---------------------------------------------------------------------------
# The certificate


def _check_common(
    k: object, radius: object, sigma: object, alpha: object, bound: object
) -> tuple[int, float, float, float]:
    k = check_positive_int(k, "k")
    radius = check_number(radius, "radius", minimum=0.0)
    sigma = check_number(sigma, "sigma", minimum=0.0, strict_minimum=True)
    alpha = check_number(alpha, "alpha")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha}.")
    check_str_choice(bound, BOUNDS, "bound")
    return k, radius, sigma, alpha


def _check_k(k: int, d: int) -> None:
    if k > d:
        raise ValueError(
            f"`k` must be at most the number of features of the map ({d}), got {k}."
        )


def hoeffding_err(n: int, d: int, alpha: float) -> float:
    """``sqrt(ln(2d/alpha) / (2n))``: bounds every ``|p_i - g_i|`` at once with
    probability >= 1 - alpha (Hoeffding and a union bound over d entries)."""
    return math.sqrt(math.log(2 * d / alpha) / (2 * n))


@functools.lru_cache(maxsize=16)
def _clopper_pearson(n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper-Pearson bounds at ``level`` for every count 0..n."""
    c = np.arange(n + 1, dtype=np.float64)
    lower = scipy.stats.beta.ppf(level, np.maximum(c, 1), n - c + 1)
    upper = scipy.stats.beta.ppf(1 - level, c + 1, np.maximum(n - c, 1))
    lower[0], upper[n] = 0.0, 1.0
    return lower, upper


def _best_case(n: int, d: int, alpha: float, bound: str) -> tuple[float, float]:
    """Bounds for a feature in every top-s set against one in none."""
    if bound == "hoeffding":
        err = hoeffding_err(n, d, alpha)
        return max(1.0 - err, 0.0), min(err, 1.0)
    lower, upper = _clopper_pearson(n, alpha / (2 * d))
    return float(lower[n]), float(upper[0])


def _check_sample_size(
    n: int, d: int, alpha: float, radius: float, sigma: float, bound: str
) -> None:
    """Refuse an ``n`` with which no map could certify a single feature."""
    lo, hi = _best_case(n, d, alpha, bound)
    z = torch.special.ndtri(torch.tensor([lo, hi], dtype=torch.float64))
    if bool(z[0] - z[1] > 2 * radius / sigma):
        return
    # 1 - Phi(radius / sigma): the widest band that still separates 1 from 0.
    tail = 0.5 * math.erfc(radius / sigma / math.sqrt(2))
    if tail <= 0.0:
        needed = math.inf
    elif bound == "hoeffding":
        needed = math.log(2 * d / alpha) / (2 * tail * tail)
    else:
        needed = math.log(alpha / (2 * d)) / math.log1p(-tail)
    advice = (
        f"use n_samples >= {math.floor(needed) + 1}"
        if math.isfinite(needed)
        else "no n_samples suffices"
    )
    raise ValueError(
        f"`n_samples` ({n}) is too small for any certificate at alpha={alpha}, "
        f"{d} features, radius {radius}, sigma {sigma}: a feature in every draw's "
        f"top-s set is not told apart from one in none (bound={bound!r}: lower "
        f"{lo:.4g}, upper {hi:.4g}); {advice}, or a larger alpha or smaller radius."
    )


def certify(
    p: Tensor,
    k: int,
    *,
    radius: float,
    sigma: float,
    n: int | None,
    alpha: float,
    bound: str,
    err: float | None,
) -> CertifiedTopK:
    """The certificate of a checked (B, d) estimate, batched on its device."""
    d = p.shape[1]
    q, order = torch.sort(p, dim=1, descending=True, stable=True)
    m = torch.arange(1, k + 1, device=p.device)
    partner = 2 * k - m + 1  # rank of the feature that must stay below rank m
    exists = partner <= d
    column = (partner - 1).clamp(max=d - 1)
    q64 = q.double()
    if bound == "hoeffding":
        assert err is not None
        lower = (q64[:, :k] - err).clamp(0.0, 1.0)
        upper = (q64[:, column] + err).clamp(0.0, 1.0)
    else:
        assert n is not None
        table_lo, table_hi = _clopper_pearson(n, alpha / (2 * d))
        table_lo = torch.from_numpy(table_lo).to(p.device)
        table_hi = torch.from_numpy(table_hi).to(p.device)
        counts = (q64 * n).round().long()
        lower = table_lo[counts[:, :k]]
        upper = table_hi[counts[:, column]]
    inf = torch.tensor(math.inf, dtype=torch.float64, device=p.device)
    upper = torch.where(exists, upper, -inf)
    # In the Phi^-1 domain L_m > U_m reads gap_m > 2 rho / sigma. Without a
    # (2K-m+1)-th feature m are kept by counting alone; 0 against 0 or 1
    # against 1 (NaN) separates nothing.
    gap = torch.special.ndtri(lower) - torch.special.ndtri(upper.clamp(0.0, 1.0))
    gap = torch.where(exists, torch.where(gap.isnan(), -inf, gap), inf)
    certified = gap > 2 * radius / sigma
    count = (m * certified).amax(dim=1)
    dtype = p.dtype if p.dtype == torch.float64 else torch.float32
    return CertifiedTopK(
        overlap=count.to(dtype) / k,
        kept=count,
        radii=(sigma / 2 * gap).clamp(min=0.0),
        smoothed_map=p,
        topk_indices=order[:, :k],
        lower=lower,
        upper=upper,
        err=err,
    )


def topk_overlap_certificate(
    smoothed_map: Tensor,
    k: int,
    *,
    radius: float,
    sigma: float,
    n_samples: int | None = None,
    alpha: float = 0.05,
    bound: Bound = "hoeffding",
    err: float | None = None,
) -> CertifiedTopK:
    """Certified top-k overlap of an estimated smoothed map.

    For each row ``p`` (the mean of ``n_samples`` draws of a map with values
    in [0, 1], such as the top-s indicator of sparsified SmoothGrad), sorted
    ``q_1 >= ... >= q_d``: with probability >= 1 - alpha over the draws, for
    every ``x'`` with ``||x' - x||_2 <= radius`` at least ``m`` of the K
    features ranked first by ``p`` stay in the top-K of ``g(x')``, for the
    largest ``m`` with ``L_m > U_m``,

    ``L_m = Phi(Phi^-1(q_m - err) - 2 radius / sigma) - err``,
    ``U_m = q_{2K-m+1}`` (``-inf`` beyond ``d``).

    (Among fewer than m kept, one of the first m drops below a feature ranked
    2K-m+1 or lower; the smoothing bound forbids that.) Equivalently ``m`` is
    kept for every radius below ``(sigma/2) [Phi^-1(q_m - err) -
    Phi^-1(q_{2K-m+1} + err)]``, returned in ``radii``.

    Parameters
    ----------
    smoothed_map : Tensor
        (B, d) or (B, ...) (flattened), values in [0, 1].
    k : int
        Size K of the top set, 1 <= k <= d. ``2K - m + 1`` may exceed ``d``.
    radius : float
        L2 radius ``rho`` >= 0, in the coordinates the noise was added in.
    sigma : float
        Standard deviation (> 0) of the smoothing noise.
    n_samples : int, optional
        Draws behind ``smoothed_map``; required unless ``err`` is given.
    alpha : float, default 0.05
        The certificate fails with probability at most ``alpha``, in (0, 1).
    bound : {"hoeffding", "binomial"}, default "hoeffding"
        "hoeffding": ``err = sqrt(ln(2d/alpha) / (2n))`` for every entry.
        "binomial": one-sided Clopper-Pearson bounds at level
        ``alpha / (2d)`` (lower for ``q_m``, upper for ``q_{2K-m+1}``), tighter
        for a 0/1 map; needs ``smoothed_map * n_samples`` to be integer counts.
        The quantiles come from ``scipy.stats.beta.ppf`` on the CPU for every
        count 0..n (cached per ``(n, alpha/(2d))``) and are looked up on the
        map's device: no data goes to the host.
    err : float, optional
        A half-width of your own (``bound="hoeffding"`` only) in place of the
        Hoeffding term, e.g. 0 for an exact smoothed map.

    Returns
    -------
    CertifiedTopK
        ``overlap`` (B,) is ``m / K``; ``kept``, ``radii``, ``topk_indices``
        and the bounds are described in :class:`CertifiedTopK`.

    Raises
    ------
    ValueError
        Also for an ``n_samples`` too small for any certificate at this
        ``alpha`` and ``radius``; the message gives the ``n_samples`` needed.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import topk_overlap_certificate
    >>> p = torch.tensor([[0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.0]])
    >>> topk_overlap_certificate(p, 3, radius=0.2, sigma=0.25, err=0.0).kept
    tensor([2])
    >>> cert = topk_overlap_certificate(
    ...     torch.tensor([[1.0, 1.0, 0, 0, 0, 0]]), 2, radius=0.03, sigma=0.1,
    ...     n_samples=8192)
    >>> round(cert.err, 6), cert.overlap
    (0.01829, tensor([1.]))
    """
    if not isinstance(smoothed_map, Tensor):
        raise TypeError(
            "`smoothed_map` must be a Tensor (B, d), got "
            f"{type(smoothed_map).__name__}."
        )
    check_float_tensors((smoothed_map,), "smoothed_map")
    k, radius, sigma, alpha = _check_common(k, radius, sigma, alpha, bound)
    p = smoothed_map.flatten(1)
    low, high = torch.aminmax(p.double())
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 1:
        raise ValueError("`smoothed_map` must hold values in [0, 1] (no NaN).")
    d = p.shape[1]
    _check_k(k, d)
    if err is not None:
        if bound != "hoeffding":
            raise ValueError(
                "`err` replaces the Hoeffding term; use bound='hoeffding'."
            )
        err = check_number(err, "err", minimum=0.0)
        n = None if n_samples is None else check_positive_int(n_samples, "n_samples")
    else:
        if n_samples is None:
            raise ValueError("`n_samples` is required unless `err` is given.")
        n = check_positive_int(n_samples, "n_samples")
        _check_sample_size(n, d, alpha, radius, sigma, bound)
        if bound == "hoeffding":
            err = hoeffding_err(n, d, alpha)
        elif not bool(((p.double() * n - (p.double() * n).round()).abs() < 1e-3).all()):
            raise ValueError(
                "`smoothed_map` times `n_samples` must be integer counts for "
                "bound='binomial' (the mean of n draws of a 0/1 map)."
            )
    return certify(
        p, k, radius=radius, sigma=sigma, n=n, alpha=alpha, bound=bound, err=err
    )


def certified_topk_overlap(
    explanation_func: object,
    inputs: Tensor | tuple[Tensor, ...],
    target: object = None,
    *,
    k: int,
    radius: float,
    sigma: float,
    sparsity: float = 0.1,
    n_samples: int = 1024,
    alpha: float = 0.05,
    bound: Bound = "hoeffding",
    batch_size: int | None = 256,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    explanation_kwargs: Mapping[str, Any] | None = None,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
    return_details: bool = False,
) -> Tensor | CertifiedTopK:
    """Certified top-k robustness of sparsified SmoothGrad, per sample.

    Levine, Singla and Feizi (2019): with probability at least ``1 - alpha``
    over the noise draws, for every input within L2 distance ``radius``, the
    top-K set of the smoothed sparsified map keeps at least ``m`` of the K
    features that the estimate ``p`` ranks first. ``p`` is the mean over
    ``n_samples`` draws ``e ~ N(0, sigma^2 I)`` of the top-s indicator
    (``s = ceil(sparsity * d)``, ties to the lower index) of the map of
    ``explanation_func`` at ``inputs + e``; ``m`` is computed by
    :func:`topk_overlap_certificate`. The map is the one of
    :class:`~captum_robust.attr.SparsifiedSmoothGrad` with the same seed.

    Parameters
    ----------
    explanation_func : Captum attribution, its ``attribute``, or callable
        Called as ``explanation_func(noisy, target=..., **explanation_kwargs)``
        on chunks of noisy copies. Put the model in eval mode: a BatchNorm in
        training mode would mix the copies.
    inputs : Tensor or tuple of Tensor
        (B, ...); ``radius`` is measured in these coordinates (over all tensors
        of a tuple). Left unmodified.
    target : int, list or Tensor, optional
        One class index per sample (or one for all), fixed for its copies: the
        explanation of the class at ``x``, never re-taken at ``x + e``.
    k : int
        Size K of the certified top set, 1 <= k <= d (features of the map).
    radius : float
        L2 radius >= 0 to certify.
    sigma : float
        Standard deviation (> 0) of the Gaussian noise.
    sparsity : float, default 0.1
        Fraction ``tau`` in (0, 1] of the features in each base map's top set.
    n_samples : int, default 1024
        Draws per sample; too few for any certificate raises a ValueError.
    alpha : float, default 0.05
        Failure probability of the certificate, in (0, 1).
    bound : {"hoeffding", "binomial"}, default "hoeffding"
        The confidence bound on ``p``; see :func:`topk_overlap_certificate`.
    batch_size : int or None, default 256
        Noisy copies per explanation call (None: all at once). Does not change
        the result.
    seed, generator : int or None (default 0), torch.Generator (optional)
        The draws come from ``generator`` if given, else from a fresh one on
        the inputs' device seeded with ``seed``, else (None) torch's global one.
    explanation_kwargs : dict, optional
        Passed to every call; tensors (and lists) with B rows are repeated for
        the copies.
    abs : bool, default True
        Rank the attribution's magnitudes.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        Channel merge of (B, C, H, W) maps before ranking.
    return_details : bool, default False
        Return a :class:`CertifiedTopK` instead of the fraction.

    Returns
    -------
    Tensor or CertifiedTopK
        (B,) certified fraction ``m / K`` in [0, 1] on the inputs' device (the
        count ``m``, radii per ``m``, ``p`` and the certified set are in the
        details); NaN where the map was constant (all zero, say) at every draw.

    Examples
    --------
    >>> import torch
    >>> from captum.attr import Saliency
    >>> from captum_robust.metrics import certified_topk_overlap
    >>> x = torch.tensor([[4.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    >>> explain = lambda z, target=None: z  # the input as its own map
    >>> certified_topk_overlap(explain, x, k=2, radius=0.5, sigma=0.5,
    ...                        sparsity=1 / 3, n_samples=512)
    tensor([1.])
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> images = torch.rand(2, 1, 4, 4)
    >>> out = certified_topk_overlap(Saliency(model), images, target=[0, 2], k=4,
    ...                              radius=0.01, sigma=0.1, n_samples=256,
    ...                              return_details=True)
    >>> out.overlap.shape, out.radii.shape, out.smoothed_map.shape
    (torch.Size([2]), torch.Size([2, 4]), torch.Size([2, 16]))
    """
    explain = _explain_callable(explanation_func)
    is_tuple = isinstance(inputs, tuple)
    xs = as_tensor_tuple(inputs, "inputs")
    check_float_tensors(xs, "inputs")
    check_finite(xs, "inputs")
    k, radius, sigma, alpha = _check_common(k, radius, sigma, alpha, bound)
    sparsity = check_sparsity(sparsity)
    n = check_positive_int(n_samples, "n_samples")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    check_map_options(abs, channel_reduction)
    check_bool(return_details, "return_details")
    per_sample = _check_kwargs(explanation_kwargs)
    labels = _check_target(target, xs[0])
    if labels is not None:
        per_sample["target"] = labels
    if generator is None and seed is not None:
        check_positive_int(seed, "seed", minimum=0)
    gen = resolve_generator(generator, seed, xs[0].device)

    def on_features(d: int) -> None:
        _check_k(k, d)
        _check_sample_size(n, d, alpha, radius, sigma, bound)

    sampled = sparsified_samples(
        explain,
        xs,
        per_sample,
        is_tuple=is_tuple,
        n_samples=n,
        sigma=sigma,
        sparsity=sparsity,
        batch_size=batch_size,
        generator=gen,
        abs=abs,
        channel_reduction=channel_reduction,
        on_features=on_features,
    )
    d = sampled.counts.shape[1]
    err = hoeffding_err(n, d, alpha) if bound == "hoeffding" else None
    options = dict(radius=radius, sigma=sigma, n=n, alpha=alpha, bound=bound)
    result = certify(sampled.counts / n, k, err=err, **options)
    # A map constant at every draw ranks nothing; the tie rule alone would
    # certify its first s features.
    dead = sampled.constant == n
    result = result._replace(overlap=result.overlap.masked_fill(dead, math.nan))
    return result if return_details else result.overlap
