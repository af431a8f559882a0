"""Linear diffusion models (related paper: Merger & Goldt): every closed form of paperlib.linear against an
independent computation: float64 dense algebra, torch.distributions, scipy ODE integration, autograd
gradient descent, the library's own samplers, and Monte Carlo."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from paperlib import edm, geometry, regimes, sampling
from paperlib import linear as L

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _random_cov(d, gen, spread=3.0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    lam = torch.exp(spread * torch.rand(d, generator=gen, dtype=F64) - spread / 2)
    return (q * lam) @ q.T


def _gaussian(n, mean, cov, gen):
    return mean + torch.randn(n, len(mean), generator=gen, dtype=F64) @ torch.linalg.cholesky(cov).T


# ------------------------------------------------------------------------------------------ helpers
def test_area_downsample_is_block_mean():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=gen)
    out = L.area_downsample(x, 2)
    manual = x.reshape(3, 2, 2, 4, 2, 4).mean(dim=(3, 5))
    assert out.shape == (3, 2, 2, 2)
    assert torch.allclose(out, manual, atol=1e-6)
    assert torch.equal(L.area_downsample(x, 8), x)
    with pytest.raises(ValueError, match="size"):
        L.area_downsample(x, 3)
    with pytest.raises(ValueError, match="images"):
        L.area_downsample(x[0], 2)


@pytest.mark.parametrize("n", [5, 40])
def test_covariance_spectrum_matches_numpy(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, 12, generator=gen, dtype=F64) * torch.linspace(0.1, 2, 12, dtype=F64)
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T, bias=True)))[::-1].clip(0)
    lam = L.covariance_spectrum(x)
    assert lam.shape == (12,)
    assert np.allclose(lam.numpy(), ref, atol=1e-12)
    assert bool((lam[1:] <= lam[:-1] + 1e-15).all())


def test_loglog_fit_recovers_power_law():
    x = np.arange(1, 200)
    slope, pref = L.loglog_fit(x, 3.0 * x ** -1.7)
    assert slope == pytest.approx(-1.7, abs=1e-12) and pref == pytest.approx(3.0, rel=1e-10)
    with pytest.raises(ValueError, match="> 0"):
        L.loglog_fit([1, 2], [1, 0])
    with pytest.raises(ValueError, match="distinct"):
        L.loglog_fit([2, 2], [1, 3])


# ------------------------------------------------------------------------------------------ KL
@pytest.mark.parametrize("d", [1, 3, 7])
def test_gaussian_kl_matches_torch_distributions(d):
    gen = torch.Generator().manual_seed(d)
    m1, m0 = torch.randn(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64)
    c1, c0 = _random_cov(d, gen), _random_cov(d, gen)
    ref = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m1, c1),
                                            torch.distributions.MultivariateNormal(m0, c0))
    assert L.gaussian_kl(m1, c1, m0, c0) == pytest.approx(float(ref), rel=1e-10)
    assert L.gaussian_kl(m0, c0, m0, c0) == pytest.approx(0.0, abs=1e-10)


def test_gaussian_kl_is_the_mean_log_likelihood_ratio():
    """Definition check by Monte Carlo: KL = E_{x ~ p1}[ln p1(x) - ln p0(x)] (scipy densities)."""
    gen = torch.Generator().manual_seed(5)
    d = 4
    m1, m0 = torch.randn(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64) * 0.3
    c1, c0 = _random_cov(d, gen, 1.0), _random_cov(d, gen, 1.0)
    x = _gaussian(200_000, m1, c1, gen).numpy()
    lr = stats.multivariate_normal(m1.numpy(), c1.numpy()).logpdf(x) - stats.multivariate_normal(m0.numpy(), c0.numpy()).logpdf(x)
    assert L.gaussian_kl(m1, c1, m0, c0) == pytest.approx(lr.mean(), abs=4 * lr.std() / math.sqrt(len(lr)))


def test_gaussian_kl_singular_and_bad_input():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(4, 6, generator=gen, dtype=F64)           # N = 4 <= d = 6: singular covariance
    mu, C = geometry.fit_gaussian(y)
    eye = torch.eye(6, dtype=F64)
    assert L.gaussian_kl(mu, C, torch.zeros(6, dtype=F64), eye) == math.inf
    with pytest.raises(ValueError, match="cov0"):
        L.gaussian_kl(torch.zeros(6, dtype=F64), eye, mu, C)
    with pytest.raises(ValueError, match="cov1"):
        L.gaussian_kl(torch.zeros(6, dtype=F64), -eye, mu, eye)
    with pytest.raises(ValueError, match="mean0"):
        L.gaussian_kl(mu, eye, torch.zeros(5, dtype=F64), eye)
    with pytest.raises(ValueError, match="NaN"):
        L.gaussian_kl(mu * float("nan"), eye, mu, eye)


@pytest.mark.parametrize("d,n,direction", [(5, 7, "forward"), (5, 12, "forward"), (5, 60, "forward"),
                                           (3, 14, "reverse"), (3, 60, "reverse")])
def test_expected_kl_matches_monte_carlo(d, n, direction):
    """The digamma forms against simulation, for a random non-identity target (they do not depend on it)."""
    gen = torch.Generator().manual_seed(100 * d + n)
    mean, cov = torch.randn(d, generator=gen, dtype=F64), _random_cov(d, gen)
    y = mean + torch.randn(20000, n, d, generator=gen, dtype=F64) @ torch.linalg.cholesky(cov).T
    m = y.mean(1)
    C = torch.einsum("rni,rnj->rij", y - m[:, None], y - m[:, None]) / n
    fitted = torch.distributions.MultivariateNormal(m, C)
    target = torch.distributions.MultivariateNormal(mean.expand(len(m), d), cov.expand(len(m), d, d))
    kls = (torch.distributions.kl_divergence(fitted, target) if direction == "forward"
           else torch.distributions.kl_divergence(target, fitted)).numpy()
    se = kls.std() / math.sqrt(len(kls))
    assert L.expected_kl(d, n, direction) == pytest.approx(kls.mean(), abs=4 * se)
    assert se < 0.03 * kls.mean()  # the check has teeth


def test_expected_kl_edges_asymptote_and_limit():
    assert L.expected_kl(10, 10) == math.inf and math.isfinite(L.expected_kl(10, 11))
    assert L.expected_kl(10, 12, "reverse") == math.inf and math.isfinite(L.expected_kl(10, 13, "reverse"))
    for direction in ("forward", "reverse"):   # d(d+3)/(4n) + O(d^3/n^2)
        for d in (5, 40):
            ratios = [L.expected_kl(d, n, direction) / L.kl_asymptote(d, n) for n in (100 * d, 1000 * d)]
            assert abs(ratios[1] - 1) < abs(ratios[0] - 1) < 0.03
            assert abs(ratios[1] - 1) < 3e-3
    for r in (0.05, 0.3, 0.7):                 # Marchenko-Pastur limit of KL / d
        for direction in ("forward", "reverse"):
            exact = L.expected_kl(4000, int(4000 / r), direction) / 4000
            assert exact == pytest.approx(L.kl_limit(r, direction), rel=3e-3)
    assert L.kl_limit(1e-5) == pytest.approx(1e-5 / 4, rel=1e-4)
    assert L.kl_limit(0.999999) < 0.5 and L.kl_limit(1.0) == math.inf
    assert L.kl_limit(0.999, "reverse") > 100
    with pytest.raises(ValueError, match="direction"):
        L.expected_kl(3, 10, "both")
    with pytest.raises(ValueError, match="n must"):
        L.expected_kl(3, 1)


# ------------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize("n", [6, 40])
@pytest.mark.parametrize("c", [0.0, 0.3])
def test_model_is_eq7_of_the_fitted_gaussian(n, c):
    """tau = inf: the denoiser is Eq. 7 for N(mu_hat, C_hat + c I) (independent Cholesky solve)."""
    gen = torch.Generator().manual_seed(n)
    d = 10
    y = torch.randn(n, d, generator=gen, dtype=F64) * torch.linspace(0.2, 2, d, dtype=F64) + 1
    model = L.LinearDiffusionModel.fit_data(y, c=c)
    mu, C = geometry.fit_gaussian(y)
    x = torch.randn(7, d, generator=gen, dtype=F64) * 3
    for s in (0.01, 0.5, 20.0):
        ref = geometry.gaussian_linear_denoiser(x, mu, C + c * torch.eye(d, dtype=F64), s)
        assert torch.allclose(model(x, s), ref, atol=1e-10)
        assert torch.allclose(model(x, torch.full((7,), s, dtype=F64)), ref, atol=1e-10)
    if c == 0:
        assert torch.allclose(model(x, 0.7), geometry.GaussianLinearDenoiser.fit(y)(x, 0.7), atol=1e-10)
    with pytest.raises(ValueError, match="one noise level"):
        model(x, torch.tensor([0.1, 0.2] * 3 + [0.1], dtype=F64))
    with pytest.raises(ValueError, match="dimension"):
        model(x[:, :4], 1.0)


@pytest.mark.parametrize("n,c,tau", [(8, 0.0, math.inf), (8, 0.05, math.inf), (8, 0.0, 3.0), (30, 0.1, 0.5)])
def test_losses_match_monte_carlo(n, c, tau):
    """Train and test losses against the library's Monte Carlo denoising MSE (sampling.denoising_mse)."""
    gen = torch.Generator().manual_seed(n)
    d = 12
    scale = torch.linspace(0.2, 1.5, d, dtype=F64)
    train = torch.randn(n, d, generator=gen, dtype=F64) * scale
    test = (torch.rand(500, d, generator=gen, dtype=F64) - 0.3) * scale * 3   # not Gaussian, other mean
    model = L.LinearDiffusionModel.fit_data(train, c=c, tau=tau)
    sigmas = [0.05, 0.4, 3.0]
    mt, ct = geometry.fit_gaussian(test)
    exact_test = model.denoising_loss(mt, ct, sigmas)
    exact_train = model.train_loss(sigmas)
    mu, C = geometry.fit_gaussian(train)
    assert torch.allclose(model.denoising_loss(mu, C, sigmas), exact_train, rtol=1e-10)
    for x0, exact in ((train, exact_train), (test, exact_test)):
        mc, se = sampling.denoising_mse(model, x0, sigmas, n_noise=400 if x0 is train else 20,
                                        generator=torch.Generator().manual_seed(1), return_se=True)
        assert torch.all((mc - exact).abs() < 4 * se + 1e-12), (mc, exact, se)
    if c == 0 and math.isinf(tau):     # the closed form sum lam sigma^2 / (lam + sigma^2)
        lam = L.covariance_spectrum(train)
        ref = torch.stack([(lam * s**2 / (lam + s**2)).sum() for s in sigmas])
        assert torch.allclose(exact_train, ref, rtol=1e-10)


