"""paperlib.local_coverage (related paper: Merger & Goldt, local coverage) against independent computations:
brute-force float64 distances, numerical quadrature of the KDE posterior mean, Monte Carlo of the ratio rule
and of the probability-flow ODE, and synthetic data with a known bandwidth."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from paperlib import geometry, memorization, sampling
from paperlib import local_coverage as lc

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _cdist(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


# ------------------------------------------------------------------------------------ sparsity
@pytest.mark.parametrize("k", [1, 3, 7])
def test_other_neighbors_and_sparsity_match_brute_force(k):
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(60, 2, 3, 3, generator=gen)
    D = _cdist(data, data)
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, :k]
    dist, idx = lc.other_neighbors(data, k)
    assert dist.shape == (60, k) and dist.dtype == F64
    np.testing.assert_allclose(dist.numpy(), ref, rtol=1e-12)
    assert not (idx == torch.arange(60).unsqueeze(1)).any()
    np.testing.assert_allclose(D[np.arange(60)[:, None], idx.numpy()], ref, rtol=1e-12)
    np.testing.assert_allclose(lc.local_sparsity(data, k).numpy(), ref.mean(1), rtol=1e-12)
    np.testing.assert_allclose(lc.local_sparsity(data, k, squared=True).numpy(), (ref ** 2).mean(1) / 18, rtol=1e-12)


def test_other_neighbors_with_duplicates():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(10, 5, generator=gen, dtype=F64)
    data = torch.cat([base, base[:3], base[:1]])     # point 0 three times, 1 and 2 twice
    dist, idx = lc.other_neighbors(data, 2)
    assert not (idx == torch.arange(len(data)).unsqueeze(1)).any()
    assert float(dist[0, 0]) == 0 and float(dist[0, 1]) == 0      # its two copies
    assert float(dist[1, 0]) == 0 and float(dist[1, 1]) > 0
    D = _cdist(data, data)
    np.fill_diagonal(D, np.inf)
    np.testing.assert_allclose(dist.numpy(), np.sort(D, 1)[:, :2], atol=1e-12)


# ------------------------------------------------------------------------------- per-point rates
def test_per_point_memorization_matches_brute_force_and_is_memorized():
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(40, 12, generator=gen, dtype=F64)
    J = torch.randint(40, (500,), generator=gen)
    scale = torch.rand(500, 1, generator=gen, dtype=F64) * 1.5
    samples = train[J] + scale * torch.randn(500, 12, generator=gen, dtype=F64)
    for ratio in (1 / 3, math.sqrt(1 / 2)):
        res = lc.per_point_memorization(samples, train, ratio)
        D = _cdist(samples, train)
        order = np.argsort(D, 1)
        d1, d2 = D[np.arange(500), order[:, 0]], D[np.arange(500), order[:, 1]]
        mem = d1 < ratio * d2
        assert torch.equal(res.memorized, memorization.is_memorized(samples, train, ratio))
        np.testing.assert_array_equal(res.memorized.numpy(), mem)
        np.testing.assert_array_equal(res.nearest.numpy(), order[:, 0])
        assigned = np.array([(order[:, 0] == i).sum() for i in range(40)])
        mcount = np.array([((order[:, 0] == i) & mem).sum() for i in range(40)])
        np.testing.assert_array_equal(res.assigned.numpy(), assigned)
        np.testing.assert_array_equal(res.memorized_count.numpy(), mcount)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(res.rate.numpy(), np.where(assigned > 0, mcount / assigned, np.nan))
        assert res.global_rate == pytest.approx(mem.mean())
        np.testing.assert_allclose(res.dominance.numpy(), np.log(d2 ** 2 / d1 ** 2), rtol=1e-10)
        np.testing.assert_allclose(lc.dominance(samples, train).numpy(), np.log(d2 ** 2 / d1 ** 2), rtol=1e-10)
        # the related paper's rule d1^2/d2^2 < tau is dominance > log(1/tau) with tau = ratio^2
        np.testing.assert_array_equal((res.dominance > math.log(1 / ratio ** 2)).numpy(), mem)


def test_quantile_bins_and_rate_by_group():
    rng = np.random.default_rng(3)
    v = rng.normal(size=1000)
    b = lc.quantile_bins(v, 10)
    assert b.min() == 0 and b.max() == 9
    assert np.all(np.bincount(b) == 100)
    order = np.argsort(v)
    assert np.all(np.diff(b[order]) >= 0)                   # bins follow the values
    m = rng.integers(0, 4, size=1000)
    a = m + rng.integers(0, 4, size=1000)
    labels, rate, n = lc.rate_by_group(b, m, a)
    for g in range(10):
        s = b == g
        assert n[g] == a[s].sum()
        assert rate[g] == pytest.approx(m[s].sum() / a[s].sum())
    labels, rate, n = lc.rate_by_group(np.array([0, 0, 1]), [1, 0, 0], [2, 1, 0])
    assert rate[0] == pytest.approx(1 / 3) and math.isnan(rate[1]) and n[1] == 0


# ------------------------------------------------------------------------------------ KDE model
def test_kde_denoiser_matches_quadrature_in_one_dimension():
    data = torch.tensor([[-1.0], [0.3], [0.5], [2.0]], dtype=F64)
    h = 0.4
    y = data.numpy().ravel()

    def post_mean(x, s):
        dens = lambda x0: np.mean(stats.norm.pdf(x0, y, h)) * stats.norm.pdf(x, x0, s)  # noqa: E731
        num = integrate.quad(lambda x0: x0 * dens(x0), -8, 8, points=list(y), limit=200)[0]
        den = integrate.quad(dens, -8, 8, points=list(y), limit=200)[0]
        return num / den

    xs = torch.tensor([[-2.0], [0.1], [0.45], [1.3], [3.0]], dtype=F64)
    for s in (0.05, 0.3, 1.0, 5.0):
        out = lc.kde_denoiser(xs, data, s, h)
        ref = [post_mean(float(x), s) for x in xs]
        np.testing.assert_allclose(out.numpy().ravel(), ref, rtol=1e-7, atol=1e-9)


def test_kde_denoiser_closed_form_in_high_dimension_and_h_zero():
    gen = torch.Generator().manual_seed(4)
    data = torch.randn(30, 16, generator=gen, dtype=F64)
    x = torch.randn(7, 16, generator=gen, dtype=F64) * 2
    s, h = 0.7, 0.5
    # direct Bayes over the mixture components: responsibilities with variance s^2 + h^2, component means
    v = s * s + h * h
    logits = -((x[:, None, :] - data[None]) ** 2).sum(-1) / (2 * v)
    w = torch.softmax(logits, 1)
    comp = data[None] + (h * h / v) * (x[:, None, :] - data[None])
    ref = (w[..., None] * comp).sum(1)
    torch.testing.assert_close(lc.kde_denoiser(x, data, s, h), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lc.kde_denoiser(x, data, s, 0.0), geometry.empirical_denoiser(x, data, s))
    D = lc.KDEDenoiser(data.reshape(30, 4, 4), h)
    out = D(x.reshape(7, 4, 4), torch.full((7,), s, dtype=F64))
    torch.testing.assert_close(out.reshape(7, 16), ref, rtol=1e-10, atol=1e-12)


def test_probability_flow_of_kde_denoiser_samples_the_kde():
    # 1-D data: the EDM sampler on the KDE denoiser should produce the KDE law (KS test against its CDF)
    data = torch.tensor([[-1.0], [0.2], [1.5]], dtype=F64)
    h = 0.3
    x = sampling.sample(lc.KDEDenoiser(data, h), 3000, (1,), steps=200, sigma_max=40.0, dtype=F64,
                        generator=torch.Generator().manual_seed(5), batch_size=3000).numpy().ravel()
    y = data.numpy().ravel()
    cdf = lambda t: np.mean(stats.norm.cdf((np.asarray(t)[:, None] - y) / h), axis=1)  # noqa: E731
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_kde_sample_law():
    gen = torch.Generator().manual_seed(6)
    data = torch.randn(5, 2, 4, 4, generator=gen)
    x, J = lc.kde_sample(data, 4000, 0.25, generator=gen)
    assert x.shape == (4000, 2, 4, 4) and x.dtype == data.dtype
    assert torch.bincount(J, minlength=5).min() > 700
    resid = (x - data[J]).double()
    assert float(resid.mean()) == pytest.approx(0, abs=0.01)
    assert float(resid.std()) == pytest.approx(0.25, rel=0.02)
    src = torch.arange(5).repeat(3)
    x2, J2 = lc.kde_sample(data, 15, 0.0, sources=src)
    assert torch.equal(J2, src) and torch.equal(x2, data[src])


# -------------------------------------------------------------------------------------- criterion
@pytest.mark.parametrize("d", [8, 100, 300])
def test_memorization_probability_matches_monte_carlo_two_points(d):
    # two points at distance r1; samples y_0 + h n; memorized iff ||x - y_0|| < ratio ||x - y_1||
    gen = torch.Generator().manual_seed(7 + d)
    n = 10000
    h = 1.0
    for ratio in (1 / 3, math.sqrt(1 / 2)):
        rc = float(lc.critical_distance(h, d, ratio))
        for r1 in (0.85 * rc, rc, 1.1 * rc):
            noise = torch.randn(n, d, generator=gen, dtype=F64)
            a = torch.zeros(d, dtype=F64)
            a[0] = r1
            u = h * noise
            mem = torch.linalg.vector_norm(u, dim=1) < ratio * torch.linalg.vector_norm(u - a, dim=1)
            mc = float(mem.double().mean())
            p = float(lc.memorization_probability(r1, h, d, ratio))
            assert abs(mc - p) < 4 * math.sqrt(max(p * (1 - p), 1 / n) / n) + 1e-3, (d, ratio, r1 / rc, mc, p)


def test_high_dimensional_threshold_is_a_step():
    d, h = 3072, 0.05
    rc = float(lc.critical_distance(h, d))
    assert rc == pytest.approx(2 * math.sqrt(2) * h * math.sqrt(d))
    p = lc.memorization_probability(np.array([0.9, 1.0, 1.1]) * rc, h, d)
    assert p[0] < 0.01 and abs(p[1] - 0.5) < 0.05 and p[2] > 0.99
    assert float(lc.critical_bandwidth(rc, d)) == pytest.approx(h)
    # monotone in r1 and decreasing in h
    r = np.linspace(0, 2, 50) * rc
    assert np.all(np.diff(lc.memorization_probability(r, h, d)) >= 0)
    assert lc.memorization_probability(rc, 0.9 * h, d) > lc.memorization_probability(rc, 1.1 * h, d)


def test_fit_bandwidth_recovers_a_known_bandwidth():
    rng = np.random.default_rng(8)
    d, h = 768, 0.08
    r1 = rng.uniform(0.7, 1.4, size=4000) * float(lc.critical_distance(h, d))
    mem = rng.random(4000) < lc.memorization_probability(r1, h, d)
    assert 0.2 < mem.mean() < 0.8
    assert lc.fit_bandwidth(r1, mem, d) == pytest.approx(h, rel=0.02)
    # counts with trials give the same estimate as the expanded outcomes
    r_rep = r1[:4]
    outcomes = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0])
    h1 = lc.fit_bandwidth(np.repeat(r_rep, 3), outcomes, d)
    h2 = lc.fit_bandwidth(r_rep, outcomes.reshape(4, 3).sum(1), d, weights=[3, 3, 3, 3])
    assert h1 == pytest.approx(h2, rel=1e-4)


# ----------------------------------------------------------------------------------------- errors
def test_bad_input_names_the_argument():
    data = torch.randn(10, 4)
    with pytest.raises(ValueError, match="k"):
        lc.other_neighbors(data, 10)
    with pytest.raises(ValueError, match="data"):
        lc.local_sparsity(torch.randn(1, 4))
    with pytest.raises(ValueError, match="ratio"):
        lc.per_point_memorization(data, data, 1.5)
    with pytest.raises(ValueError, match="samples"):
        lc.per_point_memorization(torch.randn(3, 5), data)
    with pytest.raises(ValueError, match="h"):
        lc.kde_denoiser(data, data, 0.5, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        lc.kde_denoiser(data, data, 0.0, 0.1)
    with pytest.raises(ValueError, match="sources"):
        lc.kde_sample(data, 3, 0.1, sources=torch.tensor([0, 1, 99]))
    with pytest.raises(ValueError, match="n"):
        lc.kde_sample(data, 0, 0.1)
    with pytest.raises(ValueError, match="r1"):
        lc.memorization_probability(-1.0, 0.1, 10)
    with pytest.raises(ValueError, match="h"):
        lc.memorization_probability(1.0, 0.0, 10)
    with pytest.raises(ValueError, match="d"):
        lc.critical_distance(0.1, 0)
    with pytest.raises(ValueError, match="memorized"):
        lc.fit_bandwidth([1.0, 2.0], [2, 0], 10)
    with pytest.raises(ValueError, match="n_bins"):
        lc.quantile_bins([1.0, 2.0], 5)
    with pytest.raises(ValueError, match="groups"):
        lc.rate_by_group([0, 1], [1], [1, 1])
    with pytest.raises(TypeError, match="r1"):
        lc.memorization_probability("far", 0.1, 10)
