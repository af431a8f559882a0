"""The three noise regimes and the danger zone (Sec. 4.2, App. E.4, Sec. 5).

- small sigma: max posterior weight ``W(sigma)`` (Def. 4.1) high, coverage ``C(sigma)`` (Def. 4.6) low;
- medium sigma (the danger zone): both high;
- large sigma: ``W`` low, ``C`` high.

:func:`danger_zone` computes both curves on a grid of noise levels for a training set (and a test set,
or leave-one-out) and returns the interval where both are high. :func:`ddpm_timesteps` maps an EDM
noise-level interval to DDPM timesteps (linear betas), as the paper does for Sec. 5 ("DDPM timesteps
125-325").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import checks, geometry

__all__ = ["DangerZone", "band", "danger_zone", "crossing", "log_overlap", "ddpm_sigmas", "ddpm_timesteps", "default_sigmas",
           "disjoint_shells_sigma", "shell_membership", "shell_samples", "nearest_neighbor_denoiser", "shell_denoiser",
           "coverage_edge_estimate"]


def default_sigmas(n: int = 64, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """``n`` noise levels, geometrically spaced over EDM's range ``[0.002, 80]`` (float64)."""
    n = checks.integer(n, "n", 1)
    sigma_min = checks.sigma(sigma_min, "sigma_min")
    sigma_max = checks.sigma(sigma_max, "sigma_max")
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max})")
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), n, dtype=torch.float64)


def _crossing_up(logs: np.ndarray, f: np.ndarray, level: float, i: int) -> float:
    """log-sigma where ``f`` crosses ``level`` between grid points ``i`` and ``i + 1`` (linear in log sigma)."""
    f0, f1 = f[i], f[i + 1]
    if f1 == f0:
        return float(logs[i + 1])
    tau = (level - f0) / (f1 - f0)
    return float(logs[i] + min(1.0, max(0.0, tau)) * (logs[i + 1] - logs[i]))


def crossing(sigmas, values, level: float) -> float:
    """The first noise level at which ``values`` (a curve on ``sigmas``) crosses ``level``, found by
    linear interpolation in ``log sigma`` between the two grid points around it; ``nan`` if it never
    does. Works for rising curves (coverage) and falling ones (posterior weight) alike."""
    s = np.log(np.asarray(checks.sigmas(sigmas, "sigmas"), dtype=float))
    y = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=float).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"values has {y.size} entries but sigmas has {s.size}")
    if not np.isfinite(y).all():
        raise ValueError("values contains NaN or infinite entries")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level):
        raise ValueError(f"level must be a finite number, got {level!r}")
    o = np.argsort(s)
    s, y = s[o], y[o]
    above = y >= level
    flips = np.nonzero(above[:-1] != above[1:])[0]
    if flips.size == 0:
        return float("nan")
    i = int(flips[0])
    return float(math.exp(s[i] + (level - y[i]) / (y[i + 1] - y[i]) * (s[i + 1] - s[i])))


