"""Maps compared after the channel reduction, overflow-safe reductions, flags."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from captum_robust._utils.validation import check_finite
from captum_robust.metrics import CenterOfMassShift
from captum_robust.metrics import KendallTau
from captum_robust.metrics import MaskIoU
from captum_robust.metrics import PointingGame
from captum_robust.metrics import SilhouetteOverlap
from captum_robust.metrics import SpearmanCorrelation
from captum_robust.metrics import TopKIntersection
from captum_robust.metrics import center_of_mass
from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import flatten_attribution
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import mask_iou
from captum_robust.metrics import pointing_game
from captum_robust.metrics import relevance_rank_accuracy
from captum_robust.metrics import silhouette_overlap
from captum_robust.metrics import spatial_attribution
from captum_robust.metrics import spearman_correlation
from captum_robust.metrics import topk_intersection
from captum_robust.metrics._center import center_of_mass_map
from captum_robust.metrics._maps import scaled_sums
from captum_robust.metrics._maps import scaled_sums_elementwise
from captum_robust.metrics._maps import unit_scale

GENERATOR = torch.Generator().manual_seed(0)
SALIENCY = torch.randn(3, 3, 6, 6, generator=GENERATOR)
GRAD_CAM = torch.rand(3, 1, 6, 6, generator=GENERATOR)
MASK = torch.rand(3, 6, 6, generator=GENERATOR) > 0.5


def topk5(a, b, **options):
    return topk_intersection(a, b, 5, **options)


PAIRWISE = [kendall_tau, spearman_correlation, topk5, center_of_mass_shift]


@pytest.mark.parametrize("fn", PAIRWISE)
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_grad_cam_compares_with_saliency(fn, reduction):
    # The same numbers as on the maps reduced by hand, in either order and
    # whether the Grad-CAM map keeps its channel axis or not.
    saliency_map = {
        "sum": SALIENCY.abs().sum(1),
        "mean": SALIENCY.abs().mean(1),
        "max": SALIENCY.abs().amax(1),
    }[reduction]
    cam_map = GRAD_CAM[:, 0]
    expected = fn(cam_map, saliency_map)
    for cam in (GRAD_CAM, cam_map):
        torch.testing.assert_close(
            fn(cam, SALIENCY, channel_reduction=reduction), expected
        )
        torch.testing.assert_close(
            fn(SALIENCY, cam, channel_reduction=reduction), fn(saliency_map, cam_map)
        )


def test_grad_cam_against_saliency_matches_scipy():
    cam = GRAD_CAM.flatten(1).double().numpy()
    saliency = SALIENCY.abs().sum(1).flatten(1).double().numpy()
    expected = [scipy.stats.kendalltau(x, y).statistic for x, y in zip(cam, saliency)]
    np.testing.assert_allclose(kendall_tau(GRAD_CAM, SALIENCY), expected, rtol=1e-5)


@pytest.mark.parametrize("fn", PAIRWISE)
def test_shapes_that_disagree_after_the_reduction(fn):
    other = torch.rand(3, 3, 6, 5)
    with pytest.raises(ValueError, match=r"`attr_b`.*\(3, 3, 6, 5\).*`attr_a`.*"):
        fn(GRAD_CAM, other)


@pytest.mark.parametrize("fn", [kendall_tau, spearman_correlation, topk5])
def test_same_feature_count_in_other_map_shapes_is_refused(fn):
    with pytest.raises(ValueError, match=r"maps \(3, 36\) and \(3, 6, 6\)"):
        fn(SALIENCY, torch.rand(3, 36))


@pytest.mark.parametrize("fn", [kendall_tau, spearman_correlation, topk5])
def test_channel_reduction_none_needs_equal_shapes(fn):
    with pytest.raises(ValueError, match='attr_b.*attr_a.*"none"'):
        fn(SALIENCY, GRAD_CAM, channel_reduction="none")
    with pytest.raises(ValueError, match="attr_b"):
        fn(GRAD_CAM, GRAD_CAM[:, 0], channel_reduction="none")
    assert fn(SALIENCY, SALIENCY, channel_reduction="none").shape == (3,)


def test_tuple_parts_are_matched_one_by_one():
    a = (SALIENCY, torch.rand(3, 7))
    b = (GRAD_CAM, torch.rand(3, 7))
    expected = kendall_tau(
        torch.cat([SALIENCY.abs().sum(1).flatten(1), a[1]], 1),
        torch.cat([GRAD_CAM.flatten(1), b[1]], 1),
    )
    torch.testing.assert_close(kendall_tau(a, b), expected)
    with pytest.raises(ValueError, match=r"attr_b\[1\]"):
        kendall_tau(a, (GRAD_CAM, torch.rand(3, 8)))


# ---------------------------------------------------------------- overflow


def huge_pair(dtype, peak):
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    b = a + 0.5 * torch.rand(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    # Only the first two samples are huge: per-sample rescaling must not touch
    # the others.
    scale = torch.tensor([peak, peak / 2, 1.0, 1e-30], dtype=torch.float64)
    scale = scale.view(-1, 1, 1, 1)
    scale = scale / 1.5  # b < 1.5, and b * max would overflow first
    return (a * scale).to(dtype), (b * scale).to(dtype), a, b


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    "fn", PAIRWISE + [lambda a, b, **o: center_of_mass(a, **o)[:, 0]]
)
def test_float32_near_its_maximum_matches_float64(fn, reduction):
    # 3 channels of up to 3.4e38 overflow a float32 sum (NaN Kendall, top-k 1.0
    # before the rescaling).
    a, b, _, _ = huge_pair(torch.float32, torch.finfo(torch.float32).max)
    ours = fn(a, b, channel_reduction=reduction)
    reference = fn(a.double(), b.double(), channel_reduction=reduction)
    assert torch.isfinite(ours).all()
    # Centers in pixels: float32 sums round at about 1e-6 of a pixel.
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)


def test_float64_beyond_float32_range_is_accepted_and_exact():
    # Rescaling each sample changes no rank: the same scores as on the
    # unscaled maps. Near the float64 maximum the channel sum overflows float64.
    for peak in (1e300, torch.finfo(torch.float64).max):
        a, b, base_a, base_b = huge_pair(torch.float64, peak)
        for fn in (kendall_tau, spearman_correlation, topk5):
            torch.testing.assert_close(fn(a, b), fn(base_a, base_b))
        torch.testing.assert_close(
            center_of_mass_shift(a, b), center_of_mass_shift(base_a, base_b)
        )
    check_finite((a,), "a")
    with pytest.raises(ValueError, match="`a` contains NaN or inf"):
        check_finite((torch.tensor([[1e300, math.inf]], dtype=torch.float64),), "a")


def test_tuple_with_one_huge_part_keeps_the_parts_in_scale():
    # One shift per sample across the tuple: rescaling only the huge part
    # would reorder it against the other part.
    top = torch.finfo(torch.float32).max
    image = torch.full((1, 4, 1, 2), top / 2)
    image[0, :, 0, 1] = top / 8
    flat = torch.tensor([[top / 4]])
    a = (image, flat)
    ours = flatten_attribution(a)
    reference = flatten_attribution((image.double(), flat.double()))
    assert torch.isfinite(ours).all()
    # Ranks of [2 top, top / 2, top / 4] are kept.
    assert ours.argsort(1).tolist() == reference.argsort(1).tolist() == [[2, 1, 0]]
    torch.testing.assert_close(ours.double() / ours.max(), reference / reference.max())


def test_mass_scores_do_not_overflow_over_many_pixels():
    # 1e36 * 64 * 64 overflows float32 in a plain sum over the map.
    a = torch.rand(2, 64, 64, generator=GENERATOR) * 1e36
    mask = torch.rand(2, 64, 64, generator=GENERATOR) > 0.5
    mask[:, 0, 0] = True
    for fn in (silhouette_overlap, mask_iou):
        torch.testing.assert_close(
            fn(a, mask).double(), fn(a.double(), mask), rtol=1e-5, atol=1e-6
        )
    torch.testing.assert_close(
        center_of_mass(a).double(), center_of_mass(a.double()), rtol=1e-5, atol=1e-5
    )


def test_scaled_sums_paths_agree_and_do_not_overflow():
    # The GPU path (elementwise) against the CPU one (batched matrix product)
    # and a float64 reference, on maps whose plain row sums overflow float32.
    maps = torch.rand(3, 5, 7, generator=GENERATOR) * torch.tensor(
        [3e38, 1.0, 1e-30]
    ).view(-1, 1, 1)
    weights = torch.rand(7, 2, generator=GENERATOR)
    scale = unit_scale(maps)
    assert torch.equal(scale.log2(), scale.log2().round())  # powers of two
    reference = (maps.double() * scale.double().view(-1, 1, 1)) @ weights.double()
    for fn in (scaled_sums, scaled_sums_elementwise):
        result = fn(maps, weights, scale)
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result.double(), reference, rtol=1e-6, atol=0)


def test_signed_map_with_zero_mass_has_no_center():
    # 5 - 2 - 3 = 0 exactly: the rescaling by a power of two keeps it exact.
    attr = torch.tensor([[[5.0, -2.0, -3.0]]])
    assert center_of_mass(attr, abs=False).isnan().all()
    assert not center_of_mass(attr).isnan().any()


def test_center_of_mass_map_gradient_is_unchanged_by_rescaling():
    maps = torch.rand(2, 3, 4, dtype=torch.float64, generator=GENERATOR) * 1e3
    maps.requires_grad_(True)
    assert torch.autograd.gradcheck(center_of_mass_map, (maps,))

    def plain(m):
        rows = torch.arange(3, dtype=m.dtype)
        mass = m.sum(dim=(1, 2))
        return (m.sum(dim=2) * rows).sum(dim=1) / mass

    (grad,) = torch.autograd.grad(center_of_mass_map(maps)[:, 0].sum(), maps)
    (expected,) = torch.autograd.grad(plain(maps).sum(), maps)
    torch.testing.assert_close(grad, expected)


# ------------------------------------------------------------------ flags

MAP_FUNCTIONS = [
    lambda **o: topk_intersection(SALIENCY, SALIENCY, 3, **o),
    lambda **o: kendall_tau(SALIENCY, SALIENCY, **o),
    lambda **o: spearman_correlation(SALIENCY, SALIENCY, **o),
    lambda **o: center_of_mass(SALIENCY, **o),
    lambda **o: center_of_mass_shift(SALIENCY, SALIENCY, **o),
    lambda **o: silhouette_overlap(SALIENCY, MASK, **o),
    lambda **o: pointing_game(SALIENCY, MASK, **o),
    lambda **o: relevance_rank_accuracy(SALIENCY, MASK, **o),
    lambda **o: mask_iou(SALIENCY, MASK, **o),
    lambda **o: flatten_attribution(SALIENCY, **o),
    lambda **o: spatial_attribution(SALIENCY, **o),
]


@pytest.mark.parametrize("fn", MAP_FUNCTIONS)
@pytest.mark.parametrize("bad", ["no", 1, None, torch.tensor(True)])
def test_abs_must_be_a_bool(fn, bad):
    with pytest.raises(TypeError, match="`abs` must be a bool"):
        fn(abs=bad)


@pytest.mark.parametrize("fn", MAP_FUNCTIONS)
def test_channel_reduction_must_be_a_string(fn):
    with pytest.raises(TypeError, match="`channel_reduction` must be a str"):
        fn(channel_reduction=1)
    with pytest.raises(ValueError, match="`channel_reduction` must be one of"):
        fn(channel_reduction="median")


def test_other_options_are_type_checked():
    for fn in (flatten_attribution, spatial_attribution):
        with pytest.raises(TypeError, match="`validate` must be a bool"):
            fn(SALIENCY, validate="yes")
        with pytest.raises(TypeError, match="`name`"):
            fn(SALIENCY, name=3)
    with pytest.raises(TypeError, match="`threshold_mode` must be a str"):
        mask_iou(SALIENCY, MASK, threshold_mode=0)
    with pytest.raises(TypeError, match="`threshold`"):
        mask_iou(SALIENCY, MASK, threshold="0.5")
    with pytest.raises(TypeError, match="`k`"):
        topk_intersection(SALIENCY, SALIENCY, True)


@pytest.mark.parametrize(
    "make, error, name",
    [
        (lambda: KendallTau(abs="no"), TypeError, "abs"),
        (lambda: SpearmanCorrelation(channel_reduction=None), TypeError, "channel"),
        (lambda: CenterOfMassShift(channel_reduction="median"), ValueError, "channel"),
        (lambda: TopKIntersection(k=2.0), TypeError, "k"),
        (lambda: TopKIntersection(k=0), ValueError, "k"),
        (lambda: TopKIntersection(k=3, abs=0), TypeError, "abs"),
        (lambda: SilhouetteOverlap(abs="yes"), TypeError, "abs"),
        (lambda: MaskIoU(threshold_mode=1), TypeError, "threshold_mode"),
        (lambda: MaskIoU(threshold=0.0), ValueError, "threshold"),
    ],
)
def test_streaming_options_are_checked_at_construction(make, error, name):
    with pytest.raises(error, match=f"`{name}"):
        make()


# ------------------------------------------------------ degenerate samples


def test_streaming_metrics_skip_and_count_degenerate_samples():
    maps = torch.rand(3, 1, 6, 6, generator=GENERATOR)
    maps[1] = 0.0  # dead gradients
    other = torch.rand(3, 1, 6, 6, generator=GENERATOR)
    cases = [
        (TopKIntersection(k=5), topk_intersection(maps, other, 5), (maps, other)),
        (KendallTau(), kendall_tau(maps, other), (maps, other)),
        (CenterOfMassShift(), center_of_mass_shift(maps, other), (maps, other)),
        (SilhouetteOverlap(), silhouette_overlap(maps, MASK), (maps, MASK)),
        (PointingGame(), pointing_game(maps, MASK), (maps, MASK)),
        (MaskIoU(), mask_iou(maps, MASK), (maps, MASK)),
    ]
    for metric, scores, inputs in cases:
        assert scores.isnan().tolist() == [False, True, False]
        metric.update(*inputs)
        result = metric.compute()
        assert result["count"].item() == 2
        assert result["nan_count"].item() == metric.nan_count.item() == 1
        expected = scores[[0, 2]].double().mean()
        torch.testing.assert_close(result["mean"], expected)


def test_streaming_metric_with_only_degenerate_samples():
    metric = TopKIntersection(k=2)
    metric.update(torch.zeros(4, 9), torch.rand(4, 9, generator=GENERATOR))
    result = metric.compute()
    assert result["count"].item() == 0 and result["nan_count"].item() == 4
    assert result["mean"].isnan()
