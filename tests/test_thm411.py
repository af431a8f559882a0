"""Theorem 4.11 measured: the empirical optimal denoiser against the Gaussian linear denoiser."""
from __future__ import annotations

import math

import pytest
import torch

from paperlib import gaussian

F64 = torch.float64


def small_set(n=30, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=g, dtype=F64)
    return y + 0.5 * y.square()  # skewed, so the third moment is not 0


def test_third_moment_against_a_direct_sum():
    y = small_set()
    c = y - y.mean(0)
    want = sum(c[i] * (c[i] @ c[i]) for i in range(len(y))) / len(y)
    assert torch.allclose(gaussian.third_moment(y), want, rtol=1e-12, atol=1e-12)
    assert gaussian.third_moment(torch.cat([y, 2 * y.mean(0) - y])).abs().max() < 1e-12  # symmetric set: 0


def test_linear_gap_against_brute_force_float64():
    y = small_set()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    noise = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    sig = torch.tensor([0.3, 2.0, 30.0], dtype=F64)
    got = gaussian.linear_gap(y, x, sig, noise=noise)
    mu = y.mean(0)
    cov = (y - mu).T @ (y - mu) / len(y)
    for k, s in enumerate(sig.tolist()):
        xs = x + s * noise
        w = torch.softmax(-torch.cdist(xs, y).square() / (2 * s * s), dim=1)
        Ds = w @ y
        Dg = mu + (xs - mu) @ torch.linalg.solve(cov + s * s * torch.eye(5, dtype=F64), cov)  # cov symmetric
        assert got["noisy_to_gaussian"][k].item() == pytest.approx((Ds - Dg).norm(dim=1).mean().item(), rel=1e-9, abs=1e-13)
        assert got["noisy_to_mean"][k].item() == pytest.approx((Ds - mu).norm(dim=1).mean().item(), rel=1e-9)
    clean = gaussian.linear_gap(y, x, sig)
    assert set(clean) == {"to_gaussian", "to_mean"}
    assert torch.equal(clean["to_gaussian"], got["to_gaussian"]) and torch.equal(clean["to_mean"], got["to_mean"])


def test_gap_decays_like_sigma_minus_two_with_the_third_moment_constant():
    y = small_set(n=40, d=6)
    x = y[:5] * 0.7
    sig = torch.tensor([1e3, 1e4], dtype=F64)
    gap = gaussian.linear_gap(y, x, sig)["to_gaussian"]
    limit = gaussian.third_moment(y).norm().item() / 2
    assert (gap * sig ** 2)[-1].item() == pytest.approx(limit, rel=1e-3)
    assert math.log(gap[1] / gap[0]) / math.log(10) == pytest.approx(-2, abs=1e-2)


def test_bad_input():
    y = small_set()
    with pytest.raises(ValueError, match="noise"):
        gaussian.linear_gap(y, y[:2], [1.0], noise=torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="sigma"):
        gaussian.linear_gap(y, y[:2], [0.0])
    with pytest.raises(ValueError, match="data"):
        gaussian.third_moment(torch.zeros(3))
