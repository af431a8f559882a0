"""paperlib.geometry against independent float64 / closed-form / Monte Carlo computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from paperlib import blocking, shells
from paperlib import geometry as g
from paperlib.edm import karras_sigmas

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ref_log_weights(x, data, sigma):
    """Independent float64 reference: direct differences, log_softmax."""
    x, data = x.double(), data.double()
    d2 = ((x[:, None, :] - data[None, :, :]) ** 2).sum(-1)
    return torch.log_softmax(-d2 / (2 * sigma**2), dim=1)


def cdist(a, b):
    """Brute-force float64 distances by direct differences (torch.cdist's default matmul mode is not exact)."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def cifar_like(n, d=3072, seed=0, dtype=F64):
    return (torch.rand(n, d, generator=gen(seed), dtype=F64) * 2 - 1).to(dtype)


# ------------------------------------------------------------------ schedule (App. E.1, E.7)
def test_karras_18_step_schedule_matches_paper_table():
    s = karras_sigmas(18)
    paper = [80.00, 57.59, 40.79, 28.37, 19.35, 12.91, 8.40, 5.32, 3.26, 1.92, 1.09, 0.59, 0.30, 0.14,
             0.06, 0.02, 0.01, 0.00]
    assert s.shape == (19,) and s[-1].item() == 0.0
    assert [round(v, 2) for v in s[:18].tolist()] == paper
    assert s[0].item() == 80.0 and abs(s[17].item() - 0.002) < 1e-15
    assert bool((s[:-1] > s[1:]).all())


# ------------------------------------------------------------------ posterior weights (Eq. 3)
@pytest.mark.parametrize("sigma", [0.002, 0.05, 1.0, 7.0, 80.0])
def test_log_posterior_weights_float64_exact_in_cifar_dimension(sigma):
    data = cifar_like(60)
    x = torch.cat([data[:4] + sigma * torch.randn(4, 3072, generator=gen(1), dtype=F64),
                   cifar_like(4, seed=2)])
    lw = g.log_posterior_weights(x, data, sigma)
    ref = ref_log_weights(x, data, sigma)
    assert lw.dtype == F64 and lw.shape == (8, 60)
    assert torch.isfinite(lw).all()
    # relative accuracy on the (huge, at small sigma) log weights, absolute near 0
    assert torch.allclose(lw, ref, rtol=1e-9, atol=1e-7)
    assert torch.allclose(torch.logsumexp(lw, 1), torch.zeros(8, dtype=F64), atol=1e-12)


def test_log_posterior_weights_float32_stays_right_at_extreme_sigmas():
    data = cifar_like(50, dtype=torch.float32)
    x = data[:5] + 0.002 * torch.randn(5, 3072, generator=gen(3))
    for sigma in (0.002, 80.0):
        lw = g.log_posterior_weights(x, data, sigma)
        ref = ref_log_weights(x, data, sigma)
        assert lw.dtype == torch.float32 and torch.isfinite(lw).all()
        assert torch.allclose(lw.exp().double(), ref.exp(), atol=1e-5)
        assert torch.allclose(lw.double(), ref, rtol=1e-5, atol=1e-5 if sigma == 80.0 else 1e-3)
    # sigma = 0.002: one-hot on the point itself
    w = g.posterior_weights(x, data, 0.002)
    assert torch.equal(w.argmax(1), torch.arange(5)) and bool((w.max(1).values == 1).all())


def test_weights_one_hot_as_sigma_to_zero_and_uniform_as_sigma_to_infinity():
    data = torch.randn(30, 5, generator=gen(4), dtype=F64)
    x = torch.randn(6, 5, generator=gen(5), dtype=F64)
    nn = cdist(x, data).argmin(1)
    w0 = g.posterior_weights(x, data, 1e-4)
    assert torch.allclose(w0, torch.nn.functional.one_hot(nn, 30).double(), atol=1e-12)
    winf = g.posterior_weights(x, data, 1e6)
    assert torch.allclose(winf, torch.full_like(winf, 1 / 30), rtol=1e-9)
    # sigma as a 0-d tensor
    assert torch.equal(g.log_posterior_weights(x, data, torch.tensor(0.3, dtype=F64)), g.log_posterior_weights(x, data, 0.3))


# ------------------------------------------------------------------ empirical denoiser (Eq. 2)
@pytest.mark.parametrize("sigma", [0.002, 0.5, 3.0, 80.0])
def test_empirical_denoiser_vs_float64_reference(sigma):
    data = cifar_like(80, d=300, seed=6)
    x = data[:5] + sigma * torch.randn(5, 300, generator=gen(7), dtype=F64)
    ref = ref_log_weights(x, data, sigma).exp() @ data
    out = g.empirical_denoiser(x, data, sigma)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    # forced streaming: several data chunks and several query blocks
    out_s = g.empirical_denoiser(x, data, sigma, budget=8 * 3 * 7)
    assert torch.allclose(out_s, ref, rtol=1e-10, atol=1e-12)
    # float32 inputs agree to float32 accuracy where weights are well separated or smooth
    out32 = g.empirical_denoiser(x.float(), data.float(), sigma)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), ref, atol=2e-4)


