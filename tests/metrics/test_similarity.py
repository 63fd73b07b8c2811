import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from helpers.models import conv_net
from skimage.metrics import structural_similarity as skimage_ssim

from captum_robust.metrics import cosine_similarity
from captum_robust.metrics import mean_squared_error
from captum_robust.metrics import pearson_correlation
from captum_robust.metrics import structural_similarity


def pair(shape, seed=0, dtype=torch.float64, noise=0.3):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, generator=generator, dtype=dtype)
    b = a + noise * torch.randn(*shape, generator=generator, dtype=dtype)
    return a, b


def maps_of(attr):
    return attr.abs().sum(1).flatten(1).numpy() if attr.dim() == 4 else attr


def test_pearson_matches_scipy_on_channel_summed_maps():
    a, b = pair((4, 3, 9, 11))
    ours = pearson_correlation(a, b).numpy()
    reference = [
        scipy.stats.pearsonr(x, y).statistic for x, y in zip(maps_of(a), maps_of(b))
    ]
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-13)


def test_pearson_signed_float32_and_huge_scale():
    a, b = pair((3, 50), seed=1)
    reference = [
        scipy.stats.pearsonr(x, y).statistic for x, y in zip(a.numpy(), b.numpy())
    ]
    ours = pearson_correlation(a.float(), b.float(), abs=False)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5, atol=1e-6)
    # 1e300 squared overflows float64 without the power-of-two scaling.
    huge = pearson_correlation(a * 1e300, b * 1e300, abs=False).numpy()
    np.testing.assert_allclose(huge, reference, rtol=1e-12)


def test_pearson_nan_for_constant_maps_as_scipy():
    a = torch.tensor([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 2.0, 4.0], [0.3, 0.3, 0.3], [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = [scipy.stats.pearsonr(x, y).statistic for x, y in zip(a, b)]
    assert all(math.isnan(r) for r in reference)
    assert pearson_correlation(a, b).isnan().all()


def test_cosine_by_hand_and_zero_map():
    a = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[4.0, 3.0, 0.0], [-1.0, -1.0, -1.0], [1.0, 0.0, 0.0]])
    ours = cosine_similarity(a, b, abs=False)
    assert ours[0].item() == pytest.approx(24 / 25)
    assert ours[1].item() == pytest.approx(-1.0)
    assert math.isnan(ours[2].item())
    # With magnitudes the opposite maps agree.
    assert cosine_similarity(a, b)[1].item() == pytest.approx(1.0)


def test_cosine_matches_numpy_on_tuples():
    a, b = pair((2, 3, 5, 5), seed=2)
    c, d = pair((2, 7), seed=3)
    ours = cosine_similarity((a, c), (b, d)).numpy()
    flat_a = np.concatenate([maps_of(a), np.abs(c.numpy())], axis=1)
    flat_b = np.concatenate([maps_of(b), np.abs(d.numpy())], axis=1)
    reference = (flat_a * flat_b).sum(1) / (
        np.linalg.norm(flat_a, axis=1) * np.linalg.norm(flat_b, axis=1)
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_mse_by_hand_normalisations_and_reductions():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[2.0, 2.0, 2.0, 4.0]])
    assert mean_squared_error(a, b).item() == pytest.approx(0.5)
    assert mean_squared_error(a, b, reduction="sum").item() == pytest.approx(2.0)
    by_sum = ((a / 10 - b / 10) ** 2).mean()
    assert mean_squared_error(a, b, normalize="sum").item() == pytest.approx(
        by_sum.item()
    )
    by_max = ((a / 4 - b / 4) ** 2).mean()
    assert mean_squared_error(a, b, normalize="max").item() == pytest.approx(
        by_max.item()
    )
    zeros = torch.zeros(1, 4)
    assert mean_squared_error(zeros, zeros).item() == 0.0
    assert mean_squared_error(zeros, b, normalize="sum").isnan().all()
    assert mean_squared_error(zeros, b, normalize="max").isnan().all()


