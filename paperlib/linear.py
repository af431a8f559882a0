"""Linear diffusion models: the memorization-to-generalization transition at N ~ d.

Related paper: Merger & Goldt, arXiv 2505.24769 (its full text is not available offline; every formula
below is the companion's own derivation, checked against Monte Carlo in ``tests/test_linear.py``).

**The model.** At each noise level ``sigma`` a linear epsilon-predictor ``eps(x) = A (x - mu_hat)`` is fitted
to the ``N`` training points ``y_i`` (mean ``mu_hat``, covariance ``C_hat`` with ``1/N``) by minimising
``E_{i,n} ||A (y_i - mu_hat + sigma n) - n||^2 + c ||A||_F^2``: gradient descent from ``A = 0`` for a
gradient-flow time ``tau`` (``tau = lr * steps``), with a ridge penalty ``c >= 0``. The denoiser is
``D(x; sigma) = x - sigma eps(x)``. In the eigenbasis ``C_hat = sum_k lam_k u_k u_k^T`` everything is
diagonal; with ``l = lam_k + c``::

    A_k(tau) = sigma / (l + sigma^2) * (1 - exp(-2 tau (l + sigma^2)))         (exact gradient flow)
    gain  w_k = 1 - sigma A_k = 1 - sigma^2 / (l + sigma^2) * (1 - exp(-2 tau (l + sigma^2)))

At ``tau = inf`` the gain is ``l / (l + sigma^2)``: the Gaussian denoiser of Eq. 7 for ``N(mu_hat, C_hat + c I)``
(``c = 0``: :class:`paperlib.geometry.GaussianLinearDenoiser` fitted to the data). Directions missing from the
data (``lam = 0``, all but ``N - 1`` of them when ``N <= d``) get ``l = c``.

**Sampling.** The probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` moves each coordinate
``x_k - mu_k`` by ``d ln|x_k - mu_k| / d sigma = (1 - w_k(sigma)) / sigma``; from ``x(sigma_max) = sigma_max z``
it ends at ``mu + F_k (sigma_max z - mu)`` with ``F_k^2 = exp(-2 int_0^sigma_max (1 - w_k)/sigma dsigma)``, so
the samples are Gaussian with per-direction variance ``v_k = sigma_max^2 F_k^2``::

    tau = inf:  v = l S / (l + S)                                        (S = sigma_max^2)  -> l
    tau < inf:  v = l S / (l + S) * exp(E1(2 tau l) - E1(2 tau (l + S)))  -> l exp(E1(2 tau l))

(``E1`` the exponential integral). For ``S -> inf`` the ridge model samples exactly ``N(mu_hat, C_hat + c I)``;
with ``c = 0`` and ``N <= d`` that distribution is supported on the data's affine hull. Early stopping
inflates the variance of every direction, most of all the missing ones: ``v(l = 0) = e^-gamma / (2 tau)``,
a ridge ``c_eff = e^-gamma / (2 tau)`` (:func:`early_stopping_ridge`). The DDPM (ancestral) sampler, written in
the variance-exploding form, is linear-Gaussian step by step and its output law is computed exactly by
:meth:`LinearDiffusionModel.ancestral_distribution`; for the ridge model it tends to the same
``N(mu_hat, C_hat + c I)`` as the steps get finer.

**KL.** For a Gaussian target ``N(mu, Sigma)`` and ``N > d``,
``E KL(N(mu_hat, C_hat) || N(mu, Sigma)) = 1/2 [d ln(N/2) - sum_{i<d} psi((N-1-i)/2)] = d(d+3)/(4N) + O(d^3/N^2)``,
independent of ``Sigma`` (:func:`expected_kl`; the reverse direction diverges at ``N = d + 2``).

**Losses.** The expected denoising loss ``E_y E_n ||D(y + sigma n; sigma) - y||^2`` is quadratic in ``y``, so it
depends on the data only through its mean and covariance (:meth:`LinearDiffusionModel.denoising_loss`, exact
for any distribution: a test set's own moments give its exact average loss). On the training set it is
``sum_k lam_k sigma^2 / (lam_k + sigma^2)`` for the fitted Gaussian denoiser.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special

from . import geometry

__all__ = [
    "area_downsample",
    "covariance_spectrum",
    "loglog_fit",
    "gaussian_kl",
    "expected_kl",
    "kl_asymptote",
    "mardia_kurtosis",
    "kl_limit",
    "gd_coefficient",
    "early_stopping_ridge",
    "ode_variance",
    "LinearDiffusionModel",
    "ancestral_sample",
    "gaussian_draws",
    "subset_draws",
    "learning_curve",
    "kl_vs_training",
    "control_variate_mean",
    "outside_span_fraction",
]

_F64 = torch.float64
EULER_GAMMA = float(np.euler_gamma)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _nonneg(v, name: str, *, allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    v = float(v)
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be {'>= 0 (inf allowed)' if allow_inf else 'finite and >= 0'}, got {v!r}")
    return v


def _positive(v, name: str, *, allow_inf: bool = False) -> float:
    v = _nonneg(v, name, allow_inf=allow_inf)
    if v == 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return v


def _int(v, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _sigma_value(sigma, name: str = "sigma") -> float:
    """A float from a number or a tensor whose entries are all equal (a sampler's per-sample sigma)."""
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() == 0:
            raise ValueError(f"{name} must not be empty")
        s = sigma.reshape(-1).to(_F64)
        if bool((s != s[0]).any()):
            raise ValueError(f"{name}: a linear diffusion model takes one noise level per call; got several")
        sigma = float(s[0])
    return _positive(sigma, name)


def _sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    s = torch.as_tensor(sigmas, dtype=_F64).reshape(-1).cpu()
    if s.numel() == 0 or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"{name} must be a non-empty list of finite noise levels > 0")
    return s


