"""Fuzz test of the geometry kernels (issue 12): random shapes, dtypes, scales, duplicates and
non-finite values. Every call either returns finite, bounded results or raises a ValueError/TypeError
whose message names one of the function's arguments."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paperlib import geometry, memorization

EXAMPLES = 150
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [torch.float64, torch.float64, torch.float32, torch.float32, torch.float32, torch.float16, torch.bfloat16,
          torch.int64, torch.uint8, torch.bool]
SIGMAS = [0.0, -1.0, float("nan"), float("inf"), 1e-300, 1e-100, 1e-30, 1e-6, 0.002, 0.3, 1.0, 80.0, 1e6, 1e30]
ARG_WORDS = ("x", "data", "train", "test", "samples", "sigma", "sigmas", "k", "index", "n_noise", "dtype", "eps",
             "delta", "d", "r", "tail", "mean", "cov", "dimension", "device")


@st.composite
def point_sets(draw):
    """``(x, data)``: float64 points then cast; with duplicates, a scale, maybe one non-finite entry."""
    n = draw(st.integers(1, 9))
    b = draw(st.integers(1, 4))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** draw(st.sampled_from([-20, -6, -2, 0, 0, 0, 2, 6, 20]))
    data = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    if draw(st.booleans()) and n > 1:  # exact duplicates
        data[-1] = data[0]
    if draw(st.booleans()):  # a far outlier
        data[0] *= 1e4
    x = torch.randn(b, d, generator=g, dtype=torch.float64) * scale
    if draw(st.booleans()):  # queries at training points
        x[0] = data[-1]
    bad = draw(st.sampled_from([None] * 9 + [float("nan"), float("inf"), -float("inf")]))
    if bad is not None:
        target = x if draw(st.booleans()) else data
        target.view(-1)[draw(st.integers(0, target.numel() - 1))] = bad
    dtype = draw(st.sampled_from(DTYPES))
    if dtype.is_floating_point:
        x, data = x.to(dtype), data.to(dtype)
    else:
        x, data = x.clamp(-100, 100).to(dtype), data.clamp(-100, 100).to(dtype)
    if draw(st.integers(0, 9)) == 0:  # mismatched dimension
        x = torch.cat([x, x[:, :1]], dim=1)
    return x, data


def clear_error(exc: Exception) -> bool:
    msg = str(exc)
    return isinstance(exc, (ValueError, TypeError)) and any(w in msg for w in ARG_WORDS)


OUTCOMES = {"result": 0, "clear error": 0}  # what the fuzzing tried (printed with pytest -s)


def run(fn):
    """``fn()``'s result, or None after checking that its exception is a clear error."""
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 -- the point is to see every kind of failure
        assert clear_error(exc), f"unclear error {type(exc).__name__}: {exc}"
        OUTCOMES["clear error"] += 1
        return None
    OUTCOMES["result"] += 1
    return out


def teardown_module(module):
    print(f"\ngeometry fuzz: {OUTCOMES['result']} calls returned checked results, "
          f"{OUTCOMES['clear error']} raised a clear error")


@SETTINGS
@given(point_sets(), st.sampled_from(SIGMAS))
def test_posterior_weights_and_denoiser(pair, sigma):
    x, data = pair
    w = run(lambda: geometry.posterior_weights(x, data, sigma))
    if w is not None:
        assert torch.isfinite(w).all() and (w >= 0).all() and (w <= 1 + 1e-3).all()
        assert torch.allclose(w.double().sum(1), torch.ones(w.shape[0], dtype=torch.float64), atol=1e-2)
    den = run(lambda: geometry.empirical_denoiser(x, data, sigma))
    if den is not None:
        assert torch.isfinite(den).all()
        lo, hi = data.double().amin(0), data.double().amax(0)
        slack = 1e-2 * (hi - lo).abs().max().clamp_min(1e-300) + 1e-6 * data.double().abs().max()
        assert (den.double() >= lo - slack).all() and (den.double() <= hi + slack).all()
    m = run(lambda: geometry.max_weight_at(x, data, sigma))
    if m is not None:
        assert torch.isfinite(m).all() and (m > 0).all() and (m <= 1 + 1e-3).all()