def test_empirical_denoiser_keeps_image_shape_and_limits():
    data = torch.randn(40, 3, 4, 4, generator=gen(8), dtype=F64)
    x = torch.randn(6, 3, 4, 4, generator=gen(9), dtype=F64)
    out = g.empirical_denoiser(x, data, 1e5)
    assert out.shape == x.shape
    assert torch.allclose(out, data.mean(0).expand_as(out), atol=1e-8)  # sigma -> inf: the mean
    nn = cdist(x.flatten(1), data.flatten(1)).argmin(1)
    assert torch.allclose(g.empirical_denoiser(x, data, 1e-3), data[nn], atol=1e-12)  # sigma -> 0: the NN


def test_max_weight_at_matches_reference():
    data = cifar_like(70, d=200, seed=10)
    x = data[:6] + 0.8 * torch.randn(6, 200, generator=gen(11), dtype=F64)
    ref = ref_log_weights(x, data, 0.8).exp().max(1).values
    assert torch.allclose(g.max_weight_at(x, data, 0.8), ref, rtol=1e-12)


# ------------------------------------------------------------------ nearest neighbours
def test_nearest_neighbors_exact_vs_cdist_with_duplicates():
    data = torch.randn(500, 64, generator=gen(12), dtype=F64)
    data[10] = data[3]  # duplicate
    data[11] = data[3] + 1e-9  # near duplicate
    x = torch.cat([torch.randn(20, 64, generator=gen(13), dtype=F64), data[3:4] + 1e-12, data[100:101]])
    dist, idx = g.nearest_neighbors(x, data, 3)
    ref = cdist(x, data)
    rv, ri = ref.topk(3, largest=False)
    assert torch.allclose(dist, rv, rtol=1e-12, atol=1e-14)
    assert torch.equal(idx[:20], ri[:20])
    assert dist[-1, 0].item() == 0.0 and idx[-1, 0].item() == 100
    assert torch.allclose(g.nearest_neighbor_distances(x, data, 1)[:, 0], rv[:, 0], rtol=1e-12, atol=1e-14)


def test_nearest_neighbors_float32_exact_distances_and_certified_fallback(monkeypatch):
    monkeypatch.setattr(blocking, "BLOCK_BYTES", 4 * 64 * 50)  # many chunks
    d = 3072
    q = torch.rand(3, d, generator=gen(14)) * 2 - 1
    # data on spheres around q[0] with radii differing by 1e-5 (far below float32 error of x.y):
    u = torch.randn(40, d, generator=gen(15), dtype=F64)
    u /= u.norm(dim=1, keepdim=True)
    radii = 5.0 + 1e-5 * torch.randperm(40, generator=gen(16)).double()
    data = (q[0].double() + radii[:, None] * u).float()
    data = torch.cat([data, torch.rand(300, d, generator=gen(17)) * 2 - 1])
    dist, idx = g.nearest_neighbors(q, data, 2, extra=1)
    ref = cdist(q.double(), data.double())
    rv, ri = ref.topk(2, largest=False)
    assert dist.dtype == F64
    assert torch.allclose(dist, rv, rtol=1e-13)
    assert torch.equal(idx, ri)


