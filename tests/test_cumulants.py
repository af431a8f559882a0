"""Easy to hard (related paper: Bardone, Merger & Goldt): the mixed cumulant model, the tied denoiser and the
population loss of paperlib.cumulants against independent computations: Monte Carlo draws, scipy quadrature,
autograd, closed-form moments."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from paperlib import cumulants as C

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ------------------------------------------------------------------------------------------ data model
@pytest.mark.parametrize("kurt", [-2.0, -1.0, 0.0, 3.0, 20.0])
def test_three_point_law_moments(kurt):
    vals, probs = C.three_point_law(kurt)
    assert probs.sum() == pytest.approx(1.0)
    assert probs @ vals == pytest.approx(0.0, abs=1e-14)
    assert probs @ vals ** 2 == pytest.approx(1.0)
    assert probs @ vals ** 4 - 3 == pytest.approx(kurt)


def test_model_moments_monte_carlo():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for model in [C.MixedCumulantModel(6, mean=1.0, spike=10.0, kurtosis=-2.0),
                  C.MixedCumulantModel(6, mean=0.5, spike=4.0, correlated=True),
                  C.MixedCumulantModel(5, kurtosis=5.0)]:
        a = model.sample(n, g)
        mu, cov = model.moments()
        se_mu = cov.diagonal().sqrt() / math.sqrt(n)
        assert ((a.mean(0) - mu).abs() / se_mu).max() < 4.5
        emp = torch.cov(a.T)
        # standard error of a covariance entry ~ sqrt((C_ii C_jj + C_ij^2) / n) (Gaussian; <= 2x that here)
        se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov ** 2) / n).sqrt()
        assert ((emp - cov).abs() / se).max() < 9
        if model.kurtosis is not None and not model.correlated:
            k = stats.kurtosis(a[:, C.NONGAUSS].numpy())
            assert k == pytest.approx(model.kurtosis, rel=0.05, abs=0.02)


def test_correlated_latent_is_sign_of_spike():
    model = C.MixedCumulantModel(4, spike=10.0, correlated=True)
    a = model.sample(1000, torch.Generator().manual_seed(1))
    assert torch.equal(a[:, C.NONGAUSS], torch.sign(a[:, C.SPIKE]))
    assert model.moments()[1][0, 1] == pytest.approx(math.sqrt(20 / math.pi))


def test_noisy_points_follow_the_diffusion():
    t = 0.3
    model = C.MixedCumulantModel(5, mean=1.0, spike=10.0, kurtosis=-2.0)
    x, z = model.noisy(200_000, t, torch.Generator().manual_seed(2))
    mu, cov = model.moments()
    e, d2 = math.exp(-t), 1 - math.exp(-2 * t)
    assert torch.allclose(x.mean(0), e * mu, atol=0.02)
    assert torch.allclose(torch.cov(x.T), e * e * cov + d2 * torch.eye(5, dtype=F64), atol=0.06)
    assert torch.allclose(torch.cov(torch.cat([x, z], 1).T)[:5, 5:], math.sqrt(d2) * torch.eye(5, dtype=F64), atol=0.01)
    # numpy-drawn batches (online SGD) have the same law
    xn, zn = model._noisy_numpy(200_000, e, math.sqrt(d2), np.random.default_rng(0), dtype=np.float64)
    assert torch.allclose(torch.cov(xn.T), e * e * cov + d2 * torch.eye(5, dtype=F64), atol=0.06)
    assert torch.allclose(xn.mean(0), e * mu, atol=0.02)


def test_model_rejects_bad_input():
    with pytest.raises(ValueError, match="d"):
        C.MixedCumulantModel(2)
    with pytest.raises(TypeError, match="d"):
        C.MixedCumulantModel(5.0)
    with pytest.raises(ValueError, match="kurtosis"):
        C.MixedCumulantModel(5, kurtosis=-3.0)
    with pytest.raises(ValueError, match="kurtosis"):
        C.MixedCumulantModel(5, kurtosis=1.0, correlated=True)
    with pytest.raises(ValueError, match="spike"):
        C.MixedCumulantModel(5, spike=0.0)
    with pytest.raises(ValueError, match="t"):
        C.MixedCumulantModel(5).noisy(3, t=0.0)


# ------------------------------------------------------------------------------------------ denoiser
def test_tied_denoiser_gradient_matches_autograd():
    g = torch.Generator().manual_seed(3)
    for sign, bias in [(-1, 0.0), (1, 0.4)]:
        net = C.TiedDenoiser(7, width=3, t=0.2, sign=sign, bias=bias, generator=g)
        x, z = C.MixedCumulantModel(7, mean=1.0, kurtosis=-2.0).noisy(50, 0.2, g)
        loss, grad = net.loss_and_grad(x, z)
        auto = (z - net(x)).pow(2).sum(1).mean()
        auto.backward()
        assert loss == pytest.approx(auto.item(), rel=1e-12)
        assert torch.allclose(grad, net.weight.grad, rtol=1e-10, atol=1e-12)


def test_tied_denoiser_form_and_overlaps():
    net = C.TiedDenoiser(5, width=2, t=0.1, sign=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(net.weight.norm(dim=1), torch.ones(2, dtype=F64))
    x = torch.randn(4, 5, dtype=F64)
    W = net.weight.detach()
    manual = net.skip * x + torch.tanh(net.c * x @ W.T) @ W
    assert torch.allclose(net(x), manual)
    assert net.skip == pytest.approx(math.sqrt(1 - math.exp(-0.2)))
    ov = C.overlaps(W * 3, torch.eye(5, dtype=F64)[:2])
    assert torch.allclose(ov, W[:, :2].abs())
    with pytest.raises(ValueError, match="sign"):
        C.TiedDenoiser(5, sign=0)
    with pytest.raises(ValueError, match="directions"):
        C.overlaps(W, torch.ones(3, dtype=F64))


# ------------------------------------------------------------------------------------------ population loss
def test_gaussian_expectation_matches_scipy_quad():
    args = (2.1, 0.42, 0.42, -1, 0.5)
    for mu, var in [(0.0, 1.0), (0.9, 0.7), (-0.4, 2.0), (0.3, 8.0)]:
        ref = integrate.quad(lambda u: C._unit_terms(np.array(u), *args) * stats.norm.pdf(u, mu, math.sqrt(var)),
                             -np.inf, np.inf, epsabs=1e-13)[0]
        assert float(C._gauss([mu], var, *args)[0]) == pytest.approx(ref, abs=1e-11)


CASES = [
    (C.MixedCumulantModel(6, kurtosis=-2.0), (0.8, 0.0, 0.0), dict()),
    (C.MixedCumulantModel(6, kurtosis=4.0), (0.6, 0.3, 0.1), dict(sign=1)),
    (C.MixedCumulantModel(6, mean=1.0, spike=10.0), (0.0, 0.5, 0.6), dict(bias=0.5)),
    (C.MixedCumulantModel(6, spike=3.0, mean=0.5, correlated=True), (0.5, 0.5, 0.2), dict()),
]


@pytest.mark.parametrize("model,m,kw", CASES)
def test_population_loss_matches_monte_carlo(model, m, kw):
    t = 0.2
    g = torch.Generator().manual_seed(4)
    net = C.TiedDenoiser(model.d, 1, t, generator=g, **kw)
    rest = math.sqrt(1 - sum(v * v for v in m))
    w = torch.zeros(model.d, dtype=F64)
    w[:3] = torch.tensor(m, dtype=F64)
    w[4] = rest
    with torch.no_grad():
        net.weight.copy_(w[None])
    x, z = model.noisy(400_000, t, g)
    with torch.no_grad():
        terms = (z - net(x)).pow(2).sum(1)
    mc, se = terms.mean().item(), terms.std().item() / math.sqrt(terms.numel())
    # control variate: the unit-free part E|z - s x|^2 is known exactly
    base = (z - net.skip * x).pow(2).sum(1)
    mu, cov = model.moments()
    base_exact = model.d * (1 - net.skip * net.delta) ** 2 + net.skip ** 2 * net.e ** 2 * float(torch.trace(cov) + mu @ mu)
    diff = terms - base
    cv, se_cv = diff.mean().item() + base_exact, diff.std().item() / math.sqrt(diff.numel())
    exact = C.population_loss(model, m, t, **kw)
    assert abs(mc - exact) < 4 * se
    assert abs(cv - exact) < 4 * se_cv


def test_loss_curve_exponents():
    t = 0.1
    ms = np.geomspace(0.01, 0.03, 5)
    cases = [(C.MixedCumulantModel(8, mean=1.0), (0, 0, 1), dict(bias=0.5), 1),
             (C.MixedCumulantModel(8, mean=1.0), (0, 0, 1), dict(), 2),
             (C.MixedCumulantModel(8, spike=10.0), (0, 1, 0), dict(), 2),
             (C.MixedCumulantModel(8, kurtosis=-2.0), (1, 0, 0), dict(), 4),
             (C.MixedCumulantModel(8, correlated=True), (2 ** -0.5, 2 ** -0.5, 0), dict(), 2),
             (C.MixedCumulantModel(8, correlated=True), (1, 0, 0), dict(), 4)]
    for model, v, kw, k in cases:
        slope, se, _ = C.fit_exponent(ms, C.loss_curve(model, v, ms, t, **kw))
        assert slope == pytest.approx(k, abs=0.15), (model, v, kw)
    # a Gaussian direction: no change at all
    assert np.abs(C.loss_curve(C.MixedCumulantModel(8), (1, 0, 0), ms, t)).max() < 1e-12


def test_loss_is_even_in_w_for_an_odd_unit():
    model = C.MixedCumulantModel(6, mean=1.0, spike=5.0, kurtosis=-2.0)
    m = np.array([0.3, 0.2, 0.4])
    assert C.population_loss(model, m, 0.3) == pytest.approx(C.population_loss(model, -m, 0.3), rel=1e-12)
    assert C.population_loss(model, m, 0.3, bias=0.5) != pytest.approx(C.population_loss(model, -m, 0.3, bias=0.5))


def test_population_loss_rejects_bad_input():
    model = C.MixedCumulantModel(6)
    with pytest.raises(ValueError, match="m"):
        C.population_loss(model, [0.9, 0.9, 0.0], 0.1)
    with pytest.raises(ValueError, match="m"):
        C.population_loss(model, [0.1, 0.1], 0.1)
    with pytest.raises(TypeError, match="model"):
        C.population_loss("model", [0.1, 0.1, 0.0], 0.1)
    with pytest.raises(ValueError, match="direction"):
        C.loss_curve(model, (1, 1, 0), [0.1], 0.1)


def test_fit_exponent_on_a_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    slope, se, pre = C.fit_exponent(x, 3 * x ** 2.5)
    assert slope == pytest.approx(2.5) and se < 1e-10 and pre == pytest.approx(3.0)
    with pytest.raises(ValueError, match="finite"):
        C.fit_exponent(x, [1, 2, 0, 4])


# ------------------------------------------------------------------------------------------ online SGD
def test_step_size_scaling():
    assert C.sgd_step_size(16, 2, 8, 0.1) == pytest.approx(0.1 * 8 / 16)
    assert C.sgd_step_size(16, 4, 8, 0.1) == pytest.approx(0.1 * 8 / 256)
    assert C.sgd_step_size(16, 1, 8, 0.1) == pytest.approx(0.1 * 8 / 16)
    with pytest.raises(ValueError, match="eta0"):
        C.sgd_step_size(16, 2, 8, 0.0)


def test_online_sgd_learns_a_spike_and_is_seeded():
    model = C.MixedCumulantModel(16, spike=10.0)
    kw = dict(t=0.1, lr=C.sgd_step_size(16, 2, 16, 0.01), batch=16, max_samples=200_000, init_overlap=0.25)
    a = C.online_sgd(model, "spike", seed=0, **kw)
    b = C.online_sgd(model, "spike", seed=0, **kw)
    assert a["samples"] == b["samples"] and np.isfinite(a["samples"])
    assert a["init_overlap"] == pytest.approx(0.25)
    assert a["history"][-1, 1] >= 0.5 and a["history"][0, 1] == pytest.approx(0.25)
    # a Gaussian direction is never learned: the overlap stays near the equator
    c = C.online_sgd(C.MixedCumulantModel(16), "nongauss", seed=1, **dict(kw, max_samples=20_000))
    assert math.isnan(c["samples"]) and c["samples_seen"] == 20_000
    with pytest.raises(ValueError, match="target"):
        C.online_sgd(model, "kurtosis", **kw)
    with pytest.raises(ValueError, match="init_overlap"):
        C.online_sgd(model, "spike", seed=0, **dict(kw, init_overlap=0.7))


# ------------------------------------------------------------------------------------------ clones
def test_gaussian_clones_match_the_moments():
    g = torch.Generator().manual_seed(5)
    data = torch.rand(500, 1, 2, 3, generator=g, dtype=F64) ** 3 + torch.linspace(0, 1, 6, dtype=F64).reshape(1, 1, 2, 3)
    x = data.flatten(1)
    mu, cov = x.mean(0), torch.cov(x.T, correction=0)
    n = 200_000
    full = C.gaussian_clone(data, n, "mean_cov", g)
    assert full.shape == (n, 1, 2, 3)
    f = full.flatten(1)
    assert torch.allclose(f.mean(0), mu, atol=4 * cov.diagonal().max().sqrt().item() / math.sqrt(n))
    assert torch.allclose(torch.cov(f.T), cov, atol=0.003)
    iso = C.gaussian_clone(data, n, "mean", g).flatten(1)
    v = cov.diagonal().mean()
    assert torch.allclose(torch.cov(iso.T), v * torch.eye(6, dtype=F64), atol=0.003)
    assert torch.allclose(iso.mean(0), mu, atol=0.003)
    with pytest.raises(ValueError, match="kind"):
        C.gaussian_clone(data, 3, "cov")
    with pytest.raises(TypeError, match="data"):
        C.gaussian_clone(np.ones((3, 2)), 3)


def test_sample_complexity_grid_and_grayscale():
    out = C.sample_complexity(lambda d: C.MixedCumulantModel(d, spike=10.0), "spike", [8, 16], [0, 1], k=2, eta0=0.01,
                              batch=16, t=0.1, max_samples_for_d=lambda d: 100_000)
    assert out.shape == (2, 2) and np.isfinite(out).all()
    single = C.online_sgd(C.MixedCumulantModel(16, spike=10.0), "spike", t=0.1, lr=C.sgd_step_size(16, 2, 16, 0.01),
                          batch=16, max_samples=100_000, seed=1, init_overlap=0.25)
    assert out[1, 1] == single["samples"]
    img = torch.rand(2, 3, 4, 4)
    gray = C.grayscale(img)
    assert gray.shape == (2, 1, 4, 4)
    assert torch.allclose(gray[:, 0], 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])
    with pytest.raises(ValueError, match="images"):
        C.grayscale(torch.rand(2, 1, 4, 4))
