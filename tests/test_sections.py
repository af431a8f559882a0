"""The geometry modules split by paper section, and the functions moved out of the chapters,
each against an independent computation (float64 brute force, closed forms, explicit noise)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import paperlib
from paperlib import concentration, data, geometry, memorization, shells

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cdist(a, b):
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def test_facade_reexports_every_public_name_of_the_section_modules():
    from paperlib import gaussian, neighbors, posterior
    for mod in (posterior, neighbors, concentration, shells, gaussian):
        first = mod.__doc__.strip().splitlines()[0]
        assert any(w in first for w in ("Sec.", "Eq.", "Theorem", "Lemma", "Sec ")), (mod.__name__, first)
        for name in mod.__all__:
            assert getattr(geometry, name) is getattr(mod, name), name
    assert memorization.nearest_neighbors is geometry.nearest_neighbors  # one public nearest_neighbors


def test_thresholds_are_a_named_pair_in_the_old_order():
    x = torch.randn(60, 5, generator=gen(1), dtype=F64)
    th = geometry.concentration_thresholds(x, 3)
    lo, hi = th
    assert (lo, hi) == (th.sigma_spread, th.sigma_concentrated)
    assert th.sigma_concentrated < th.sigma_spread
    with pytest.raises(ValueError, match="index"):
        geometry.concentration_thresholds(x, "12")
    with pytest.raises(ValueError, match="index"):
        geometry.concentration_thresholds(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="index"):
        geometry.concentration_thresholds(x, True)


def test_failure_probability_closed_form_and_consistency_with_the_threshold():
    x = torch.randn(80, 6, generator=gen(2), dtype=F64)
    eps, n = 0.05, 80
    D = cdist(x, x)
    for i in (0, 7, 33):
        nn = D[i][torch.arange(n) != i].min().item()
        for s in (0.05, 0.2, 0.5):
            L = math.log((1 - eps) * (n - 1) / eps)
            ref = min(1.0, (n - 1) * stats.norm.cdf(-nn / (2 * s) + L * s / nn))
            got = concentration.failure_probability(x, i, s, eps)
            assert got == pytest.approx(ref, rel=1e-12, abs=1e-300)
            if 1e-12 < got < 0.5:  # at delta = delta_1, sigma_concentrated is exactly sigma
                th = concentration.concentration_thresholds(x, i, eps, got)
                assert th.sigma_concentrated == pytest.approx(s, rel=1e-8)
    v = concentration.failure_probability(x, [0, 7], 0.2, eps)
    assert v.shape == (2,)
    dup = torch.cat([x, x[:1]])
    assert concentration.failure_probability(dup, 0, 0.2) == 1.0  # an exact copy: no concentration


def test_threshold_monte_carlo_against_explicit_noise():
    x = torch.randn(40, 4, generator=gen(3), dtype=F64)
    sig = torch.tensor([0.05, 0.3, 1.0, 3.0], dtype=F64)
    res = concentration.threshold_monte_carlo(x, sig, n_points=3, point_seed=43, n_noise=20, noise_seed=11)
    pts = torch.randperm(40, generator=gen(43))[:3]
    assert torch.equal(res.points, pts)
    g = gen(11)
    th = concentration.concentration_thresholds(x, pts)
    for j, i in enumerate(pts.tolist()):
        noise = torch.randn(20, 4, generator=g, dtype=F64)
        for k, s in enumerate(sig.tolist()):
            q = x[i] + s * noise
            w = torch.softmax(-((q[:, None] - x[None]) ** 2).sum(-1) / (2 * s * s), dim=1)[:, i]
            torch.testing.assert_close(res.weights[k, j], w, rtol=1e-10, atol=1e-12)
            assert res.p_concentrated[k, j].item() == pytest.approx((w >= 0.95).double().mean().item())
            assert res.p_spread[k, j].item() == pytest.approx((w <= 0.05).double().mean().item())
        noise = torch.randn(80, 4, generator=g, dtype=F64)
        s = float(th.sigma_concentrated[j])
        q = x[i] + s * noise
        w = torch.softmax(-((q[:, None] - x[None]) ** 2).sum(-1) / (2 * s * s), dim=1)[:, i]
        assert res.at_concentrated[j].item() == pytest.approx((w >= 0.95).double().mean().item())
    # Theorem 4.2 holds (within Monte Carlo error) at both thresholds
    tol = 3 * math.sqrt(0.05 * 0.95 / res.n_at)
    ok = torch.cat([res.at_concentrated, res.at_spread])
    assert bool((ok[~ok.isnan()] >= 0.95 - tol).all())


def test_corollary_a2_against_direct_vector_fields():
    x = torch.randn(30, 8, generator=gen(4), dtype=F64)
    t, eta = 0.6, 0.01
    res = concentration.corollary_a2(x, t=t, eta=eta, n_images=5, n_noise=3, seed=3, chunk=4)
    g = gen(3)
    idx = torch.randperm(30, generator=g)[:5]
    assert torch.equal(res.index, idx)
    eps = torch.randn(5, 3, 8, generator=g, dtype=F64)
    sig = (1 - t) / t
    D = cdist(x[idx], x)
    torch.testing.assert_close(res.R, D.max(1).values)
    torch.testing.assert_close(res.nn, D.sort(1).values[:, 1])
    for a in range(5):
        for b in range(3):
            xt = t * x[idx[a]] + (1 - t) * eps[a, b]
            w = torch.softmax(-((xt / t - x) ** 2).sum(-1) / (2 * sig * sig), dim=0)
            u_star = (w @ x - xt) / (1 - t)
            u = (x[idx[a]] - xt) / (1 - t)
            assert res.log_ratio[a, b].item() == pytest.approx(math.log((u_star - u).norm() / u.norm()), rel=1e-8)
            assert res.log_1mw[a, b].item() == pytest.approx(math.log1p(-w[idx[a]].item()), rel=1e-6, abs=1e-9)
    rm = geometry.shell_radii(8, 5.0)[0]
    torch.testing.assert_close(res.ratio_bound, eta * res.R / ((1 - t) * rm))
    ref = concentration.failure_probability(x, idx, sig, eta)
    torch.testing.assert_close(res.delta1, ref)


def test_leave_one_out_coverage_against_explicit_shells():
    train = torch.randn(25, 6, generator=gen(5), dtype=F64)
    sig = torch.tensor([0.1, 0.5, 1.5], dtype=F64)
    hits = geometry.coverage(train, None, sig, 3, gen(6), leave_one_out=True, reduce=False, progress=False)
    rm, rp = geometry.shell_radii(6)
    noise = torch.randn(25, 3, 6, generator=gen(6), dtype=F64)
    for k, s in enumerate(sig.tolist()):
        z = train[:, None, :] + s * noise  # (25, 3, 6)
        dist = ((z[:, :, None, :] - train[None, None]) ** 2).sum(-1).sqrt() / s  # (25, 3, 25)
        inside = (dist >= rm) & (dist <= rp)
        inside[torch.arange(25), :, torch.arange(25)] = False
        assert torch.equal(hits[k], inside.any(-1))
    same = geometry.coverage(train, train, sig, 3, gen(6), leave_one_out=True, progress=False)
    torch.testing.assert_close(same, hits.double().mean((1, 2)))
    with pytest.raises(ValueError, match="test"):
        geometry.coverage(train, train + 1, sig, leave_one_out=True, progress=False)
    with pytest.raises(ValueError, match="test"):
        geometry.coverage(train, None, sig, progress=False)


def test_tail_parameter_is_not_called_x_but_x_still_works():
    assert geometry.shell_radii(100, tail=3.0) == geometry.shell_radii(100, x=3.0) == geometry.shell_radii(100, 3.0)
    with pytest.raises(ValueError, match="tail"):
        geometry.shell_radii(100, tail=-1.0)


def test_one_third_rule_against_brute_force():
    train = torch.randn(50, 10, generator=gen(7), dtype=F64)
    samples = torch.cat([train[:5] + 1e-3 * torch.randn(5, 10, generator=gen(8), dtype=F64),
                         torch.randn(7, 10, generator=gen(9), dtype=F64)])
    res = memorization.one_third_rule(samples, train)
    D = cdist(samples, train)
    v, i = D.topk(2, largest=False)
    assert torch.equal(res.nearest, i[:, 0])
    torch.testing.assert_close(res.d1, v[:, 0])
    torch.testing.assert_close(res.d2, v[:, 1])
    assert torch.equal(res.memorized, v[:, 0] < v[:, 1] / 3)
    assert res.memorized[:5].all() and torch.equal(memorization.is_memorized(samples, train), res.memorized)
    assert torch.equal(memorization.one_third_rule(samples, train, ratio=0.9).memorized, v[:, 0] < 0.9 * v[:, 1])


def test_resize_is_area_average_down_and_identity_at_the_same_size():
    x = torch.rand(3, 3, 32, 32, generator=gen(10)) * 2 - 1
    torch.testing.assert_close(data.resize(x, 16), F.avg_pool2d(x, 2))
    torch.testing.assert_close(data.resize(x, 8), F.avg_pool2d(x, 4))
    # a block mean, computed by hand
    torch.testing.assert_close(data.resize(x, 16)[1, 2, 3, 4], x[1, 2, 6:8, 8:10].mean())
    assert data.resize(x, 32) is x
    up = data.resize(x, 64)
    assert up.shape == (3, 3, 64, 64) and up.dtype == x.dtype
    const = torch.full((1, 1, 8, 8), 0.25)
    torch.testing.assert_close(data.resize(const, 20), torch.full((1, 1, 20, 20), 0.25))
    assert float(up.amax()) <= float(x.amax()) + 1e-6 and float(up.amin()) >= float(x.amin()) - 1e-6  # no overshoot
    for bad in (0, -5, 2.5, True, "16"):
        with pytest.raises(ValueError, match="res"):
            data.resize(x, bad)
    with pytest.raises(ValueError, match="x"):
        data.resize(x[0], 16)


def test_package_docstring_lists_the_modules():
    doc = paperlib.__doc__
    for mod in ("checks", "blocking", "posterior", "neighbors", "concentration", "shells", "gaussian", "geometry",
                "memorization", "data", "regimes"):
        assert f"paperlib.{mod}" in doc, mod
