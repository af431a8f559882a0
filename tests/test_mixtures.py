"""The Gaussian-mixture laboratory (Pai et al.): the mixture denoiser against the empirical denoiser,
scipy's Gaussian densities and the orthogonality of a posterior mean; losses against closed forms
and exact limits; the theorems' forms and the crossover against independent root finding; training
and sampling against what a single Gaussian must give."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from paperlib import geometry, memorization
from paperlib import mixtures as mx

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the mixture denoiser
@pytest.mark.parametrize("sigma", [1e-3, 0.05, 0.7, 3.0, 60.0])
def test_zero_variance_is_the_empirical_denoiser(sigma):
    g = _gen(0)
    data = torch.randn(40, 12, generator=g, dtype=F64) * 2
    x = data[torch.randint(40, (25,), generator=g)] + sigma * torch.randn(25, 12, generator=g, dtype=F64)
    ours = mx.mixture_denoiser(x, data, 0.0, sigma)
    ref = geometry.empirical_denoiser(x, data, sigma)
    assert torch.allclose(ours, ref, atol=1e-10 * (1 + data.abs().max()), rtol=1e-10)


@pytest.mark.parametrize("variance,sigma", [(0.3, 0.1), (1.0, 1.0), (2.5, 4.0), (1e-4, 0.02)])
def test_posterior_mean_against_scipy_bayes(variance, sigma):
    """Independent computation: component posteriors from scipy's Gaussian log densities of
    x ~ N(m_k, (v + sigma^2) I), then the Gaussian conditional mean within each component."""
    g = _gen(1)
    means = torch.randn(5, 4, generator=g, dtype=F64) * 3
    x = torch.randn(30, 4, generator=g, dtype=F64) * 3
    ours = mx.mixture_denoiser(x, means, variance, sigma).numpy()
    tot = variance + sigma**2
    logp = np.stack([stats.multivariate_normal(m, tot * np.eye(4)).logpdf(x.numpy()) for m in means.numpy()], 1)
    r = np.exp(logp - logp.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    cond = means.numpy()[None] + variance / tot * (x.numpy()[:, None] - means.numpy()[None])   # (b, K, d)
    ref = (r[:, :, None] * cond).sum(1)
    assert np.allclose(ours, ref, atol=1e-10)


def test_posterior_mean_is_orthogonal_to_functions_of_x():
    """Monte Carlo: E[(x0 - D(x)) g(x)] = 0 for g = 1, x, x^2 (a property only the posterior mean has),
    and perturbing D raises the MSE."""
    g = _gen(2)
    means = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, -2.0]], dtype=F64)
    v, sigma, n = 0.4, 0.8, 400_000
    x0, _ = mx.sample_mixture(means, v, n, g)
    x = x0 + sigma * torch.randn(n, 2, generator=g, dtype=F64)
    D = mx.mixture_denoiser(x, means, v, sigma)
    res = x0 - D
    for feat in (torch.ones_like(x), x, x**2):
        m = (res * feat).mean(0)
        se = (res * feat).std(0) / math.sqrt(n)
        assert (m.abs() < 5 * se).all(), (m, se)
    mse = res.pow(2).sum(1).mean()
    for bump in (0.05 * x, 0.05 * torch.ones_like(x)):
        assert (x0 - D - bump).pow(2).sum(1).mean() > mse


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.floats(0.0, 3.0), st.floats(0.01, 20.0), st.integers(0, 10_000))
def test_translation_equivariance_and_hull(K, d, variance, sigma, seed):
    g = _gen(seed)
    means = torch.randn(K, d, generator=g, dtype=F64)
    x = torch.randn(7, d, generator=g, dtype=F64) * 2
    c = torch.randn(d, generator=g, dtype=F64) * 5
    D = mx.mixture_denoiser(x, means, variance, sigma)
    assert torch.allclose(mx.mixture_denoiser(x + c, means + c, variance, sigma), D + c, atol=1e-9)
    # D = (sigma^2 mbar + v x) / (v + sigma^2): in the hull of the means and x, coordinate-wise
    lo = torch.minimum(means.min(0).values, x)
    hi = torch.maximum(means.max(0).values, x)
    assert ((D >= lo - 1e-9) & (D <= hi + 1e-9)).all()


def test_per_row_sigma_equals_rowwise_calls():
    g = _gen(3)
    means = torch.randn(6, 3, generator=g, dtype=F64)
    x = torch.randn(4, 3, generator=g, dtype=F64)
    s = torch.tensor([0.01, 0.3, 2.0, 9.0], dtype=F64)
    batched = mx.mixture_denoiser(x, means, 0.2, s)
    single = torch.cat([mx.mixture_denoiser(x[i:i + 1], means, 0.2, float(s[i])) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-12)


def test_gradients_flow_to_means_and_variance():
    means = torch.randn(3, 2, dtype=F64, requires_grad=True)
    v = torch.tensor(0.5, dtype=F64, requires_grad=True)
    x = torch.randn(5, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda m, vv: mx.mixture_denoiser(x, m, vv, 0.7), (means, v))


def test_bad_inputs_name_the_argument():
    m = torch.zeros(3, 2, dtype=F64)
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="variance"):
        mx.mixture_denoiser(x, m, -0.1, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        mx.mixture_denoiser(x, m, 0.1, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        mx.mixture_denoiser(x, m, 0.1, float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        mx.mixture_denoiser(x, m, 0.1, torch.ones(3))
    with pytest.raises(ValueError, match="dimension"):
        mx.mixture_denoiser(torch.zeros(4, 3, dtype=F64), m, 0.1, 1.0)
    with pytest.raises(ValueError, match="means"):
        mx.mixture_denoiser(x, torch.zeros(0, 2, dtype=F64), 0.1, 1.0)
    with pytest.raises(ValueError, match="x contains NaN"):
        mx.mixture_denoiser(torch.full((4, 2), float("nan"), dtype=F64), m, 0.1, 1.0)
    with pytest.raises(ValueError, match="N"):
        mx.laboratory(5, 2, 1)
    with pytest.raises(ValueError, match="M"):
        mx.laboratory(5, 2, 10).memorizing(11)
    with pytest.raises(ValueError, match="kind"):
        mx.loss_weights([1.0], "ddpm")
    with pytest.raises(ValueError, match="weights"):
        mx.weighted_mean(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="weights"):
        mx.weighted_mean(torch.ones(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="t_min"):
        mx.vp_sigmas(26, 0.0, 0.999)
    with pytest.raises(ValueError, match="init"):
        mx.train_mixture(torch.randn(5, 2), 2, [1.0], [1.0], init="prior", steps=1)
    with pytest.raises(ValueError, match="M"):
        mx.train_mixture(torch.randn(5, 2), 6, [1.0], [1.0], steps=1)
    with pytest.raises(ValueError, match="Ms"):
        mx.lab_losses(mx.laboratory(4, 2, 10), [1.0], [11])


# ------------------------------------------------------------------ data
def test_laboratory_geometry_and_statistics():
    lab = mx.laboratory(20, 5, 4000, variance=0.5, seed=3)
    assert torch.allclose(lab.means.norm(dim=1), torch.full((5,), math.sqrt(20), dtype=F64))
    resid = lab.train - lab.means[lab.labels]
    assert abs(resid.var().item() - 0.5) < 0.02
    counts = torch.bincount(lab.labels, minlength=5).double() / 4000
    assert (counts - 0.2).abs().max() < 0.03
    # same seed, other N: same means (the data distribution of a sweep over N is fixed)
    assert torch.equal(mx.laboratory(20, 5, 10, variance=0.5, seed=3).means, lab.means)


def test_reference_models():
    lab = mx.laboratory(6, 3, 30, seed=1)
    x = lab.sample(8, _gen(0))
    assert torch.allclose(lab.generalizing()(x, 0.5), mx.mixture_denoiser(x, lab.means, 1.0, 0.5))
    assert torch.allclose(lab.memorizing()(x, 0.5), geometry.empirical_denoiser(x, lab.train, 0.5))
    sub = lab.memorizing(7, _gen(4))
    assert sub.M == 7 and sub.variance == 0.0
    assert all((lab.train == m).all(1).any() for m in sub.means)


# ------------------------------------------------------------------ grid and weightings
def test_vp_grid():
    s = mx.vp_sigmas(26, 0.001, 0.999)
    t = torch.linspace(0.001, 0.999, 26, dtype=F64)
    assert torch.allclose(s, t / torch.sqrt(1 - t**2))
    assert len(s) == 26 and (s.diff() > 0).all()


@pytest.mark.parametrize("t", [0.01, 0.3, 0.7, 0.95])
def test_weights_turn_the_clean_image_loss_into_the_eps_loss(t):
    """In the VP process x_t = alpha x0 + sigma_t eps, a clean-image prediction D of x_t / alpha
    implies eps_hat, whose squared error is lam * ||D - x0||^2."""
    g = _gen(5)
    alpha, st_ = math.sqrt(1 - t * t), t
    sigma = st_ / alpha
    x0, eps, D = (torch.randn(50, 7, generator=g, dtype=F64) for _ in range(3))
    xt = alpha * x0 + st_ * eps
    eps_hat = (xt - alpha * D) / st_
    base = (D - x0).pow(2).sum(1)
    assert torch.allclose((eps_hat - eps).pow(2).sum(1), mx.loss_weights([sigma], "eps") * base)
    assert torch.allclose(mx.loss_weights([sigma], "edm"), torch.tensor([(sigma**2 + 0.25) / (0.25 * sigma**2)], dtype=F64))
    assert torch.equal(mx.loss_weights([sigma, 2 * sigma], "x0"), torch.ones(2, dtype=F64))


# ------------------------------------------------------------------ losses
def test_generalizing_loss_matches_its_closed_form_given_the_training_set():
    """K = 1: D(x) = mu + v/(v+s^2)(x - mu), so E_n ||D - y||^2 = (s^4 ||y - mu||^2 + v^2 s^2 d) / (v + s^2)^2."""
    lab = mx.laboratory(8, 1, 60, variance=0.7, seed=2)
    sig = torch.tensor([0.05, 0.4, 1.0, 3.0], dtype=F64)
    L = mx.lab_losses(lab, sig, n_noise=1500, seed=0, show_progress=False)
    r2 = (lab.train - lab.means[0]).pow(2).sum(1).mean()
    v, d = 0.7, 8
    exact = (sig**4 * r2 + v**2 * sig**2 * d) / (v + sig**2) ** 2
    assert torch.allclose(L.gen, exact, rtol=0.01)
    # and Theorem 1's form is its expectation over training sets (E||y - mu||^2 = d v), at small sigma
    # where the memorizing model's loss vanishes
    assert torch.allclose(mx.theorem1_gap(sig, d, v), (sig**4 * d * v + v**2 * sig**2 * d) / (v + sig**2) ** 2)


def test_memorizing_losses_at_the_two_ends():
    """sigma -> 0: the M-point model returns the nearest memorized point, so its loss is the mean squared
    distance of the forgotten points to the memorized ones; sigma -> infinity: it returns their mean."""
    lab = mx.laboratory(10, 3, 40, seed=4)
    Ms = [10, 25, 40]
    L = mx.lab_losses(lab, torch.tensor([1e-4, 1e5], dtype=F64), Ms, n_noise=2, n_subsets=3, seed=7,
                      show_progress=False)
    g = torch.Generator().manual_seed(7)
    perms = [torch.randperm(40, generator=g) for _ in range(3)]
    assert L.mem[0] < 1e-6
    for a, M in enumerate(Ms):
        for b, p in enumerate(perms):
            S = lab.train[p[:M]]
            nn = torch.cdist(lab.train, S).min(1).values.pow(2).mean()
            far = (lab.train - S.mean(0)).pow(2).sum(1).mean()
            assert torch.isclose(L.pmem[a, b, 0], nn, rtol=1e-3, atol=1e-5)
            assert torch.isclose(L.pmem[a, b, 1], far, rtol=1e-3)
    assert torch.allclose(L.pmem[-1, :, 0], L.mem[0].expand(3), atol=1e-8)   # M = N is the memorizing model


def test_gap_standard_errors_are_honest():
    lab = mx.laboratory(12, 3, 50, seed=5)
    sig = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    a = mx.lab_losses(lab, sig, [25], n_noise=20, n_subsets=1, seed=1, show_progress=False)
    b = mx.lab_losses(lab, sig, [25], n_noise=20, n_subsets=1, seed=2, show_progress=False)
    z = (a.gap_gen - b.gap_gen) / torch.sqrt(a.gap_gen_se**2 + b.gap_gen_se**2)
    assert (z.abs() < 5).all()
    assert (a.gap_gen_se > 0).all() and (a.gap_gen_se < 0.2 * a.gap_gen.abs()).all()


# ------------------------------------------------------------------ theorems and crossover
def test_crossover_formula_solves_the_weighted_theorem_equation():
    sig = mx.vp_sigmas(26)
    for kind in ("x0", "edm"):
        w = mx.loss_weights(sig, kind)
        for C in (1.0, 1.6, 2.0):
            N, d, v = 120, 30, 1.3
            f = lambda M: float(mx.weighted_mean(mx.theorem2_gap(M, N, d, v, C).expand(len(sig)), w)
                                - mx.weighted_mean(mx.theorem1_gap(sig, d, v), w))
            root = optimize.brentq(f, 0.0, N)
            assert abs(mx.crossover_formula(sig, w, N, v, C) - root) < 1e-8


def test_crossover_formula_at_one_noise_level():
    assert mx.crossover_formula([1.0], [1.0], 100, variance=1.0, C=1.0) == pytest.approx(50.0)
    assert mx.crossover_formula([1.0], [1.0], 100, variance=1.0, C=2.0) == pytest.approx(75.0)


def test_level_crossing():
    assert mx.level_crossing([0, 1, 2, 3], [0.0, 0.2, 0.6, 1.0], 0.5) == pytest.approx(1.75)
    assert mx.level_crossing([0, 1, 2], [0.7, 0.8, 0.9], 0.5) == 0.0
    assert math.isnan(mx.level_crossing([0, 1, 2], [0.0, 0.1, 0.2], 0.5))
    # the first upward crossing, even if the curve dips again later
    assert mx.level_crossing([0, 1, 2, 3, 4], [0, 1, 0, 1, 1], 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="increasing"):
        mx.level_crossing([0, 2, 1], [0, 1, 2], 0.5)


def _synthetic_losses(N=100, S=3):
    Ms = [20, 40, 60, 80, 100]
    mem = torch.zeros(S, dtype=F64)
    pmem = torch.stack([torch.stack([torch.full((S,), 20.0 * (1 - M / N) + 0.1 * b, dtype=F64) for b in range(2)])
                        for M in Ms])
    return mx.LabLosses(sigmas=torch.ones(S, dtype=F64), Ms=Ms, N=N, d=10, variance=1.0,
                        gen=torch.full((S,), 8.0, dtype=F64), mem=mem, pmem=pmem,
                        gap_gen_se=torch.zeros(S), gap_pmem_se=torch.zeros(len(Ms), S))


def test_crossover_mc_and_effective_constant_on_a_known_case():
    L = _synthetic_losses()
    w = torch.ones(3, dtype=F64)
    # mean over subsets: 20 (1 - M/N) + 0.05 = 8  ->  M = 100 (1 - 7.95/20)
    assert mx.crossover_mc(L, w) == pytest.approx(100 * (1 - 7.95 / 20))
    per = mx.crossover_mc(L, w, per_subset=True)
    assert per == pytest.approx([100 * (1 - 8 / 20), 100 * (1 - 7.9 / 20)])
    C = mx.effective_constant(L, w)
    assert torch.allclose(C[:-1], (20 * (1 - torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=F64)) + 0.05)
                          / (10 * (1 - torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=F64))))
    assert math.isnan(C[-1])


def test_monte_carlo_crossover_on_a_small_laboratory():
    """End to end: the M-point memorizing model's weighted loss falls with M, reaches the
    memorizing model's at M = N, and crosses the generalizing model's in between."""
    lab = mx.laboratory(20, 3, 60, seed=6)
    sig = mx.vp_sigmas(12)
    Ms = [12, 24, 36, 48, 54, 60]
    L = mx.lab_losses(lab, sig, Ms, n_noise=4, n_subsets=2, seed=0, show_progress=False)
    w = mx.loss_weights(sig, "x0")
    Lp = mx.weighted_mean(L.pmem.mean(1), w)
    assert (Lp.diff() < 0).all()
    assert torch.isclose(Lp[-1], mx.weighted_mean(L.mem, w))
    Ms_star = mx.crossover_mc(L, w)
    assert Ms[0] < Ms_star < Ms[-1]
    assert mx.weighted_mean(L.gen, w) > mx.weighted_mean(L.mem, w)


# ------------------------------------------------------------------ training and sampling
def test_training_a_single_gaussian_recovers_mean_and_variance():
    """K = 1, M = 1: the best one-Gaussian denoiser of the training points has the sample mean and
    (about) the per-coordinate sample variance."""
    lab = mx.laboratory(5, 1, 1000, variance=0.6, seed=8)
    sig = torch.logspace(-1, 0.5, 8, dtype=F64)
    model, hist = mx.train_mixture(lab.train, 1, sig, torch.ones(8), steps=300, lr=0.05, n_noise=1,
                                   init="generalizing", seed=0, show_progress=False)
    assert (model.means[0] - lab.train.mean(0)).norm() < 0.15
    assert abs(model.variance - lab.train.var(0).mean().item()) < 0.08
    assert np.mean(hist["loss"][-10:]) < np.mean(hist["loss"][:3])


def test_training_the_full_memorizer_stays_memorizing():
    """M = N from the memorizing initialisation is the empirical denoiser, the global minimiser of the
    training loss: training must not move it (Adam's steps only jiggle the std around 0)."""
    lab = mx.laboratory(10, 2, 30, seed=9)
    sig = mx.vp_sigmas(10)
    model, _ = mx.train_mixture(lab.train, 30, sig, mx.loss_weights(sig, "x0"), steps=150, lr=0.01,
                                n_noise=2, seed=1, show_progress=False)
    assert model.variance < 1e-2
    dist, idx = torch.cdist(model.means, lab.train).min(1)
    assert sorted(idx.tolist()) == list(range(30))           # still one mean on every training point
    assert dist.max() < 0.25 * torch.pdist(lab.train).min()
    samples = mx.sample(model, sig, 200, 10, generator=_gen(0))
    assert memorization.is_memorized(samples, lab.train).all()
    assert model.means.dtype == F64


def test_sampling_a_gaussian_and_a_memorizer():
    mu = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    sig = torch.logspace(-3, 2, 400, dtype=F64)
    x = mx.sample(mx.MixtureDenoiser(mu, 0.5), sig, 20_000, 3, generator=_gen(0))
    assert (x.mean(0) - mu[0]).abs().max() < 0.03
    assert torch.allclose(x.var(0), torch.full((3,), 0.5, dtype=F64), rtol=0.05)
    train = torch.randn(15, 6, generator=_gen(1), dtype=F64) * 3
    samples = mx.sample(mx.MixtureDenoiser(train, 0.0), mx.vp_sigmas(26), 300, 6, generator=_gen(2))
    assert memorization.is_memorized(samples, train).all()


def test_one_step_memorization_of_the_empirical_denoiser():
    g = _gen(3)
    train = torch.randn(30, 8, generator=g, dtype=F64) * 2
    test = torch.randn(40, 8, generator=g, dtype=F64) * 2
    rates = mx.one_step_memorization(lambda x, s: mx.mixture_denoiser(x, train, 0.0, s), test, train,
                                     [1e-3, 1e3], n_noise=2, generator=g)
    assert rates[0] == 1.0 and rates[1] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    lab = mx.laboratory(8, 2, 20, seed=3)
    sig = mx.vp_sigmas(6)
    a = mx.lab_losses(lab, sig, [10, 20], n_noise=3, n_subsets=2, seed=0, show_progress=False)
    b = mx.lab_losses(lab, sig, [10, 20], n_noise=3, n_subsets=2, seed=0, device="cuda", show_progress=False)
    assert torch.allclose(a.gen, b.gen) and torch.allclose(a.pmem, b.pmem)
    model, _ = mx.train_mixture(lab.train.cuda(), 10, sig, torch.ones(6), steps=20, seed=0, show_progress=False)
    assert model.means.is_cuda and model.means.dtype == F64 and math.isfinite(model.variance)