@dataclass
class DangerZone:
    """Result of :func:`danger_zone`.

    ``lower``/``upper``: the noise-level interval where ``W >= weight_level`` and ``C >= coverage_level``
    (edges interpolated linearly in ``log sigma``; ``None`` when the curves never are both high).
    ``crossing``: the noise level where the curves cross (``W = C``), ``crossing_value`` their common value.
    """

    sigmas: torch.Tensor
    weight: torch.Tensor
    coverage: torch.Tensor
    weight_level: float
    coverage_level: float
    lower: float | None
    upper: float | None
    crossing: float | None
    crossing_value: float | None
    leave_one_out: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(lower, upper)``, or ``None`` if there is no danger zone at these levels."""
        return None if self.lower is None else (self.lower, self.upper)

    @property
    def empty(self) -> bool:
        return self.lower is None

    def regime(self, sigma) -> str:
        """``"small"`` (below the zone), ``"danger"``, ``"large"`` (above), by the curves at ``sigma``;
        ``"medium"`` where neither curve is high (no danger zone at these levels)."""
        s = checks.sigma(sigma)
        ls = np.log(self.sigmas.numpy())
        W = float(np.interp(math.log(s), ls, self.weight.cpu().numpy()))
        C = float(np.interp(math.log(s), ls, self.coverage.cpu().numpy()))
        hw, hc = W >= self.weight_level, C >= self.coverage_level
        if hw and hc:
            return "danger"
        if hw:
            return "small"
        if hc:
            return "large"
        return "medium"

    def at_level(self, level: float) -> tuple[float, float] | None:
        """The zone from the stored curves at another level for both (``W >= level`` and
        ``C >= level``): ``(sigma where C reaches level, sigma where W falls to it)``, or ``None``
        when empty. (A simpler rule than :func:`danger_zone`'s, which also handles curves that
        Monte Carlo noise makes cross a level several times.)"""
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        lo, hi = crossing(self.sigmas, self.coverage, level), crossing(self.sigmas, self.weight, level)
        return None if not lo <= hi else (lo, hi)

    def ddpm_timesteps(self, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> tuple[int, int] | None:
        """The zone as DDPM timesteps (see :func:`ddpm_timesteps`); ``None`` if the zone is empty."""
        return None if self.empty else ddpm_timesteps(self.interval, T, beta_1, beta_T)

    def __str__(self) -> str:
        if self.empty:
            zone = "no danger zone at these levels"
        else:
            zone = f"danger zone sigma in [{self.lower:.4g}, {self.upper:.4g}]"
        cross = "curves do not cross" if self.crossing is None else \
            f"curves cross at sigma = {self.crossing:.4g} (W = C = {self.crossing_value:.3f})"
        return (f"{zone} (W >= {self.weight_level:g} and C >= {self.coverage_level:g}"
                f"{', leave-one-out coverage' if self.leave_one_out else ''}); {cross}")


def _zone(sig: np.ndarray, W: np.ndarray, C: np.ndarray, wl: float, cl: float):
    """Interval rule (see :func:`danger_zone`) on a grid; returns (lower, upper, crossing, crossing_value)."""
    logs = np.log(sig)
    # crossing: first sign change of C - W from < 0 to >= 0 (W decreases, C increases with sigma)
    diff = C - W
    crossing = crossing_value = None
    for i in range(len(sig) - 1):
        if diff[i] < 0 <= diff[i + 1]:
            tau = -diff[i] / (diff[i + 1] - diff[i])
            crossing = float(math.exp(logs[i] + tau * (logs[i + 1] - logs[i])))
            crossing_value = float(W[i] + tau * (W[i + 1] - W[i]))
            break
    both = (W >= wl) & (C >= cl)
    if not both.any():
        return None, None, crossing, crossing_value
    # runs of consecutive grid points where both are high; take the one containing/closest to the crossing
    runs, i = [], 0
    while i < len(sig):
        if both[i]:
            j = i
            while j + 1 < len(sig) and both[j + 1]:
                j += 1
            runs.append((i, j))
            i = j + 1
        else:
            i += 1
    if crossing is not None:
        lc = math.log(crossing)
        run = min(runs, key=lambda r: 0.0 if logs[r[0]] <= lc <= logs[r[1]] else min(abs(logs[r[0]] - lc), abs(logs[r[1]] - lc)))
    else:
        run = max(runs, key=lambda r: r[1] - r[0])
    i0, i1 = run
    # lower edge: between i0 - 1 (one curve below its level) and i0
    lo = logs[i0]
    if i0 > 0:
        cand = []
        if C[i0 - 1] < cl:
            cand.append(_crossing_up(logs, C, cl, i0 - 1))
        if W[i0 - 1] < wl:
            cand.append(_crossing_up(logs, W, wl, i0 - 1))
        lo = max(cand) if cand else logs[i0]
    hi = logs[i1]
    if i1 < len(sig) - 1:
        cand = []
        if W[i1 + 1] < wl:
            cand.append(_crossing_up(logs, W, wl, i1))
        if C[i1 + 1] < cl:
            cand.append(_crossing_up(logs, C, cl, i1))
        hi = min(cand) if cand else logs[i1]
    return float(math.exp(lo)), float(math.exp(hi)), crossing, crossing_value


def danger_zone(train: torch.Tensor, test: torch.Tensor | None = None, sigmas=None, weight_level: float = 0.5,
                coverage_level: float = 0.5, *, n_noise: int = 4, n_points: int | None = None, x: float = 5.0,
                generator: torch.Generator | None = None, progress: bool = True) -> DangerZone:
    """Find the danger zone of a training set: where posterior weight and shell coverage are both high.

    Computes ``W(sigma)`` (:func:`paperlib.geometry.max_posterior_weight`, base points from ``train``)
    and ``C(sigma)`` (:func:`paperlib.geometry.coverage` of ``test`` by the shells of ``train``) on
    ``sigmas`` (default :func:`default_sigmas`, 64 levels over ``[0.002, 80]``). With ``test=None``
    the coverage is leave-one-out: each training point is a test point for the shells of the other
    ``N - 1`` (an unbiased estimate of the coverage of a size-``N - 1`` training set).

    **Rule.** The danger zone is the set of noise levels where ``W(sigma) >= weight_level`` and
    ``C(sigma) >= coverage_level``, both curves interpolated linearly in ``log sigma`` between grid
    points. Since ``W`` decreases and ``C`` increases with ``sigma``, it is one interval
    ``[lower, upper]``: ``lower`` is where ``C`` reaches its level, ``upper`` where ``W`` falls below its
    level (if Monte Carlo noise splits it, the piece containing the crossing is kept). It is empty when
    the curves cross below the levels. Also reported: the crossing point ``W(sigma) = C(sigma)``
    (App. E.4: the zone is a narrow interval around it). ``n_noise``/``n_points``/``generator``: Monte
    Carlo settings passed to both curves.
    """
    train = checks.finite(checks.points(train, "train", min_rows=2), "train")
    if test is not None:
        test = checks.finite(checks.points(test, "test"), "test")
        checks.pair(test, train, "test", "train")
    sig = default_sigmas() if sigmas is None else checks.sigmas(sigmas)
    sig = sig.sort().values
    for name, v in (("weight_level", weight_level), ("coverage_level", coverage_level)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 1):
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    W = geometry.max_posterior_weight(train, sig, n_noise, generator, n_points=n_points, progress=progress)
    if test is None:
        C = geometry.coverage(train, None, sig, n_noise, generator, tail=x, n_points=n_points, leave_one_out=True,
                              progress=progress)
    else:
        C = geometry.coverage(train, test, sig, n_noise, generator, tail=x, n_points=n_points, progress=progress)
    W, C = W.cpu(), C.cpu()
    lo, hi, cr, cv = _zone(sig.numpy(), W.numpy(), C.numpy(), float(weight_level), float(coverage_level))
    return DangerZone(sigmas=sig, weight=W, coverage=C, weight_level=float(weight_level),
                      coverage_level=float(coverage_level), lower=lo, upper=hi, crossing=cr, crossing_value=cv,
                      leave_one_out=test is None,
                      settings={"n_noise": n_noise, "n_points": n_points, "x": x, "n_train": train.shape[0],
                                "n_test": None if test is None else int(test.shape[0])})


def _ddpm_args(T, beta_1, beta_T):
    T = checks.positive_int(T, "T", 2)
    for name, v in (("beta_1", beta_1), ("beta_T", beta_T)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < 1):
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    return T, float(beta_1), float(beta_T)


def ddpm_sigmas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """EDM-equivalent noise levels of DDPM timesteps ``t = 1..T`` (float64, index ``t - 1``).

    Linear betas ``beta_t = beta_1 + (t - 1)(beta_T - beta_1)/(T - 1)``, ``abar_t = prod_{s<=t} (1 - beta_s)``;
    ``x_t / sqrt(abar_t) = x_0 + sigma_t n`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)`` (increasing in ``t``).
    """
    T, b1, bT = _ddpm_args(T, beta_1, beta_T)
    beta = torch.linspace(b1, bT, T, dtype=torch.float64)
    abar = torch.cumprod(1 - beta, dim=0)
    return ((1 - abar) / abar).sqrt()


def ddpm_timesteps(interval, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> tuple[int, int]:
    """Map an EDM noise-level interval ``(sigma_lo, sigma_hi)`` (or a :class:`DangerZone`) to DDPM
    timesteps ``(t_lo, t_hi)``, ``1 <= t <= T``: the first and last timestep whose ``sigma_t``
    (:func:`ddpm_sigmas`) lies in the interval. If no timestep falls inside (an interval narrower than
    one step), both are the timestep nearest to the interval's geometric mean (in ``log sigma``).
    """
    if isinstance(interval, DangerZone):
        if interval.empty:
            raise ValueError("interval: the danger zone is empty")
        interval = interval.interval
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a pair (sigma_lo, sigma_hi), got {interval!r}") from None
    lo = checks.sigma(lo, "interval[0]")
    hi = checks.sigma(hi, "interval[1]")
    if lo > hi:
        raise ValueError(f"interval must have sigma_lo <= sigma_hi, got ({lo}, {hi})")
    s = ddpm_sigmas(T, beta_1, beta_T)
    inside = torch.nonzero((s >= lo) & (s <= hi)).flatten()
    if inside.numel():
        return int(inside[0]) + 1, int(inside[-1]) + 1
    t = int(torch.argmin((s.log() - 0.5 * (math.log(lo) + math.log(hi))).abs())) + 1
    return t, t


def band(sigmas, values, fraction: float = 0.5) -> tuple[float, float] | None:
    """The noise-level interval around the maximum of a curve where it is at least ``fraction`` of
    that maximum (edges interpolated linearly in ``log sigma``): e.g. the band of Fig. 2 where a
    model's per-level memorization is at least half its peak. ``None`` if the curve is 0 everywhere."""
    s = np.asarray(checks.sigmas(sigmas, "sigmas"), dtype=float)
    y = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=float).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"values has {y.size} entries but sigmas has {s.size}")
    if not np.isfinite(y).all():
        raise ValueError("values contains NaN or infinite entries")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    o = np.argsort(s)
    s, y = s[o], y[o]
    k = int(np.argmax(y))
    if y[k] <= 0:
        return None
    level = fraction * y[k]
    ls = np.log(s)
    i = k
    while i > 0 and y[i - 1] >= level:
        i -= 1
    j = k
    while j < len(s) - 1 and y[j + 1] >= level:
        j += 1
    lo = ls[i] if i == 0 else ls[i - 1] + (level - y[i - 1]) / (y[i] - y[i - 1]) * (ls[i] - ls[i - 1])
    hi = ls[j] if j == len(s) - 1 else ls[j] + (y[j] - level) / (y[j] - y[j + 1]) * (ls[j + 1] - ls[j])
    return float(math.exp(lo)), float(math.exp(hi))


def log_overlap(a, b) -> float:
    """The share of interval ``a = (lo, hi)`` (noise levels) that lies inside ``b``, measured in
    ``log sigma``: 1 when ``a`` is inside ``b``, 0 when they are disjoint. A point interval counts
    as 1 or 0 by whether it lies in ``b``."""
    (a0, a1), (b0, b1) = (tuple(checks.sigma(v, name) for v, name in zip(iv, ("lo", "hi")))
                          for iv in (a, b))
    if a0 > a1 or b0 > b1:
        raise ValueError(f"intervals must have lo <= hi, got {a!r} and {b!r}")
    la0, la1, lb0, lb1 = (math.log(v) for v in (a0, a1, b0, b1))
    if la1 == la0:
        return float(lb0 <= la0 <= lb1)
    return max(0.0, min(la1, lb1) - max(la0, lb0)) / (la1 - la0)


# ----------------------------------------------------------------------------------------------
# the small-noise regime: Theorem 4.9 (App. B.2) on disjoint shells
# ----------------------------------------------------------------------------------------------
def disjoint_shells_sigma(data: torch.Tensor, tail: float = 5.0) -> float:
    """The largest noise level below which the Gaussian shells ``S_sigma(y_i)`` (Eq. 6) of ``data`` are
    pairwise disjoint, the hypothesis of Theorem 4.9 / B.6: ``min_{i != j} ||y_i - y_j|| / (2 r_+)``.

    Two shells of radii ``[sigma r_-, sigma r_+]`` around centres at distance ``D`` meet iff
    ``D <= 2 sigma r_+`` (in dimension ``d >= 2``), so they are all disjoint iff ``sigma`` is below this
    value. Then a point of ``S_sigma(y_i)`` is strictly closer to ``y_i`` than to any other ``y_j``."""
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    _, rp = geometry.shell_radii(data.shape[1], tail)
    dist = geometry.nearest_neighbor_distances(data, data, 2)  # column 0: the point itself (or a duplicate)
    return float(dist[:, 1].min()) / (2.0 * rp)


def shell_membership(z: torch.Tensor, data: torch.Tensor, sigma, tail: float = 5.0) -> torch.Tensor:
    """For each row of ``z``, the index of the nearest training point ``y_i`` whose shell
    ``S_sigma(y_i) = {sigma r_- <= ||z - y_i|| <= sigma r_+}`` (Eq. 6) contains it, or ``-1`` when ``z`` lies
    on no shell (``(b,)`` long). Exact float64 distances, streamed over chunks of ``data``."""
    z = checks.points(z, "z")
    data = checks.points(data, "data")
    checks.pair(z, data, "z", "data")
    checks.finite(z, "z")
    checks.finite(data, "data")
    s = checks.sigma(sigma)
    rm, rp = geometry.shell_radii(data.shape[1], tail)
    lo, hi = s * rm, s * rp
    b, n = z.shape[0], data.shape[0]
    best = torch.full((b,), math.inf, dtype=torch.float64, device=z.device)
    idx = torch.full((b,), -1, dtype=torch.long, device=z.device)
    z64 = z.to(torch.float64)
    rows = max(1, (16 * 2**20) // (8 * max(1, b)))
    for c0 in range(0, n, rows):
        dist = torch.cdist(z64, data[c0:c0 + rows].to(torch.float64))
        dist = torch.where((dist >= lo) & (dist <= hi), dist, torch.full_like(dist, math.inf))
        v, i = dist.min(dim=1)
        better = v < best
        best = torch.where(better, v, best)
        idx = torch.where(better, i + c0, idx)
    return idx


def shell_samples(data: torch.Tensor, sigma, generator: torch.Generator | None = None, tail: float = 5.0):
    """Noisy training samples on their own shell, the training inputs of Theorem 4.9's shell-only
    objective: ``(z, y)`` with ``z_i = y_i + sigma n_i``, ``n_i ~ N(0, I_d)`` conditioned on
    ``r_- <= ||n_i|| <= r_+`` (redrawn until it holds; Lemma 4.5 makes a redraw rare). ``tail``: the
    Laurent-Massart parameter of the shell radii (the paper's ``x``), here and below."""
    data = checks.points(data, "data")
    checks.finite(data, "data")
    s = checks.sigma(sigma)
    rm, rp = geometry.shell_radii(data.shape[1], tail)
    cd = data.dtype if data.dtype in (torch.float32, torch.float64) else torch.float32
    g = checks.generator(generator)

    def randn(rows):
        if g is None:
            return torch.randn(rows, data.shape[1], device=data.device, dtype=cd)
        return torch.randn(rows, data.shape[1], generator=g, device=g.device, dtype=cd).to(data.device)

    noise = randn(data.shape[0])
    for _ in range(1000):
        nn = noise.norm(dim=1)
        off = (nn < rm) | (nn > rp)
        if not bool(off.any()):
            break
        noise[off] = randn(int(off.sum()))
    else:
        raise RuntimeError("could not draw noise on the shell (x too small?)")
    return data.to(cd) + s * noise, data.to(cd)


def nearest_neighbor_denoiser(z: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """``D_NN(z)``: the nearest training point of each row of ``z`` (the ``sigma -> 0`` limit of the
    empirical optimal denoiser, and one of Theorem 4.9's global minimizers). Shape of ``z``."""
    shape = z.shape if isinstance(z, torch.Tensor) else None
    zf = checks.points(z, "z")
    data = checks.points(data, "data")
    _, idx = geometry.nearest_neighbors(zf, data, 1, names=("z", "data"))
    return data[idx[:, 0]].to(zf.dtype).reshape(shape)


def shell_denoiser(z: torch.Tensor, data: torch.Tensor, sigma, fallback=None, tail: float = 5.0) -> torch.Tensor:
    """A global minimizer of Theorem 4.9's shell-only objective that is *not* a nearest-neighbour map:
    ``y_i`` for ``z`` on the shell ``S_sigma(y_i)`` (:func:`shell_membership`), ``fallback(z, sigma)`` off
    every shell (default: ``z`` itself). With disjoint shells its loss on shell samples is 0, as for
    :func:`nearest_neighbor_denoiser`; the two differ only off the shells."""
    shape = z.shape if isinstance(z, torch.Tensor) else None
    zf = checks.points(z, "z")
    data = checks.points(data, "data")
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be callable (z, sigma) -> tensor or None, got {type(fallback).__name__}")
    idx = shell_membership(zf, data, sigma, tail)
    off = zf if fallback is None else fallback(zf, sigma).reshape(zf.shape).to(zf.dtype)
    on = data[idx.clamp_min(0)].to(zf.dtype)
    return torch.where((idx >= 0).unsqueeze(1), on, off).reshape(shape)


def coverage_edge_estimate(train: torch.Tensor, test: torch.Tensor, tail: float = 5.0) -> float:
    """The noise level where the coverage reaches about 1/2, from distances alone.

    ``C(sigma)`` is close to its Theorem 4.8 lower bound ``E phi_sigma(d_NN(x0))`` (Fig. 6), and
    ``phi_sigma(r)`` falls from about 1 to 0 where the mean ``r^2 + sigma^2 d`` of ``||a + sigma n||^2``
    crosses the outer shell radius ``sigma^2 r_+^2``, i.e. at ``r = sigma sqrt(r_+^2 - d)``. Hence
    ``C = 1/2`` near ``median_{x0 in test} d_NN(x0) / sqrt(r_+^2 - d)``."""
    train = checks.points(train, "train")
    test = checks.points(test, "test")
    checks.pair(test, train, "test", "train")
    d = train.shape[1]
    _, rp = geometry.shell_radii(d, tail)
    dn = geometry.nearest_neighbor_distances(test, train, 1)[:, 0]
    return float(dn.median()) / math.sqrt(rp * rp - d)
