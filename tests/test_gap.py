"""Gap training (Sec. 5): the sigma rejection sampler, the gap rules of ``paperlib.gaps``, the dummy-class
data path, and the commitment measurements of ``paperlib.trajectories``.

``tests/test_edm.py`` already checks that no sigma falls in a gap and a KS test against the renormalised
truncated log-normal for three float32 gaps, and ``tests/test_training.py`` that training with a gap
never sees gap sigmas and that dummy-class batches pair label 1 with the noise images. Here: the
closed-interval edges, float64 output, the renormalised mass of *each* side against an independent Monte
Carlo reference; the gap rules against an independent numpy DDPM schedule, closed-form crossings and a
Monte Carlo mass; commitment against a brute-force loop over the sampler's states; bootstrap intervals
against the normal approximation.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from paperlib import edm, gaps, geometry, regimes, sampling, training, trajectories

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gap_edges_are_rejected_and_float64_is_exact():
    lo, hi = 0.25, 0.75
    s = edm.sample_training_sigmas(30_000, gap=(lo, hi), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.float64)
    assert s.dtype == torch.float64 and s.shape == (30_000,)
    assert not ((s >= lo) & (s <= hi)).any()
    g = torch.Generator().manual_seed(5)
    first = edm.sample_training_sigmas(1, generator=g, dtype=torch.float64)
    again = edm.sample_training_sigmas(50, gap=(float(first[0]), 10.0), generator=torch.Generator().manual_seed(5),
                                       dtype=torch.float64)
    assert float(first[0]) not in again.tolist()


@pytest.mark.parametrize("gap", [(1.064, 5.079), (0.315, 1.419), (5.0, 80.0)])
def test_outside_distribution_is_the_original_renormalised(gap):
    """Compare with an independent reference: plain log-normal draws (numpy) with the gap removed."""
    lo, hi = gap
    n = 40_000
    s = edm.sample_training_sigmas(n, gap=gap, generator=torch.Generator().manual_seed(2)).double().numpy()
    assert not ((s >= lo) & (s <= hi)).any()
    ref = np.exp(np.random.default_rng(0).normal(-1.2, 1.2, size=3 * n))
    ref = ref[(ref < lo) | (ref > hi)][:n]
    assert stats.ks_2samp(np.log(s), np.log(ref)).pvalue > 1e-3
    below = stats.norm(-1.2, 1.2).cdf(math.log(lo))
    p_below = below / (1 - edm.lognormal_mass(lo, hi))
    assert abs((s < lo).mean() - p_below) < 5 * math.sqrt(p_below * (1 - p_below) / n) + 1e-12


# ---------------------------------------------------------------------------------------------- gap rules
def _numpy_ddpm_sigmas():
    beta = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - beta)
    return np.sqrt((1 - abar) / abar)


def _synthetic_zone(w_mid=math.log(2.0), c_mid=math.log(0.8), width=0.4):
    """A zone from closed-form curves: W falls (logistic in log sigma), C rises."""
    sig = regimes.default_sigmas(400)
    ls = sig.log()
    W = torch.sigmoid(-(ls - w_mid) / width)
    C = torch.sigmoid((ls - c_mid) / width)
    lo, hi, cr, cv = regimes._zone(sig.numpy(), W.numpy(), C.numpy(), 0.5, 0.5)
    return regimes.DangerZone(sigmas=sig, weight=W, coverage=C, weight_level=0.5, coverage_level=0.5,
                              lower=lo, upper=hi, crossing=cr, crossing_value=cv)


def _check_whole_timesteps(g: gaps.Gap, interval):
    """Independent: the gap's timesteps are exactly those whose (numpy) DDPM sigma lies in the interval."""
    s = _numpy_ddpm_sigmas()
    inside = np.nonzero((s >= interval[0]) & (s <= interval[1]))[0] + 1
    assert (g.t_lo, g.t_hi) == (inside[0], inside[-1])
    assert g.lo == pytest.approx(s[g.t_lo - 1], rel=1e-12) and g.hi == pytest.approx(s[g.t_hi - 1], rel=1e-12)
    z = (np.log([g.lo, g.hi]) + 1.2) / 1.2
    assert g.mass == pytest.approx(stats.norm.cdf(z[1]) - stats.norm.cdf(z[0]), rel=1e-9)


