"""Samplers, denoiser swaps, one-step outputs, Eq. 5 MSE and the empirical denoiser (paperlib.sampling)."""
import importlib
import math
import sys
import types

import pytest
import torch

from paperlib import sampling
from paperlib.edm import karras_sigmas

D_DIM = 6
MU = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.25, -0.1], dtype=torch.float64)
VAR = torch.tensor([0.05, 0.1, 0.25, 0.5, 0.8, 1.0], dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_denoiser(x, sigma):
    """Exact denoiser of N(MU, diag(VAR)): mu + v / (v + s^2) (x - mu)."""
    s2 = sigma.reshape(-1, 1).to(x.dtype) ** 2
    mu, v = MU.to(x.dtype), VAR.to(x.dtype)
    return mu + v / (v + s2) * (x - mu)


def exact_flow(x_start, s_start, s_end=0.0):
    """Exact probability-flow ODE map for the Gaussian: x - mu scales by sqrt((v + s^2) / (v + s0^2))."""
    return MU + (x_start - MU) * torch.sqrt((VAR + s_end ** 2) / (VAR + s_start ** 2))


class Recorder:
    """A fake denoiser that records the noise levels it is called at (and returns the Gaussian one)."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma):
        assert torch.all(sigma == sigma[0])
        self.sigmas.append(round(float(sigma[0]), 12))
        return gaussian_denoiser(x, sigma)


def _rel_err(out, exact):
    return ((out - exact).abs().max(0).values / exact.abs().max(0).values).max().item()


def test_heun_matches_exact_ode_solution():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, D_DIM, generator=g, dtype=torch.float64)
    exact = exact_flow(80.0 * z, 80.0)

    def err(steps, method):
        out = sampling.sample(gaussian_denoiser, 64, (D_DIM,), latents=z, dtype=torch.float64, steps=steps,
                              method=method)
        return _rel_err(out, exact)

    # The paper's 18-step schedule: a few per cent off the exact flow map for these variances
    # (steps shrink sigma by ~2x around sigma ~ sqrt(v)), Euler about three times worse.
    heun18, euler18 = err(18, "heun"), err(18, "euler")
    assert heun18 < 0.1 and euler18 > 2 * heun18
    # Convergence orders (step size ~ 1 / (steps - 1)): Heun is second order, Euler first order.
    order = lambda e_coarse, e_fine: math.log(e_coarse / e_fine) / math.log(399 / 99)
    heun400 = err(400, "heun")
    assert 1.8 < order(err(100, "heun"), heun400) < 2.4
    assert 0.8 < order(err(100, "euler"), err(400, "euler")) < 1.2
    assert heun400 < 2e-4  # high accuracy once the steps are fine
    # The float32 default agrees with float64 to float32 accuracy.
    out64 = sampling.sample(gaussian_denoiser, 64, (D_DIM,), latents=z, dtype=torch.float64)
    out32 = sampling.sample(gaussian_denoiser, 64, (D_DIM,), latents=z)
    assert out32.dtype == torch.float32
    assert (out32.double() - out64).abs().max().item() < 1e-4


def test_heun_trajectory_tracks_exact_solution():
    z = torch.randn(16, D_DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = karras_sigmas(200)
    final, traj = sampling.solve(gaussian_denoiser, 80.0 * z, sig, dtype=torch.float64, return_trajectory=True)
    assert traj.shape == (201, 16, D_DIM)
    torch.testing.assert_close(traj[-1], final)
    for i in range(0, 201, 10):
        exact = exact_flow(80.0 * z, 80.0, float(sig[i]))
        assert _rel_err(traj[i], exact) < 1e-3


def test_sampled_moments_match_gaussian_target():
    n = 4000
    # A fine schedule (256 steps), so that discretisation error is far below the Monte Carlo error.
    out = sampling.sample(gaussian_denoiser, n, (D_DIM,), generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64, batch_size=1000, steps=256)
    mean, var = out.mean(0), out.var(0)
    se_mean = torch.sqrt(VAR / n)
    # The EDM prior N(0, 80^2 I) is not exactly the data convolved with noise: the exact push-forward
    # has mean mu (1 - r), r = sqrt(v / (v + 6400)), and variance v (1 - v / (v + 6400)); both
    # differences are far below the Monte Carlo error here.
    assert torch.all((mean - MU).abs() < 5 * se_mean + MU.abs() * torch.sqrt(VAR / (VAR + 6400)))
    assert torch.all((var / VAR - 1).abs() < 5 * math.sqrt(2 / n))
    # ... and the test has power: the 18-step Euler sampler's variance is visibly off.
    out_e = sampling.sample(gaussian_denoiser, n, (D_DIM,), generator=torch.Generator().manual_seed(2),
                            dtype=torch.float64, method="euler")
    assert torch.any((out_e.var(0) / VAR - 1).abs() > 5 * math.sqrt(2 / n))


def test_batching_and_seed_do_not_change_samples():
    a = sampling.sample(gaussian_denoiser, 10, (D_DIM,), generator=torch.Generator().manual_seed(5), batch_size=3)
    b = sampling.sample(gaussian_denoiser, 10, (D_DIM,), generator=torch.Generator().manual_seed(5), batch_size=10)
    c = sampling.sample(gaussian_denoiser, 10, (D_DIM,), generator=torch.Generator().manual_seed(6), batch_size=10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_evaluation_count_and_noise_levels():
    sig = karras_sigmas(18)
    rec = Recorder()
    sampling.sample(rec, 3, (D_DIM,), generator=torch.Generator().manual_seed(0))
    assert len(rec.sigmas) == 35  # Heun on every step but the last
    expected = []
    for i in range(18):
        expected.append(round(float(sig[i]), 12))
        if i < 17:
            expected.append(round(float(sig[i + 1]), 12))
    assert rec.sigmas == pytest.approx(expected, rel=1e-6)
    rec_e = Recorder()
    sampling.sample(rec_e, 3, (D_DIM,), generator=torch.Generator().manual_seed(0), method="euler")
    assert rec_e.sigmas == pytest.approx([float(s) for s in sig[:-1]], rel=1e-6)


def test_swap_regions_convention():
    assert sampling.SWAP_REGIONS["medium"] == tuple(range(6, 13))  # the paper's steps 7-13
    steps = sorted(sum((list(v) for v in sampling.SWAP_REGIONS.values()), []))
    assert steps == list(range(18))  # the three regions partition the 18 steps
    sig = karras_sigmas(18)
    assert float(sig[6]) == pytest.approx(8.40, abs=0.005) and float(sig[12]) == pytest.approx(0.296, abs=0.001)
    # A sigma region selects steps by their start noise level.
    assert sampling.region_steps(("sigma", 0.25, 9.0)) == tuple(range(6, 13))
    assert sampling.region_steps([0, 17]) == (0, 17)
    with pytest.raises(ValueError):
        sampling.region_steps("huge")
    with pytest.raises(ValueError):
        sampling.region_steps([18])
    with pytest.raises(ValueError):
        sampling.region_steps("medium", karras_sigmas(10))


@pytest.mark.parametrize("region", ["large", "medium", "small"])
@pytest.mark.parametrize("method", ["heun", "euler"])
def test_swapped_denoiser_called_exactly_on_its_steps(region, method):
    sig = karras_sigmas(18)
    a, b = Recorder(), Recorder()
    sampling.sample(a, 2, (D_DIM,), generator=torch.Generator().manual_seed(0), method=method,
                    denoiser_for_step=sampling.swap(a, b, region))
    chosen = set(sampling.SWAP_REGIONS[region])
    exp_a, exp_b = [], []
    for i in range(18):
        target = exp_b if i in chosen else exp_a
        target.append(round(float(sig[i]), 12))
        if method == "heun" and i < 17:
            target.append(round(float(sig[i + 1]), 12))
    assert a.sigmas == pytest.approx(exp_a, rel=1e-6)  # float32 sampler: sigmas rounded to float32
    assert b.sigmas == pytest.approx(exp_b, rel=1e-6)
    assert len(a.sigmas) + len(b.sigmas) == (35 if method == "heun" else 18)
    if region == "medium" and method == "heun":
        assert len(b.sigmas) == 14
        assert min(b.sigmas) == pytest.approx(float(sig[13]), rel=1e-6)  # Heun correction of step 12
        assert max(b.sigmas) == pytest.approx(float(sig[6]), rel=1e-6)


def test_swap_changes_only_swapped_steps():
    """Swapping in a denoiser identical to the base one leaves samples unchanged; a different one changes them."""
    z = torch.randn(5, D_DIM, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    base = sampling.sample(gaussian_denoiser, 5, (D_DIM,), latents=z, dtype=torch.float64)
    same = sampling.sample(gaussian_denoiser, 5, (D_DIM,), latents=z, dtype=torch.float64,
                           denoiser_for_step=sampling.swap(gaussian_denoiser, lambda x, s: gaussian_denoiser(x, s), "medium"))
    torch.testing.assert_close(base, same, rtol=0, atol=0)
    shrink = lambda x, s: 0.5 * gaussian_denoiser(x, s)
    other = sampling.sample(gaussian_denoiser, 5, (D_DIM,), latents=z, dtype=torch.float64,
                            denoiser_for_step=sampling.swap(gaussian_denoiser, shrink, "medium"))
    assert (other - base).abs().max() > 1e-2


def test_one_step_outputs():
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(7, D_DIM, generator=g, dtype=torch.float64)
    sigmas = [0.01, 0.5, 3.0]
    out = sampling.one_step_outputs(gaussian_denoiser, x0, sigmas, torch.Generator().manual_seed(11), batch_size=3)
    assert out.shape == (3, 7, D_DIM)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for k, s in enumerate(sigmas):
        expected = gaussian_denoiser(x0 + s * noise, torch.full((7,), s, dtype=torch.float64))
        torch.testing.assert_close(out[k], expected)
    fresh = sampling.one_step_outputs(gaussian_denoiser, x0, sigmas, torch.Generator().manual_seed(11), shared_noise=False)
    torch.testing.assert_close(fresh[0], out[0])  # first draw identical
    assert not torch.allclose(fresh[1], out[1])
    with pytest.raises(ValueError, match="sigmas"):
        sampling.one_step_outputs(gaussian_denoiser, x0, [0.1, 0.0])


def test_denoising_mse_matches_mmse():
    """For Gaussian data and its exact denoiser, Eq. 5 equals the MMSE sum_j v_j s^2 / (v_j + s^2)."""
    g = torch.Generator().manual_seed(8)
    m = 3000
    x0 = MU + torch.sqrt(VAR) * torch.randn(m, D_DIM, generator=g, dtype=torch.float64)
    sigmas = [0.05, 0.5, 2.0]
    mse, se = sampling.denoising_mse(gaussian_denoiser, x0, sigmas, n_noise=2,
                                     generator=torch.Generator().manual_seed(9), return_se=True, batch_size=1000)
    for k, s in enumerate(sigmas):
        mmse = float((VAR * s ** 2 / (VAR + s ** 2)).sum())
        assert abs(float(mse[k]) - mmse) < 5 * float(se[k])
        assert float(se[k]) < 0.05 * mmse
    # A worse denoiser has a larger error.
    worse = sampling.denoising_mse(lambda x, s: gaussian_denoiser(x, s) + 0.05, x0, sigmas,
                                   generator=torch.Generator().manual_seed(9))
    assert torch.all(worse > mse)


def _softmax_denoiser(x, train, sigma):
    """Tiny float64 reference for Eq. 2-3."""
    x, train = x.double(), train.double()
    logits = -torch.cdist(x, train) ** 2 / (2 * sigma ** 2)
    return torch.softmax(logits, dim=1) @ train


@pytest.fixture
def geometry_module(monkeypatch):
    """paperlib.geometry if it exists, else a stand-in that uses the reference (checks the wiring only)."""
    try:
        return importlib.import_module("paperlib.geometry")
    except ImportError:
        stub = types.ModuleType("paperlib.geometry")
        stub.empirical_denoiser = lambda x, data, sigma: _softmax_denoiser(x, data, sigma).to(x.dtype)
        monkeypatch.setitem(sys.modules, "paperlib.geometry", stub)
        import paperlib
        monkeypatch.setattr(paperlib, "geometry", stub, raising=False)
        return stub


def test_empirical_denoiser_matches_softmax_reference(geometry_module):
    g = torch.Generator().manual_seed(0)
    train = torch.rand(20, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    emp = sampling.EmpiricalDenoiser(train)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    for s in (0.05, 0.5, 5.0):
        out = emp(x, torch.full((5,), s, dtype=torch.float64))
        assert out.shape == x.shape
        ref = _softmax_denoiser(x.reshape(5, -1), train.reshape(20, -1), s).reshape(x.shape)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # Mixed sigmas in one batch are handled row by row.
    sig = torch.tensor([0.05, 5.0, 0.05, 0.5, 5.0], dtype=torch.float64)
    out = emp(x, sig)
    for i in range(5):
        ref = _softmax_denoiser(x[i].reshape(1, -1), train.reshape(20, -1), float(sig[i]))
        torch.testing.assert_close(out[i].reshape(1, -1), ref, rtol=1e-9, atol=1e-9)
    # At tiny sigma it returns the nearest training image: sampling ends on training points.
    samples = sampling.sample(emp, 4, (1, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = torch.cdist(samples.reshape(4, -1), train.reshape(20, -1))
    assert d.min(1).values.max() < 1e-3
