import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from captum_robust.metrics import center_of_mass
from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import topk_intersection


def brute_force_topk(row, k):
    # Larger value first, lower index first among equals.
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return set(order[:k])


def brute_force_intersection(row_a, row_b, k):
    # A constant map has no top-k set: NaN.
    if len(set(row_a)) == 1 or len(set(row_b)) == 1:
        return float("nan")
    return len(brute_force_topk(row_a, k) & brute_force_topk(row_b, k)) / k


@st.composite
def maps_and_k(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 50))
    levels = draw(st.sampled_from([2, 4, 10_000]))
    # Signed values: with abs=True, v and -v are ties.
    elements = st.integers(-(levels - 1), levels - 1)
    a = draw(arrays(np.int64, (batch, n), elements=elements))
    b = draw(arrays(np.int64, (batch, n), elements=elements))
    k = draw(st.integers(1, n))
    use_abs = draw(st.booleans())
    return a.astype(np.float32), b.astype(np.float32), k, use_abs


@settings(max_examples=200, deadline=None)
@given(maps_and_k())
def test_topk_intersection_matches_brute_force_set_intersection(data):
    a, b, k, use_abs = data
    ranked_a, ranked_b = (np.abs(a), np.abs(b)) if use_abs else (a, b)
    expected = [
        brute_force_intersection(ra.tolist(), rb.tolist(), k)
        for ra, rb in zip(ranked_a, ranked_b)
    ]
    result = topk_intersection(torch.from_numpy(a), torch.from_numpy(b), k, abs=use_abs)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def test_topk_large_batch_with_and_without_ties_at_the_cut():
    # Rows whose k-th value is unique take the fast path on the CPU, the others
    # the deterministic tie rule; signed zeros are ties under abs.
    generator = torch.Generator().manual_seed(3)
    n, k = 3000, 100
    a = torch.randn(6, n, generator=generator, dtype=torch.float64)
    b = torch.randn(6, n, generator=generator, dtype=torch.float64)
    a[1] = torch.randint(-3, 4, (n,), generator=generator)  # ties at the cut
    b[2, :] = 0.0
    b[2, ::2] = -0.0  # every value tied (a zero map): NaN
    a[3] = torch.randint(-50, 51, (n,), generator=generator)
    b[4, :k] = 1.0  # all tied but the k first
    b[4, k:] = 0.0
    for use_abs in (True, False):
        result = topk_intersection(a, b, k, abs=use_abs)
        ranked_a, ranked_b = (a.abs(), b.abs()) if use_abs else (a, b)
        expected = [
            brute_force_intersection(ra.tolist(), rb.tolist(), k)
            for ra, rb in zip(ranked_a, ranked_b)
        ]
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12)
        assert result[2].isnan() and not result[4].isnan()


def test_topk_hand_case_and_ties_are_deterministic():
    a = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 0.0, 1.0, 1.0]])
    # a's top-3 under ties is indices {0, 1, 2}; b's is {0, 3, 4}.
    assert topk_intersection(a, b, 3).item() == pytest.approx(1 / 3)
    assert topk_intersection(a, a, 3).item() == 1.0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_topk_of_constant_maps_is_nan(k):
    # Dead gradients: two zero maps used to score a perfect 1.0.
    zero, ramp = torch.zeros(2, 4), torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2)
    assert topk_intersection(zero, zero, k).isnan().all()
    assert topk_intersection(ramp, torch.full((2, 4), 7.0), k).isnan().all()
    # abs=True: -1 and 1 are the same magnitude, so this map is constant too.
    signed = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert topk_intersection(signed, ramp[:1], k).isnan().all()
    assert not topk_intersection(signed, ramp[:1], k, abs=False).isnan().any()


def test_topk_on_image_attributions_uses_channel_sum_of_magnitudes():
    a = torch.zeros(1, 3, 2, 2)
    a[0, :, 0, 0] = torch.tensor([1.0, -1.0, 1.0])  # |.| sum 3, signed sum 1
    a[0, 0, 1, 1] = 2.0
    b = torch.zeros(1, 3, 2, 2)
    b[0, 0, 0, 0] = 5.0
    assert topk_intersection(a, b, 1).item() == 1.0
    assert topk_intersection(a, b, 1, abs=False).item() == 0.0


def test_center_of_mass_hand_computed():
    attr = torch.zeros(2, 1, 4, 6)
    attr[0, 0, 1, 2] = 1.0
    attr[0, 0, 3, 4] = 3.0
    attr[1, 0, 0, 0] = -2.0  # magnitude counts by default
    expected = torch.tensor([[(1 + 9) / 4, (2 + 12) / 4], [0.0, 0.0]])
    torch.testing.assert_close(center_of_mass(attr), expected)


def test_center_of_mass_of_zero_map_is_nan():
    assert torch.isnan(center_of_mass(torch.zeros(1, 3, 3))).all()


def test_center_shift_is_euclidean_distance():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, 9, 7, generator=generator)
    b = torch.rand(5, 3, 9, 7, generator=generator)
    expected = (center_of_mass(a) - center_of_mass(b)).pow(2).sum(1).sqrt()
    torch.testing.assert_close(center_of_mass_shift(a, b), expected)
    assert torch.equal(center_of_mass_shift(a, a), torch.zeros(5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_center_and_topk_accept_precisions(dtype):
    a = torch.rand(2, 3, 8, 8).to(dtype)
    assert center_of_mass_shift(a, a).shape == (2,)
    assert torch.equal(
        topk_intersection(a, a, 5),
        torch.ones(2, dtype=torch.float32 if dtype != torch.float64 else dtype),
    )