def test_zone_gap_is_the_zone_in_whole_ddpm_timesteps():
    zone = _synthetic_zone()
    # closed form: W = 1/2 at sigma = 2, C = 1/2 at sigma = 0.8
    assert zone.lower == pytest.approx(0.8, rel=1e-3) and zone.upper == pytest.approx(2.0, rel=1e-3)
    g = gaps.zone_gap(zone)
    _check_whole_timesteps(g, zone.interval)
    assert g.sigma == [g.lo, g.hi] and "zone" in str(g)
    # the round trip is idempotent: a gap made of whole timesteps maps to itself
    again = gaps.ddpm_round_trip(g.sigma)
    assert (again.t_lo, again.t_hi, again.lo, again.hi) == (g.t_lo, g.t_hi, g.lo, g.hi)


def test_sweep_gaps_follow_the_papers_fractions():
    zone = _synthetic_zone()
    full = gaps.zone_gap(zone)
    sweep = gaps.sweep_gaps(zone, (0.4, 0.7, 1.0))
    assert (sweep[1.0].t_lo, sweep[1.0].t_hi) == (full.t_lo, full.t_hi)
    for f, g in sweep.items():
        assert g.t_lo == full.t_lo and g.t_hi == full.t_lo + round(f * (full.t_hi - full.t_lo))
    masses = [sweep[f].mass for f in (0.4, 0.7, 1.0)]
    assert masses == sorted(masses)
    # the paper's CelebA sweep in these units: a zone of DDPM steps [100, 350] gives [100-200], [100-275]
    s = _numpy_ddpm_sigmas()
    paper_zone = regimes.DangerZone(sigmas=zone.sigmas, weight=zone.weight, coverage=zone.coverage, weight_level=0.5,
                                    coverage_level=0.5, lower=float(s[99]), upper=float(s[349]), crossing=None,
                                    crossing_value=None)
    got = gaps.sweep_gaps(paper_zone, (0.4, 0.7, 1.0))
    assert [(g.t_lo, g.t_hi) for g in got.values()] == [(100, 200), (100, 275), (100, 350)]


def test_extended_gap_starts_where_coverage_first_rises():
    zone = _synthetic_zone()
    g = gaps.extended_gap(zone, coverage_level=0.05)
    # closed form: C = 0.05 at log sigma = c_mid + width * logit(0.05)
    s_c = 0.8 * math.exp(0.4 * math.log(0.05 / 0.95))
    _check_whole_timesteps(g, (s_c * (1 + 2e-3), zone.upper))  # grid interpolation error << 1 DDPM step here
    assert g.lo == pytest.approx(s_c, rel=0.01) and g.t_hi == gaps.zone_gap(zone).t_hi
    assert g.mass > gaps.zone_gap(zone).mass


def test_control_gap_matches_mass_below_the_gap():
    zone = _synthetic_zone(w_mid=math.log(5.0), c_mid=math.log(2.0), width=0.3)
    g = gaps.extended_gap(zone, 0.05)
    c = gaps.control_gap(g, margin=0.5)
    assert c.hi <= g.lo * math.exp(-0.5) * (1 + 1e-12)
    assert c.mass == pytest.approx(g.mass, abs=0.005)
    # independent Monte Carlo: the log-normal's frequencies in both gaps agree
    x = np.exp(np.random.default_rng(3).normal(-1.2, 1.2, 400_000))
    f_g = ((x >= g.lo) & (x <= g.hi)).mean()
    f_c = ((x >= c.lo) & (x <= c.hi)).mean()
    assert abs(f_g - f_c) < 0.008
    with pytest.raises(ValueError, match="does not fit"):
        gaps.control_gap(gaps.ddpm_round_trip((0.1, 80.0)))


def test_gap_rules_reject_bad_input():
    zone = _synthetic_zone()
    with pytest.raises(TypeError, match="zone"):
        gaps.zone_gap((0.1, 1.0))
    with pytest.raises(ValueError, match="fractions"):
        gaps.sweep_gaps(zone, (0.0,))
    with pytest.raises(ValueError, match="coverage_level"):
        gaps.extended_gap(zone, 1.5)
    with pytest.raises(ValueError, match="interval"):
        gaps.ddpm_round_trip((2.0, 1.0))
    with pytest.raises(ValueError, match="margin"):
        gaps.control_gap(gaps.zone_gap(zone), margin=-1)
    empty = regimes.DangerZone(sigmas=zone.sigmas, weight=zone.weight, coverage=zone.coverage, weight_level=0.5,
                               coverage_level=0.5, lower=None, upper=None, crossing=None, crossing_value=None)
    with pytest.raises(ValueError, match="empty"):
        gaps.zone_gap(empty)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(1)
    pts = [tuple(p) for p in rng.integers(0, 6, size=(40, 2))]
    front = gaps.pareto_front(pts)
    # independent: a point is on the front iff its (a, b) is the lexicographic-min b among points with a' <= a ...
    for i, (a, b) in enumerate(pts):
        best_b = min(d for c, d in pts if c <= a)
        best_a = min(c for c, d in pts if d <= b)
        assert (i in front) == (b == best_b and a == best_a)
    assert gaps.pareto_front([(1, 2), (2, 1), (2, 2)]) == [0, 1]
    with pytest.raises(ValueError, match="points"):
        gaps.pareto_front([(1, float("nan"))])