# ------------------------------------------------------------------ Def. 4.1 / Fig. 7 curves
def test_weight_curves_reproduce_explicit_noise_exactly():
    data = torch.randn(25, 12, generator=gen(18), dtype=F64)
    sig = torch.tensor([0.05, 0.4, 1.0, 3.0, 50.0], dtype=F64)
    mx, sw = g.posterior_weight_curves(data, sig, 3, gen(19), reduce=False, progress=False)
    noise = torch.randn((25, 3, 12), generator=gen(19), dtype=F64)  # drawn in the same order
    for k, s in enumerate(sig.tolist()):
        x = (data[:, None, :] + s * noise).reshape(75, 12)
        w = ref_log_weights(x, data, s).exp().reshape(25, 3, 25)
        assert torch.allclose(mx[k], w.max(2).values, rtol=1e-9, atol=1e-12)
        assert torch.allclose(sw[k], w[torch.arange(25), :, torch.arange(25)], rtol=1e-9, atol=1e-12)


def test_max_and_self_weight_limits_and_order():
    data = cifar_like(40, d=3072, seed=20, dtype=torch.float32)
    sig = torch.cat([karras_sigmas(18)[:-1].flip(0), torch.tensor([1e5], dtype=F64)])
    W = g.max_posterior_weight(data, sig, 2, gen(21), progress=False)
    S = g.self_posterior_weight(data, sig, 2, gen(21), progress=False)
    assert W.shape == (19,) and W.dtype == F64
    assert bool((S <= W + 1e-7).all())
    assert abs(W[0].item() - 1) < 1e-6 and abs(S[0].item() - 1) < 1e-6  # sigma = 0.002: one-hot
    assert abs(W[-1].item() - 1 / 40) < 1e-3 and abs(S[-1].item() - 1 / 40) < 1e-3  # sigma >> sqrt(d): uniform
    assert bool((W[:-1] >= W[1:] - 0.02).all())  # decreasing up to Monte Carlo noise
    # independent Monte Carlo (fresh noise, direct differences) at sigma = 19.35 (W is far from both limits)
    s = 19.35
    n = torch.randn(40, 8, 3072, generator=gen(40), dtype=F64)
    x = (data.double()[:, None, :] + s * n).reshape(320, 3072)
    ref = ref_log_weights(x, data, s).exp().max(1).values
    Wk = W[sig.tolist().index(karras_sigmas(18)[4].item())].item()
    assert 0.1 < Wk < 0.95
    assert abs(Wk - ref.mean().item()) < 4 * ref.std().item() * math.sqrt(1 / 320 + 1 / 80)
    # subsampled base points
    Wsub = g.max_posterior_weight(data, sig, 2, gen(22), n_points=10, progress=False)
    assert Wsub.shape == (19,)


# ------------------------------------------------------------------ Lemma 4.5, Def. 4.7
@pytest.mark.parametrize("d", [1, 2, 10, 100, 3072])
def test_shell_radii_and_laurent_massart_probability(d):
    rm, rp = g.shell_radii(d)
    assert rm == pytest.approx(math.sqrt(max(d - 2 * math.sqrt(5 * d), 0)))
    assert rp == pytest.approx(math.sqrt(d + 2 * math.sqrt(5 * d) + 10))
    p = stats.chi2.cdf(rp**2, d) - stats.chi2.cdf(rm**2, d)
    assert p >= 1 - 2 * math.exp(-5)  # 0.9865
    assert g.shell_hit_probability(0.0, 1.0, d).item() == pytest.approx(p, abs=1e-12)