def skimage_reference(a, b, **options):
    out = []
    for x, y in zip(a, b):
        data_range = max(x.max(), y.max()) - min(x.min(), y.min())
        out.append(
            skimage_ssim(
                x,
                y,
                gaussian_weights=True,
                data_range=data_range,
                **options,
            )
        )
    return np.array(out)


@pytest.mark.parametrize(
    "shape, options",
    [
        ((3, 20, 17), dict(sigma=1.5, win_size=7, use_sample_covariance=False)),
        ((2, 9, 30), dict(sigma=1.5, win_size=7, use_sample_covariance=True)),
        ((2, 7, 7), dict(sigma=3.0, win_size=7, use_sample_covariance=False)),
        ((2, 12, 12), dict(sigma=0.8, win_size=5, K1=0.02, K2=0.05)),
        # A Gaussian narrower than the border crop (no padding reaches in).
        ((2, 11, 13), dict(sigma=0.5, win_size=7)),
    ],
)
# float32 takes the channels-last convolution path, float64 on a CPU the
# banded products; both against skimage's float64 result.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(shape, options, dtype):
    a, b = pair(shape, seed=4, dtype=dtype)
    ours_options = {
        "sigma": options["sigma"],
        "win_size": options["win_size"],
        "use_sample_covariance": options.get("use_sample_covariance", False),
        "k1": options.get("K1", 0.01),
        "k2": options.get("K2", 0.03),
    }
    ours = structural_similarity(a, b, abs=False, **ours_options).numpy()
    sk_options = dict(options)
    sk_options.setdefault("use_sample_covariance", False)
    reference = skimage_reference(a.double().numpy(), b.double().numpy(), **sk_options)
    assert ours.dtype == (np.float64 if dtype == torch.float64 else np.float32)
    tolerance = (1e-10, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    np.testing.assert_allclose(ours, reference, rtol=tolerance[0], atol=tolerance[1])


def test_ssim_of_channel_maps_and_float32():
    a, b = pair((2, 3, 16, 16), seed=5, dtype=torch.float32)
    ours = structural_similarity(a, b)
    assert ours.dtype == torch.float32
    reference = skimage_reference(
        a.abs().sum(1).double().numpy(),
        b.abs().sum(1).double().numpy(),
        sigma=1.5,
        win_size=7,
        use_sample_covariance=False,
    )
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-5)
    # A Grad-CAM-like (B, 1, H, W) map compares with a (B, 3, H, W) one.
    assert structural_similarity(a, b.abs().sum(1, keepdim=True)).shape == (2,)


def test_ssim_scale_invariant_and_degenerate_pairs():
    a, b = pair((2, 10, 10), seed=6)
    base = structural_similarity(a, b)
    torch.testing.assert_close(structural_similarity(a * 1e200, b * 1e200), base)
    constant = torch.full((1, 10, 10), 0.5)
    assert structural_similarity(constant, constant).isnan().all()
    zeros = torch.zeros(1, 10, 10)
    assert structural_similarity(zeros, zeros).isnan().all()
    # A constant map against a structured one is a real (low) answer.
    other = structural_similarity(constant, b[:1].float())
    assert other.isfinite().all() and other.item() < 0.5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_batches_in_chunks_like_one_call(monkeypatch, dtype):
    from captum_robust.metrics import _similarity

    a, b = pair((5, 8, 8), seed=7, dtype=dtype)
    whole = structural_similarity(a, b)
    monkeypatch.setattr(_similarity, "_SSIM_CPU_CHUNK_ELEMENTS", 128)
    torch.testing.assert_close(structural_similarity(a, b), whole)


