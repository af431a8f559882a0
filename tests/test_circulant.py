"""Circulant sensitivity (Thm 4.10 / App. D): exact Jacobians against dense float64 linear algebra and
autograd, the summation-by-parts bound, the fitted stationary spectrum and the receptive field."""
import math

import pytest
import torch

from paperlib import circulant as cc

F64 = torch.float64
SIGMAS = [1e-3, 1e-2, 0.1, 0.5, 1.0, 3.0, 30.0]


def _sym(lam: torch.Tensor) -> torch.Tensor:
    """Symmetrize a spectrum, lambda_k = lambda_{-k}, so that it belongs to a real covariance."""
    flipped = torch.roll(torch.flip(lam, dims=tuple(range(lam.dim()))), shifts=(1,) * lam.dim(),
                         dims=tuple(range(lam.dim())))
    return (lam + flipped) / 2


def _random_spectrum(shape, gen, kind):
    if kind == "exp":
        lam = torch.empty(shape, dtype=F64).exponential_(generator=gen)
    elif kind == "sparse":  # a few strong modes on a tiny floor: a very rough gain
        lam = 1e-3 + 10 * (torch.rand(shape, generator=gen, dtype=F64) < 0.2).to(F64)
    elif kind == "heavy":
        lam = torch.rand(shape, generator=gen, dtype=F64) ** 6 * 100
    else:
        raise AssertionError(kind)
    return _sym(lam)


def _shift_index(n, p, m):
    return (p + m) % n


# ------------------------------------------------------------------ spectra and exact Jacobians
@pytest.mark.parametrize("shape", [(16,), (17,), (5, 7), (6, 8)])
def test_eigenvalues_match_dense_eigvalsh(shape):
    gen = torch.Generator().manual_seed(0)
    lam = _random_spectrum(shape, gen, "exp")
    c = cc.autocovariance(lam)
    dense = cc.circulant_matrix(c)
    assert torch.allclose(dense, dense.T, atol=1e-14)
    eig = torch.linalg.eigvalsh(dense)
    ours = cc.circulant_eigenvalues(c)
    assert torch.allclose(torch.sort(ours.reshape(-1)).values, eig, atol=1e-12, rtol=1e-12)
    assert torch.allclose(ours, lam, atol=1e-12)


def test_asymmetric_first_row_rejected():
    with pytest.raises(ValueError, match="symmetric"):
        cc.circulant_eigenvalues(torch.tensor([1.0, 0.5, 0.0, 0.1]))


@pytest.mark.parametrize("n", [8, 31, 64])
@pytest.mark.parametrize("sigma", [1e-2, 0.3, 5.0])
def test_fft_jacobian_equals_dense_1d(n, sigma):
    gen = torch.Generator().manual_seed(n)
    lam = _random_spectrum((n,), gen, "exp")
    h = cc.jacobian_row(lam, sigma)
    J = cc.jacobian_matrix(lam, sigma)
    # independent construction straight from the definition, with an explicit inverse
    C = cc.circulant_matrix(cc.autocovariance(lam))
    J_def = C @ torch.linalg.inv(C + sigma ** 2 * torch.eye(n, dtype=F64))
    assert torch.allclose(J, J_def, atol=1e-11)
    for p in range(n):
        for m in range(n):
            assert abs(J[p, _shift_index(n, p, m)] - h[m]) < 1e-12
    assert torch.allclose(h, torch.roll(torch.flip(h, (0,)), 1), atol=1e-14)  # h[m] == h[-m]


@pytest.mark.parametrize("shape", [(4, 6), (7, 5)])
@pytest.mark.parametrize("sigma", [3e-2, 1.0])
def test_fft_jacobian_equals_dense_2d(shape, sigma):
    gen = torch.Generator().manual_seed(1)
    lam = _random_spectrum(shape, gen, "heavy")
    h = cc.jacobian_row(lam, sigma)
    J = cc.jacobian_matrix(lam, sigma)
    H, W = shape
    for p0 in range(H):
        for p1 in range(W):
            for m0 in range(H):
                for m1 in range(W):
                    q = ((p0 + m0) % H) * W + (p1 + m1) % W
                    assert abs(J[p0 * W + p1, q] - h[m0, m1]) < 1e-12


