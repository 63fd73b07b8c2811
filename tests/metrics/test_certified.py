"""Certified top-k overlap: hand-computed bounds, tightness, soundness, batching.

The references are written here from the paper's formulas with scipy (norm,
beta) and numpy, and the toy smoothed maps are computed in closed form or by
Gauss-Hermite quadrature, never by the code under test.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from captum.attr import Saliency
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from captum_robust.attr import SparsifiedSmoothGrad
from captum_robust.metrics import CertifiedTopK
from captum_robust.metrics import CertifiedTopKOverlap
from captum_robust.metrics import certified_topk_overlap
from captum_robust.metrics import topk_overlap_certificate

norm = scipy.stats.norm


def reference_count(p, k, rho, sigma, err=None, n=None, alpha=0.05, bound="hoeffding"):
    """Largest m with L_m > U_m, as the issue writes it (scipy, float64)."""
    q = np.sort(np.asarray(p, dtype=np.float64))[::-1]
    d = len(q)
    if bound == "hoeffding" and err is None:
        err = math.sqrt(math.log(2 * d / alpha) / (2 * n))
    best = 0
    for m in range(1, k + 1):
        j = 2 * k - m + 1
        if bound == "hoeffding":
            low = q[m - 1] - err
            lower = norm.cdf(norm.ppf(low) - 2 * rho / sigma) - err if low > 0 else -err
            upper = q[j - 1] if j <= d else -np.inf
        else:
            level = alpha / (2 * d)
            c = round(q[m - 1] * n)
            lo = scipy.stats.beta.ppf(level, c, n - c + 1) if c > 0 else 0.0
            lower = norm.cdf(norm.ppf(lo) - 2 * rho / sigma) if lo > 0 else 0.0
            if j <= d:
                c = round(q[j - 1] * n)
                upper = scipy.stats.beta.ppf(1 - level, c + 1, n - c) if c < n else 1.0
            else:
                upper = -np.inf
        if lower > upper:
            best = m
    return best


# ---------------------------------------------------------------------------
# Hand-computed vectors


def test_hand_computed_hoeffding_vector():
    p = torch.tensor([[1.0, 1.0, 0, 0, 0, 0]])
    cert = topk_overlap_certificate(p, 2, radius=0.03, sigma=0.1, n_samples=8192)
    err = math.sqrt(math.log(2 * 6 / 0.05) / (2 * 8192))
    assert err == pytest.approx(0.018290, abs=5e-7)
    assert cert.err == pytest.approx(err, rel=1e-12)
    # L_m = Phi(Phi^-1(1 - err) - 0.6) - err = 0.9136... > U_m = 0 for m = 1, 2.
    lower = norm.cdf(norm.ppf(1 - err) - 2 * 0.03 / 0.1) - err
    assert lower == pytest.approx(0.91369, abs=1e-4)
    assert cert.kept.tolist() == [2]
    assert cert.overlap.tolist() == [1.0]
    assert reference_count(p[0], 2, 0.03, 0.1, n=8192) == 2


@pytest.mark.parametrize("rho, expected", [(0.05, 3), (0.2, 2)])
def test_hand_computed_exact_vector(rho, expected):
    p = torch.tensor([[0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.0]], dtype=torch.float64)
    cert = topk_overlap_certificate(p, 3, radius=rho, sigma=0.25, err=0.0)
    assert cert.kept.tolist() == [expected]
    assert reference_count(p[0], 3, rho, 0.25, err=0.0) == expected
    # Radii by hand: (sigma/2) [Phi^-1(q_m) - Phi^-1(q_{2K-m+1})].
    radii = [0.125 * (norm.ppf(a) - norm.ppf(b)) for a, b in [(0.9, 0.1), (0.8, 0.2)]]
    radii.append(0.125 * (norm.ppf(0.7) - norm.ppf(0.3)))
    assert cert.radii[0].tolist() == pytest.approx(radii, rel=1e-12)
    assert radii[1] > 0.2 > radii[2]
    assert cert.topk_indices.tolist() == [[0, 1, 2]]


def test_partner_beyond_d_certifies_by_counting():
    # K = 3 of d = 4: any two top-3 sets share 2 features whatever happens.
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    cert = topk_overlap_certificate(p, 3, radius=10.0, sigma=0.1, err=0.0)
    assert cert.kept.tolist() == [2]
    assert torch.isinf(cert.radii[0, :2]).all() and cert.radii[0, 2] == 0
    assert torch.isinf(cert.upper[0, :2]).all()
    full = topk_overlap_certificate(p, 4, radius=10.0, sigma=0.1, err=0.0)
    assert full.overlap.tolist() == [1.0]


def test_ties_go_to_the_lower_index():
    p = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    cert = topk_overlap_certificate(p, 3, radius=0.0, sigma=1.0, err=0.0)
    assert cert.topk_indices.tolist() == [[1, 0, 2]]


@pytest.mark.parametrize("s", [1, 7, 25, 49, 50])
def test_top_set_breaks_ties_by_the_lower_index(s):
    from captum_robust.metrics._certified import _top_set

    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 4, (64, 50), generator=gen).float()  # many ties
    maps[0] = 0.0
    expected = np.zeros(maps.shape, dtype=bool)
    for row, values in enumerate(maps.numpy()):
        expected[row, np.argsort(-values, kind="stable")[:s]] = True
    np.testing.assert_array_equal(_top_set(maps, s).numpy(), expected)


# ---------------------------------------------------------------------------
# Properties against the scipy reference


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(2, 12),
    data=st.data(),
)
def test_matches_reference_and_is_monotone(seed, d, data):
    k = data.draw(st.integers(1, d))
    n = data.draw(st.sampled_from([64, 500, 4096]))
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, n + 1, size=(3, d))
    counts[0] = np.sort(counts[0])  # some rows with 0 / n extremes
    counts[1, : min(k, d)] = n
    p = torch.tensor(counts / n)
    sigma = 0.25
    radii = [0.0, 0.01, 0.05, 0.2, 1.0]
    for bound in ("hoeffding", "binomial"):
        previous = None
        for rho in radii:
            try:
                cert = topk_overlap_certificate(
                    p, k, radius=rho, sigma=sigma, n_samples=n, bound=bound
                )
            except ValueError as error:
                assert "too small" in str(error)
                continue
            expected = [
                reference_count(row, k, rho, sigma, n=n, bound=bound)
                for row in p.numpy()
            ]
            assert cert.kept.tolist() == expected
            assert ((cert.kept >= 0) & (cert.kept <= k)).all()
            if previous is not None:
                assert (cert.kept <= previous).all()
            previous = cert.kept
            # The count is the number of radii above rho.
            assert cert.kept.tolist() == (cert.radii > rho).sum(1).tolist()
    previous = None
    for err in [0.0, 0.01, 0.05, 0.2, 0.6]:
        cert = topk_overlap_certificate(p, k, radius=0.02, sigma=sigma, err=err)
        expected = [reference_count(row, k, 0.02, sigma, err=err) for row in p.numpy()]
        assert cert.kept.tolist() == expected
        if previous is not None:
            assert (cert.kept <= previous).all()
        previous = cert.kept


def test_binomial_is_tighter_for_a_zero_one_map():
    p = torch.tensor([[1.0, 1.0, 1.0, 0, 0, 0, 0, 0]])
    options = dict(radius=0.0, sigma=0.1, n_samples=1000)
    hoeffding = topk_overlap_certificate(p, 3, **options)
    binomial = topk_overlap_certificate(p, 3, bound="binomial", **options)
    assert (binomial.radii > hoeffding.radii).all()
    assert binomial.err is None
    # Clopper-Pearson at n/n is alpha' ** (1/n), at 0/n 1 - alpha' ** (1/n).
    level = 0.05 / 16
    assert binomial.lower[0, 0].item() == pytest.approx(level ** (1 / 1000))
    assert binomial.upper[0, 0].item() == pytest.approx(1 - level ** (1 / 1000))


# ---------------------------------------------------------------------------
# Tightness: two features, a(z) = z, tau = 1/2, K = 1, g_1 = Phi((x1-x2)/(s sqrt 2))


@pytest.mark.parametrize("gap, sigma", [(0.3, 0.25), (0.05, 0.1), (1.0, 1.0)])
def test_certified_radius_is_the_exact_swap_radius(gap, sigma):
    g1 = norm.cdf(gap / (sigma * math.sqrt(2)))
    p = torch.tensor([[g1, 1 - g1]], dtype=torch.float64)
    swap = gap / math.sqrt(2)  # L2 distance from x to the plane z1 = z2
    cert = topk_overlap_certificate(p, 1, radius=0.0, sigma=sigma, err=0.0)
    assert cert.radii.item() == pytest.approx(swap, rel=1e-9)
    below = topk_overlap_certificate(p, 1, radius=swap * (1 - 1e-6), sigma=sigma, err=0)
    above = topk_overlap_certificate(p, 1, radius=swap * (1 + 1e-6), sigma=sigma, err=0)
    assert below.kept.tolist() == [1] and above.kept.tolist() == [0]


def test_sampled_toy_approaches_the_closed_form():
    x = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    cert = certified_topk_overlap(
        lambda z, target=None: z,
        x,
        k=1,
        radius=0.0,
        sigma=0.25,
        sparsity=0.5,
        n_samples=20000,
        batch_size=5000,
        abs=False,
        return_details=True,
    )
    g1 = norm.cdf(0.3 / (0.25 * math.sqrt(2)))
    assert cert.smoothed_map[0, 0].item() == pytest.approx(g1, abs=0.01)
    assert abs(cert.smoothed_map[0, 0].item() - g1) <= cert.err


# ---------------------------------------------------------------------------
# Soundness on a toy with a closed-form smoothed map


NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(120)


def argmax_probabilities(x, sigma):
    """g_i(x) = P(argmax_j (x_j + e_j) = i), e ~ N(0, sigma^2 I): the smoothed
    top-1 indicator of a(z) = z, by Gauss-Hermite quadrature over the noise of
    feature i (differentiable in x)."""
    t = torch.as_tensor(NODES, dtype=x.dtype)
    w = torch.as_tensor(WEIGHTS / math.sqrt(2 * math.pi), dtype=x.dtype)
    diff = (x.unsqueeze(-1) - x.unsqueeze(-2)) / sigma  # [..., i, j] = x_i - x_j
    cdf = torch.special.ndtr(diff.unsqueeze(-1) + t)  # [..., i, j, node]
    eye = torch.eye(x.shape[-1], dtype=torch.bool).unsqueeze(-1)
    prod = torch.where(eye, torch.ones_like(cdf), cdf).prod(dim=-2)
    return (prod * w).sum(-1)


def overlap_with(g, top_set, k):
    return np.intersect1d(np.argsort(-g, kind="stable")[:k], top_set).size


def violation_score(g, inside, m, k):
    """> 0 when fewer than m of ``inside`` stay in the top-k of g."""
    mask = torch.zeros(g.shape[-1], dtype=torch.bool)
    mask[inside] = True
    m_th_inside = g[..., mask].topk(m, dim=-1).values[..., -1]
    outside_needed = g[..., ~mask].topk(k - m + 1, dim=-1).values[..., -1]
    return outside_needed - m_th_inside


X_TOY = torch.tensor([1.0, 0.8, 0.3, 0.1, 0.0], dtype=torch.float64)
SIGMA_TOY = 0.5
K_TOY = 2


def attack(x, rho, inside, m, steps=80, starts=8, seed=0):
    """L2 PGD ascent on the violation score, from random starts on the sphere."""
    gen = torch.Generator().manual_seed(seed)
    delta = torch.randn(starts, x.shape[0], generator=gen, dtype=x.dtype)
    delta = rho * delta / delta.norm(dim=1, keepdim=True)
    for _ in range(steps):
        delta.requires_grad_(True)
        g = argmax_probabilities(x + delta, SIGMA_TOY)
        score = violation_score(g, inside, m, K_TOY)
        (grad,) = torch.autograd.grad(score.sum(), delta)
        with torch.no_grad():
            step = grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-12)
            delta = delta + 0.1 * rho * step
            delta = delta * (rho / delta.norm(dim=1, keepdim=True)).clamp(max=1.0)
    return argmax_probabilities(x + delta.detach(), SIGMA_TOY).detach()


def test_quadrature_matches_sampling():
    gen = torch.Generator().manual_seed(0)
    noisy = X_TOY + SIGMA_TOY * torch.randn(
        400000, 5, generator=gen, dtype=torch.float64
    )
    empirical = torch.bincount(noisy.argmax(1), minlength=5).double() / len(noisy)
    exact = argmax_probabilities(X_TOY, SIGMA_TOY)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(empirical, exact, atol=3e-3)


@pytest.fixture
def one_thread():
    # Tiny tensors: more threads only wait on each other, badly so on a busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_no_perturbation_within_the_radius_breaks_the_certificate(one_thread):
    g = argmax_probabilities(X_TOY, SIGMA_TOY).unsqueeze(0)
    base = topk_overlap_certificate(g, K_TOY, radius=0.0, sigma=SIGMA_TOY, err=0.0)
    inside = base.topk_indices[0].numpy()
    gen = torch.Generator().manual_seed(1)
    for m in range(1, K_TOY + 1):
        radius = base.radii[0, m - 1].item()
        for rho in (0.5 * radius, 0.999 * radius):
            cert = topk_overlap_certificate(
                g, K_TOY, radius=rho, sigma=SIGMA_TOY, err=0
            )
            assert cert.kept.item() >= m
            directions = torch.randn(1000, 5, generator=gen, dtype=torch.float64)
            lengths = rho * torch.rand(1000, 1, generator=gen, dtype=torch.float64)
            directions = directions / directions.norm(dim=1, keepdim=True) * lengths
            moved = argmax_probabilities(X_TOY + directions, SIGMA_TOY).numpy()
            attacked = attack(X_TOY, rho, inside, m).numpy()
            for row in np.concatenate([moved, attacked]):
                assert overlap_with(row, inside, K_TOY) >= cert.kept.item()
        # The attack has teeth: at 2.5 times the radius it breaks m (the
        # certificate is within that factor of tight on this toy).
        far = attack(X_TOY, 2.5 * radius, inside, m).numpy()
        assert min(overlap_with(row, inside, K_TOY) for row in far) < m


@pytest.mark.parametrize("bound", ["hoeffding", "binomial"])
def test_estimates_leave_the_band_less_often_than_alpha(bound):
    runs, n, alpha = 400, 100, 0.05
    x = X_TOY.unsqueeze(0).repeat(runs, 1)
    cert = certified_topk_overlap(
        lambda z, target=None: z,
        x,
        k=K_TOY,
        radius=0.0,
        sigma=SIGMA_TOY,
        sparsity=0.2,
        n_samples=n,
        alpha=alpha,
        bound=bound,
        abs=False,
        seed=7,
        return_details=True,
    )
    exact = argmax_probabilities(X_TOY, SIGMA_TOY).numpy()
    p = cert.smoothed_map.numpy()
    assert p.sum(1) == pytest.approx(np.ones(runs))  # one feature per draw
    if bound == "hoeffding":
        outside = (np.abs(p - exact) > cert.err).any(1)
    else:
        counts = np.round(p * n)
        level = alpha / (2 * 5)
        lo = np.where(
            counts > 0, scipy.stats.beta.ppf(level, counts.clip(1), n - counts + 1), 0
        )
        hi = np.where(
            counts < n,
            scipy.stats.beta.ppf(1 - level, counts + 1, (n - counts).clip(1)),
            1,
        )
        outside = ((exact < lo) | (exact > hi)).any(1)
    assert outside.mean() <= alpha
    # Every run is a different draw of the same map.
    assert len({tuple(row) for row in p}) > runs // 2


# ---------------------------------------------------------------------------
# End to end on a tiny CNN with Saliency


def tiny_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).eval()


INPUTS = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([0, 2, 1])
OPTIONS = dict(k=5, radius=0.01, sigma=0.1, n_samples=64)


def test_end_to_end_shapes_and_determinism():
    model = tiny_cnn()
    saliency = Saliency(model)
    cert = certified_topk_overlap(
        saliency, INPUTS, TARGET, return_details=True, **OPTIONS
    )
    assert isinstance(cert, CertifiedTopK)
    assert cert.overlap.shape == (3,) and cert.overlap.dtype == torch.float32
    assert cert.kept.shape == (3,) and cert.kept.dtype == torch.int64
    assert cert.radii.shape == (3, 5) and cert.topk_indices.shape == (3, 5)
    assert cert.smoothed_map.shape == (3, 64)
    assert ((cert.overlap >= 0) & (cert.overlap <= 1)).all()
    assert torch.equal(cert.overlap, cert.kept.float() / 5)
    # s = ceil(0.1 * 64) = 7 features per draw.
    assert torch.allclose(cert.smoothed_map.sum(1), torch.full((3,), 7.0))
    again = certified_topk_overlap(
        saliency, INPUTS, TARGET, return_details=True, **OPTIONS
    )
    assert torch.equal(again.smoothed_map, cert.smoothed_map)
    other = certified_topk_overlap(
        saliency, INPUTS, TARGET, seed=1, return_details=True, **OPTIONS
    )
    assert not torch.equal(other.smoothed_map, cert.smoothed_map)
    plain = certified_topk_overlap(saliency, INPUTS, TARGET, **OPTIONS)
    assert torch.equal(plain, cert.overlap)


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_batch_size_does_not_change_the_result(batch_size):
    saliency = Saliency(tiny_cnn())
    options = dict(OPTIONS, n_samples=24)
    reference = certified_topk_overlap(
        saliency, INPUTS, TARGET, batch_size=48, return_details=True, **options
    )
    cert = certified_topk_overlap(
        saliency, INPUTS, TARGET, batch_size=batch_size, return_details=True, **options
    )
    assert torch.equal(cert.smoothed_map, reference.smoothed_map)
    assert torch.equal(cert.kept, reference.kept)


def test_a_sample_does_not_depend_on_the_others():
    saliency = Saliency(tiny_cnn())
    changed = INPUTS.clone()
    changed[1:] = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    a = certified_topk_overlap(saliency, INPUTS, TARGET, return_details=True, **OPTIONS)
    b = certified_topk_overlap(
        saliency, changed, torch.tensor([0, 0, 0]), return_details=True, **OPTIONS
    )
    assert torch.equal(a.smoothed_map[0], b.smoothed_map[0])
    assert not torch.equal(a.smoothed_map[1], b.smoothed_map[1])


def test_target_is_fixed_per_sample_and_inputs_model_untouched():
    model = tiny_cnn()
    saliency = Saliency(model)
    seen = []

    def explain(noisy, target):
        seen.append(target.clone())
        return saliency.attribute(noisy, target=target)

    x = INPUTS.clone().requires_grad_(True)
    before = x.detach().clone()
    cert = certified_topk_overlap(
        explain, x, TARGET, batch_size=10, return_details=True, **OPTIONS
    )
    # Round-major copies: copy j explains sample j % B with its own target.
    assert torch.equal(torch.cat(seen), TARGET.repeat(64))
    assert torch.equal(x.detach(), before) and x.requires_grad and x.grad is None
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    direct = certified_topk_overlap(
        saliency, INPUTS, TARGET, batch_size=10, return_details=True, **OPTIONS
    )
    assert torch.equal(direct.smoothed_map, cert.smoothed_map)
    model.train()
    certified_topk_overlap(saliency, INPUTS, TARGET, **OPTIONS)
    assert model.training


def test_same_map_as_sparsified_smoothgrad():
    model = tiny_cnn()
    cert = certified_topk_overlap(
        Saliency(model), INPUTS, TARGET, seed=3, return_details=True, **OPTIONS
    )
    ssg = SparsifiedSmoothGrad(Saliency(model), seed=3)
    p = ssg.attribute(
        INPUTS, TARGET, sigma=0.1, n_samples=64, batch_size=256, create_graph=False
    )
    assert p.shape == (3, 8, 8)
    assert torch.equal(p.flatten(1), cert.smoothed_map)


def test_tuple_inputs_and_explanation_kwargs():
    def explain(noisy, target, scale):
        a, b = noisy
        return (a * scale.view(-1, 1), b)

    xs = (torch.rand(2, 4), torch.rand(2, 3))
    scale = torch.tensor([1.0, 2.0])
    cert = certified_topk_overlap(
        explain,
        xs,
        [0, 1],
        k=2,
        radius=0.0,
        sigma=0.05,
        sparsity=2 / 7,
        n_samples=32,
        explanation_kwargs={"scale": scale},
        return_details=True,
    )
    assert cert.smoothed_map.shape == (2, 7)


def test_device_is_the_inputs_device():
    cert = certified_topk_overlap(
        Saliency(tiny_cnn()), INPUTS, TARGET, return_details=True, **OPTIONS
    )
    for t in (cert.overlap, cert.kept, cert.radii, cert.smoothed_map):
        assert t.device == INPUTS.device


def test_a_map_constant_at_every_draw_gives_nan():
    def dead_for_the_first(z, target=None):
        # Sample 0's map is all zero (dead gradients, say); sample 1's is z.
        return torch.where(target.view(-1, 1) == 0, torch.zeros_like(z), z)

    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [4.0, 3.0, 0, 0, 0, 0]])
    options = dict(k=2, radius=0.1, sigma=0.5, sparsity=1 / 3, n_samples=512)
    out = certified_topk_overlap(dead_for_the_first, x, [0, 1], **options)
    assert torch.isnan(out[0]) and out[1] == 1.0
    metric = CertifiedTopKOverlap(dead_for_the_first, **options)
    metric.update(x, target=[0, 1])
    result = metric.compute()
    assert result["nan_count"].item() == 1 and result["mean"].item() == 1.0


@pytest.mark.gpu
def test_cuda_end_to_end():
    model = tiny_cnn().cuda()
    x, target = INPUTS.cuda(), TARGET.cuda()
    cert = certified_topk_overlap(
        Saliency(model), x, target, return_details=True, **OPTIONS
    )
    for t in (cert.overlap, cert.kept, cert.radii, cert.smoothed_map):
        assert t.device.type == "cuda"
    binomial = certified_topk_overlap(
        Saliency(model), x, target, bound="binomial", batch_size=7, **OPTIONS
    )
    assert binomial.device.type == "cuda"
    again = certified_topk_overlap(
        Saliency(model), x, target, batch_size=7, return_details=True, **OPTIONS
    )
    assert torch.equal(again.smoothed_map, cert.smoothed_map)


# ---------------------------------------------------------------------------
# Bad inputs


def identity(z, target=None):
    return z


X6 = torch.rand(2, 6)


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(k=0), ValueError, "`k`"),
        (dict(k=7), ValueError, "`k`"),
        (dict(k=1.5), TypeError, "`k`"),
        (dict(alpha=0.0), ValueError, "`alpha`"),
        (dict(alpha=1.0), ValueError, "`alpha`"),
        (dict(sigma=0.0), ValueError, "`sigma`"),
        (dict(sigma=-1.0), ValueError, "`sigma`"),
        (dict(radius=-0.1), ValueError, "`radius`"),
        (dict(sparsity=0.0), ValueError, "`sparsity`"),
        (dict(sparsity=1.5), ValueError, "`sparsity`"),
        (dict(n_samples=0), ValueError, "`n_samples`"),
        (dict(n_samples=10), ValueError, "`n_samples`.*too small"),
        (dict(bound="bernstein"), ValueError, "`bound`"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(seed=-1), ValueError, "`seed`"),
        (dict(generator=3), TypeError, "`generator`"),
        (dict(abs="yes"), TypeError, "`abs`"),
        (dict(channel_reduction="median"), ValueError, "`channel_reduction`"),
        (dict(explanation_kwargs={"target": 0}), ValueError, "explanation_kwargs"),
        (dict(target=[0, 1, 2]), ValueError, "`target`"),
        (dict(return_details=1), TypeError, "`return_details`"),
    ],
)
def test_bad_arguments_are_named(options, error, match):
    arguments = dict(k=2, radius=0.0, sigma=0.1, n_samples=64)
    arguments.update(options)
    with pytest.raises(error, match=match):
        certified_topk_overlap(identity, X6, **arguments)


def test_bad_inputs_and_explanations_are_named():
    with pytest.raises(TypeError, match="`inputs`"):
        certified_topk_overlap(identity, X6.long(), k=1, radius=0, sigma=1)
    with pytest.raises(ValueError, match="`inputs`"):
        certified_topk_overlap(identity, X6 / 0, k=1, radius=0, sigma=1)
    with pytest.raises(TypeError, match="explanation_func"):
        certified_topk_overlap(3, X6, k=1, radius=0, sigma=1)
    with pytest.raises(ValueError, match="explanation_func.*NaN"):
        certified_topk_overlap(
            lambda z, target=None: z / 0, X6, k=1, radius=0, sigma=1, n_samples=64
        )
    with pytest.raises(TypeError, match="explanation_func"):
        certified_topk_overlap(
            lambda z, target=None: z[:1], X6, k=1, radius=0, sigma=1, n_samples=64
        )


@pytest.mark.parametrize(
    "bound, smallest",
    # rho = 0: Hoeffding needs err < 1/2, n > 2 ln(2d/alpha) = 10.96 for d = 6;
    # Clopper-Pearson needs (alpha/2d) ** (1/n) > 1/2, n > log2(240) = 7.9.
    [("hoeffding", 11), ("binomial", 8)],
)
def test_too_few_samples_is_exact_for_the_bound(bound, smallest):
    p = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    options = dict(radius=0.0, sigma=0.1, bound=bound)
    ok = topk_overlap_certificate(p, 1, n_samples=smallest, **options)
    assert ok.kept.tolist() == [1]
    with pytest.raises(ValueError, match=f"n_samples >= {smallest}"):
        topk_overlap_certificate(p, 1, n_samples=smallest - 1, **options)
    with pytest.raises(ValueError, match="too small"):
        certified_topk_overlap(
            identity,
            X6,
            k=1,
            radius=0.0,
            sigma=0.1,
            n_samples=smallest - 1,
            bound=bound,
        )


def test_bad_smoothed_maps_are_named():
    with pytest.raises(ValueError, match="smoothed_map"):
        topk_overlap_certificate(
            torch.tensor([[1.5, 0.0]]), 1, radius=0, sigma=1, err=0
        )
    with pytest.raises(ValueError, match="smoothed_map"):
        topk_overlap_certificate(
            torch.tensor([[math.nan, 0.0]]), 1, radius=0, sigma=1, err=0
        )
    with pytest.raises(ValueError, match="smoothed_map.*integer"):
        topk_overlap_certificate(
            torch.tensor([[0.333, 0.0]]),
            1,
            radius=0,
            sigma=1,
            n_samples=100,
            bound="binomial",
        )
    with pytest.raises(TypeError, match="smoothed_map"):
        topk_overlap_certificate([[1.0, 0.0]], 1, radius=0, sigma=1, err=0)
    with pytest.raises(ValueError, match="n_samples"):
        topk_overlap_certificate(torch.tensor([[1.0, 0.0]]), 1, radius=0, sigma=1)
    with pytest.raises(ValueError, match="err"):
        topk_overlap_certificate(
            torch.tensor([[1.0, 0.0]]), 1, radius=0, sigma=1, err=-0.1
        )


# ---------------------------------------------------------------------------
# Streaming


def test_streaming_equals_the_function_mean():
    saliency = Saliency(tiny_cnn())
    batches = [
        (torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(i)), t)
        for i, t in enumerate([[0, 1, 2], [2, 2, 0], [1, 0, 1]])
    ]
    options = dict(OPTIONS, n_samples=128, radius=0.02)
    metric = CertifiedTopKOverlap(saliency, **options)
    scores = []
    for x, t in batches:
        metric.update(x, target=torch.tensor(t))
        scores.append(certified_topk_overlap(saliency, x, torch.tensor(t), **options))
    result = metric.compute()
    expected = torch.cat(scores).double()
    assert result["count"].item() == 9
    assert result["mean"].item() == pytest.approx(expected.mean().item(), abs=1e-12)
    assert result["std"].item() == pytest.approx(expected.std().item(), abs=1e-12)


def test_streaming_checks_its_options_at_once():
    with pytest.raises(ValueError, match="`k`"):
        CertifiedTopKOverlap(identity, k=0, radius=0.0, sigma=0.1)
    with pytest.raises(ValueError, match="`sigma`"):
        CertifiedTopKOverlap(identity, k=1, radius=0.0, sigma=0.0)
    with pytest.raises(ValueError, match="`sparsity`"):
        CertifiedTopKOverlap(identity, k=1, radius=0.0, sigma=0.1, sparsity=2.0)
    with pytest.raises(ValueError, match="return_details"):
        CertifiedTopKOverlap(identity, k=1, radius=0, sigma=0.1, return_details=True)
