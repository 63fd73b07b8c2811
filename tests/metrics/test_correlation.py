import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from captum_robust.metrics import kendall_tau
from captum_robust.metrics import spearman_correlation
from captum_robust.metrics._ranking import count_inversions


def scipy_rows(fn, a, b):
    with warnings.catch_warnings():
        # scipy warns about constant rows and returns NaN, which we compare.
        warnings.simplefilter("ignore")
        out = [fn(row_a, row_b).statistic for row_a, row_b in zip(a, b)]
    return np.array(out, dtype=np.float64)


@st.composite
def paired_maps(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(2, 60))
    levels = draw(st.sampled_from([2, 3, 5, 1000]))
    # Few levels give many ties; 1000 levels give almost none.
    elements = st.integers(0, levels - 1)
    a = draw(arrays(np.int64, (batch, n), elements=elements)).astype(np.float64)
    b = draw(arrays(np.int64, (batch, n), elements=elements)).astype(np.float64)
    return a, b


@settings(max_examples=150, deadline=None)
@given(paired_maps())
def test_kendall_matches_scipy_with_and_without_ties(maps):
    a, b = maps
    ours = kendall_tau(torch.from_numpy(a), torch.from_numpy(b), abs=False).numpy()
    reference = scipy_rows(scipy.stats.kendalltau, a, b)
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(paired_maps())
def test_spearman_matches_scipy_with_and_without_ties(maps):
    a, b = maps
    ours = spearman_correlation(
        torch.from_numpy(a), torch.from_numpy(b), abs=False
    ).numpy()
    reference = scipy_rows(scipy.stats.spearmanr, a, b)
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


def test_large_continuous_maps_match_scipy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 40, 40, generator=generator, dtype=torch.float64)
    b = a + 0.5 * torch.randn(3, 2, 40, 40, generator=generator, dtype=torch.float64)
    flat_a = a.abs().sum(1).flatten(1).numpy()
    flat_b = b.abs().sum(1).flatten(1).numpy()
    np.testing.assert_allclose(
        kendall_tau(a, b).numpy(), scipy_rows(scipy.stats.kendalltau, flat_a, flat_b)
    )
    np.testing.assert_allclose(
        spearman_correlation(a, b).numpy(),
        scipy_rows(scipy.stats.spearmanr, flat_a, flat_b),
    )


def test_constant_map_gives_nan_like_scipy():
    a = torch.ones(2, 1, 4, 4)
    b = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.isnan(kendall_tau(a, b)).all()
    assert torch.isnan(spearman_correlation(b, a)).all()
    with pytest.warns(Warning):
        assert np.isnan(scipy.stats.spearmanr(np.ones(16), b[0].flatten()).statistic)


def test_mixed_batch_only_constant_row_is_nan():
    a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    result = kendall_tau(a, b)
    assert torch.isnan(result[0])
    assert result[1] == 1.0


def test_hand_computed_small_case():
    # x = 1..4, y = 2,1,4,3: 4 concordant and 2 discordant pairs -> 2/6.
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[2.0, 1.0, 4.0, 3.0]])
    assert kendall_tau(a, b).item() == pytest.approx(1 / 3)
    # Spearman: rank differences 1,1,1,1 -> 1 - 6*4 / (4*15) = 0.6
    assert spearman_correlation(a, b).item() == pytest.approx(0.6)