def test_pareto_plot_rings_the_frontier_even_of_one_point():
    import matplotlib
    matplotlib.use("Agg")
    from paperlib import plotting
    fig, ax = plotting.figure()
    pts = [(60.0, 7.0), (80.0, 8.0), (85.0, 9.0)]  # the first dominates: a frontier of one model
    assert plotting.pareto_plot(ax, pts, ["gap", "zone gap", "baseline"], plotting.colors(3)) == [0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto frontier"]
    assert list(line.get_xdata()) == [60.0] and line.get_marker() == "o" and line.get_markerfacecolor() == "none"
    assert [t.get_text() for t in ax.texts] == ["gap", "zone gap", "baseline"]
    fig, ax = plotting.figure()
    assert plotting.pareto_plot(ax, [(1, 2), (2, 1), (2, 2)], list("abc"), plotting.colors(3)) == [0, 1]


# ---------------------------------------------------------------------------------------------- dummy class
@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_dummy_images_are_noise(noise):
    data = torch.zeros(400, 3, 8, 8)
    full = training.resolve_config({"dummy_class": True, "dummy_noise": noise})
    d = training._dummy_images(full, data)
    assert d.shape == data.shape
    flat = d.flatten().double().numpy()
    if noise == "uniform":
        assert stats.kstest(flat, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    else:
        assert stats.kstest(flat, stats.norm(0, full["sigma_data"]).cdf).pvalue > 1e-3
    assert torch.equal(d, training._dummy_images(full, torch.ones(400, 3, 8, 8)))
    other = training._dummy_images(training.resolve_config({"dummy_class": True, "dummy_noise": noise, "seed": 1}),
                                   data)
    assert not torch.equal(d, other)
    full = training.resolve_config({"dummy_class": True, "dummy_count": 7})
    assert training._dummy_images(full, data).shape == (7, 3, 8, 8)


def test_dummy_class_model_generates_class_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    data = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seen = []
    original = edm.edm_loss

    def recording(denoiser, x0, sigma, *args, **kwargs):
        seen.append(kwargs.get("class_labels").clone())
        return original(denoiser, x0, sigma, *args, **kwargs)

    monkeypatch.setattr(edm, "edm_loss", recording)
    cfg = {"steps": 12, "batch_size": 8, "warmup_steps": 2, "dummy_class": True,
           "network": {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": []}}
    model, _ = training.train(cfg, data, name="gapdummy", progress=False, device="cpu", num_threads=1)
    labels = torch.cat(seen)
    assert labels.dtype == torch.long and set(labels.tolist()) == {0, 1}
    assert abs(labels.float().mean().item() - 0.5) < 0.2
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        default = model(x, 0.7)
        assert torch.equal(default, model(x, 0.7, class_labels=0))
        assert not torch.allclose(default, model(x, 0.7, class_labels=1))


# ---------------------------------------------------------------------------------------------- trajectories
def test_bootstrap_rate_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    flags = torch.from_numpy(rng.random(2000) < 0.3)
    r = trajectories.bootstrap_rate(flags, n_boot=4000)
    p, n = float(flags.double().mean()), 2000
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert r.rate == pytest.approx(p) and r.n == n
    assert r.lo == pytest.approx(p - half, abs=0.006) and r.hi == pytest.approx(p + half, abs=0.006)
    # a list (seeds) is pooled
    pooled = trajectories.bootstrap_rate([flags[:700], flags[700:]], n_boot=4000)
    assert pooled.rate == pytest.approx(p) and pooled.n == n
    assert (trajectories.bootstrap_rate(torch.zeros(5, dtype=torch.bool)).lo,
            trajectories.bootstrap_rate(torch.zeros(5, dtype=torch.bool)).hi) == (0.0, 0.0)
    with pytest.raises(ValueError, match="flags"):
        trajectories.bootstrap_rate(torch.zeros(5))
    with pytest.raises(ValueError, match="level"):
        trajectories.bootstrap_rate(flags, level=1.0)


def _points(n=6, d=12, seed=0):
    return torch.randn(n, 1, 3, 4, generator=torch.Generator().manual_seed(seed)) * 0.5


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_commitment_matches_a_brute_force_loop(method):
    train = _points()
    emp = sampling.EmpiricalDenoiser(train)
    latents = torch.randn(40, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    res = trajectories.commitment(emp, train, latents, steps=12, method=method, batch_size=16)
    sig = edm.karras_sigmas(12)
    # brute force: the states along the trajectory, D at each, nearest neighbour by cdist
    final, traj = sampling.solve(emp, latents * float(sig[0]), sig, method=method, return_trajectory=True)
    flat = train.flatten(1).double()
    nn = torch.stack([torch.cdist(emp(traj[i], torch.full((40,), float(sig[i]))).flatten(1).double(), flat).argmin(1)
                      for i in range(12)])
    assert torch.equal(res.nn, nn)
    fin = torch.cdist(final.clamp(-1, 1).flatten(1).double(), flat)
    assert torch.equal(res.final_nn, fin.argmin(1))
    for j in range(40):
        expect = next(i for i in range(13) if all(int(nn[k, j]) == int(fin[j].argmin()) for k in range(i, 12)))
        assert int(res.commit_step[j]) == expect
    d2 = fin.sort(1).values
    assert torch.equal(res.memorized, d2[:, 0] < d2[:, 1] / 3)
    # the empirical optimum memorizes every sample; the committed fraction rises to 1
    assert res.memorized.all()
    frac = res.committed_fraction()
    assert (frac.diff() >= 0).all() and float(frac[-1]) == 1.0
    assert torch.equal(res.committed_fraction("all"), frac)
    assert torch.isnan(res.committed_fraction("not memorized")).all() and math.isnan(res.median_commit_sigma(False))
    assert res.commit_sigma.shape == (40,) and 0 < res.median_commit_sigma() <= 80


def test_commitment_of_a_constant_denoiser_is_immediate():
    train = _points()
    const = lambda x, s: train[2:3].expand(x.shape[0], -1, -1, -1).to(x.dtype)  # noqa: E731
    res = trajectories.commitment(const, train, torch.randn(5, 1, 3, 4), steps=8)
    assert (res.commit_step == 0).all() and (res.final_nn == 2).all()
    assert torch.equal(res.commit_sigma, torch.full((5,), float(edm.karras_sigmas(8)[0]), dtype=torch.float64))
    with pytest.raises(ValueError, match="latents"):
        trajectories.commitment(const, train, torch.randn(5, 12), steps=8)
    with pytest.raises(ValueError, match="among"):
        res.committed_fraction("some")


def test_window_swaps_bracket_the_pure_models():
    train = _points(8)
    emp = sampling.EmpiricalDenoiser(train)                    # memorizes everything
    lin = geometry.GaussianLinearDenoiser.fit(train.flatten(1))  # never copies

    def gauss(x, s):
        return lin(x.flatten(1).double(), float(s.reshape(-1)[0])).to(x.dtype).reshape(x.shape)

    latents = torch.randn(30, 1, 3, 4, generator=torch.Generator().manual_seed(2))
    windows = [tuple(range(18))] + trajectories.step_windows(18, 6)
    out = trajectories.window_swaps(emp, gauss, train, latents, windows)
    pure = {name: sampling.sample(m, 30, (1, 3, 4), method="euler", latents=latents) for name, m in
            (("emp", emp), ("gauss", gauss))}
    flat = train.flatten(1)
    from paperlib import memorization
    assert torch.equal(out["model_in_window"][0], memorization.is_memorized(pure["emp"].clamp(-1, 1), flat))
    assert torch.equal(out["partner_in_window"][0], memorization.is_memorized(pure["gauss"].clamp(-1, 1), flat))
    assert out["sigma_start"][0] == 80.0 and out["sigma_end"][0] == 0.0
    assert out["sigma_end"][1] == pytest.approx(out["sigma_start"][2])
    # the empirical optimum on the last, small-noise window alone already copies (it snaps to the nearest image)
    assert float(out["model_in_window"][-1].double().mean()) > 0.9
    assert trajectories.step_windows(7, 3) == [(0, 1, 2), (3, 4, 5), (6,)]
    with pytest.raises(ValueError, match="windows"):
        trajectories.window_swaps(emp, gauss, train, latents, [(18,)])