def test_shell_hit_probability_known_value_and_monte_carlo():
    assert 1 - 2 * math.exp(-5) == pytest.approx(0.9865, abs=1e-4)
    assert g.shell_hit_probability(torch.zeros(1), 2.0, 3072).item() >= 0.9865
    # independent MC through the distributional identity ||a + s n||^2/s^2 = (t + Z)^2 + chi2_{d-1}
    rng = np.random.default_rng(0)
    d, M = 3072, 400_000
    rm, rp = g.shell_radii(d)
    Z, Q = rng.standard_normal(M), rng.chisquare(d - 1, M)
    r = torch.tensor([0.0, 5.0, 12.0, 16.0, 20.0, 25.0], dtype=F64)
    sigma = 1.0
    phi = g.shell_hit_probability(r, sigma, d)
    for t, p in zip(r.tolist(), phi.tolist()):
        v = (t / sigma + Z) ** 2 + Q
        mc = np.mean((v >= rm**2) & (v <= rp**2))
        assert abs(mc - p) < 5 * math.sqrt(p * (1 - p) / M) + 1e-5
    # direct vector MC in a small dimension, broadcasting r against sigma
    d = 6
    n = torch.randn(200_000, d, generator=gen(23), dtype=F64)
    a = torch.zeros(d, dtype=F64)
    a[0] = 1.5
    rm, rp = g.shell_radii(d)
    for s in (0.3, 1.0, 2.0):
        norm = (a + s * n).norm(dim=1)
        mc = ((norm >= s * rm) & (norm <= s * rp)).double().mean().item()
        p = g.shell_hit_probability(torch.tensor(1.5), s, d).item()
        assert abs(mc - p) < 5 * math.sqrt(p * (1 - p) / 200_000) + 1e-6
    grid = g.shell_hit_probability(torch.tensor([[1.0], [2.0]]), torch.tensor([0.5, 1.0, 2.0]), d)
    assert grid.shape == (2, 3)
    assert grid[1, 1].item() == pytest.approx(g.shell_hit_probability(2.0, 1.0, d).item(), rel=1e-14)


@pytest.mark.parametrize("d", [3, 50, 3072])
def test_phi_table_interpolation_error(d):
    h, vals, t_max, err = shells._phi_table(d, 5.0)
    assert err < 1e-11
    t = torch.rand(3000, generator=gen(24), dtype=F64) * t_max * 1.2
    exact = g.shell_hit_probability(t, 1.0, d)
    assert (shells._lagrange4(t, vals, h) - exact).abs().max().item() < 1e-10


# ------------------------------------------------------------------ Def. 4.6, Thm 4.8
def test_coverage_reproduces_explicit_noise_and_brute_force_shells():
    train = torch.randn(30, 8, generator=gen(25), dtype=F64)
    test = torch.randn(12, 8, generator=gen(26), dtype=F64)
    sig = torch.tensor([0.1, 0.3, 0.5, 0.8, 1.5], dtype=F64)
    hit = g.coverage(train, test, sig, 5, gen(27), reduce=False, progress=False)
    noise = torch.randn((12, 5, 8), generator=gen(27), dtype=F64)
    rm, rp = g.shell_radii(8)
    for k, s in enumerate(sig.tolist()):
        x = test[:, None, :] + s * noise
        dist = cdist(x.reshape(60, 8), train).reshape(12, 5, 30)
        ref = ((dist >= s * rm) & (dist <= s * rp)).any(2)
        assert torch.equal(hit[k], ref)
    C = g.coverage(train, test, sig, 5, gen(27), progress=False)
    assert torch.allclose(C, hit.double().mean((1, 2)))


def test_coverage_bounds_exact_and_sandwich_monte_carlo():
    d = 20
    train = torch.randn(40, d, generator=gen(28), dtype=F64)
    test = torch.randn(25, d, generator=gen(29), dtype=F64)
    sig = torch.logspace(-1, 0.7, 12, dtype=F64)
    lo, up = g.coverage_bounds(train, test, sig, progress=False)
    # independent: scipy phi on all pairs
    D = cdist(test, train).numpy()
    for k, s in enumerate(sig.tolist()):
        phi = shells._phi_exact(D / s, d, 5.0)
        assert lo[k].item() == pytest.approx(phi[np.arange(25), D.argmin(1)].mean(), abs=1e-12)
        assert up[k].item() == pytest.approx(np.minimum(1, phi.sum(1)).mean(), abs=1e-9)
    assert bool((lo <= up + 1e-12).all())
    C = g.coverage(train, test, sig, 400, gen(30), progress=False)
    se = 4 * torch.sqrt(C * (1 - C) / (25 * 400)) + 2e-3
    assert bool((lo <= C + se).all()) and bool((C <= up + se).all())