def test_abs_and_channel_reduction_are_applied():
    a = torch.tensor([[[[1.0, -3.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    b = torch.tensor([[[[2.0, 1.0]], [[0.0, 0.0]]]])
    # abs + sum over channels: a -> [2, 3], b -> [2, 1]: discordant
    assert kendall_tau(a, b).item() == -1.0
    # signed sum: a -> [2, -3], b -> [2, 1]: concordant
    assert kendall_tau(a, b, abs=False).item() == 1.0
    # channel max of |a| -> [1, 3]
    assert kendall_tau(a, b, channel_reduction="max").item() == -1.0


def test_tuple_inputs_are_concatenated():
    generator = torch.Generator().manual_seed(2)
    a = (
        torch.randn(2, 3, 5, 5, generator=generator),
        torch.randn(2, 7, generator=generator),
    )
    b = (
        torch.randn(2, 3, 5, 5, generator=generator),
        torch.randn(2, 7, generator=generator),
    )
    flat_a = torch.cat([a[0].abs().sum(1).flatten(1), a[1].abs()], 1).numpy()
    flat_b = torch.cat([b[0].abs().sum(1).flatten(1), b[1].abs()], 1).numpy()
    expected = scipy_rows(scipy.stats.kendalltau, flat_a, flat_b)
    np.testing.assert_allclose(kendall_tau(a, b).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_inputs(dtype):
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(2, 1, 8, 8, generator=generator).to(dtype)
    b = torch.randn(2, 1, 8, 8, generator=generator).to(dtype)
    reference = scipy_rows(
        scipy.stats.kendalltau,
        a.abs().double().flatten(1).numpy(),
        b.abs().double().flatten(1).numpy(),
    )
    result = kendall_tau(a, b)
    assert result.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    np.testing.assert_allclose(result.double().numpy(), reference, rtol=1e-6)


def test_224_batch_matches_scipy_on_a_few_rows():
    generator = torch.Generator().manual_seed(4)
    a = torch.rand(4, 224 * 224, generator=generator)
    b = (a + torch.rand(4, 224 * 224, generator=generator)).round(decimals=2)
    expected = scipy_rows(
        scipy.stats.kendalltau, a.double().numpy(), b.double().numpy()
    )
    np.testing.assert_allclose(kendall_tau(a, b).double().numpy(), expected, rtol=1e-6)


def test_inversion_count_against_brute_force():
    generator = torch.Generator().manual_seed(5)
    ranks = torch.randint(0, 9, (6, 40), generator=generator)
    brute = (ranks.unsqueeze(2) > ranks.unsqueeze(1)).triu(diagonal=1).sum(dim=(1, 2))
    assert torch.equal(count_inversions(ranks, 9), brute)


def test_kendall_batch_mixing_tie_free_tied_and_constant_rows():
    # Rows without ties skip the tie counts on the CPU; the rest of the batch
    # must still get them.
    generator = torch.Generator().manual_seed(5)
    n = 5000
    continuous = torch.randperm(n, generator=generator).double()
    few_levels = torch.randint(0, 3, (n,), generator=generator).double()
    a = torch.stack([continuous, few_levels, torch.zeros(n), continuous, few_levels])
    b = torch.stack(
        [
            torch.randperm(n, generator=generator).double(),
            torch.randint(0, 4, (n,), generator=generator).double(),
            torch.rand(n, generator=generator, dtype=torch.float64),
            few_levels,
            continuous,
        ]
    )
    ours = kendall_tau(a, b, abs=False).numpy()
    reference = scipy_rows(scipy.stats.kendalltau, a.numpy(), b.numpy())
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)
    assert np.isnan(ours[2])


@settings(max_examples=100, deadline=None)
@given(paired_maps(), st.sampled_from([np.float32, np.float64]))
def test_rank_correlations_of_magnitudes_match_scipy(maps, dtype):
    # Centred values: v and -v become ties, and -0.0 equals +0.0.
    a, b = (m - np.round(m.mean()) for m in maps)
    a, b = a.astype(dtype), b.astype(dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for ours, fn in (
        (kendall_tau(ta, tb), scipy.stats.kendalltau),
        (spearman_correlation(ta, tb), scipy.stats.spearmanr),
    ):
        reference = scipy_rows(fn, np.abs(a).astype(np.float64), np.abs(b))
        np.testing.assert_allclose(ours.double().numpy(), reference, rtol=tol, atol=tol)
