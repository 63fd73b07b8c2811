"""Fuzzing every public metric against scipy.stats and brute-force numpy.

Maps are small integers times a power of two per sample, so that every dtype
holds them exactly and the channel sums are exact in float32 as in float64; the
exponents reach the top of each dtype's range, where a channel sum overflows
unless the reduction rescales. All metrics are scale-free per sample, so the
references work on the integers themselves.
"""

import math
import warnings

import numpy as np
import scipy.stats
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import mask_iou
from captum_robust.metrics import pointing_game
from captum_robust.metrics import relevance_rank_accuracy
from captum_robust.metrics import silhouette_overlap
from captum_robust.metrics import spearman_correlation
from captum_robust.metrics import topk_intersection

# dtype: (largest integer magnitude, smallest and largest power-of-two exponent)
# chosen so that integer * 2**exponent is exact and below the dtype's maximum,
# while a sum of 4 channels at the top exponent exceeds it.
RANGES = {
    torch.float16: (1023, -14, 5),
    torch.bfloat16: (127, -120, 120),
    torch.float32: (1023, -120, 117),
    torch.float64: (1023, -1000, 1013),
}
REDUCTIONS = ("sum", "mean", "max", "none")


def exponent(low, high):
    # The extremes often: the top one is where channel sums overflow.
    return st.one_of(st.sampled_from([low, high, high - 1, 0]), st.integers(low, high))


@st.composite
def integer_maps(draw, batch, shape, magnitude):
    """(batch, *shape) int64 array with ties, zeros and constant samples."""
    rows = []
    size = math.prod(shape)
    for _ in range(batch):
        kind = draw(st.sampled_from(["zero", "constant", "few", "many"]))
        if kind == "zero":
            row = [0] * size
        elif kind == "constant":
            row = [draw(st.integers(-magnitude, magnitude))] * size
        else:
            top = 2 if kind == "few" else magnitude
            row = draw(st.lists(st.integers(-top, top), min_size=size, max_size=size))
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(batch, *shape)


def to_tensor(ints, exponents, dtype):
    """ints * 2**exponent[sample], exactly, in ``dtype``."""
    scale = np.ldexp(1.0, np.asarray(exponents)).reshape(-1, *(1,) * (ints.ndim - 1))
    return torch.from_numpy(ints.astype(np.float64) * scale).to(dtype)


def reference_map(ints, use_abs, reduction):
    """The map the metrics rank, up to a positive factor per sample."""
    x = (np.abs(ints) if use_abs else ints).astype(np.float64)
    if x.ndim >= 4 and reduction != "none":
        x = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduction](x, axis=1)
    return x


def is_constant(row):
    return row.min() == row.max()


def scipy_or_nan(fn, x, y):
    if is_constant(x) or is_constant(y):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(x, y).statistic


def brute_topk(row, k):
    # Larger value first, lower flat index first among equals.
    return sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]


def brute_topk_intersection(x, y, k):
    if is_constant(x) or is_constant(y):
        return math.nan
    return len(set(brute_topk(x, k)) & set(brute_topk(y, k))) / k


def center(m):
    mass = m.sum()
    if mass == 0:
        return np.array([math.nan, math.nan])
    rows, cols = np.indices(m.shape)
    return np.array([(m * rows).sum() / mass, (m * cols).sum() / mass])


@st.composite
def pair_case(draw):
    """Two attributions (possibly tuples) whose maps agree after the reduction."""
    dtype = draw(st.sampled_from(list(RANGES)))
    magnitude, low, high = RANGES[dtype]
    batch = draw(st.integers(1, 3))
    reduction = draw(st.sampled_from(REDUCTIONS))
    use_abs = draw(st.booleans())
    parts = []
    for _ in range(draw(st.integers(1, 2))):
        layout = draw(st.sampled_from(["image", "plane", "flat"]))
        height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        if layout == "flat":
            shape_a = shape_b = (draw(st.integers(1, 8)),)
        elif layout == "plane":
            shape_a = shape_b = (height, width)
        else:
            channels_a, channels_b = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            if reduction == "none":
                channels_b = channels_a
            shape_a, shape_b = (channels_a, height, width), (channels_b, height, width)
            # A plane (B, H, W) is comparable with a reduced image.
            if reduction != "none" and draw(st.booleans()):
                shape_b = (height, width)
        parts.append(
            (
                draw(integer_maps(batch, shape_a, magnitude)),
                draw(integer_maps(batch, shape_b, magnitude)),
            )
        )
    # One exponent per sample (shared by the parts of a tuple), so huge and
    # tiny samples meet in one batch.
    exponents = [draw(exponent(low, high)) for _ in range(2 * batch)]
    return dtype, parts, exponents[:batch], exponents[batch:], use_abs, reduction


def reference_flat(parts, side, use_abs, reduction):
    maps = [reference_map(p[side], use_abs, reduction) for p in parts]
    return np.concatenate([m.reshape(len(m), -1) for m in maps], axis=1)


