"""Pairwise similarity of two attribution maps: PCC, cosine, MSE and SSIM.

These are the map comparisons of Joo et al. (local gradient alignment) and
Dombrowski et al. Every map goes through the shared preparation
(``flatten_attribution`` / ``spatial_attribution``), so the options ``abs`` and
``channel_reduction`` mean what they mean for every other metric.

Degenerate maps follow the package rule (see :mod:`captum_robust.metrics`): a
score that a map cannot define is NaN, never a perfect or an arbitrary value.
Pearson is NaN where either map is constant, cosine where either map is all
zero, SSIM where both maps are one and the same constant (its data range is
zero), MSE only where a requested normalisation divides by zero.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int
from captum_robust._utils.validation import check_str_choice
from captum_robust.metrics._maps import ChannelReduction
from captum_robust.metrics._maps import TensorOrTuple
from captum_robust.metrics._maps import unit_scale
from captum_robust.metrics._pairwise import paired_maps

Normalization = Literal["none", "sum", "max"]
NORMALIZATIONS = ("none", "sum", "max")
MSE_REDUCTIONS = ("mean", "sum")

# Map pixels per SSIM chunk on a CPU (about 20 maps of 224 x 224): the four
# filtered planes of a chunk stay in the last-level cache, while the chunk
# still gives the convolutions enough channels to fill the vector units.
_SSIM_CPU_CHUNK_ELEMENTS = 1 << 20


def _constant_rows(maps: Tensor) -> Tensor:
    """(B,) True where a row holds one value (an all-zero row included)."""
    return (maps == maps[:, :1]).all(dim=1)


def pearson_flat(map_a: Tensor, map_b: Tensor) -> Tensor:
    """Pearson's r of two (B, N) maps, row by row, without argument checks."""
    # Scaling by a power of two is exact and keeps the sums finite at any scale.
    a = map_a * unit_scale(map_a).unsqueeze(1)
    b = map_b * unit_scale(map_b).unsqueeze(1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    covariance = (a * b).sum(dim=1)
    scale = (a * a).sum(dim=1).sqrt() * (b * b).sum(dim=1).sqrt()
    r = (covariance / scale).clamp(-1.0, 1.0)
    # The rounding residue of a constant row's centring is not a signal.
    undefined = _constant_rows(map_a) | _constant_rows(map_b)
    return r.masked_fill(undefined, math.nan)


def cosine_flat(map_a: Tensor, map_b: Tensor) -> Tensor:
    """Cosine similarity of two (B, N) maps, row by row; NaN for a zero row."""
    a = map_a * unit_scale(map_a).unsqueeze(1)
    b = map_b * unit_scale(map_b).unsqueeze(1)
    dot = (a * b).sum(dim=1)
    scale = (a * a).sum(dim=1).sqrt() * (b * b).sum(dim=1).sqrt()
    # 0 / 0 for an all-zero row gives NaN.
    return (dot / scale).clamp(-1.0, 1.0)


def normalized(maps: Tensor, normalize: str) -> Tensor:
    """Divide each (B, N) row by its sum or its peak magnitude (NaN if zero)."""
    if normalize == "none":
        return maps
    if normalize == "sum":
        total = maps.sum(dim=1, keepdim=True)
    else:
        total = maps.abs().amax(dim=1, keepdim=True)
    # x / 0 would give inf or NaN by sign; the rule says NaN for the whole row.
    out = maps / total
    return out.masked_fill(total == 0, math.nan)


def mse_flat(
    map_a: Tensor, map_b: Tensor, normalize: str = "none", reduction: str = "mean"
) -> Tensor:
    """Mean (or summed) squared difference of two (B, N) maps."""
    a = normalized(map_a, normalize)
    b = normalized(map_b, normalize)
    squared = (a - b).square()
    return squared.mean(dim=1) if reduction == "mean" else squared.sum(dim=1)


def pearson_correlation(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Pearson correlation coefficient (PCC) of two attribution maps, per sample.

    ``r = sum((a - mean a)(b - mean b)) / (||a - mean a|| ||b - mean b||)`` over
    the pixels of the two maps, as ``scipy.stats.pearsonr``. Joo et al. and
    Dombrowski et al. report it between the map of an image and of its
    perturbed copy: higher is more robust.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions of the same structure whose maps agree in shape after the
        channel reduction (see :func:`kendall_tau`).
    abs : bool, default True
        Compare magnitudes.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged; see ``flatten_attribution``.

    Returns
    -------
    Tensor
        Shape (B,), in [-1, 1]; NaN where either map is constant (all zero
        included), as scipy returns. float64 inputs give float64, others
        float32.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import pearson_correlation
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> pearson_correlation(a, torch.tensor([[2.0, 4.0, 6.0, 8.5]]))
    tensor([0.9984])
    >>> pearson_correlation(a, torch.zeros(1, 4))
    tensor([nan])
    """
    map_a, map_b = paired_maps(attr_a, attr_b, abs, channel_reduction)
    return pearson_flat(map_a, map_b)


def cosine_similarity(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Cosine similarity of two flattened attribution maps, per sample.

    ``a . b / (||a|| ||b||)``, uncentred (Joo et al.). Higher is more robust.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions whose maps agree in shape after the channel reduction.
    abs : bool, default True
        Compare magnitudes (then the value lies in [0, 1]).
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), in [-1, 1]; NaN where either map is all zero (no
        direction).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import cosine_similarity
    >>> a = torch.tensor([[1.0, 0.0, 1.0]])
    >>> cosine_similarity(a, torch.tensor([[1.0, 1.0, 0.0]]))
    tensor([0.5000])
    """
    map_a, map_b = paired_maps(attr_a, attr_b, abs, channel_reduction)
    return cosine_flat(map_a, map_b)


def mean_squared_error(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    normalize: Normalization = "none",
    reduction: Literal["mean", "sum"] = "mean",
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Squared difference of two attribution maps, per sample.

    By default no normalisation: the maps are compared at the scale the
    attribution method gives them, so the value is meaningful between maps of
    one model and method. ``normalize="sum"`` divides each map by its sum
    (Dombrowski et al. normalise maps to sum 1), ``"max"`` by its peak
    magnitude, so that maps of different scales compare. Lower is more robust.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of Tensor
        Attributions whose maps agree in shape after the channel reduction.
    normalize : {"none", "sum", "max"}, default "none"
        Applied to each map after the absolute value and channel reduction.
    reduction : {"mean", "sum"}, default "mean"
        Mean over the pixels, or their sum (Joo et al. sum over the pixels).
    abs : bool, default True
        Compare magnitudes.
    channel_reduction : {"sum", "mean", "max", "none"}, default "sum"
        How channels are merged.

    Returns
    -------
    Tensor
        Shape (B,), >= 0. Defined for every map without normalisation (two
        all-zero maps give 0); NaN where a requested normalisation divides by
        zero (an all-zero map, or a signed map summing to zero).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import mean_squared_error
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> mean_squared_error(a, torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    tensor([1.])
    >>> mean_squared_error(a, 2 * a, normalize="sum")
    tensor([0.])
    """
    check_str_choice(normalize, NORMALIZATIONS, "normalize")
    check_str_choice(reduction, MSE_REDUCTIONS, "reduction")
    map_a, map_b = paired_maps(attr_a, attr_b, abs, channel_reduction)
    return mse_flat(map_a, map_b, normalize, reduction)


def _gaussian_taps(sigma: float, radius: int, dtype: torch.dtype, device) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def _symmetric_index(size: int, start: int, stop: int, device) -> Tensor:
    """Indices of positions ``start .. stop - 1`` padded as scipy's "reflect".

    The edge value is repeated (d c b a | a b c d | d c b a), periodic with
    period 2 * size, so any padding works, also one wider than the axis.
    """
    positions = torch.arange(start, stop, device=device) % (2 * size)
    return torch.where(positions < size, positions, 2 * size - 1 - positions)


# Output columns per block of the banded products: wide enough for BLAS, narrow
# enough that the 2 * radius extra input columns stay a small overhead.
_BLOCK = 32


def _filter_last(planes: Tensor, taps: Tensor) -> Tensor:
    """Gaussian filter along the last axis with symmetric padding.

    Each block of ``_BLOCK`` outputs is one small matrix product of its
    ``_BLOCK + 2 r`` inputs with a banded (``_BLOCK + 2 r``, ``_BLOCK``)
    matrix: a few dozen multiply-adds per value, at BLAS speed, where a
    one-channel convolution or a dense band matrix is many times slower.
    """
    size = planes.shape[-1]
    radius = (taps.numel() - 1) // 2
    blocks = -(-size // _BLOCK)
    right = blocks * _BLOCK + radius - size
    if radius <= size and right <= size:
        # Flipped edge slices: a gather along the last axis is several times
        # slower than these copies.
        padded = torch.cat(
            [
                planes[..., :radius].flip(-1),
                planes,
                planes[..., size - right :].flip(-1),
            ],
            dim=-1,
        )
    else:
        index = _symmetric_index(size, -radius, size + right, planes.device)
        padded = planes.index_select(-1, index)
    windows = padded.unfold(-1, _BLOCK + 2 * radius, _BLOCK)
    band = torch.zeros(
        _BLOCK + 2 * radius, _BLOCK, dtype=planes.dtype, device=planes.device
    )
    columns = torch.arange(_BLOCK, device=planes.device)
    for k in range(2 * radius + 1):
        band[columns + k, columns] = taps[k]
    # One 2-D product: a strided batch of tiny products would be far slower.
    flat = windows.reshape(-1, _BLOCK + 2 * radius)
    out = (flat @ band).view(*planes.shape[:-1], blocks * _BLOCK)
    return out[..., :size]


def _filter(planes: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, H, W) planes with symmetric padding."""
    rows = _filter_last(planes, taps)
    return _filter_last(rows.transpose(1, 2), taps).transpose(1, 2)


def _depthwise_filter(planes: Tensor, taps: Tensor) -> Tensor:
    """Gaussian filter of padded (N, H, W, C) planes, without padding of its own.

    One depthwise convolution per axis with every map a channel: the taps run
    along the spatial axes while the vector units run along the channels,
    contiguous in memory (channels last). The output, (N, H', W', C) and
    contiguous, is smaller by ``taps.numel() - 1`` along both spatial axes.
    """
    channels = planes.shape[-1]
    size = taps.numel()
    image = planes.permute(0, 3, 1, 2)
    vertical = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    horizontal = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    layout = torch.channels_last
    out = F.conv2d(image, vertical.contiguous(memory_format=layout), groups=channels)
    out = F.conv2d(out, horizontal.contiguous(memory_format=layout), groups=channels)
    return out.permute(0, 2, 3, 1)


def _channels_last(maps: Tensor) -> Tensor:
    """(B, H, W) -> contiguous (H, W, B) by a blocked 2-D transpose."""
    batch, h, w = maps.shape
    out = maps.new_empty(h * w, batch)
    # copy_ of a transposed 2-D matrix takes ATen's blocked transpose: a
    # permuted 3-D copy is an order of magnitude slower.
    out.copy_(maps.reshape(batch, h * w).t())
    return out.view(h, w, batch)


def _channels_last_moments(
    map_a: Tensor, map_b: Tensor, inverse_scale: Tensor, taps: Tensor, crop: int
) -> tuple[Tensor, ...]:
    """Filtered x, y, x^2 + y^2 and x y of (B, H, W) maps, (H', W', B) each.

    Only the ``H - 2 crop`` by ``W - 2 crop`` outputs that SSIM averages are
    computed, so the maps need ``radius - crop`` pixels of symmetric padding.
    The four planes are the batch of one channels-last buffer (4, H, W, B), so
    that each filtered plane comes out contiguous: elementwise work on slices
    of a channel axis is many times slower.
    """
    radius = (taps.numel() - 1) // 2
    edge = radius - crop
    if edge < 0:
        # The window is narrower than the border crop: no padding reaches in.
        map_a = map_a[:, -edge : map_a.shape[1] + edge, -edge : map_a.shape[2] + edge]
        map_b = map_b[:, -edge : map_b.shape[1] + edge, -edge : map_b.shape[2] + edge]
        edge = 0
    if edge > min(map_a.shape[1:]):
        # Padding wider than the map: scipy's reflection repeats periodically.
        h, w = map_a.shape[1:]
        rows = _symmetric_index(h, -edge, h + edge, map_a.device)
        cols = _symmetric_index(w, -edge, w + edge, map_a.device)
        map_a = map_a.index_select(1, rows).index_select(2, cols)
        map_b = map_b.index_select(1, rows).index_select(2, cols)
        edge = 0
    batch, h, w = map_a.shape
    buffer = map_a.new_empty(4, h + 2 * edge, w + 2 * edge, batch)
    x, y, squares, product = buffer[:, edge : edge + h, edge : edge + w].unbind(0)
    torch.mul(_channels_last(map_a), inverse_scale, out=x)
    torch.mul(_channels_last(map_b), inverse_scale, out=y)
    torch.mul(x, x, out=squares).addcmul_(y, y)
    torch.mul(x, y, out=product)
    if edge:
        # Symmetric ("reflect" in scipy) edges: d c b a | a b c d | d c b a.
        body = buffer[:, :, edge : edge + w]
        body[:, :edge] = body[:, edge : 2 * edge].flip(1)
        body[:, edge + h :] = body[:, h : h + edge].flip(1)
        buffer[:, :, :edge] = buffer[:, :, edge : 2 * edge].flip(2)
        buffer[:, :, edge + w :] = buffer[:, :, w : w + edge].flip(2)
    return _depthwise_filter(buffer, taps).unbind(0)


def _ssim_values(
    ux: Tensor,
    uy: Tensor,
    uss: Tensor,
    uxy: Tensor,
    c1: Tensor,
    c2: Tensor,
    cov_norm: float,
) -> Tensor:
    """Local SSIM from filtered x, y, x^2 + y^2 and x y (fused, few passes)."""
    # vx + vy and vxy need only the sum of the squares' means, so four planes
    # are filtered instead of skimage's five.
    uxuy = ux * uy
    usq = torch.addcmul(ux * ux, uy, uy)
    numerator = torch.add(c1, uxuy, alpha=2.0)
    numerator.mul_(torch.sub(uxy, uxuy).mul_(2.0 * cov_norm).add_(c2))
    denominator = torch.add(usq, c1)
    denominator.mul_(torch.sub(uss, usq).mul_(cov_norm).add_(c2))
    return numerator.div_(denominator)


def ssim_spatial(
    map_a: Tensor,
    map_b: Tensor,
    *,
    win_size: int = 7,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool = False,
) -> Tensor:
    """SSIM of two (B, H, W) maps, row by row, without argument checks."""
    rows = max(1, _SSIM_CPU_CHUNK_ELEMENTS // max(map_a[0].numel(), 1))
    if map_a.device.type == "cpu" and len(map_a) > rows:
        return torch.cat(
            [
                ssim_spatial(
                    a,
                    b,
                    win_size=win_size,
                    sigma=sigma,
                    k1=k1,
                    k2=k2,
                    use_sample_covariance=use_sample_covariance,
                )
                for a, b in zip(map_a.split(rows), map_b.split(rows))
            ]
        )
    batch, h, w = map_a.shape
    dtype, device = map_a.dtype, map_a.device
    # skimage truncates its Gaussian at 3.5 sigma (11 taps for sigma 1.5) and
    # uses ``win_size`` for the covariance correction and the border crop.
    radius = int(3.5 * sigma + 0.5)
    taps = _gaussian_taps(sigma, radius, dtype, device)
    crop = (win_size - 1) // 2

    # The data range of each pair, taken over both maps together.
    # (amin and amax separately: aminmax over a dim is ~20x slower on a CPU.)
    flat_a, flat_b = map_a.flatten(1), map_b.flatten(1)
    lo = torch.minimum(flat_a.amin(dim=1), flat_b.amin(dim=1))
    hi = torch.maximum(flat_a.amax(dim=1), flat_b.amax(dim=1))
    data_range = hi - lo
    # With C1 and C2 proportional to the squared range, SSIM is unchanged when
    # both maps are divided by the range (not when shifted: the luminance term
    # compares absolute means), so each pair is brought to range 1 first and
    # the squares stay finite at any magnitude.
    safe_range = torch.where(data_range > 0, data_range, torch.ones_like(data_range))
    # After the rescaling the range is 1 (0 for a pair of one constant).
    unit = (data_range > 0).to(dtype)
    c1 = (k1 * unit) ** 2
    c2 = (k2 * unit) ** 2
    np_ = win_size**2
    cov_norm = np_ / (np_ - 1) if use_sample_covariance else 1.0

    if dtype == torch.float64 and device.type == "cpu":
        # oneDNN has no float64 convolution (the fallback loops over the
        # channels): blocked banded products on (4B, H, W) planes instead.
        scale = safe_range.view(-1, 1, 1)
        a = map_a / scale
        b = map_b / scale
        planes = torch.cat([a, b, torch.addcmul(a * a, b, b), a * b])
        filtered = _filter(planes, taps)[:, crop : h - crop, crop : w - crop]
        moments = filtered.split(batch)
        s = _ssim_values(*moments, c1.view(-1, 1, 1), c2.view(-1, 1, 1), cov_norm)
        score = s.mean(dim=(1, 2))
    else:
        moments = _channels_last_moments(
            map_a, map_b, safe_range.reciprocal(), taps, crop
        )
        # float32 sums are cascaded: accurate to ~1e-7 over any map size.
        score = _ssim_values(*moments, c1, c2, cov_norm).mean(dim=(0, 1))
    return score.masked_fill(data_range == 0, math.nan)


def structural_similarity(
    attr_a: TensorOrTuple,
    attr_b: TensorOrTuple,
    *,
    win_size: int = 7,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool = False,
    abs: bool = True,
    channel_reduction: ChannelReduction = "sum",
) -> Tensor:
    """Structural similarity (SSIM) of two 2-D attribution maps, per sample.

    The mean over the map of ``(2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)
    (vx + vy + C2))`` with Gaussian-weighted local means, variances and
    covariance (Wang et al. 2004), Joo et al.'s settings by default: window 7,
    sigma 1.5, ``C1 = (k1 * R)^2``, ``C2 = (k2 * R)^2``. The data range ``R``
    is taken per pair, over both maps together (``max - min`` of their union,
    as Quantus does), because attribution maps have no fixed range.

    The value equals ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=sigma, win_size=win_size,
    use_sample_covariance=use_sample_covariance, K1=k1, K2=k2, data_range=R)``:
    like skimage, the Gaussian is truncated at 3.5 sigma (11 taps for sigma
    1.5), edges are padded symmetrically, and ``win_size`` sets the border
    that is left out of the mean ((win_size - 1) / 2 pixels) and the
    sample-covariance correction. Higher is more robust.

    Parameters
    ----------
    attr_a, attr_b : Tensor or tuple of one Tensor
        (B, C, H, W) or (B, H, W) attributions whose maps agree in shape.
        H and W must be at least ``win_size``.
    win_size : int, default 7
        Odd window size (border crop and covariance correction).
    sigma : float, default 1.5
        Standard deviation of the Gaussian window.
    k1, k2 : float, default 0.01, 0.03
        Stabilising constants relative to the data range.
    use_sample_covariance : bool, default False
        Population covariance (Wang et al.); True scales variances by
        ``N / (N - 1)`` with ``N = win_size ** 2``, skimage's default.
    abs : bool, default True
        Compare magnitudes.
    channel_reduction : {"sum", "mean", "max"}, default "sum"
        How channels are merged into one plane.

    Returns
    -------
    Tensor
        Shape (B,), at most 1; NaN where both maps are one and the same
        constant (zero data range, no structure to compare).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.metrics import structural_similarity
    >>> a = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> structural_similarity(a, a)
    tensor([1., 1.])
    >>> bool((structural_similarity(a, a.flip(-1)) < 0.5).all())
    True
    """
    check_positive_int(win_size, "win_size", minimum=3)
    if win_size % 2 != 1:
        raise ValueError(f"`win_size` must be odd, got {win_size}.")
    check_number(sigma, "sigma", minimum=0.0, strict_minimum=True)
    check_number(k1, "k1", minimum=0.0)
    check_number(k2, "k2", minimum=0.0)
    check_bool(use_sample_covariance, "use_sample_covariance")
    map_a, map_b = paired_maps(attr_a, attr_b, abs, channel_reduction, spatial=True)
    if min(map_a.shape[1:]) < win_size:
        raise ValueError(
            f"`attr_a` gives maps of size {tuple(map_a.shape[1:])}, smaller than "
            f"`win_size` {win_size}; both sides must be at least win_size."
        )
    return ssim_spatial(
        map_a,
        map_b,
        win_size=win_size,
        sigma=sigma,
        k1=k1,
        k2=k2,
        use_sample_covariance=use_sample_covariance,
    )