def test_missing_directions_make_the_gap():
    """N < d: at small sigma the test loss exceeds the train loss by the target variance outside the span."""
    gen = torch.Generator().manual_seed(3)
    d, n = 20, 6
    cov = torch.diag(torch.linspace(0.5, 2, d, dtype=F64))
    y = _gaussian(n, torch.zeros(d, dtype=F64), cov, gen)
    model = L.LinearDiffusionModel.fit_data(y)
    s = 1e-4
    gap = float(model.denoising_loss(torch.zeros(d, dtype=F64), cov, [s]) - model.train_loss([s]))
    U = torch.linalg.svd(y - y.mean(0), full_matrices=True)[2].T[:, n - 1:]   # complement of the span
    assert gap == pytest.approx(float(torch.trace(U.T @ cov @ U)) + float((U.T @ y.mean(0)).pow(2).sum()), rel=1e-3)


# ------------------------------------------------------------------------------------------ gradient descent
@pytest.mark.parametrize("c", [0.0, 0.2])
def test_gd_coefficient_matches_autograd_gradient_descent(c):
    """Plain GD on the full-matrix epsilon-loss (noise averaged, written independently) from A = 0."""
    gen = torch.Generator().manual_seed(7)
    d, n, s, lr, steps = 6, 4, 0.3, 0.05, 40                  # N < d: two missing directions
    y = torch.randn(n, d, generator=gen, dtype=F64)
    yc = y - y.mean(0)
    A = torch.zeros(d, d, dtype=F64, requires_grad=True)

    def loss(A):  # (1/N) sum_i E_n ||A (y_i + s n) - n||^2 + c ||A||^2
        return ((yc @ A.T) ** 2).sum(1).mean() + s * s * (A**2).sum() - 2 * s * torch.trace(A) + d + c * (A**2).sum()

    # the noise-averaged loss is the expectation of the noisy one (Monte Carlo)
    B = torch.randn(d, d, generator=gen, dtype=F64) * 0.3
    noise = torch.randn(20000, n, d, generator=gen, dtype=F64)
    noisy = (((yc + s * noise) @ B.T - noise) ** 2).sum(-1).mean() + c * (B**2).sum()
    assert float(loss(B)) == pytest.approx(float(noisy), rel=5e-3)
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss(A), A)
        A = (A - lr * g).detach().requires_grad_(True)
    lam, U = torch.linalg.eigh(yc.T @ yc / n)
    a = L.gd_coefficient(lam.clamp_min(0), s, c=c, lr=lr, steps=steps)
    assert torch.allclose(A.detach(), (U * a) @ U.T, atol=1e-10)
    # gradient flow is the small-step limit, and tau = inf the minimiser
    flow = L.gd_coefficient(lam.clamp_min(0), s, c=c, tau=lr * steps)
    fine = L.gd_coefficient(lam.clamp_min(0), s, c=c, lr=lr / 100, steps=steps * 100)
    assert torch.allclose(fine, flow, rtol=2e-3)
    assert torch.allclose(L.gd_coefficient(lam.clamp_min(0), s, c=c), s / (lam.clamp_min(0) + c + s * s))
    with pytest.raises(ValueError, match="lr"):
        L.gd_coefficient(lam.clamp_min(0), s, lr=10.0, steps=3)


