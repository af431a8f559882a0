"""The Gaussian linear denoiser: paper Sec. 4.3, Eq. 7 and Theorem 4.11 (App. C).

``D_G(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)`` is the optimal denoiser of the Gaussian
``N(mu, Sigma)`` fitted to the data (mean and covariance of its empirical distribution); Thm 4.11 compares
it with the empirical denoiser at large ``sigma``. :func:`fit_gaussian` fits the two moments,
:func:`gaussian_linear_denoiser` applies Eq. 7 once (Cholesky solve), :class:`GaussianLinearDenoiser`
diagonalises the covariance once for many ``sigma``. :func:`linear_gap` measures Thm 4.11 (the distance
from the empirical denoiser to ``D_G`` along ``sigma``) and :func:`third_moment` gives its predicted
constant (``||D* - D_G|| ~ ||m_3|| / (2 sigma^2)``).
"""
from __future__ import annotations

import torch

from . import checks
from .posterior import empirical_denoiser

__all__ = ["fit_gaussian", "gaussian_linear_denoiser", "GaussianLinearDenoiser", "third_moment", "linear_gap"]


def fit_gaussian(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``mu`` and covariance ``Sigma = (1/N) sum_i (y_i - mu)(y_i - mu)^T`` (float64) of the
    empirical distribution of ``data`` (the Gaussian of Eq. 7 matches these two moments)."""
    data = checks.points(data, "data")
    checks.finite(data, "data")
    n, d = data.shape
    mu = data.mean(dim=0, dtype=torch.float64)
    cov = torch.zeros(d, d, dtype=torch.float64, device=data.device)
    rows = max(1, (64 * 2**20) // (8 * d))
    for r0 in range(0, n, rows):
        c = data[r0:r0 + rows].to(torch.float64) - mu
        cov.addmm_(c.T, c)
    cov /= n
    return mu, cov


def gaussian_linear_denoiser(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, sigma) -> torch.Tensor:
    """Eq. 7: ``D_G(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)`` (the optimal denoiser
    of ``N(mu, Sigma)``), computed as ``x - sigma^2 (Sigma + sigma^2 I)^{-1} (x - mu)`` by a Cholesky
    solve in float64. Result in ``x``'s dtype and shape. For many sigmas use :class:`GaussianLinearDenoiser`."""
    shape = x.shape if isinstance(x, torch.Tensor) else None
    s = checks.sigma(sigma)
    xf = checks.points(x, "x")
    if not isinstance(mean, torch.Tensor) or mean.dim() != 1 or mean.shape[0] != xf.shape[1]:
        raise ValueError(f"mean must be a 1-D tensor of length {xf.shape[1]}")
    if not isinstance(cov, torch.Tensor) or cov.shape != (xf.shape[1], xf.shape[1]):
        raise ValueError(f"cov must have shape ({xf.shape[1]}, {xf.shape[1]}), got "
                         f"{tuple(cov.shape) if isinstance(cov, torch.Tensor) else type(cov).__name__}")
    for name, t in (("mean", mean), ("cov", cov)):
        if t.device != xf.device:
            raise ValueError(f"{name} is on {t.device} but x is on {xf.device}")
        checks.finite(t, name)
    checks.finite(xf, "x")
    A = cov.to(torch.float64) + (s * s) * torch.eye(xf.shape[1], dtype=torch.float64, device=xf.device)
    r = (xf.to(torch.float64) - mean.to(torch.float64)).T
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        raise ValueError("cov + sigma^2 I is not positive definite: cov must be symmetric positive semi-definite")
    z = torch.cholesky_solve(r, L)
    out = xf.to(torch.float64) - (s * s) * z.T
    return out.to(xf.dtype).reshape(shape)


class GaussianLinearDenoiser:
    """Eq. 7 with the covariance diagonalised once, so each ``sigma`` costs two ``(b, d) x (d, d)`` products.

    ``Sigma = U diag(lambda) U^T``  =>  ``D_G(x; sigma) = mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu)``.
    Build with :meth:`fit` (from data) or from ``(mean, cov)``. Eigenvalues below 0 (rounding of a
    PSD matrix) are set to 0.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        if not isinstance(mean, torch.Tensor) or mean.dim() != 1:
            raise ValueError("mean must be a 1-D tensor")
        d = mean.shape[0]
        if not isinstance(cov, torch.Tensor) or cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d})")
        if cov.device != mean.device:
            raise ValueError(f"cov is on {cov.device} but mean is on {mean.device}")
        checks.finite(mean, "mean")
        checks.finite(cov, "cov")
        c64 = cov.to(torch.float64)
        lam, U = torch.linalg.eigh(0.5 * (c64 + c64.T))
        self.mean = mean.to(torch.float64)
        self.eigvals = lam.clamp_min(0)
        self.eigvecs = U

    @classmethod
    def fit(cls, data: torch.Tensor) -> "GaussianLinearDenoiser":
        """Fit mean and covariance of ``data`` (:func:`fit_gaussian`) and diagonalise.

        With fewer points than dimensions (``N < d``) the covariance has rank ``< N``: its nonzero
        eigenpairs come from a thin SVD of the centred data (``S^2 / N`` and the right singular
        vectors), which is exact and much cheaper than a ``d x d`` eigendecomposition."""
        data = checks.points(data, "data")
        n, d = data.shape
        if n >= d:
            return cls(*fit_gaussian(data))
        checks.finite(data, "data")
        mu = data.mean(dim=0, dtype=torch.float64)
        _, S, Vh = torch.linalg.svd(data.to(torch.float64) - mu, full_matrices=False)
        obj = cls.__new__(cls)
        obj.mean, obj.eigvals, obj.eigvecs = mu, (S * S / n).flip(0), Vh.flip(0).T
        return obj

    @property
    def cov(self) -> torch.Tensor:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def gains(self, sigma) -> torch.Tensor:
        """Eigenvalues ``lambda / (lambda + sigma^2)`` of the linear map (float64, ascending lambda)."""
        s = checks.sigma(sigma)
        return self.eigvals / (self.eigvals + s * s)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        shape = x.shape if isinstance(x, torch.Tensor) else None
        s = checks.sigma(sigma)
        xf = checks.points(x, "x")
        if xf.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x has dimension {xf.shape[1]} but the Gaussian has dimension {self.mean.shape[0]}")
        if xf.device != self.mean.device:
            raise ValueError(f"x is on {xf.device} but the Gaussian is on {self.mean.device}")
        checks.finite(xf, "x")
        cd = xf.dtype if xf.dtype in (torch.float32, torch.float64) else torch.float32
        U = self.eigvecs.to(cd)
        mu = self.mean.to(cd)
        g = self.gains(s).to(cd)
        out = ((xf.to(cd) - mu) @ U).mul_(g) @ U.T
        return out.add_(mu).reshape(shape)


def third_moment(data: torch.Tensor) -> torch.Tensor:
    """``m_3 = E[(y - mu) ||y - mu||^2]`` (float64, ``(d,)``) over the empirical distribution of ``data``:
    the leading term of the gap between the empirical and the Gaussian linear denoiser (Thm 4.11)."""
    data = checks.points(data, "data")
    checks.finite(data, "data")
    mu = data.mean(dim=0, dtype=torch.float64)
    out = torch.zeros_like(mu)
    rows = max(1, (64 * 2**20) // (8 * data.shape[1]))
    for r0 in range(0, data.shape[0], rows):
        c = data[r0:r0 + rows].to(torch.float64) - mu
        out += (c * c.square().sum(1, keepdim=True)).sum(0)
    return out / data.shape[0]


def linear_gap(data: torch.Tensor, x: torch.Tensor, sigmas, noise: torch.Tensor | None = None) -> dict:
    r"""Theorem 4.11, measured: how close the empirical optimal denoiser ``D*`` (Eq. 2) is to the
    Gaussian linear denoiser ``D_G`` (Eq. 7, fitted to ``data``) at each noise level.

    Returns float64 tensors ``(len(sigmas),)``: ``"to_gaussian"``, the mean over the inputs ``x`` (clean,
    bounded inputs: the theorem's setting) of ``||D*(x; sigma) - D_G(x; sigma)||``, and ``"to_mean"``, the
    mean of ``||D*(x; sigma) - mu||``; with ``noise``, also ``"noisy_to_gaussian"`` and ``"noisy_to_mean"``
    for the inputs ``x + sigma noise`` met in sampling. Computed in float64 (one fit of ``D_G``).

    Expanding the softmax in ``1/sigma^2`` gives, uniformly for bounded ``x``,
    ``D*(x; sigma) - D_G(x; sigma) = -m_3 / (2 sigma^2) + O(sigma^-4)`` with ``m_3`` = :func:`third_moment`:
    both are ``mu + Sigma (x - mu) / sigma^2 + O(sigma^-4)`` except for the third-moment term.
    """
    data = checks.points(data, "data")
    xf = checks.points(x, "x")
    checks.pair(xf, data, "x", "data")
    sig = checks.sigmas(sigmas)
    if noise is not None:
        noise = checks.points(noise, "noise")
        if noise.shape != xf.shape or noise.device != xf.device:
            raise ValueError(f"noise must have x's shape {tuple(xf.shape)} and device, got {tuple(noise.shape)}")
    gld = GaussianLinearDenoiser.fit(data)
    d64, x64 = data.to(torch.float64), xf.to(torch.float64)
    kinds = {"": None} if noise is None else {"": None, "noisy_": noise.to(torch.float64)}
    out = {f"{k}{q}": torch.empty(sig.numel(), dtype=torch.float64) for k in kinds for q in ("to_gaussian", "to_mean")}
    for k, s in enumerate(sig.tolist()):
        for kind, n64 in kinds.items():
            xs = x64 if n64 is None else x64 + s * n64
            Ds = empirical_denoiser(xs, d64, s)
            out[f"{kind}to_gaussian"][k] = (Ds - gld(xs, s)).norm(dim=1).mean()
            out[f"{kind}to_mean"][k] = (Ds - gld.mean).norm(dim=1).mean()
    return out
