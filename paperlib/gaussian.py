"""Large noise: the empirical optimal denoiser approaches the Gaussian linear denoiser (Thm 4.11, App. C).

(Temporary home; moves to the Gaussian-linear-denoiser module of the geometry split.)
"""
from __future__ import annotations

import torch

from .geometry import (GaussianLinearDenoiser, _check_finite_tensor, _check_pair, _points, _sigmas,
                       empirical_denoiser)

__all__ = ["third_moment", "linear_gap"]


def third_moment(data: torch.Tensor) -> torch.Tensor:
    """``m_3 = E[(y - mu) ||y - mu||^2]`` (float64, ``(d,)``) over the empirical distribution of ``data``:
    the leading term of the gap between the empirical and the Gaussian linear denoiser (Thm 4.11)."""
    data = _points(data, "data")
    _check_finite_tensor(data, "data")
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

    For each ``sigma`` the inputs are ``x`` (clean, bounded inputs: the theorem's setting) or, with
    ``noise``, ``x + sigma noise`` (the inputs met in sampling). Returns float64 tensors
    ``(len(sigmas),)``: ``"to_gaussian"`` the mean of ``||D*(x; sigma) - D_G(x; sigma)||`` over the inputs and
    ``"to_mean"`` the mean of ``||D*(x; sigma) - mu||``. Computed in float64.

    Expanding the softmax in ``1/sigma^2`` gives, uniformly for bounded ``x``,
    ``D*(x; sigma) - D_G(x; sigma) = -m_3 / (2 sigma^2) + O(sigma^-4)`` with ``m_3`` = :func:`third_moment`:
    both are ``mu + Sigma (x - mu) / sigma^2 + O(sigma^-4)`` except for the third-moment term.
    """
    data = _points(data, "data")
    xf = _points(x, "x")
    _check_pair(xf, data, "x", "data")
    sig = _sigmas(sigmas)
    if noise is not None:
        noise = _points(noise, "noise")
        if noise.shape != xf.shape or noise.device != xf.device:
            raise ValueError(f"noise must have x's shape {tuple(xf.shape)} and device, got {tuple(noise.shape)}")
    gld = GaussianLinearDenoiser.fit(data)
    d64, x64 = data.to(torch.float64), xf.to(torch.float64)
    n64 = None if noise is None else noise.to(torch.float64)
    to_g = torch.empty(sig.numel(), dtype=torch.float64)
    to_mu = torch.empty_like(to_g)
    for k, s in enumerate(sig.tolist()):
        xs = x64 if n64 is None else x64 + s * n64
        Ds = empirical_denoiser(xs, d64, s)
        to_g[k] = (Ds - gld(xs, s)).norm(dim=1).mean()
        to_mu[k] = (Ds - gld.mean).norm(dim=1).mean()
    return {"to_gaussian": to_g, "to_mean": to_mu}
