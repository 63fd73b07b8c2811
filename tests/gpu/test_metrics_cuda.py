"""Metrics and evaluation on a CUDA device agree with the CPU; skipped without one."""

import pytest
import torch

from captum_robust.metrics import KendallTau
from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import mask_iou
from captum_robust.metrics import pointing_game
from captum_robust.metrics import relevance_rank_accuracy
from captum_robust.metrics import silhouette_overlap
from captum_robust.metrics import spearman_correlation
from captum_robust.metrics import topk_intersection

pytestmark = pytest.mark.gpu


@pytest.fixture
def maps():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(8, 3, 32, 32, generator=generator)
    b = (a + 0.3 * torch.rand(8, 3, 32, 32, generator=generator)).round(decimals=2)
    mask = torch.rand(8, 32, 32, generator=generator) > 0.5
    return a, b, mask


@pytest.mark.parametrize(
    "fn", [kendall_tau, spearman_correlation, center_of_mass_shift]
)
def test_pair_metrics_match_cpu(fn, maps):
    a, b, _ = maps
    result = fn(a.cuda(), b.cuda())
    assert result.device.type == "cuda"
    torch.testing.assert_close(result.cpu(), fn(a, b), rtol=1e-5, atol=1e-6)


def test_topk_matches_cpu_with_ties(maps):
    a, b, _ = maps
    quantised = (a * 4).round(), (b * 4).round()
    cpu = topk_intersection(*quantised, 100)
    cuda = topk_intersection(quantised[0].cuda(), quantised[1].cuda(), 100)
    torch.testing.assert_close(cuda.cpu(), cpu)


@pytest.mark.parametrize(
    "fn", [silhouette_overlap, pointing_game, relevance_rank_accuracy, mask_iou]
)
def test_mask_metrics_match_cpu(fn, maps):
    a, _, mask = maps
    torch.testing.assert_close(fn(a.cuda(), mask.cuda()).cpu(), fn(a, mask))


def test_device_mismatch():
    a, mask = torch.rand(2, 3, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="attr_b.*device"):
        kendall_tau(a, a.cuda())
    with pytest.raises(ValueError, match="mask"):
        silhouette_overlap(a, mask.cuda())


def test_streaming_metric_on_cuda(maps):
    a, b, _ = maps
    metric = KendallTau().cuda()
    metric.update(a.cuda(), b.cuda())
    assert metric.compute()["mean"].device.type == "cuda"


def test_kendall_on_224_maps_in_a_batch():
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.rand(64, 1, 224, 224, device="cuda", generator=generator)
    b = torch.rand(64, 1, 224, 224, device="cuda", generator=generator)
    result = kendall_tau(a, b)
    assert result.shape == (64,) and torch.isfinite(result).all()


def test_captum_perturb_func_draws_are_seeded_on_cuda():
    # Captum's form draws from the global CUDA generator of the inputs' device:
    # `seed` seeds it as it seeds the seeded form's generator, and the caller's
    # CUDA random state is left as it was.
    from captum_robust.metrics import max_sensitivity

    def seeded(inputs, generator):
        noise = torch.empty_like(inputs).uniform_(-0.05, 0.05, generator=generator)
        return inputs + noise

    def captum_form(inputs, perturb_radius):
        noise = torch.empty_like(inputs).uniform_(-perturb_radius, perturb_radius)
        return inputs + noise

    x = torch.rand(4, 16, device="cuda")
    options = dict(n_perturbations=3, radius=0.05, seed=3)
    expected = max_sensitivity(lambda v: v**2, x, perturb_func=seeded, **options)
    state = torch.cuda.get_rng_state()
    result = max_sensitivity(lambda v: v**2, x, perturb_func=captum_form, **options)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    torch.testing.assert_close(result, expected, rtol=0, atol=0)
