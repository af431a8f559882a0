"""Lemma A.1 (Eq. 18): the empirical optimal denoiser stays within eps R_1 of the point, w.p. >= 1 - delta_1."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paperlib import concentration

F64 = torch.float64


def clusters(d=32, k=6, per=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 3 * torch.randn(k, d, generator=g, dtype=F64)
    return c.repeat_interleave(per, 0) + 0.5 * torch.randn(k * per, d, generator=g, dtype=F64)


def test_lemma_a1_monte_carlo_against_brute_force_float64():
    X = clusters()
    sig = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    pts, m = [0, 17], 16
    r = concentration.lemma_a1_monte_carlo(X, sig, points=pts, n_noise=m, noise_seed=4, eps=0.1, chunk=5)
    g = torch.Generator().manual_seed(4)
    for j, i in enumerate(pts):
        noise = torch.randn(m, X.shape[1], generator=g, dtype=F64)
        R = (X - X[i]).norm(dim=1).max()
        assert r.R[j].item() == pytest.approx(R.item(), rel=1e-12)
        assert r.bound[j].item() == pytest.approx(0.1 * R.item(), rel=1e-12)
        for k, s in enumerate(sig.tolist()):
            x = X[i] + s * noise
            w = torch.softmax(-torch.cdist(x, X).square() / (2 * s * s), dim=1)
            dev = (w @ X - X[i]).norm(dim=1)
            one_minus = 1 - w[:, i]
            big = dev > 1e-12  # where float64 brute force still has relative accuracy
            assert torch.allclose(r.log_deviation[k, j][big].exp(), dev[big], rtol=1e-6)
            big = one_minus > 1e-12
            assert torch.allclose(r.log_1mw[k, j][big].exp(), one_minus[big], rtol=1e-6)
            assert r.within[k, j].item() == pytest.approx((dev <= 0.1 * R).double().mean().item())
    fp = torch.stack([concentration.failure_probability(X, pts, s, eps=0.1) for s in sig.tolist()])
    assert torch.allclose(r.guarantee, (1 - fp).clamp_min(0), atol=1e-12)


def test_lemma_a1_holds_on_clustered_data():
    X = clusters(d=64, k=8, per=10, seed=1)
    th = concentration.concentration_thresholds(X, [3, 40, 77], 0.05, 0.05)
    s_hi = float(th.sigma_concentrated.min())
    sig = torch.tensor([0.5 * s_hi, s_hi, 2 * s_hi, 4 * s_hi], dtype=F64)
    m = 400
    r = concentration.lemma_a1_monte_carlo(X, sig, points=[3, 40, 77], n_noise=m, noise_seed=2, eps=0.05)
    g = r.guarantee.numpy()
    tol = 3 * np.sqrt(g * (1 - g) / m) + 1 / m
    assert (r.within.numpy() >= g - tol).all()
    # the deterministic half: ||D* - y_1|| <= (1 - w_1) R_1 in every draw
    assert bool((r.log_deviation <= r.log_1mw + r.R.log()[None, :, None] + 1e-9).all())
    assert (g[:2] >= 0.95 - 1e-12).all()  # at and below sigma_hi the lemma promises >= 1 - delta


def test_lemma_a1_bad_input():
    X = clusters()
    with pytest.raises(ValueError, match="eps"):
        concentration.lemma_a1_monte_carlo(X, [1.0], points=[0], n_noise=2, noise_seed=0, eps=0.6)
    with pytest.raises(ValueError, match="n_noise"):
        concentration.lemma_a1_monte_carlo(X, [1.0], points=[0], n_noise=0, noise_seed=0)
    with pytest.raises(ValueError, match="index"):
        concentration.lemma_a1_monte_carlo(X, [1.0], points=[1000], n_noise=2, noise_seed=0)