@pytest.mark.parametrize("shape", [(12,), (4, 5)])
def test_denoiser_jacobian_equals_autograd(shape):
    gen = torch.Generator().manual_seed(2)
    lam = _random_spectrum(shape, gen, "exp")
    sigma = 0.7
    d = math.prod(shape)
    mu = torch.randn(shape, generator=gen, dtype=F64)
    x0 = torch.randn(shape, generator=gen, dtype=F64)
    C = cc.circulant_matrix(cc.autocovariance(lam))
    A = C @ torch.linalg.inv(C + sigma ** 2 * torch.eye(d, dtype=F64))

    def dense_denoiser(x):  # mu + C (C + s^2 I)^-1 (x - mu), on flattened images
        return (mu.reshape(-1) + A @ (x.reshape(-1) - mu.reshape(-1))).reshape(shape)

    def fft_denoiser(x):
        return cc.gaussian_denoiser(x, mu, lam, sigma)

    J_dense = torch.autograd.functional.jacobian(dense_denoiser, x0).reshape(d, d)
    J_fft = torch.autograd.functional.jacobian(fft_denoiser, x0).reshape(d, d)
    J_ours = cc.jacobian_matrix(lam, sigma)
    assert torch.allclose(J_dense, J_ours, atol=1e-12)
    assert torch.allclose(J_fft, J_ours, atol=1e-12)
    assert torch.allclose(fft_denoiser(x0), dense_denoiser(x0), atol=1e-12)


def test_batched_sigmas_match_single():
    lam = cc.power_law_spectrum((8, 8), 2.0)
    sig = torch.tensor(SIGMAS, dtype=F64)
    hb, bb, kb = cc.jacobian_row(lam, sig), cc.sensitivity_bound(lam, sig), cc.sensitivity_constant(lam, sig)
    bl = cc.sensitivity_bound(lam, sig, "linear")
    for i, s in enumerate(SIGMAS):
        assert torch.allclose(hb[i], cc.jacobian_row(lam, s), atol=1e-15)
        assert torch.equal(bb[i], cc.sensitivity_bound(lam, s))
        assert torch.equal(bl[i], cc.sensitivity_bound(lam, s, "linear"))
        assert torch.isclose(kb[i], cc.sensitivity_constant(lam, s))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_rejected(bad):
    with pytest.raises(ValueError, match="sigma"):
        cc.denoiser_gain(torch.ones(8), bad)