def _integrated_variance(l, tau, sigma_max):
    """Solve d ln v / d ln sigma = 2 (1 - w(sigma)) with scipy, independently of the closed form."""
    def one_minus_w(s):
        base = s * s / (l + s * s)
        return base if math.isinf(tau) else base * -math.expm1(-2 * tau * (l + s * s))
    res = integrate.quad(lambda t: one_minus_w(math.exp(t)), -40, math.log(sigma_max), limit=400,
                         epsabs=1e-12, epsrel=1e-11)[0]
    return sigma_max**2 * math.exp(-2 * res)


@pytest.mark.parametrize("lam,c,tau", [(0.0, 0.0, 2.0), (0.0, 0.0, 200.0), (0.3, 0.0, 1.0), (2.0, 0.1, 0.05),
                                       (0.5, 0.0, math.inf), (0.0, 0.2, math.inf), (1e-9, 0.0, 5.0)])
@pytest.mark.parametrize("sigma_max", [3.0, 80.0])
def test_ode_variance_matches_quadrature(lam, c, tau, sigma_max):
    got = float(L.ode_variance(torch.tensor([lam]), c=c, tau=tau, sigma_max=sigma_max))
    assert got == pytest.approx(_integrated_variance(lam + c, tau, sigma_max), rel=1e-7, abs=1e-300)
    if lam + c == 0 and math.isinf(tau):
        assert got == 0