def _moments(mean, cov, d: int, device, names=("mean", "cov")) -> tuple[torch.Tensor, torch.Tensor]:
    mean = _tensor(mean, names[0])
    cov = _tensor(cov, names[1])
    if mean.shape != (d,):
        raise ValueError(f"{names[0]} must have shape ({d},), got {tuple(mean.shape)}")
    if cov.shape != (d, d):
        raise ValueError(f"{names[1]} must have shape ({d}, {d}), got {tuple(cov.shape)}")
    return mean.to(device, _F64), cov.to(device, _F64)


# ----------------------------------------------------------------------------------------------
# data helpers
# ----------------------------------------------------------------------------------------------
def area_downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(n, C, H, W)`` reduced to ``(n, C, size, size)`` by area averaging (the mean of each
    ``H/size x W/size`` block). ``size`` must divide ``H`` and ``W``; ``size == H`` returns the images."""
    images = _tensor(images, "images")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (n, C, H, W), got {tuple(images.shape)}")
    size = _int(size, "size", 1)
    h, w = images.shape[-2:]
    if h % size or w % size:
        raise ValueError(f"size must divide the image size {h}x{w}, got {size}")
    if (h // size, w // size) == (1, 1):
        return images
    return F.avg_pool2d(images, kernel_size=(h // size, w // size))


def covariance_spectrum(data: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance (``1/N``) of ``data`` ``(N, d)`` (images are flattened), in
    decreasing order, float64, length ``d`` (``d - N + 1`` or more of them are 0 when ``N <= d``)."""
    data = _tensor(data, "data")
    x = data.reshape(data.shape[0], -1)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"data must have at least 2 points, got {n}")
    if n >= d:
        _, cov = geometry.fit_gaussian(x)
        lam = torch.linalg.eigvalsh(cov).clamp_min(0).flip(0)
    else:
        s = torch.linalg.svdvals(x.to(_F64) - x.mean(0, dtype=_F64))
        lam = torch.cat([s * s / n, torch.zeros(d - s.numel(), dtype=_F64, device=x.device)])
    return lam