def test_bad_spectrum_rejected():
    with pytest.raises(ValueError, match="nonnegative"):
        cc.denoiser_gain(torch.tensor([1.0, -0.5, -0.5]), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        cc.jacobian_row(torch.tensor([1.0, float("nan"), 1.0]), 1.0)


# ------------------------------------------------------------------ the sensitivity bound
def _check_bound_1d(lam, sigma):
    n = lam.shape[0]
    h = cc.jacobian_row(lam, sigma)
    sine = cc.sensitivity_bound(lam, sigma, "sine")
    lin = cc.sensitivity_bound(lam, sigma, "linear")
    V = cc.total_variation(cc.denoiser_gain(lam, sigma))
    d = cc.wrap_distance(n)
    off = d > 0
    assert torch.isinf(sine[0]) and torch.isinf(lin[0])
    # |J_pq| <= V / (N |2 sin(pi d/N)|) <= V / (4 d), for every pair p != q
    assert (h[off].abs() <= sine[off] * (1 + 1e-9) + 1e-15).all()
    assert (sine[off] <= lin[off] * (1 + 1e-12)).all()
    assert torch.allclose(lin[off], V / (4 * d[off]))


@pytest.mark.parametrize("n", [16, 31, 64, 257])
@pytest.mark.parametrize("kind", ["exp", "sparse", "heavy"])
def test_bound_holds_random_spectra_1d(n, kind):
    gen = torch.Generator().manual_seed(n + len(kind))
    for _ in range(5):
        lam = _random_spectrum((n,), gen, kind)
        for s in SIGMAS:
            _check_bound_1d(lam, s)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("n", [32, 255, 1024])
def test_bound_holds_power_laws_1d(alpha, n):
    lam = cc.power_law_spectrum(n, alpha)
    for s in list(torch.logspace(-3, 2, 26, dtype=F64)):
        _check_bound_1d(lam, float(s))


def _check_bound_2d(lam, sigma):
    H, W = lam.shape
    h = cc.jacobian_row(lam, sigma)
    sine = cc.sensitivity_bound(lam, sigma, "sine")
    lin = cc.sensitivity_bound(lam, sigma, "linear")
    g = cc.denoiser_gain(lam, sigma)
    d0 = cc.wrap_distance(H)[:, None].expand(H, W)
    d1 = cc.wrap_distance(W)[None, :].expand(H, W)
    dinf = cc.wrap_distance((H, W), "chebyshev")
    # per-axis statements, written out from the definitions
    tv0 = (torch.roll(g, -1, 0) - g).abs().sum()
    tv1 = (torch.roll(g, -1, 1) - g).abs().sum()
    s0 = (2 * torch.sin(math.pi * torch.arange(H, dtype=F64) / H)).abs()[:, None].expand(H, W)
    s1 = (2 * torch.sin(math.pi * torch.arange(W, dtype=F64) / W)).abs()[None, :].expand(H, W)
    m0, m1 = d0 > 0, d1 > 0
    assert (h[m0].abs() <= tv0 / (H * W * s0[m0]) * (1 + 1e-9) + 1e-15).all()
    assert (h[m1].abs() <= tv1 / (H * W * s1[m1]) * (1 + 1e-9) + 1e-15).all()
    assert (h[m0].abs() <= (tv0 / W) / (4 * d0[m0]) * (1 + 1e-9) + 1e-15).all()
    assert (h[m1].abs() <= (tv1 / H) / (4 * d1[m1]) * (1 + 1e-9) + 1e-15).all()
    off = dinf > 0
    assert torch.isinf(sine[0, 0]) and torch.isinf(lin[0, 0])
    assert (h[off].abs() <= sine[off] * (1 + 1e-9) + 1e-15).all()
    assert (sine[off] <= lin[off] * (1 + 1e-12)).all()
    K = torch.maximum(tv0 / W, tv1 / H) / 4
    assert torch.allclose(lin[off], K / dinf[off])
    # the Euclidean corollary: d_inf >= r / sqrt(2)
    r = cc.wrap_distance((H, W), "euclidean")
    assert (h[off].abs() <= math.sqrt(2) * K / r[off] * (1 + 1e-9) + 1e-15).all()


@pytest.mark.parametrize("shape", [(8, 8), (9, 16), (32, 32)])
@pytest.mark.parametrize("kind", ["exp", "sparse", "heavy"])
def test_bound_holds_random_spectra_2d(shape, kind):
    gen = torch.Generator().manual_seed(shape[0] * shape[1] + len(kind))
    for _ in range(3):
        lam = _random_spectrum(shape, gen, kind)
        for s in SIGMAS:
            _check_bound_2d(lam, s)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_bound_holds_power_laws_2d(alpha):
    lam = cc.power_law_spectrum((32, 32), alpha)
    for s in list(torch.logspace(-3, 2, 16, dtype=F64)):
        _check_bound_2d(lam, float(s))


def test_bound_is_tight_for_a_step_spectrum():
    """Ideal low-pass: g = a on |f| <= k0, 0 elsewhere, so h is a Dirichlet kernel and
    |h_m| / (sine bound) = |sin(pi (2 k0 + 1) m / N)|, which reaches 1."""
    n, k0 = 64, 16
    f = cc.frequency_magnitude(n)
    lam = torch.where(f <= k0, torch.tensor(4.0, dtype=F64), torch.tensor(0.0, dtype=F64))
    for sigma in [0.1, 1.0]:
        h = cc.jacobian_row(lam, sigma)
        sine = cc.sensitivity_bound(lam, sigma, "sine")
        lin = cc.sensitivity_bound(lam, sigma, "linear")
        ratio_sine = (h[1:].abs() / sine[1:]).max()
        ratio_lin = (h[1:].abs() / lin[1:]).max()
        assert ratio_sine > 0.99            # the summation-by-parts step loses nothing here
        assert ratio_lin > 0.6              # and sin x >= 2x/pi costs at most pi/2
        m = torch.arange(1, n, dtype=F64)
        a = 4.0 / (4.0 + sigma ** 2)
        assert torch.allclose(h[1:].abs() / sine[1:], torch.sin(math.pi * (2 * k0 + 1) * m / n).abs() * (a > 0), atol=1e-12)


# ------------------------------------------------------------------ spectral concentration
def test_flat_spectrum_gives_a_diagonal_jacobian():
    lam = cc.power_law_spectrum(64, 0.0)
    for s in SIGMAS:
        h = cc.jacobian_row(lam, s)
        assert h[1:].abs().max() < 1e-15
        assert cc.sensitivity_constant(lam, s) < 1e-15


def _off_diagonal_fraction(h):
    a = h.abs().reshape(-1)
    return float(a[1:].sum() / a.sum())


@pytest.mark.parametrize("shape", [(256,), (32, 32)])
def test_more_concentrated_spectrum_is_more_local(shape):
    """A profile decreasing in |f| makes g unimodal around each cycle, so V = 2 (g_max - g_min) per
    cycle and K <= (g_max - g_min) / 2: eigenvalues closer together give a smaller constant. For power
    laws (unit pixel variance), smaller alpha = eigenvalues more concentrated: a smaller share of the
    Jacobian's absolute mass off the diagonal at every sigma, and (1-D) a smaller K."""
    alphas = [0.0, 0.5, 1.0, 2.0, 3.0]
    for s in [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]:
        lams = [cc.power_law_spectrum(shape, a) for a in alphas]
        fracs = [_off_diagonal_fraction(cc.jacobian_row(lam, s)) for lam in lams]
        assert fracs[0] < 1e-14
        assert all(f1 < f2 for f1, f2 in zip(fracs, fracs[1:])), (s, fracs)
        Ks = [float(cc.sensitivity_constant(lam, s)) for lam in lams]
        if len(shape) == 1:
            assert all(k1 < k2 for k1, k2 in zip(Ks, Ks[1:])), (s, Ks)
        for lam, K in zip(lams, Ks):
            g = cc.denoiser_gain(lam, s)
            assert K <= (g.max() - g.min()) / 2 * (1 + 1e-12) + 1e-15


# ------------------------------------------------------------------ the fitted stationary spectrum
def _smooth_images(n, c, h, w, gen):
    x = torch.randn(n, c, h, w, generator=gen, dtype=F64)
    k = torch.tensor([0.25, 0.5, 0.25], dtype=F64)
    for dim in (2, 3):  # cyclic smoothing: correlated, stationary-ish pixels, plus a per-image offset
        x = k[0] * torch.roll(x, 1, dim) + k[1] * x + k[2] * torch.roll(x, -1, dim)
    return (x + torch.randn(n, c, 1, 1, generator=gen, dtype=F64) + 0.3).to(torch.float32)


@pytest.mark.parametrize("center", ["channel", "pixel"])
def test_fitted_spectrum_matches_direct_autocovariance(center):
    gen = torch.Generator().manual_seed(3)
    X = _smooth_images(25, 3, 8, 6, gen)
    lam = cc.fit_stationary_spectrum(X, center=center)
    assert lam.dtype == F64 and not lam.is_complex() and lam.shape == (8, 6)
    assert (lam >= 0).all()
    x = X.to(F64)
    x = x - (x.mean(dim=(0, 2, 3), keepdim=True) if center == "channel" else x.mean(dim=0, keepdim=True))
    direct = torch.zeros(8, 6, dtype=F64)
    for m0 in range(8):
        for m1 in range(6):  # c[m] = mean over images, channels, pixels p of x(p) x(p + m), cyclic
            direct[m0, m1] = (x * torch.roll(x, shifts=(-m0, -m1), dims=(2, 3))).mean()
    assert torch.allclose(cc.autocovariance(lam), direct, atol=1e-12)
    # and the spectrum is the eigenvalue list of that (symmetric) circulant covariance
    assert torch.allclose(cc.circulant_eigenvalues(direct), lam, atol=1e-12)


def test_fitted_spectrum_accepts_single_channel_and_rejects_bad_input():
    gen = torch.Generator().manual_seed(4)
    X = _smooth_images(10, 1, 8, 8, gen)
    assert torch.allclose(cc.fit_stationary_spectrum(X[:, 0]), cc.fit_stationary_spectrum(X))
    with pytest.raises(ValueError, match="images"):
        cc.fit_stationary_spectrum(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="images"):
        cc.fit_stationary_spectrum(torch.full((2, 1, 4, 4), float("nan")))


# ------------------------------------------------------------------ receptive field
def test_receptive_field_radius_definition():
    h = torch.zeros(16, dtype=F64)
    h[0], h[1], h[15], h[3] = 0.5, 0.2, 0.2, 0.1    # |h| mass 1.0; distances 0, 1, 1, 3
    assert cc.receptive_field_radius(h, 0.5) == 0
    assert cc.receptive_field_radius(h, 0.51) == 1
    assert cc.receptive_field_radius(h, 0.9) == 1
    assert cc.receptive_field_radius(h, 0.95) == 3
    assert cc.receptive_field_radius(-h, 0.95) == 3
    assert cc.receptive_field_radius(h, 0.9, weight="energy") == 1   # 0.25+0.08 of 0.34
    img = torch.zeros(8, 8, dtype=F64)
    img[0, 0], img[1, 1], img[0, 2] = 1.0, 1.0, 1.0                   # distances 0, sqrt 2, 2
    assert math.isclose(float(cc.receptive_field_radius(img, 0.6)), math.sqrt(2))
    assert float(cc.receptive_field_radius(img, 0.6, norm="chebyshev")) == 1.0
    assert float(cc.receptive_field_radius(img, 1.0)) == 2.0
    batch = torch.stack([h, torch.roll(h, 0)])
    assert torch.equal(cc.receptive_field_radius(batch, 0.95, ndim=1), torch.tensor([3.0, 3.0], dtype=F64))
    with pytest.raises(ValueError, match="mass"):
        cc.receptive_field_radius(h, 0.0)


@pytest.mark.parametrize("shape", [(256,), (32, 32), (16, 16)])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_receptive_field_shrinks_as_sigma_decreases(shape, alpha):
    """Nondecreasing in sigma: on a fine grid in 1-D; in 2-D on a half-decade grid (on a finer grid
    the radius, which takes the discrete values sqrt(a^2 + b^2), can dip by one lattice shell)."""
    lam = cc.power_law_spectrum(shape, alpha)
    sig = torch.logspace(-3, 2, 30 if len(shape) == 1 else 11, dtype=F64)
    h = cc.jacobian_row(lam, sig)
    for weight in ["abs", "energy"]:
        r = cc.receptive_field_radius(h, ndim=len(shape), weight=weight)
        assert (r[1:] >= r[:-1]).all(), (weight, r)
        assert r[0] == 0 and r[-1] >= (3 if weight == "abs" else 1)
    # the constant K -> 0 at both calm ends (g -> 1 and g -> 0 everywhere), largest in between
    Ks = cc.sensitivity_constant(lam, torch.logspace(-4, 3, 57, dtype=F64))
    assert Ks[0] < 0.05 * Ks.max() and Ks[-1] < 0.05 * Ks.max()


def test_receptive_field_shrinks_for_a_fitted_spectrum():
    """Images drawn from a stationary field with a natural-image-like 1/f^2 spectrum, refitted."""
    gen = torch.Generator().manual_seed(5)
    true = cc.power_law_spectrum((16, 16), 2.0, variance=0.25)
    white = torch.randn(400, 3, 16, 16, generator=gen, dtype=F64)
    X = torch.fft.ifft2(true.sqrt() * torch.fft.fft2(white)).real.to(torch.float32)
    lam = cc.fit_stationary_spectrum(X)
    assert lam.min() > 0
    assert ((lam / true - 1).abs().mean()) < 0.1        # the periodogram average is consistent
    sig = torch.logspace(-3, 2, 11, dtype=F64)
    r = cc.receptive_field_radius(cc.jacobian_row(lam, sig))
    assert (r[1:] >= r[:-1]).all() and r[0] == 0 and r[-1] > 3, r
    for s in torch.logspace(-3, 2, 26, dtype=F64):
        _check_bound_2d(lam, float(s))


def test_singular_spectrum_does_not_localise():
    """With some eigenvalues exactly 0, J -> the projection onto the others as sigma -> 0, not I:
    the receptive field need not vanish (why the fitted spectrum must be checked to be > 0)."""
    lam = cc.power_law_spectrum(64, 1.0)
    lam[32] = 0.0
    h = cc.jacobian_row(lam, 1e-6)
    assert abs(h[0] - 63 / 64) < 1e-6 and abs(h[1] - 1 / 64) < 1e-6 and abs(h[2] + 1 / 64) < 1e-6


def test_denoiser_jacobian_rows_match_the_exact_circulant_jacobian():
    """Autograd rows of the (linear) circulant Gaussian denoiser equal |ifft(g)| at every pixel."""
    H, W = 8, 12
    lam = cc.power_law_spectrum((H, W), 2.0)
    mean = torch.zeros(H, W, dtype=torch.float64)

    def D(x, sigma):  # (b, 1, H, W) -> same; sigma (b,)
        return cc.gaussian_denoiser(x[:, 0], mean, lam, float(sigma[0]))[:, None]

    x = torch.randn(3, 1, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = cc.denoiser_jacobian_rows(D, x, 0.7, [(0, 0), (3, 5), (7, 11)])
    exact = cc.jacobian_row(lam, 0.7).abs()
    assert rows.shape == (3, 3, H, W)
    assert torch.allclose(rows, exact.expand_as(rows), atol=1e-12)
    # three channels, each denoised independently: the same kernel (channel-averaged energy)
    D3 = lambda x, s: torch.stack([D(x[:, c:c + 1], s)[:, 0] for c in range(3)], 1)  # noqa: E731
    rows3 = cc.denoiser_jacobian_rows(D3, x.expand(3, 3, H, W).contiguous(), 0.7, [(2, 2)])
    assert torch.allclose(rows3[:, 0], exact.expand(3, H, W), atol=1e-12)
    with pytest.raises(ValueError, match="pixels"):
        cc.denoiser_jacobian_rows(D, x, 0.7, [(H, 0)])
    with pytest.raises(ValueError, match="x must be"):
        cc.denoiser_jacobian_rows(D, x[0], 0.7, [(0, 0)])