def test_early_stopping_acts_like_a_ridge():
    tau = torch.tensor([0.5, 5.0, 50.0])
    v0 = torch.stack([L.ode_variance(torch.zeros(1), tau=float(t))[0] for t in tau])
    assert torch.allclose(v0, torch.tensor([L.early_stopping_ridge(float(t)) for t in tau], dtype=F64), rtol=1e-10)
    lam = torch.logspace(-4, 1, 30, dtype=F64)
    v = L.ode_variance(lam, tau=10.0)
    assert bool((v >= lam * (1 - 1e-12)).all()) and bool((v[:15] > 1.1 * lam[:15]).all())  # inflates every direction ...
    assert bool(((v - lam) <= L.early_stopping_ridge(10.0) * (1 + 1e-12)).all())  # ... by at most c_eff
    assert torch.allclose(L.ode_variance(lam, tau=1e9), lam, rtol=1e-6)


# ------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("n,c,tau", [(5, 0.0, math.inf), (5, 0.05, math.inf), (30, 0.0, math.inf), (5, 0.0, 20.0)])
def test_probability_flow_samples_follow_the_closed_form(n, c, tau):
    """The library's EDM sampler (Heun) on the model lands on the exact ODE solution; the samples'
    moments match sampling_distribution (finite sigma_max); for c = 0, N < d they lie in the affine hull."""
    gen = torch.Generator().manual_seed(n)
    d = 8
    y = torch.randn(n, d, generator=gen, dtype=F64) * torch.linspace(0.3, 1.2, d, dtype=F64) + 0.5
    model = L.LinearDiffusionModel.fit_data(y, c=c, tau=tau)
    sig_max, m = 80.0, 8000
    latents = torch.randn(m, d, generator=gen, dtype=F64)
    out = sampling.sample(model, m, (d,), steps=128, sigma_min=1e-4, sigma_max=sig_max, latents=latents,
                          dtype=F64, batch_size=m)
    exact = model.ode_solution(latents * sig_max, sig_max)
    assert (out - exact).abs().max() < 2e-3 * exact.abs().max()
    mean, cov = model.sampling_distribution(sigma_max=sig_max)
    emp_mean, emp_cov = out.mean(0), torch.cov(out.T, correction=0)
    assert (emp_mean - mean).abs().max() < 5 * cov.diagonal().max().sqrt() / math.sqrt(m)
    assert (emp_cov - cov).abs().max() < 4 * math.sqrt(2 / m) * cov.diagonal().max()
    lim_mean, lim_cov = model.sampling_distribution()
    if math.isinf(tau):
        assert torch.allclose(lim_cov, geometry.fit_gaussian(y)[1] + c * torch.eye(d, dtype=F64), atol=1e-12)
        assert torch.allclose(lim_mean, y.mean(0))
    if c == 0 and n <= d and math.isinf(tau):
        assert float(L.outside_span_fraction(out, y).max()) < 1e-12
    elif n <= d:
        assert float(L.outside_span_fraction(out, y).mean()) > 1e-3