@pytest.mark.parametrize(
    "fn", [pearson_correlation, cosine_similarity, mean_squared_error]
)
def test_flat_similarities_reject_bad_inputs_by_name(fn):
    a = torch.rand(2, 5)
    with pytest.raises(ValueError, match="attr_b"):
        fn(a, torch.rand(2, 6))
    with pytest.raises(TypeError, match="attr_a"):
        fn([1, 2], a)
    with pytest.raises(ValueError, match="attr_b"):
        fn(a, torch.tensor([[1.0, float("nan"), 0.0, 0.0, 0.0]] * 2))
    with pytest.raises(TypeError, match="abs"):
        fn(a, a, abs="yes")
    with pytest.raises(ValueError, match="channel_reduction"):
        fn(a, a, channel_reduction="median")


def test_mse_and_ssim_reject_bad_options_by_name():
    a = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="normalize"):
        mean_squared_error(a, a, normalize="l1")
    with pytest.raises(ValueError, match="reduction"):
        mean_squared_error(a, a, reduction="max")
    with pytest.raises(ValueError, match="win_size"):
        structural_similarity(a, a, win_size=6)
    with pytest.raises(ValueError, match="win_size"):
        structural_similarity(a, a, win_size=9)
    with pytest.raises(ValueError, match="sigma"):
        structural_similarity(a, a, sigma=0.0)
    with pytest.raises(TypeError, match="use_sample_covariance"):
        structural_similarity(a, a, use_sample_covariance=1)
    with pytest.raises(ValueError, match="attr_a"):
        structural_similarity(torch.rand(2, 64), torch.rand(2, 64))


def test_streaming_similarities_average_the_functional_scores():
    from captum_robust.metrics import CosineSimilarity
    from captum_robust.metrics import MeanSquaredError
    from captum_robust.metrics import PearsonCorrelation
    from captum_robust.metrics import StructuralSimilarity

    a, b = pair((6, 3, 9, 9), seed=8)
    zero = torch.zeros(1, 3, 9, 9, dtype=torch.float64)
    for cls, fn, options in [
        (PearsonCorrelation, pearson_correlation, {}),
        (CosineSimilarity, cosine_similarity, {"abs": False}),
        (MeanSquaredError, mean_squared_error, {"normalize": "max"}),
        (StructuralSimilarity, structural_similarity, {"sigma": 1.0}),
    ]:
        metric = cls(**options)
        metric.update(a[:4], b[:4])
        metric.update(a[4:], b[4:])
        metric.update(zero, zero)
        result = metric.compute()
        expected = fn(a, b, **options)
        assert result["mean"].item() == pytest.approx(expected.mean().item())
        assert result["count"].item() == 6
        # The all-zero pair is undefined for each of them (see the NaN rule).
        assert result["nan_count"].item() == 1
    with pytest.raises(ValueError, match="normalize"):
        MeanSquaredError(normalize="l2")
    with pytest.raises(TypeError, match="abs"):
        PearsonCorrelation(abs=1)


def test_similarities_by_name_in_evaluate_robustness():
    from captum.attr import Saliency

    from captum_robust.evaluation import METRICS
    from captum_robust.evaluation import evaluate_robustness

    assert {"pearson", "cosine", "mse", "ssim"} <= set(METRICS)
    model = conv_net(1, 2, 8, 2)
    x = torch.rand(3, 1, 8, 8)
    y = model(x).argmax(1)
    shift = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def attack(inputs, target=None):
        return (inputs + 0.1 * shift).clamp(0, 1)

    names = ["pearson", "cosine", "mse", "ssim"]
    result = evaluate_robustness(
        model, [(x, y)], Saliency(model), attack, metrics=names, progress=False
    )
    sal = Saliency(model)
    before = sal.attribute(x, target=y)
    after = sal.attribute(attack(x), target=y)
    for name, fn in zip(
        names,
        [
            pearson_correlation,
            cosine_similarity,
            mean_squared_error,
            structural_similarity,
        ],
    ):
        expected = fn(before, after)
        got = [record[name] for record in result.records]
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-9)
        assert result.summary[name]["mean"] == pytest.approx(expected.mean().item())
