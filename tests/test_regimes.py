"""paperlib.regimes: the danger zone on synthetic data where the answer is known, and the DDPM map."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paperlib import geometry as g
from paperlib import regimes as rg

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def clusters(scale=1.0, seed=0, d=64, k=8, per_train=25, per_test=10):
    """k well-separated clusters (centre spacing ~ 4 sqrt(2d), within-cluster spread 0.3 per coordinate)."""
    c = torch.randn(k, d, generator=gen(seed), dtype=F64) * 4
    train = c.repeat_interleave(per_train, 0) + 0.3 * torch.randn(k * per_train, d, generator=gen(seed + 1), dtype=F64)
    test = c.repeat_interleave(per_test, 0) + 0.3 * torch.randn(k * per_test, d, generator=gen(seed + 2), dtype=F64)
    return scale * train, scale * test


SIG = rg.default_sigmas(40, 1e-2, 1e2)


@pytest.fixture(scope="module")
def zone():
    train, test = clusters()
    return rg.danger_zone(train, test, SIG, generator=gen(3), progress=False), train, test


def test_danger_zone_between_the_regimes_on_clusters(zone):
    z, train, test = zone
    assert not z.empty
    lo, hi = z.interval
    assert lo < z.crossing < hi and z.crossing_value > 0.5
    s, W, C = z.sigmas, z.weight, z.coverage
    inside = (s >= lo) & (s <= hi)
    assert inside.sum() >= 3
    assert bool((W[inside] >= 0.5).all() and (C[inside] >= 0.5).all())
    # below the zone: posterior concentrated, no coverage; above: coverage, no concentration
    assert z.regime(lo / 4) == "small" and z.regime(math.sqrt(lo * hi)) == "danger" and z.regime(hi * 4) == "large"
    assert W[0] > 0.99 and C[0] < 0.01 and W[-1] < 0.1 and C[-1] > 0.99
    # lower edge: where C = 1/2, hence between where Thm 4.8's upper and lower bounds reach 1/2
    lb, ub = g.coverage_bounds(train, test, SIG, progress=False)
    s_ub = np.interp(0.5, ub.numpy(), SIG.numpy())
    s_lb = np.interp(0.5, lb.numpy(), SIG.numpy())
    step = float(SIG[1] / SIG[0])
    assert s_ub / step <= lo <= s_lb * step
    # upper edge: Thm 4.2 guarantees W >= (1-eps)(1-delta) * P(sigma <= sigma_hi(i)) ...
    los, his = g.concentration_thresholds(train, list(range(0, 200, 5)), 0.05, 0.05)
    assert hi >= torch.quantile(his, 0.2).item()
    # ... and the weight has left the point by sigma_lo
    assert hi < torch.quantile(los, 0.5).item()
    assert "danger zone" in str(z)


def test_danger_zone_scales_exactly_with_the_data():
    train, test = clusters(seed=10, per_train=12, per_test=6)
    z1 = rg.danger_zone(train, test, SIG, generator=gen(4), progress=False)
    z2 = rg.danger_zone(2 * train, 2 * test, 2 * SIG, generator=gen(4), progress=False)
    assert torch.equal(z1.weight, z2.weight) and torch.equal(z1.coverage, z2.coverage)
    assert z2.lower == pytest.approx(2 * z1.lower, rel=1e-12) and z2.upper == pytest.approx(2 * z1.upper, rel=1e-12)
    assert z2.crossing == pytest.approx(2 * z1.crossing, rel=1e-12)


def test_leave_one_out_coverage_agrees_with_held_out_test(zone):
    z, train, _ = zone
    zl = rg.danger_zone(train, None, SIG, generator=gen(5), progress=False)
    assert zl.leave_one_out and not z.leave_one_out
    assert zl.lower == pytest.approx(z.lower, rel=0.25) and zl.upper == pytest.approx(z.upper, rel=0.25)


def test_no_zone_when_levels_are_above_the_crossing(zone):
    z, train, test = zone
    z99 = rg.danger_zone(train, test, SIG, weight_level=0.995, coverage_level=0.995, generator=gen(3), progress=False)
    assert z99.empty and z99.interval is None and z99.ddpm_timesteps() is None
    assert z99.regime(z.crossing) == "medium"
    assert "no danger zone" in str(z99)


def test_ddpm_sigmas_and_timesteps():
    s = rg.ddpm_sigmas()
    assert s.shape == (1000,) and bool((s[1:] > s[:-1]).all())
    assert s[0].item() == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    beta = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - beta)
    assert np.allclose(s.numpy(), np.sqrt((1 - abar) / abar), rtol=1e-12)
    # the paper's "DDPM timesteps 125-325"
    assert rg.ddpm_timesteps((s[124].item(), s[324].item())) == (125, 325)
    inside = np.flatnonzero((s.numpy() >= 0.43) & (s.numpy() <= 1.39)) + 1
    assert rg.ddpm_timesteps((0.43, 1.39)) == (inside[0], inside[-1]) == (127, 323)
    assert rg.ddpm_timesteps((0.5, 0.5)) == rg.ddpm_timesteps((0.499, 0.501))
    t = rg.ddpm_timesteps((0.5, 0.5))[0]
    assert abs(math.log(s[t - 1].item() / 0.5)) <= abs(math.log(s[t].item() / 0.5))


def test_zone_to_ddpm_timesteps(zone):
    z, _, _ = zone
    t0, t1 = z.ddpm_timesteps()
    s = rg.ddpm_sigmas()
    assert 1 <= t0 <= t1 <= 1000
    assert s[t0 - 1] >= z.lower and s[t1 - 1] <= z.upper
    assert (t0 == 1 or s[t0 - 2] < z.lower) and (t1 == 1000 or s[t1] > z.upper)
    assert rg.ddpm_timesteps(z) == (t0, t1)


def test_bad_input():
    train, test = clusters(per_train=3, per_test=2)
    cases = [
        (lambda: rg.danger_zone(train, test, SIG, weight_level=1.5, progress=False), "weight_level"),
        (lambda: rg.danger_zone(train, test, SIG, coverage_level=0, progress=False), "coverage_level"),
        (lambda: rg.danger_zone(train[:1], test, SIG, progress=False), "train"),
        (lambda: rg.danger_zone(train, test[:, :3], SIG, progress=False), "dimension"),
        (lambda: rg.danger_zone(train, test, torch.tensor([0.1, 0.0]), progress=False), "sigmas"),
        (lambda: rg.ddpm_timesteps((1.0, 0.5)), "interval"),
        (lambda: rg.ddpm_timesteps((0.0, 0.5)), "interval"),
        (lambda: rg.ddpm_timesteps(0.5), "interval"),
        (lambda: rg.ddpm_sigmas(T=1), "T"),
        (lambda: rg.ddpm_sigmas(beta_T=1.5), "beta_T"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


def test_band_and_log_overlap_against_closed_forms():
    s = np.geomspace(0.01, 100, 401)
    # a Gaussian bump in log sigma, peak 20 at sigma = 1, width 0.5: half maximum at log s = +-0.5 sqrt(2 ln 2)
    y = 20 * np.exp(-np.log(s) ** 2 / (2 * 0.5 ** 2))
    lo, hi = rg.band(s, y, 0.5)
    half = 0.5 * math.sqrt(2 * math.log(2))
    assert abs(math.log(lo) + half) < 2e-3 and abs(math.log(hi) - half) < 2e-3
    assert rg.band(s, np.zeros_like(s)) is None
    assert rg.band(torch.as_tensor(s), torch.as_tensor(y), 1.0)[0] == pytest.approx(1.0, rel=0.03)
    assert rg.log_overlap((1, 4), (2, 100)) == pytest.approx(0.5)
    assert rg.log_overlap((1, 4), (0.1, 100)) == 1.0
    assert rg.log_overlap((1, 4), (5, 6)) == 0.0
    assert rg.log_overlap((2, 2), (1, 3)) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        rg.band(s, y, 0)
    with pytest.raises(ValueError):
        rg.log_overlap((4, 1), (1, 2))
    with pytest.raises(ValueError, match="entries"):
        rg.band(s, y[:-1])


# ---------------------------------------------------------------------------------------------
# the small-noise regime (Thm 4.9) and the coverage-edge estimate
# ---------------------------------------------------------------------------------------------
def test_disjoint_shells_sigma_is_the_touching_level():
    train, _ = clusters(d=16, k=3, per_train=5)
    s0 = rg.disjoint_shells_sigma(train)
    rm, rp = g.shell_radii(16)
    D = torch.cdist(train, train)
    D.fill_diagonal_(math.inf)
    assert s0 == pytest.approx(D.min().item() / (2 * rp), rel=1e-12)
    # just below: no point lies on two shells; just above, the midpoint of the closest pair does
    i, j = divmod(int(D.argmin()), D.shape[0])
    mid = 0.5 * (train[i] + train[j])
    assert (rg.shell_membership(mid[None], train, s0 * 1.01) >= 0).all()
    assert (rg.shell_membership(mid[None], train, s0 * 0.99) == -1).all()
    with pytest.raises(ValueError, match="data"):
        rg.disjoint_shells_sigma(train[:1])


def test_shell_membership_against_brute_force():
    train, test = clusters(d=32, k=4, per_train=6, per_test=5)
    for s in (0.05, 0.3, 1.0, 3.0):
        z = test + s * torch.randn(test.shape, generator=gen(8), dtype=F64)
        got = rg.shell_membership(z, train, s)
        rm, rp = g.shell_radii(32)
        D = torch.cdist(z, train)
        inside = (D >= s * rm) & (D <= s * rp)
        want = torch.where(inside.any(1), torch.where(inside, D, torch.full_like(D, math.inf)).argmin(1),
                           torch.full((z.shape[0],), -1))
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="sigma"):
        rg.shell_membership(test, train, 0.0)


def test_two_minimizers_of_the_shell_objective_differ_only_off_the_shells():
    train, test = clusters(d=64, k=4, per_train=5, per_test=5)
    s = 0.9 * rg.disjoint_shells_sigma(train)
    z, y = rg.shell_samples(train, s, generator=gen(4))
    rm, rp = g.shell_radii(64)
    nrm = (z - y).norm(dim=1) / s
    assert bool(((nrm >= rm) & (nrm <= rp)).all())
    # both fit every shell sample exactly (loss 0) ...
    assert torch.equal(rg.nearest_neighbor_denoiser(z, train), y)
    assert torch.equal(rg.shell_denoiser(z, train, s), y)
    # ... but off the shells one copies the nearest training point and the other returns its fallback
    zt = test + 0.1 * s * torch.randn(test.shape, generator=gen(5), dtype=F64)
    assert (rg.shell_membership(zt, train, s) == -1).all()
    nn = train[torch.cdist(zt, train).argmin(1)]
    assert torch.equal(rg.nearest_neighbor_denoiser(zt, train), nn)
    assert torch.equal(rg.shell_denoiser(zt, train, s), zt)
    assert torch.equal(rg.shell_denoiser(zt, train, s, fallback=lambda v, sg: 2 * v), 2 * zt)
    with pytest.raises(TypeError, match="fallback"):
        rg.shell_denoiser(zt, train, s, fallback=3)


def test_coverage_edge_estimate_predicts_where_coverage_is_one_half():
    train, test = clusters(d=256, k=10, per_train=20, per_test=20)
    sig = rg.default_sigmas(60, 1e-2, 1e1)
    lower, _ = g.coverage_bounds(train, test, sig, progress=False)
    edge = rg.crossing(sig, lower, 0.5)
    est = rg.coverage_edge_estimate(train, test)
    # exact formula
    dn = torch.cdist(test, train).min(1).values.median().item()
    _, rp = g.shell_radii(256)
    assert est == pytest.approx(dn / math.sqrt(rp ** 2 - 256), rel=1e-12)
    assert est == pytest.approx(edge, rel=0.1)