def test_ancestral_sampler_law_is_exact_and_tends_to_the_ridge_gaussian():
    gen = torch.Generator().manual_seed(11)
    d, n, c = 6, 4, 0.02
    y = torch.randn(n, d, generator=gen, dtype=F64) * torch.linspace(0.4, 1.5, d, dtype=F64) + 0.3
    model = L.LinearDiffusionModel.fit_data(y, c=c)
    coarse = edm.karras_sigmas(12, sigma_min=0.01, sigma_max=20.0)
    m = 20000
    x = L.ancestral_sample(model, torch.randn(m, d, generator=gen, dtype=F64) * 20.0, coarse, generator=gen)
    mean, cov = model.ancestral_distribution(coarse)
    assert (x.mean(0) - mean).abs().max() < 5 * cov.diagonal().max().sqrt() / math.sqrt(m)
    assert (torch.cov(x.T, correction=0) - cov).abs().max() < 4 * math.sqrt(2 / m) * cov.diagonal().max()
    # DDPM's 1000 steps (the VE form of its linear-beta schedule): close to N(mu_hat, C_hat + c I)
    ddpm = torch.cat([regimes.ddpm_sigmas().flip(0), torch.zeros(1, dtype=F64)])
    start = float(ddpm[0]) ** 2 + 1                               # x_T ~ N(0, I) in DDPM's scaling
    mean_d, cov_d = model.ancestral_distribution(ddpm, start_var=start)
    lim_mean, lim_cov = model.sampling_distribution()
    assert (cov_d - lim_cov).abs().max() < 0.02 * lim_cov.diagonal().max()
    assert (mean_d - lim_mean).abs().max() < 0.02
    with pytest.raises(ValueError, match="sigmas"):
        L.ancestral_sample(model, x[:2], [1.0, 2.0, 0.0])