# ------------------------------------------------------------------ Thm 4.2
def _simulate_w1(data, i, sigma, m, seed):
    n = torch.randn(m, data.shape[1], generator=gen(seed), dtype=F64)
    x = data[i] + sigma * n
    return ref_log_weights(x, data, sigma)[:, i].exp()


@pytest.mark.parametrize("sharp", [False, True])
def test_concentration_thresholds_hold_by_simulation_and_are_not_vacuous(sharp):
    eps, delta = 0.05, 0.05
    data = torch.randn(60, 10, generator=gen(31), dtype=F64)
    for i in (0, 7):
        lo, hi = g.concentration_thresholds(data, i, eps, delta, sharp=sharp)
        assert 0 < hi < lo < math.inf
        for s in (hi, hi / 3):
            w1 = _simulate_w1(data, i, s, 20_000, 32 + i)
            assert (w1 >= 1 - eps).double().mean().item() >= 1 - delta
        for s in (lo, 3 * lo):
            w1 = _simulate_w1(data, i, s, 20_000, 33 + i)
            assert (w1 <= eps).double().mean().item() >= 1 - delta


def test_concentration_thresholds_closed_forms():
    eps, delta = 0.05, 0.1
    data = torch.randn(50, 6, generator=gen(34), dtype=F64)
    lo, hi = g.concentration_thresholds(data, 3, eps, delta)
    dj = torch.cat([cdist(data[3:4], data)[0, :3], cdist(data[3:4], data)[0, 4:]]).sort().values.numpy()
    M = 49
    c = stats.norm.ppf(1 - delta / M)
    L = math.log((1 - eps) * M / eps)
    # at sigma_hi the worst union-bound term equals delta/M exactly: g(delta_min) = c
    assert dj[0] / (2 * hi) - L * hi / dj[0] == pytest.approx(c, rel=1e-10)
    ks = np.arange(20, 50)  # eps k > 1 - eps  <=>  k >= 20
    B = np.log(eps * ks / (1 - eps))
    ck = stats.norm.ppf(1 - delta / ks)
    assert lo == pytest.approx(np.min(dj[ks - 1] * (ck + np.sqrt(ck**2 + 2 * B)) / (2 * B)), rel=1e-12)
    slo, shi = g.concentration_thresholds(data, 3, eps, delta, sharp=True)
    assert shi >= hi and slo <= lo
    # vector of indices
    L_, H_ = g.concentration_thresholds(data, [3, 4], eps, delta)
    assert L_[0].item() == lo and H_[0].item() == hi and L_.shape == (2,)
    # too few points for w_1 <= eps (1/N > eps as sigma -> inf): sigma_lo = inf
    assert g.concentration_thresholds(data[:10], 0, eps, delta)[0] == math.inf


# ------------------------------------------------------------------ Eq. 7, Thm 4.11
def test_gaussian_linear_denoiser_matches_formula_and_class():
    data = torch.randn(200, 7, generator=gen(35), dtype=F64) @ torch.randn(7, 7, generator=gen(36), dtype=F64)
    mu, cov = g.fit_gaussian(data)
    assert torch.allclose(cov, torch.cov(data.T, correction=0), atol=1e-12)
    x = torch.randn(5, 7, generator=gen(37), dtype=F64)
    for s in (0.1, 1.0, 10.0):
        ref = mu + (cov @ torch.linalg.solve(cov + s * s * torch.eye(7, dtype=F64), (x - mu).T)).T
        assert torch.allclose(g.gaussian_linear_denoiser(x, mu, cov, s), ref, atol=1e-12)
        assert torch.allclose(g.GaussianLinearDenoiser.fit(data)(x, s), ref, atol=1e-11)