def loglog_fit(x, y) -> tuple[float, float]:
    """Least-squares line through ``(ln x, ln y)``: returns ``(slope, prefactor)`` with ``y ~ prefactor * x^slope``.
    Every ``x`` and ``y`` must be finite and > 0 (at least two distinct ``x``)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must have the same length >= 2, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        raise ValueError("x and y must be finite and > 0 for a log-log fit")
    if np.ptp(np.log(x)) == 0:
        raise ValueError("x must hold at least two distinct values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(np.exp(intercept))


# ----------------------------------------------------------------------------------------------
# Gaussian KL divergences
# ----------------------------------------------------------------------------------------------
def gaussian_kl(mean1: torch.Tensor, cov1: torch.Tensor, mean0: torch.Tensor, cov0: torch.Tensor) -> float:
    """``KL(N(mean1, cov1) || N(mean0, cov0))`` in nats, float64.

    ``cov0`` must be positive definite. ``cov1`` must be positive semi-definite; when it is singular
    (an eigenvalue of ``cov0^-1/2 cov1 cov0^-1/2`` below ``d * 1e-13`` times the largest, e.g. the
    covariance of ``N <= d`` points) the divergence is ``inf``.
    """
    mean1, mean0 = _tensor(mean1, "mean1"), _tensor(mean0, "mean0")
    if mean1.dim() != 1:
        raise ValueError(f"mean1 must be 1-D, got shape {tuple(mean1.shape)}")
    d = mean1.shape[0]
    dev = mean1.device
    m1, c1 = _moments(mean1, cov1, d, dev, ("mean1", "cov1"))
    m0, c0 = _moments(mean0, cov0, d, dev, ("mean0", "cov0"))
    L, info = torch.linalg.cholesky_ex(0.5 * (c0 + c0.T))
    if int(info) != 0:
        raise ValueError("cov0 must be positive definite")
    Li = torch.linalg.solve_triangular(L, torch.eye(d, dtype=_F64, device=dev), upper=False)
    M = Li @ (0.5 * (c1 + c1.T)) @ Li.T
    mu = torch.linalg.eigvalsh(0.5 * (M + M.T))
    scale = float(mu.abs().max())
    tol = d * 1e-13 * scale
    if float(mu.min()) < -max(tol, 1e-10 * scale):
        raise ValueError("cov1 must be positive semi-definite")
    if scale == 0 or float(mu.min()) <= tol:
        return math.inf
    delta = Li @ (m0 - m1)
    return float(0.5 * ((mu - 1 - mu.log()).sum() + delta @ delta))


def _psi_sum(d: int, n: int) -> float:
    return float(special.psi((n - 1 - np.arange(d)) / 2.0).sum())


def expected_kl(d: int, n: int, direction: str = "forward") -> float:
    """Exact expected KL between the Gaussian fitted to ``n`` i.i.d. points of ``N(mu, Sigma)`` in ``R^d``
    (``mu_hat``, ``C_hat`` with ``1/n``) and the target; it does not depend on ``mu`` or ``Sigma``.

    ``direction="forward"``: ``E KL(N(mu_hat, C_hat) || N(mu, Sigma)) = 1/2 [d ln(n/2) - sum_{i=0}^{d-1}
    psi((n-1-i)/2)]`` for ``n > d`` (``n C_hat`` is Wishart with ``n - 1`` degrees of freedom, so
    ``E ln det C_hat = sum psi + d ln(2/n)``), ``inf`` for ``n <= d`` (singular ``C_hat``).
    ``"reverse"``: ``E KL(N(mu, Sigma) || N(mu_hat, C_hat)) = 1/2 [d (n+1)/(n-d-2) - d - d ln(n/2) + sum psi]``
    for ``n > d + 2`` (from ``E C_hat^-1 = n/(n-d-2) Sigma^-1``), ``inf`` otherwise.
    """
    d = _int(d, "d", 1)
    n = _int(n, "n", 2)
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if direction == "forward":
        if n <= d:
            return math.inf
        return 0.5 * (d * math.log(n / 2) - _psi_sum(d, n))
    if n <= d + 2:
        return math.inf
    return 0.5 * (d * (n + 1) / (n - d - 2) - d - d * math.log(n / 2) + _psi_sum(d, n))


def kl_asymptote(d: int, n, kurtosis: float | None = None) -> float:
    """Large-``n`` form of the expected KL (both directions) between the Gaussian fitted to ``n`` points and the
    Gaussian with the population's mean and covariance: ``(beta_2 + d) / (4 n)``, where ``beta_2 = E[(z^T z)^2]``
    is Mardia's kurtosis of the whitened data ``z`` (:func:`mardia_kurtosis`). Gaussian data (default):
    ``beta_2 = d (d + 2)``, so ``d (d + 3) / (4 n)``.

    Derivation: in whitened coordinates ``KL ~ ||C_hat - I||_F^2 / 4 + |mu_hat - mu|^2 / 2`` to second order, with
    ``E ||C_hat - I||_F^2 = (E||z z^T - I||_F^2) / n = (beta_2 - d) / n`` and ``E |mu_hat - mu|^2 = d / n``."""
    d = _int(d, "d", 1)
    n = _positive(n, "n")
    beta2 = d * (d + 2) if kurtosis is None else _positive(kurtosis, "kurtosis")
    return (beta2 + d) / (4 * n)


def mardia_kurtosis(data: torch.Tensor, mean: torch.Tensor | None = None, cov: torch.Tensor | None = None) -> float:
    """Mardia's multivariate kurtosis ``beta_2 = mean_i [(y_i - mu)^T Sigma^-1 (y_i - mu)]^2`` of ``data``
    (``(N, d)`` or images), with the data's own moments (``1/N``) unless ``mean`` and ``cov`` are given.
    ``d (d + 2)`` for a Gaussian."""
    data = _tensor(data, "data")
    x = data.reshape(data.shape[0], -1)
    if (mean is None) != (cov is None):
        raise ValueError("give both mean and cov, or neither")
    if mean is None:
        mean, cov = geometry.fit_gaussian(x)
    m, C = _moments(mean, cov, x.shape[1], x.device)
    Lc, info = torch.linalg.cholesky_ex(0.5 * (C + C.T))
    if int(info) != 0:
        raise ValueError("cov must be positive definite")
    out, rows = 0.0, max(1, (32 * 2**20) // (8 * x.shape[1]))
    for r0 in range(0, x.shape[0], rows):
        z = torch.linalg.solve_triangular(Lc, (x[r0:r0 + rows].to(_F64) - m).T, upper=False)
        out += float((z * z).sum(0).pow(2).sum())
    return out / x.shape[0]


def kl_limit(ratio, direction: str = "forward"):
    """Limit of ``expected_kl(d, n) / d`` as ``d, n -> inf`` with ``d / n -> ratio`` (Marchenko-Pastur):
    forward ``1/2 [1 + (1/r - 1) ln(1 - r)]`` (tends to 1/2 as ``r -> 1``), reverse
    ``1/2 [r/(1-r) - 1 - (1/r - 1) ln(1 - r)]`` (diverges as ``r -> 1``); ``inf`` for ``r >= 1``.
    Both are ``r/4 + O(r^2)``. ``ratio``: a number or an array (returns the same)."""
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    r = np.asarray(ratio, dtype=np.float64)
    if not np.isfinite(r).all() or (r <= 0).any():
        raise ValueError("ratio must be finite and > 0")
    rs = np.where(r < 1, r, 0.5)                        # placeholder where the answer is inf
    fwd = 0.5 * (1 + (1 / rs - 1) * np.log1p(-rs))
    fwd = np.where(rs < 1e-3, rs / 4 + rs**2 / 12 + rs**3 / 24, fwd)   # series: no cancellation
    if direction == "forward":
        out = fwd
    else:
        out = np.where(rs < 1e-3, rs / 4 + 5 * rs**2 / 12 + 11 * rs**3 / 24, rs / (2 * (1 - rs)) - fwd)
    out = np.where(r < 1, out, np.inf)
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------------------------
# gradient descent and the sampled variance
# ----------------------------------------------------------------------------------------------
def gd_coefficient(lam, sigma, *, c: float = 0.0, tau: float = math.inf, lr: float | None = None,
                   steps: int | None = None) -> torch.Tensor:
    """Eigen-coefficient ``A_k`` of the epsilon-predictor trained by gradient descent from ``A = 0`` on
    ``||A (y - mu_hat + sigma n) - n||^2 + c ||A||^2`` (noise averaged), per eigenvalue ``lam`` of ``C_hat``.

    Gradient flow for time ``tau`` (default ``inf``: the minimiser ``sigma / (lam + c + sigma^2)``), or, with
    ``lr`` and ``steps``, ``steps`` plain GD steps ``A <- A - lr * grad``:
    ``A = sigma/(l + sigma^2) * (1 - (1 - 2 lr (l + sigma^2))^steps)``, ``l = lam + c``. The denoiser gain is
    ``1 - sigma * A``. Raises ``ValueError`` if ``lr`` is too large for GD to converge.
    """
    lam = torch.as_tensor(lam, dtype=_F64)
    if not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
        raise ValueError("lam must be finite and >= 0 (eigenvalues of a covariance)")
    s = _positive(sigma, "sigma")
    c = _nonneg(c, "c")
    rate = 2 * (lam + c + s * s)
    a_star = s / (lam + c + s * s)
    if lr is not None or steps is not None:
        if lr is None or steps is None:
            raise ValueError("give both lr and steps (discrete GD), or tau (gradient flow)")
        if not math.isinf(tau):
            raise ValueError("give either tau or (lr, steps), not both")
        lr = _positive(lr, "lr")
        steps = _int(steps, "steps", 0)
        if float((lr * rate).max()) >= 2:
            raise ValueError(f"lr must be < 1/(lam_max + c + sigma^2) = {2 / float(rate.max()):.3g} for GD to converge")
        return a_star * (1 - (1 - lr * rate) ** steps)
    tau = _nonneg(tau, "tau", allow_inf=True)
    return a_star if math.isinf(tau) else a_star * -torch.expm1(-tau * rate)


def early_stopping_ridge(tau) -> float:
    """The ridge that early stopping at gradient-flow time ``tau`` acts like in the directions missing
    from the data: their sampled variance is ``e^-gamma / (2 tau)`` (``gamma`` Euler's constant)."""
    return math.exp(-EULER_GAMMA) / (2 * _positive(tau, "tau"))


def _log_l_exp_e1(l: torch.Tensor, beta: float) -> torch.Tensor:
    """``ln(l * exp(E1(beta l)))`` for ``l >= 0`` (``-gamma - ln beta`` at ``l = 0``)."""
    x = (beta * l).numpy()
    with np.errstate(divide="ignore"):
        e1 = special.exp1(np.where(x > 0, x, 1.0))
        small = -EULER_GAMMA - math.log(beta) + x - x * x / 4  # series of ln l + E1(beta l), x < 1e-6
        out = np.where(x < 1e-6, small, np.log(np.where(x > 0, l.numpy(), 1.0)) + e1)
    return torch.from_numpy(out)


def ode_variance(lam, *, c: float = 0.0, tau: float = math.inf, sigma_max: float = math.inf) -> torch.Tensor:
    """Variance, per eigendirection of ``C_hat`` with eigenvalue ``lam``, of the probability-flow ODE's samples
    when started from ``N(0, sigma_max^2 I)`` (module docstring; ``l = lam + c``, ``S = sigma_max^2``):
    ``l S / (l + S)`` at ``tau = inf``; ``l S/(l + S) exp(E1(2 tau l) - E1(2 tau (l + S)))`` otherwise. The
    shrink factor of the ODE map is ``sqrt(v / S)``. Float64, shaped like ``lam``."""
    lam = torch.as_tensor(lam, dtype=_F64).cpu()
    if not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
        raise ValueError("lam must be finite and >= 0 (eigenvalues of a covariance)")
    c = _nonneg(c, "c")
    tau = _positive(tau, "tau", allow_inf=True)
    S = _positive(sigma_max, "sigma_max", allow_inf=True) ** 2
    l = lam + c
    if math.isinf(tau):
        return l if math.isinf(S) else l * S / (l + S)
    beta = 2 * tau
    logv = _log_l_exp_e1(l, beta)
    if not math.isinf(S):
        logv = logv + math.log(S) - torch.log(l + S) - torch.from_numpy(special.exp1(beta * (l + S).numpy()))
    return logv.exp()


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
class LinearDiffusionModel:
    """A linear diffusion model fitted to ``N`` points: one linear epsilon-predictor per noise level, trained
    with ridge ``c`` by gradient flow for time ``tau`` (module docstring). ``c = 0, tau = inf`` is Eq. 7 fitted
    to the data (:class:`~paperlib.geometry.GaussianLinearDenoiser`), ``c > 0, tau = inf`` is Eq. 7 for
    ``N(mu_hat, C_hat + c I)``.

    Callable as a denoiser ``D(x, sigma)`` (``x`` ``(b, ...)``, ``sigma`` a number or a tensor of equal
    entries), so it runs in :func:`paperlib.sampling.sample` / ``solve`` / ``denoising_mse`` and in
    :func:`ancestral_sample`.
    """

    def __init__(self, fit: geometry.GaussianLinearDenoiser, c: float = 0.0, tau: float = math.inf):
        if not isinstance(fit, geometry.GaussianLinearDenoiser):
            raise TypeError(f"fit must be a geometry.GaussianLinearDenoiser, got {type(fit).__name__}")
        self.fit = fit
        self.c = _nonneg(c, "c")
        self.tau = _positive(tau, "tau", allow_inf=True)
        self.mean = fit.mean
        self.eigvals = fit.eigvals                  # (r,), ascending; r = d, or N when fitted with N < d
        self.eigvecs = fit.eigvecs                  # (d, r)
        self.d = fit.mean.shape[0]
        self.rank_basis = self.eigvecs.shape[1]     # directions not spanned by eigvecs have eigenvalue 0

    @classmethod
    def fit_data(cls, data: torch.Tensor, c: float = 0.0, tau: float = math.inf) -> "LinearDiffusionModel":
        """Fit mean and covariance (``1/N``) of ``data`` (``(N, d)`` or images) and set ``c``, ``tau``."""
        return cls(geometry.GaussianLinearDenoiser.fit(_tensor(data, "data")), c, tau)

    def with_training(self, c: float = 0.0, tau: float = math.inf) -> "LinearDiffusionModel":
        """The same data, another ridge / training time (no refit)."""
        return LinearDiffusionModel(self.fit, c, tau)

    # per-direction quantities: (values on the eigvecs, value on their orthogonal complement)
    def _lams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.eigvals.cpu(), torch.zeros(1, dtype=_F64)

    def _shrinkage(self, sigma: float) -> torch.Tensor:
        """``1 - w = sigma * A`` on the eigenvectors, then (last entry) on their orthogonal complement."""
        lam, zero = self._lams()
        return sigma * gd_coefficient(torch.cat([lam, zero]), sigma, c=self.c, tau=self.tau)

    def gains(self, sigma) -> tuple[torch.Tensor, float]:
        """Denoiser gains ``w = 1 - sigma A`` on the eigenvectors (ascending eigenvalue) and on their
        orthogonal complement (eigenvalue 0; relevant only when ``N < d``)."""
        g = 1 - self._shrinkage(_sigma_value(sigma))
        return g[:-1], float(g[-1])

    def __call__(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a floating-point tensor of shape (b, ...)")
        shape = x.shape
        xf = x.reshape(shape[0], -1)
        if xf.shape[1] != self.d:
            raise ValueError(f"x has dimension {xf.shape[1]} but the model has dimension {self.d}")
        g, g_perp = self.gains(sigma)
        dt = xf.dtype
        U = self.eigvecs.to(xf.device, dt)
        r = xf - self.mean.to(xf.device, dt)
        coef = r @ U
        out = (coef * (g.to(xf.device, dt) - g_perp)) @ U.T + g_perp * r
        return (out + self.mean.to(xf.device, dt)).reshape(shape)

    # ------------------------------------------------------------------------------ losses
    def denoising_loss(self, mean: torch.Tensor, cov: torch.Tensor, sigmas) -> torch.Tensor:
        """Exact ``E_y E_n ||D(y + sigma n; sigma) - y||^2`` (summed over the ``d`` coordinates) for data ``y``
        with mean ``mean`` and covariance ``cov`` (any distribution: the loss is quadratic), per sigma:
        ``tr((I - W)^2 (cov + delta delta^T)) + sigma^2 tr(W^2)``, ``delta = mean - mu_hat``. Float64 ``(S,)``."""
        m, C = _moments(mean, cov, self.d, self.mean.device)
        delta = m - self.mean
        M = C + torch.outer(delta, delta)
        U = self.eigvecs
        mk = ((M @ U) * U).sum(0).cpu()             # u_k^T M u_k
        rest = float(torch.trace(M)) - float(mk.sum())  # M's trace on the complement of the eigvecs
        return self._loss(mk, rest, sigmas)

    def train_loss(self, sigmas) -> torch.Tensor:
        """:meth:`denoising_loss` on the training data itself (its moments are ``mu_hat``, ``C_hat``):
        ``sum_k (1 - w_k)^2 lam_k + sigma^2 w_k^2`` (``= sum_k lam_k sigma^2 / (lam_k + sigma^2)`` for Eq. 7)."""
        return self._loss(self.eigvals.cpu(), 0.0, sigmas)

    def _loss(self, mk: torch.Tensor, rest: float, sigmas) -> torch.Tensor:
        out = torch.empty(len(_sigmas(sigmas)), dtype=_F64)
        n_perp = self.d - self.rank_basis
        for i, s in enumerate(_sigmas(sigmas).tolist()):
            h = self._shrinkage(s)
            g = 1 - h
            out[i] = (h[:-1] ** 2 * mk).sum() + h[-1] ** 2 * rest + s * s * ((g[:-1] ** 2).sum() + n_perp * g[-1] ** 2)
        return out

    # ------------------------------------------------------------------------------ sampling
    def _full(self, values: torch.Tensor, value_perp: float) -> torch.Tensor:
        """``U diag(values) U^T + value_perp (I - U U^T)`` (d x d, float64)."""
        U = self.eigvecs
        out = (U * (values.to(U.device) - value_perp)) @ U.T
        out.diagonal().add_(value_perp)
        return out

    def sampling_distribution(self, sigma_max: float = math.inf) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, cov)`` of the probability-flow ODE's samples (continuous time) from ``N(0, sigma_max^2 I)``;
        ``sigma_max = inf`` (default) is the limit, ``N(mu_hat, C_hat + c I)`` for ``tau = inf``."""
        lam, zero = self._lams()
        v = ode_variance(torch.cat([lam, zero]), c=self.c, tau=self.tau, sigma_max=sigma_max)
        cov = self._full(v[:-1], float(v[-1]))
        if math.isinf(sigma_max):
            return self.mean.clone(), cov
        f = (v / sigma_max**2).sqrt()
        shrink = self._full(f[:-1], float(f[-1]))
        return self.mean - shrink @ self.mean, cov

    def ode_solution(self, x_T: torch.Tensor, sigma_max: float) -> torch.Tensor:
        """Exact end point at ``sigma = 0`` of the probability-flow ODE started at ``x_T`` at ``sigma_max``:
        ``mu_hat + sum_k sqrt(v_k / sigma_max^2) u_k u_k^T (x_T - mu_hat)`` (:func:`ode_variance`)."""
        x_T = _tensor(x_T, "x_T")
        sigma_max = _positive(sigma_max, "sigma_max")
        lam, zero = self._lams()
        f = (ode_variance(torch.cat([lam, zero]), c=self.c, tau=self.tau, sigma_max=sigma_max) / sigma_max**2).sqrt()
        shape = x_T.shape
        r = x_T.reshape(shape[0], -1).to(_F64) - self.mean.to(x_T.device)
        U = self.eigvecs.to(x_T.device)
        out = ((r @ U) * (f[:-1].to(x_T.device) - float(f[-1]))) @ U.T + float(f[-1]) * r
        return (out + self.mean.to(x_T.device)).reshape(shape)

    def ancestral_distribution(self, sigmas, start_var: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``(mean, cov)`` of :func:`ancestral_sample` with this model on the decreasing schedule
        ``sigmas`` (last entry 0), started from ``N(0, start_var I)`` (default ``sigmas[0]^2``).

        Per direction, a step ``sigma -> sigma'`` with ``r = sigma'^2 / sigma^2`` and gain ``w`` maps the offset
        from ``mu_hat`` as ``e' = (w + r (1 - w)) e + sqrt(sigma'^2 (1 - r)) z``: exact recursions for the
        mean factor and the variance."""
        sig = _schedule(sigmas)
        v0 = float(sig[0]) ** 2 if start_var is None else _nonneg(start_var, "start_var")
        lam, _ = self._lams()
        k = lam.numel() + 1
        fac = torch.ones(k, dtype=_F64)
        var = torch.full((k,), v0, dtype=_F64)
        for s, s_next in zip(sig[:-1].tolist(), sig[1:].tolist()):
            g, gp = self.gains(s)
            w = torch.cat([g, torch.tensor([gp], dtype=_F64)])
            r = (s_next / s) ** 2
            a = w + r * (1 - w)
            fac, var = a * fac, a * a * var + s_next**2 * (1 - r)
        cov = self._full(var[:-1], float(var[-1]))
        shrink = self._full(fac[:-1], float(fac[-1]))
        return self.mean - shrink @ self.mean, cov


def _schedule(sigmas) -> torch.Tensor:
    sig = torch.as_tensor(sigmas, dtype=_F64).reshape(-1).cpu()
    if sig.numel() < 2 or not bool(torch.isfinite(sig).all()) or bool((sig[:-1] <= 0).any()) or float(sig[-1]) < 0 \
            or bool((sig[1:] >= sig[:-1]).any()):
        raise ValueError("sigmas must be finite, strictly decreasing, positive except a final 0, length >= 2")
    return sig


@torch.no_grad()
def ancestral_sample(denoiser, x: torch.Tensor, sigmas, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM (ancestral) sampling in the variance-exploding form: from ``x`` at ``sigmas[0]`` down the decreasing
    schedule ``sigmas`` (last entry 0, e.g. ``regimes.ddpm_sigmas`` reversed), each step draws from the Gaussian
    posterior of the forward process with ``x_0`` replaced by the denoiser's estimate:
    ``x' = D + (sigma'^2 / sigma^2)(x - D) + sigma' sqrt(1 - sigma'^2 / sigma^2) z``, ``D = D(x; sigma)``.
    (DDPM's ``x_t / sqrt(abar_t)`` follows exactly this chain with ``sigma_t^2 = (1 - abar_t)/abar_t``.)"""
    x = _tensor(x, "x")
    sig = _schedule(sigmas)
    gen_device = generator.device if generator is not None else x.device
    b = x.shape[0]
    for s, s_next in zip(sig[:-1].tolist(), sig[1:].tolist()):
        D = denoiser(x, torch.full((b,), s, dtype=x.dtype, device=x.device)).to(x.dtype)
        r = (s_next / s) ** 2
        x = D + r * (x - D)
        if s_next > 0:
            z = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
            x = x + s_next * math.sqrt(1 - r) * z
    return x


def gaussian_draws(eigvals, mean=None):
    """``draw(n, generator)`` for :func:`learning_curve`: ``n`` points of ``N(mean, diag(eigvals))`` (the
    target in its eigenbasis; every quantity here is invariant under rotations), float64."""
    lam = torch.as_tensor(eigvals, dtype=_F64)
    if lam.dim() != 1 or not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
        raise ValueError("eigvals must be a 1-D tensor of finite values >= 0")
    mu = torch.zeros_like(lam) if mean is None else _tensor(mean, "mean").to(_F64)
    sd = lam.sqrt()
    return lambda n, generator: mu + torch.randn(n, lam.numel(), generator=generator, dtype=_F64) * sd


def subset_draws(pool: torch.Tensor):
    """``draw(n, generator)`` for :func:`learning_curve`: ``n`` rows of ``pool`` drawn without replacement."""
    pool = _tensor(pool, "pool")
    flat = pool.reshape(pool.shape[0], -1)

    def draw(n, generator):
        if n > flat.shape[0]:
            raise ValueError(f"n = {n} exceeds the pool of {flat.shape[0]} points")
        return flat[torch.randperm(flat.shape[0], generator=generator)[:n]]
    return draw


def learning_curve(draw, ns, sigmas, reps: int, target_mean: torch.Tensor, target_cov: torch.Tensor, *,
                   generator: torch.Generator, kl: bool = True, progress: bool = False) -> dict:
    """Fit the Gaussian denoiser (Eq. 7) to ``reps`` training sets of each size ``n`` in ``ns`` (``draw(n,
    generator)``, e.g. :func:`gaussian_draws`, :func:`subset_draws`) and return float64 tensors:
    ``"train"``, ``"test"`` ``(len(ns), reps, len(sigmas))`` (:meth:`LinearDiffusionModel.train_loss`,
    :meth:`~LinearDiffusionModel.denoising_loss` on the target's moments; left out when ``sigmas`` is ``None``)
    and, with ``kl``, ``"kl"`` ``(len(ns), reps)``: ``KL(N(mu_hat, C_hat) || N(target))`` (``inf`` for ``n <= d``)."""
    from .progress import bar
    ns = [_int(n, "ns", 2) for n in ns]
    reps = _int(reps, "reps", 1)
    sig = None if sigmas is None else _sigmas(sigmas)
    if sig is None and not kl:
        raise ValueError("nothing to compute: give sigmas, or kl=True")
    m0, c0 = target_mean.to(_F64), target_cov.to(_F64)
    out = {}
    if sig is not None:
        out["train"] = torch.empty(len(ns), reps, len(sig), dtype=_F64)
        out["test"] = torch.empty(len(ns), reps, len(sig), dtype=_F64)
    if kl:
        out["kl"] = torch.empty(len(ns), reps, dtype=_F64)
    for i, n in enumerate(bar(ns, desc="learning curve", disable=not progress)):
        for r in range(reps):
            y = draw(n, generator)
            if sig is None and n <= y.shape[1]:       # KL only, and it is infinite: no fit needed
                out["kl"][i, r] = math.inf
                continue
            model = LinearDiffusionModel.fit_data(y)
            if sig is not None:
                out["train"][i, r] = model.train_loss(sig)
                out["test"][i, r] = model.denoising_loss(m0, c0, sig)
            if kl:
                out["kl"][i, r] = math.inf if n <= model.d else gaussian_kl(model.mean, model.fit.cov, m0, c0)
    return out


def kl_vs_training(model: LinearDiffusionModel, target_mean: torch.Tensor, target_cov: torch.Tensor, *,
                   cs=(), taus=()) -> tuple[torch.Tensor, torch.Tensor]:
    """``KL(sampling distribution || N(target))`` of ``model``'s data trained with each ridge ``c`` in ``cs``
    (``tau = inf``) and for each gradient-flow time ``tau`` in ``taus`` (``c = 0``): two float64 tensors."""
    if not isinstance(model, LinearDiffusionModel):
        raise TypeError(f"model must be a LinearDiffusionModel, got {type(model).__name__}")
    m0, c0 = target_mean.to(_F64), target_cov.to(_F64)

    def kl(m):
        return gaussian_kl(*m.sampling_distribution(), m0, c0)
    return (torch.tensor([kl(model.with_training(c=float(c))) for c in cs], dtype=_F64),
            torch.tensor([kl(model.with_training(tau=float(t))) for t in taus], dtype=_F64))


def control_variate_mean(values: torch.Tensor, control: torch.Tensor, control_mean) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo mean of ``values`` with a control variate: ``mean(values) - beta (mean(control) - control_mean)``
    with the regression coefficient ``beta = Cov(values, control) / Var(control)``, along the last axis
    (e.g. an empirical denoiser's per-image losses with the Gaussian denoiser's losses on the same noisy images as
    the control, whose exact mean is known). Returns ``(estimate, standard error)``, float64; the error is that of
    the residual ``values - beta control``. With uncorrelated ``control`` it is the plain mean."""
    v = _tensor(values, "values").to(_F64)
    c = _tensor(control, "control").to(_F64)
    if v.shape != c.shape or v.shape[-1] < 3:
        raise ValueError(f"values and control must have the same shape with >= 3 samples, got {tuple(v.shape)}, {tuple(c.shape)}")
    cm = torch.as_tensor(control_mean, dtype=_F64, device=v.device)
    dv, dc = v - v.mean(-1, keepdim=True), c - c.mean(-1, keepdim=True)
    var = (dc * dc).mean(-1)
    beta = torch.where(var > 0, (dv * dc).mean(-1) / var.clamp_min(1e-300), torch.zeros_like(var))
    est = v.mean(-1) - beta * (c.mean(-1) - cm)
    resid = v - beta[..., None] * c
    return est, resid.std(-1) / math.sqrt(v.shape[-1])


def outside_span_fraction(x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """Share of ``||x - mu_hat||^2`` that lies outside the span of the centred data, for each row of ``x``
    (``(b, ...)``; data ``(N, ...)``): 0 for points of the data's affine hull. Float64 ``(b,)``."""
    x = _tensor(x, "x")
    data = _tensor(data, "data")
    xf = x.reshape(x.shape[0], -1).to(_F64)
    yf = data.reshape(data.shape[0], -1).to(_F64)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x has dimension {xf.shape[1]} but data has dimension {yf.shape[1]}")
    centred = yf - yf.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = s > s.max() * max(yf.shape) * 1e-13 if s.numel() and float(s.max()) > 0 else s > 0
    V = vh[keep].T
    r = xf - yf.mean(0)
    out_of = r - (r @ V) @ V.T
    return (out_of.pow(2).sum(1) / r.pow(2).sum(1).clamp_min(1e-300))