def test_outside_span_fraction():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(5, 30, generator=gen, dtype=F64)
    w = torch.rand(10, 5, generator=gen, dtype=F64)
    inside = (w / w.sum(1, keepdim=True)) @ y                     # affine combinations
    assert float(L.outside_span_fraction(inside, y).max()) < 1e-20 + 1e-12
    frac = L.outside_span_fraction(torch.randn(2000, 30, generator=gen, dtype=F64), y)
    assert float(frac.mean()) == pytest.approx(26 / 30, abs=0.02)  # 4 of 30 directions are spanned


def test_bad_arguments_are_named():
    y = torch.randn(10, 3, dtype=F64)
    with pytest.raises(ValueError, match="c must"):
        L.LinearDiffusionModel.fit_data(y, c=-1.0)
    with pytest.raises(ValueError, match="tau must"):
        L.LinearDiffusionModel.fit_data(y, tau=0.0)
    with pytest.raises(TypeError, match="fit"):
        L.LinearDiffusionModel(y)
    model = L.LinearDiffusionModel.fit_data(y)
    with pytest.raises(ValueError, match="sigma"):
        model(y, 0.0)
    with pytest.raises(ValueError, match="sigmas"):
        model.train_loss([0.1, -1.0])
    with pytest.raises(ValueError, match="mean"):
        model.denoising_loss(torch.zeros(2, dtype=F64), torch.eye(3, dtype=F64), [1.0])
    with pytest.raises(ValueError, match="lam"):
        L.ode_variance(torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="sigma_max"):
        L.ode_variance(torch.tensor([1.0]), sigma_max=0.0)
    with pytest.raises(ValueError, match="ratio"):
        L.kl_limit(-0.1)


# ------------------------------------------------------------------------------------------ non-Gaussian data
def _scale_mixture(n, d, gen, reps=1):
    """z = s g with s^2 = 1/2 or 3/2 (probability 1/2 each): E s^2 = 1 (covariance I), E s^4 = 5/4, so
    Mardia's kurtosis is beta_2 = 1.25 d (d + 2)."""
    g = torch.randn(reps, n, d, generator=gen, dtype=F64)
    s2 = 0.5 + (torch.rand(reps, n, 1, generator=gen, dtype=F64) < 0.5).to(F64)
    return g * s2.sqrt()


def test_mardia_kurtosis():
    gen = torch.Generator().manual_seed(8)
    d = 5
    gauss = torch.randn(400_000, d, generator=gen, dtype=F64)
    assert L.mardia_kurtosis(gauss) == pytest.approx(d * (d + 2), rel=0.01)
    mix = _scale_mixture(400_000, d, gen)[0]
    zero, eye = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    assert L.mardia_kurtosis(mix, zero, eye) == pytest.approx(1.25 * d * (d + 2), rel=0.03)
    with pytest.raises(ValueError, match="both"):
        L.mardia_kurtosis(mix, zero)


def test_kl_asymptote_with_kurtosis_matches_monte_carlo():
    """Heavy-tailed data: E KL of the fitted Gaussian to N(0, I) is (beta_2 + d)/(4N), not d(d+3)/(4N)."""
    gen = torch.Generator().manual_seed(9)
    d, n = 4, 1000
    y = _scale_mixture(n, d, gen, reps=4000)
    m = y.mean(1)
    C = torch.einsum("rni,rnj->rij", y - m[:, None], y - m[:, None]) / n
    zero, eye = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    kls = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m, C),
                                            torch.distributions.MultivariateNormal(zero.expand(len(m), d),
                                                                                   eye.expand(len(m), d, d))).numpy()
    pred = L.kl_asymptote(d, n, kurtosis=1.25 * d * (d + 2))
    assert kls.mean() == pytest.approx(pred, rel=0.03)
    assert abs(kls.mean() - L.kl_asymptote(d, n)) > 5 * kls.std() / math.sqrt(len(kls))  # Gaussian form is off
    assert L.kl_asymptote(7, 100) == pytest.approx(7 * 10 / 400)