@SETTINGS
@given(point_sets(), st.integers(-1, 4))
def test_nearest_neighbors_and_one_third_rule(pair, k):
    x, data = pair
    res = run(lambda: geometry.nearest_neighbors(x, data, k))
    if res is not None:
        dist, idx = res
        assert torch.isfinite(dist).all() and (dist >= 0).all() and (dist.diff(dim=1) >= 0).all()
        ref = torch.cdist(x.double(), data.double(), compute_mode="donot_use_mm_for_euclid_dist")
        assert torch.allclose(dist, ref.gather(1, idx), rtol=1e-9, atol=0)
    r = run(lambda: memorization.one_third_rule(x, data))
    if r is not None:
        assert r.memorized.dtype == torch.bool and (r.d1 <= r.d2).all()


@SETTINGS
@given(point_sets(), st.lists(st.sampled_from(SIGMAS), min_size=1, max_size=3), st.integers(-1, 3))
def test_monte_carlo_curves(pair, sigmas, n_noise):
    x, data = pair
    gen = torch.Generator().manual_seed(0)
    res = run(lambda: geometry.posterior_weight_curves(data, sigmas, n_noise, gen, progress=False))
    if res is not None:
        for c in res:
            assert torch.isfinite(c).all() and (c >= 0).all() and (c <= 1 + 1e-6).all()
        mx, sw = res
        assert (sw <= mx + 1e-6).all()
    cov = run(lambda: geometry.coverage(data, x, sigmas, n_noise, gen, progress=False))
    if cov is not None:
        assert torch.isfinite(cov).all() and (cov >= 0).all() and (cov <= 1).all()
    loo = run(lambda: geometry.coverage(data, None, sigmas, n_noise, gen, leave_one_out=True, progress=False))
    if loo is not None:
        assert ((loo >= 0) & (loo <= 1)).all()


@SETTINGS
@given(point_sets(), st.lists(st.sampled_from(SIGMAS), min_size=1, max_size=3))
def test_coverage_bounds_and_thresholds(pair, sigmas):
    x, data = pair
    b = run(lambda: geometry.coverage_bounds(data, x, sigmas, progress=False))
    if b is not None:
        lo, hi = b
        assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
        assert ((lo >= 0) & (lo <= 1) & (hi <= 1)).all() and (hi >= lo - 1e-9).all()
    th = run(lambda: geometry.concentration_thresholds(data, 0))
    if th is not None:
        assert th.sigma_concentrated >= 0 and not math.isnan(th.sigma_spread)
        assert th.sigma_concentrated <= th.sigma_spread
    fp = run(lambda: geometry.failure_probability(data, 0, sigmas[0]))
    if fp is not None:
        assert 0 <= fp <= 1


@SETTINGS
@given(st.sampled_from([0.0, 1e-300, 1.0, 1e3, 1e12, 1e200, float("nan"), -1.0, float("inf")]),
       st.sampled_from(SIGMAS), st.sampled_from([-1, 0, 1, 2, 100, 3072, True]),
       st.sampled_from([5.0, 0.5, 0.0, float("nan"), 50.0]))
def test_shell_hit_probability(r, sigma, d, tail):
    p = run(lambda: geometry.shell_hit_probability(r, sigma, d, tail))
    if p is not None:
        assert torch.isfinite(p).all() and 0 <= float(p) <= 1
    radii = run(lambda: geometry.shell_radii(d, tail))
    if radii is not None:
        assert 0 <= radii[0] < radii[1] < math.inf


@SETTINGS
@given(point_sets(), st.sampled_from(SIGMAS))
def test_gaussian_linear_denoiser(pair, sigma):
    x, data = pair
    fit = run(lambda: geometry.GaussianLinearDenoiser.fit(data))
    if fit is None:
        return
    out = run(lambda: fit(x, sigma))
    if out is not None and x.dtype == torch.float64 and data.abs().max() < 1e100:
        assert torch.isfinite(out).all()