def attribution(parts, side, exponents, dtype):
    tensors = tuple(to_tensor(p[side], exponents, dtype) for p in parts)
    return tensors[0] if len(tensors) == 1 else tensors


def check(ours, expected, tol):
    ours = ours.double().numpy()
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(ours, expected, rtol=tol, atol=tol)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(pair_case(), st.data())
def test_pairwise_metrics_match_references(case, data):
    dtype, parts, exp_a, exp_b, use_abs, reduction = case
    a = attribution(parts, 0, exp_a, dtype)
    b = attribution(parts, 1, exp_b, dtype)
    ref_a = reference_flat(parts, 0, use_abs, reduction)
    ref_b = reference_flat(parts, 1, use_abs, reduction)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    options = dict(abs=use_abs, channel_reduction=reduction)
    for fn, scipy_fn in (
        (kendall_tau, scipy.stats.kendalltau),
        (spearman_correlation, scipy.stats.spearmanr),
    ):
        expected = [scipy_or_nan(scipy_fn, x, y) for x, y in zip(ref_a, ref_b)]
        check(fn(a, b, **options), expected, tol)
    k = data.draw(st.integers(1, ref_a.shape[1]))
    expected = [brute_topk_intersection(x, y, k) for x, y in zip(ref_a, ref_b)]
    check(topk_intersection(a, b, k, **options), expected, tol)

    # The degenerate rule, stated directly: a constant map gives NaN.
    constant = [is_constant(x) or is_constant(y) for x, y in zip(ref_a, ref_b)]
    assert np.array_equal(kendall_tau(a, b, **options).isnan().numpy(), constant)
    assert np.array_equal(
        topk_intersection(a, b, k, **options).isnan().numpy(), constant
    )

    if len(parts) == 1 and parts[0][0].ndim >= 3 and reduction != "none":
        plane_a = ref_a.reshape(-1, *parts[0][0].shape[-2:])
        plane_b = ref_b.reshape(plane_a.shape)
        expected = [
            np.linalg.norm(center(x) - center(y)) for x, y in zip(plane_a, plane_b)
        ]
        check(center_of_mass_shift(a, b, **options), expected, 1e-5)


@st.composite
def mask_case(draw):
    dtype = draw(st.sampled_from(list(RANGES)))
    magnitude, low, high = RANGES[dtype]
    batch = draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    planar = draw(st.booleans())
    shape = (height, width) if planar else (draw(st.integers(1, 4)), height, width)
    ints = draw(integer_maps(batch, shape, magnitude))
    mask = np.array(
        draw(
            st.lists(
                st.lists(
                    st.booleans(), min_size=height * width, max_size=height * width
                ),
                min_size=batch,
                max_size=batch,
            )
        )
    ).reshape(batch, height, width)
    mask[:, 0, 0] |= ~mask.reshape(batch, -1).any(axis=1)  # never empty
    exponents = [draw(exponent(low, high)) for _ in range(batch)]
    reduction = draw(st.sampled_from(["sum", "max"]))
    return dtype, ints, mask, exponents, draw(st.booleans()), reduction


@settings(max_examples=50, deadline=None, derandomize=True)
@given(mask_case(), st.sampled_from([0.25, 0.5, 1.0]))
def test_mask_metrics_match_references(case, threshold):
    dtype, ints, mask, exponents, use_abs, reduction = case
    attr = to_tensor(ints, exponents, dtype)
    mask_t = torch.from_numpy(mask)
    maps = np.clip(reference_map(ints, use_abs, reduction), 0, None)
    flat, flat_mask = maps.reshape(len(maps), -1), mask.reshape(len(mask), -1)
    options = dict(abs=use_abs, channel_reduction=reduction)

    overlap, pointing, rank, iou_max, iou_top = [], [], [], [], []
    for m, obj in zip(flat, flat_mask):
        total = m.sum()
        overlap.append((m * obj).sum() / total if total > 0 else math.nan)
        constant = is_constant(m)
        pointing.append(math.nan if constant else float(obj[np.argmax(m)]))
        top = brute_topk(m, int(obj.sum()))
        rank.append(math.nan if constant else obj[top].sum() / obj.sum())
        peak = m.max()
        predicted = (m >= threshold * peak) & (m > 0)
        iou_max.append(
            (predicted & obj).sum() / (predicted | obj).sum() if peak > 0 else math.nan
        )
        predicted = np.zeros(len(m), dtype=bool)
        predicted[brute_topk(m, math.ceil(threshold * len(m)))] = True
        iou_top.append(
            math.nan if constant else (predicted & obj).sum() / (predicted | obj).sum()
        )

    check(silhouette_overlap(attr, mask_t, **options), overlap, 1e-5)
    check(pointing_game(attr, mask_t, **options), pointing, 0)
    check(relevance_rank_accuracy(attr, mask_t, **options), rank, 1e-6)
    iou = mask_iou(attr, mask_t, threshold=threshold, **options)
    check(iou, iou_max, 1e-6)
    iou = mask_iou(
        attr, mask_t, threshold=threshold, threshold_mode="top_fraction", **options
    )
    check(iou, iou_top, 1e-6)