def test_theorem_4_11_empirical_denoiser_approaches_gaussian_linear_as_sigma_grows():
    # skewed data: D* - D_G = -(1/2) E[(y - mu)||y - mu||^2] / sigma^2 + O(sigma^-4)
    data = 2 * torch.rand(300, 5, generator=gen(38), dtype=F64) ** 2
    G = g.GaussianLinearDenoiser.fit(data)
    x = torch.randn(4, 5, generator=gen(39), dtype=F64)
    c = data - data.mean(0)
    m3 = (c * (c**2).sum(1, keepdim=True)).mean(0)
    errs = []
    sig = (20.0, 60.0, 200.0)
    for s in sig:
        diff = g.empirical_denoiser(x, data, s) - G(x, s)
        assert torch.allclose(diff * s * s, (-0.5 * m3).expand_as(diff), rtol=0.05 * (20 / s) ** 2, atol=1e-6)
        errs.append(diff.norm().item())
    slope = np.polyfit(np.log(sig), np.log(errs), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.05)


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_value_error_naming_the_argument():
    data = torch.randn(10, 4, dtype=F64)
    x = torch.randn(3, 4, dtype=F64)
    cases = [
        (lambda: g.log_posterior_weights(x, data, 0.0), "sigma"),
        (lambda: g.log_posterior_weights(x, data, -1.0), "sigma"),
        (lambda: g.empirical_denoiser(x, data, float("nan")), "sigma"),
        (lambda: g.empirical_denoiser(x, data, float("inf")), "sigma"),
        (lambda: g.empirical_denoiser(x, data, torch.tensor([1.0, 2.0])), "sigma"),
        (lambda: g.log_posterior_weights(torch.randn(3, 5, dtype=F64), data, 1.0), "dimension"),
        (lambda: g.log_posterior_weights(x, data[:0], 1.0), "data"),
        (lambda: g.log_posterior_weights(x[0], data, 1.0), "x"),
        (lambda: g.empirical_denoiser(x, torch.full((10, 4), float("nan")), 1.0), "data"),
        (lambda: g.empirical_denoiser(torch.full((3, 4), float("nan")), data, 1.0), "x"),
        (lambda: g.empirical_denoiser(x, data.to(torch.int64), 1.0), "data"),
        (lambda: g.empirical_denoiser(x.to("meta"), data, 1.0), "device"),
        (lambda: g.max_posterior_weight(data, torch.tensor([0.1, -1.0]), 2, progress=False), "sigmas"),
        (lambda: g.max_posterior_weight(data, torch.tensor([0.1, float("nan")]), 2, progress=False), "sigmas"),
        (lambda: g.max_posterior_weight(data, torch.ones(2, 2), 2, progress=False), "sigmas"),
        (lambda: g.max_posterior_weight(data, [0.1], 0, progress=False), "n_noise"),
        (lambda: g.coverage(data, torch.randn(3, 5, dtype=F64), [0.1], progress=False), "dimension"),
        (lambda: g.coverage_bounds(data, x, [0.0], progress=False), "sigmas"),
        (lambda: g.shell_hit_probability(-1.0, 1.0, 4), "r"),
        (lambda: g.shell_hit_probability(1.0, 0.0, 4), "sigma"),
        (lambda: g.shell_radii(0), "d"),
        (lambda: g.concentration_thresholds(data[:1], 0), "data"),
        (lambda: g.concentration_thresholds(data, 0, eps=0.6), "eps"),
        (lambda: g.concentration_thresholds(data, 0, delta=0.0), "delta"),
        (lambda: g.concentration_thresholds(data, 10), "index"),
        (lambda: g.nearest_neighbors(x, data, 11), "k"),
        (lambda: g.gaussian_linear_denoiser(x, torch.zeros(4, dtype=F64), torch.eye(3, dtype=F64), 1.0), "cov"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


def test_gaussian_linear_denoiser_thin_fit_matches_full_eigendecomposition():
    """N < d: the thin-SVD fit gives the same Eq. 7 map as diagonalising the d x d covariance."""
    gen = torch.Generator().manual_seed(5)
    data = torch.randn(12, 40, generator=gen, dtype=torch.float64)
    x = torch.randn(7, 40, generator=gen, dtype=torch.float64)
    thin = g.GaussianLinearDenoiser.fit(data)
    full = g.GaussianLinearDenoiser(*g.fit_gaussian(data))
    assert thin.eigvecs.shape == (40, 12)
    for s in (0.01, 1.0, 50.0):
        torch.testing.assert_close(thin(x, s), full(x, s), rtol=1e-10, atol=1e-10)
        mu, cov = g.fit_gaussian(data)
        torch.testing.assert_close(thin(x, s), g.gaussian_linear_denoiser(x, mu, cov, s), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(thin.cov, g.fit_gaussian(data)[1], rtol=1e-10, atol=1e-12)