# ------------------------------------------------------------------------------------------ experiment helpers
def test_learning_curve_and_kl_vs_training_compose_the_closed_forms():
    lam = torch.linspace(0.2, 2.0, 6, dtype=F64)
    zero, cov = torch.zeros(6, dtype=F64), torch.diag(lam)
    out = L.learning_curve(L.gaussian_draws(lam), [4, 12], [0.1, 1.0], 2, zero, cov,
                           generator=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    draw = L.gaussian_draws(lam)
    for i, n in enumerate([4, 12]):
        for r in range(2):
            model = L.LinearDiffusionModel.fit_data(draw(n, gen))
            assert torch.allclose(out["train"][i, r], model.train_loss([0.1, 1.0]))
            assert torch.allclose(out["test"][i, r], model.denoising_loss(zero, cov, [0.1, 1.0]))
            want = math.inf if n <= 6 else L.gaussian_kl(model.mean, model.fit.cov, zero, cov)
            assert float(out["kl"][i, r]) == pytest.approx(want)
    only_kl = L.learning_curve(L.gaussian_draws(lam), [4, 12], None, 2, zero, cov, generator=torch.Generator().manual_seed(4))
    assert set(only_kl) == {"kl"} and torch.equal(only_kl["kl"], out["kl"])
    with pytest.raises(ValueError, match="nothing"):
        L.learning_curve(L.gaussian_draws(lam), [4], None, 1, zero, cov, generator=gen, kl=False)
    pool = torch.arange(30, dtype=F64).reshape(10, 3)
    rows = L.subset_draws(pool)(4, torch.Generator().manual_seed(0))
    assert len({tuple(r.tolist()) for r in rows}) == 4 and all(r.tolist() in pool.tolist() for r in rows)
    with pytest.raises(ValueError, match="pool"):
        L.subset_draws(pool)(11, torch.Generator())
    model = L.LinearDiffusionModel.fit_data(draw(4, gen))
    kc, kt = L.kl_vs_training(model, zero, cov, cs=[0.0, 0.1], taus=[1.0])
    assert kc[0] == math.inf and math.isfinite(kc[1]) and math.isfinite(kt[0])
    assert float(kc[1]) == pytest.approx(L.gaussian_kl(model.mean, model.fit.cov + 0.1 * torch.eye(6, dtype=F64), zero, cov))


def test_control_variate_mean_is_unbiased_and_sharper():
    gen = torch.Generator().manual_seed(12)
    reps, m = 4000, 50
    z = torch.randn(reps, m, generator=gen, dtype=F64)
    control = z + 1.0                                          # known mean 1
    values = 3.0 + 2.0 * z + 0.3 * torch.randn(reps, m, generator=gen, dtype=F64)   # mean 3
    est, se = L.control_variate_mean(values, control, 1.0)
    assert float(est.mean()) == pytest.approx(3.0, abs=4 * float(est.std()) / math.sqrt(reps))
    assert float(est.std()) < 0.25 * float(values.mean(1).std())      # far less noisy than the plain mean
    assert float(se.mean()) == pytest.approx(float(est.std()), rel=0.1)  # and its standard error is honest
    flat = torch.ones(reps, m, dtype=F64)                             # a constant control changes nothing
    assert torch.allclose(L.control_variate_mean(values, flat, 1.0)[0], values.mean(1))
    with pytest.raises(ValueError, match="same shape"):
        L.control_variate_mean(values, control[:, :10], 1.0)
