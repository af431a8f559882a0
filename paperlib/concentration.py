"""Posterior concentration thresholds: paper Sec. 4.1, Theorem 4.2 (and Remark 4.3, Corollary A.2 of App. A).

For a training point ``y_1 = data[index]`` and ``x = y_1 + sigma n``, Theorem 4.2 gives two noise levels:

* ``sigma_concentrated`` (the notes' ``sigma_hi``): for every ``sigma`` below it, ``w_1(x; sigma) >= 1 - eps``
  with probability ``>= 1 - delta`` -- the posterior concentrates on the point;
* ``sigma_spread`` (the notes' ``sigma_lo``): for every ``sigma`` above it, ``w_1(x; sigma) <= eps`` with
  probability ``>= 1 - delta`` -- the posterior has spread over other points.

:func:`concentration_thresholds` computes both (a :class:`Thresholds` pair); :func:`failure_probability`
is part 1's ``delta`` as a function of ``sigma`` (the smallest ``delta`` with ``sigma <= sigma_concentrated``);
:func:`threshold_monte_carlo` checks the theorem by simulation (Remark 4.3); :func:`lemma_a1_monte_carlo`
checks Lemma A.1 (Eq. 18: the empirical denoiser stays within ``eps R_1`` of the point); :func:`corollary_a2`
is the companion's form of Corollary A.2 (flow matching), with its Monte Carlo check.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import special as _special
from scipy import stats as _stats

from . import checks
from .neighbors import nearest_neighbors
from .posterior import log_posterior_weights
from .shells import shell_radii

__all__ = ["Thresholds", "concentration_thresholds", "failure_probability", "ThresholdMonteCarlo",
           "threshold_monte_carlo", "CorollaryA2", "corollary_a2", "LemmaA1", "lemma_a1_monte_carlo"]


class Thresholds(NamedTuple):
    """Theorem 4.2's pair, in the order ``(sigma_lo, sigma_hi)`` of the notes (so ``lo, hi = ...`` still works).

    ``sigma_spread``: above it the point's weight is ``<= eps`` (w.p. ``>= 1 - delta``), the larger one.
    ``sigma_concentrated``: below it the point's weight is ``>= 1 - eps`` (w.p. ``>= 1 - delta``), the smaller.
    """

    sigma_spread: float | torch.Tensor
    sigma_concentrated: float | torch.Tensor


def _indices(index, n: int) -> tuple[list[int], bool]:
    """``index`` (an int, a sequence or 1-D tensor of ints) as a list of ints in range, and whether it was scalar."""
    if isinstance(index, (str, bytes)):
        raise ValueError(f"index must be an int or a sequence of ints, got the string {index!r}")
    if isinstance(index, torch.Tensor):
        if index.dim() > 1 or index.dtype in (torch.bool,) or index.is_floating_point() or index.is_complex():
            raise ValueError(f"index must be an int or a 1-D integer tensor, got {index.dtype} of shape {tuple(index.shape)}")
        scalar = index.dim() == 0
        idx = [int(index)] if scalar else index.tolist()
    elif isinstance(index, (bool, np.bool_)):
        raise ValueError(f"index must be an int or a sequence of ints, got {index!r}")
    elif isinstance(index, (int, np.integer)):
        scalar, idx = True, [int(index)]
    else:
        try:
            idx = list(index)
        except TypeError:
            raise ValueError(f"index must be an int or a sequence of ints, got {index!r}") from None
        scalar = False
        for i in idx:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise ValueError(f"index must hold ints, got {i!r} ({type(i).__name__})")
        idx = [int(i) for i in idx]
    if not idx:
        raise ValueError("index must be an int or a non-empty sequence of ints")
    for i in idx:
        if not -n <= i < n:
            raise ValueError(f"index {i} out of range for data with {n} points")
    return [i % n for i in idx], scalar


def _distances_from(data: torch.Tensor, index: int) -> np.ndarray:
    """Exact (float64) distances from ``data[index]`` to every other point."""
    n = data.shape[0]
    y0 = data[index].to(torch.float64)
    out = torch.empty(n, dtype=torch.float64, device=data.device)
    rows = max(1, (16 * 2**20) // (8 * data.shape[1]))
    for r0 in range(0, n, rows):
        out[r0:r0 + rows] = torch.linalg.vector_norm(data[r0:r0 + rows].to(torch.float64) - y0, dim=1)
    keep = torch.ones(n, dtype=torch.bool, device=data.device)
    keep[index] = False
    return np.sort(out[keep].cpu().numpy())


def _bisect_log(ok, good: float, bad: float) -> float:
    """Geometric bisection of a monotone predicate with ``ok(good)`` true and ``ok(bad)`` false: the
    last point found where it holds, within a relative ``1e-12`` of the boundary (at most 100 halvings)."""
    for _ in range(100):
        mid = math.sqrt(good * bad)
        if ok(mid):
            good = mid
        else:
            bad = mid
        if max(good, bad) / min(good, bad) < 1 + 1e-12:
            break
    return good


def _thresholds_one(delta_j: np.ndarray, eps: float, delta: float, sharp: bool) -> tuple[float, float]:
    M = delta_j.size  # N - 1
    # ---- sigma_hi (w_1 >= 1 - eps) ----
    L = math.log((1 - eps) * M / eps)
    c = float(_stats.norm.isf(delta / M))
    sigma_hi = float(delta_j[0]) / (c + math.sqrt(c * c + 2 * L))
    if sharp and delta_j[0] > 0:
        def fail_hi(s):  # sum_j P(G > delta_j/(2s) - L s/delta_j)
            return float(_special.ndtr(-(delta_j / (2 * s) - L * s / delta_j)).sum())
        hi_s = sigma_hi
        while fail_hi(hi_s * 2) <= delta:
            hi_s *= 2
        sigma_hi = _bisect_log(lambda s: fail_hi(s) <= delta, good=sigma_hi, bad=2 * hi_s)
    # ---- sigma_lo (w_1 <= eps) ----
    ks = np.arange(1, M + 1)
    valid = eps * ks > 1 - eps
    if not valid.any():
        return math.inf, sigma_hi
    ks = ks[valid]
    B = np.log(eps * ks / (1 - eps))
    ck = _stats.norm.isf(delta / ks)
    dk = delta_j[ks - 1]
    lo_k = dk * (ck + np.sqrt(ck * ck + 2 * B)) / (2 * B)
    sigma_lo = float(lo_k.min())
    if sharp:
        cand = np.unique(np.concatenate([np.geomspace(ks[0], ks[-1], 48).round().astype(int), [ks[np.argmin(lo_k)]]]))
        best = sigma_lo
        for k in cand:
            Bk = math.log(eps * k / (1 - eps))
            dj = delta_j[:k]
            if dj[-1] == 0:
                return 0.0, sigma_hi

            def fail_lo(s, dj=dj, Bk=Bk):  # sum_{j<=k} P(G < delta_j/(2s) - B s/delta_j)
                with np.errstate(divide="ignore"):
                    arg = np.where(dj > 0, dj / (2 * s) - Bk * s / np.where(dj > 0, dj, 1), -np.inf)
                return float(_special.ndtr(arg).sum())
            hi_s = best
            if fail_lo(hi_s) > delta:
                continue
            lo_s = hi_s
            while lo_s > 0 and fail_lo(lo_s / 2) <= delta and lo_s > 1e-300:
                lo_s /= 2
            best = min(best, _bisect_log(lambda s: fail_lo(s) <= delta, good=hi_s, bad=lo_s / 2))
        sigma_lo = best
    return sigma_lo, sigma_hi


def concentration_thresholds(data: torch.Tensor, index, eps: float = 0.05, delta: float = 0.05, *,
                             sharp: bool = False) -> Thresholds:
    r"""Theorem 4.2 for the point ``y_1 = data[index]``: a :class:`Thresholds` pair
    ``(sigma_spread, sigma_concentrated)`` (the notes' ``(sigma_lo, sigma_hi)``) such that, for
    ``x = y_1 + sigma n`` with ``n ~ N(0, I_d)``,

    1. for every ``sigma <= sigma_hi``: ``P(w_1(x; sigma) >= 1 - eps) >= 1 - delta``;
    2. for every ``sigma >= sigma_lo``: ``P(w_1(x; sigma) <= eps) >= 1 - delta``.

    **Derivation.** Let ``a_j = y_1 - y_j``, ``delta_j = ||a_j||`` (sorted, ``delta_(1) <= ...``,
    ``M = N - 1`` other points) and ``G_j = -<a_j, n>/delta_j ~ N(0, 1)`` (not independent; only
    union bounds are used). Expanding the squares,
    ``R_j := w_j / w_1 = exp(-delta_j^2/(2 sigma^2) + delta_j G_j / sigma)`` and ``w_1 = 1/(1 + sum_j R_j)``.

    *Small sigma.* ``w_1 >= 1 - eps`` iff ``sum_j R_j <= eps/(1-eps)``, implied by
    ``R_j <= eps/((1-eps) M)`` for all ``j``, i.e. by ``G_j <= g(delta_j)`` with
    ``g(t) = t/(2 sigma) - L sigma / t``, ``L = ln((1-eps) M / eps) > 0``. Union bound:
    ``P(fail) <= sum_j Phi(-g(delta_j))``. ``g`` increases in ``t``, so ``g(delta_j) >= g(delta_(1))``, and
    ``g(delta_(1)) >= c := Phi^{-1}(1 - delta/M)`` makes ``P(fail) <= M delta/M = delta``. With
    ``s = sigma/delta_(1)`` the condition is ``1 - 2 c s - 2 L s^2 >= 0``, i.e.

        sigma_hi = delta_(1) / (c + sqrt(c^2 + 2 L)),   c = Phi^{-1}(1 - delta/(N-1)),
                   L = ln((1 - eps)(N - 1)/eps),

    and it holds for every ``sigma <= sigma_hi`` (``g`` decreases in ``sigma``). (Notes' form.)

    *Large sigma.* ``w_1 <= eps`` iff ``sum_j R_j >= (1-eps)/eps``, implied for any ``k`` by
    ``R_j >= (1-eps)/(eps k)`` for the ``k`` nearest ``j``, i.e. ``G_j >= delta_j/(2 sigma) - B_k sigma/delta_j``
    with ``B_k = ln(eps k/(1-eps))``; this needs ``B_k > 0``, i.e. ``k > (1-eps)/eps``. Union bound over
    those ``k`` terms: ``P(fail) <= sum_{j<=k} Phi(delta_j/(2 sigma) - B_k sigma/delta_j)``; the argument
    increases in ``delta_j``, so it is ``<= k Phi(delta_(k)/(2 sigma) - B_k sigma/delta_(k))`` which is
    ``<= delta`` once ``B_k sigma/delta_(k) - delta_(k)/(2 sigma) >= c_k := Phi^{-1}(1 - delta/k)``,
    i.e. ``2 B_k s^2 - 2 c_k s - 1 >= 0`` with ``s = sigma/delta_(k)``:

        sigma_lo = min_{k: (1-eps)/eps < k <= N-1}  delta_(k) (c_k + sqrt(c_k^2 + 2 B_k)) / (2 B_k),
                   B_k = ln(eps k/(1 - eps)),   c_k = Phi^{-1}(1 - delta/k),

    valid for every ``sigma >= sigma_lo`` (the left side increases in ``sigma``). ``k`` depends only
    on the data, so minimising over it is free. If ``N - 1 <= (1-eps)/eps`` no ``k`` qualifies
    (``w_1 -> 1/N > eps`` as ``sigma -> inf``) and ``sigma_lo = inf``.

    ``sharp=True`` keeps the per-``j`` union bounds instead of the worst term: ``sigma_hi`` becomes the
    largest ``sigma`` with ``sum_j Phi(-g(delta_j)) <= delta`` and ``sigma_lo`` the smallest ``sigma``
    with ``sum_{j<=k} Phi(delta_j/(2 sigma) - B_k sigma/delta_j) <= delta`` (both sums are monotone in
    ``sigma``; found by bisection, ``k`` over a geometric grid) -- valid and never looser.

    ``index``: an int (returns two floats) or a sequence / 1-D tensor of ints (returns two float64 tensors).
    ``0 < eps < 1/2``, ``0 < delta < 1``; ``data`` needs ``N >= 2`` points.
    """
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    eps = checks.probability(eps, "eps", 0.5)
    delta = checks.probability(delta, "delta")
    if not isinstance(sharp, (bool, np.bool_)):
        raise ValueError(f"sharp must be True or False, got {sharp!r}")
    n = data.shape[0]
    idx, scalar = _indices(index, n)
    res = [_thresholds_one(_distances_from(data, i), eps, delta, bool(sharp)) for i in idx]
    if scalar:
        return Thresholds(*res[0])
    lo = torch.tensor([r[0] for r in res], dtype=torch.float64, device=data.device)
    hi = torch.tensor([r[1] for r in res], dtype=torch.float64, device=data.device)
    return Thresholds(lo, hi)


def _nn_other(data: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """``Delta_(1)``: the distance from each ``data[i]`` to its nearest *other* point (float64, exact).

    The point itself is at distance 0 and comes first; an exact copy also has distance 0, so the second
    nearest is the nearest other point in every case."""
    return nearest_neighbors(data[torch.as_tensor(idx, device=data.device)], data, 2)[0][:, 1]


def _delta1(nn: np.ndarray, n: int, sigma, eps: float) -> np.ndarray:
    """``min(1, (n - 1) Phi(-nn/(2 sigma) + L sigma/nn))``, ``L = ln((1-eps)(n-1)/eps)``; 1 where ``nn = 0``."""
    L = math.log((1 - eps) * (n - 1) / eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        arg = np.where(nn > 0, -nn / (2 * sigma) + L * sigma / np.where(nn > 0, nn, 1.0), np.inf)
    return np.minimum(1.0, (n - 1) * _special.ndtr(arg))


def failure_probability(data: torch.Tensor, index, sigma, eps: float = 0.05):
    r"""Theorem 4.2, part 1, as a failure probability: the smallest ``delta`` for which ``sigma`` is below
    ``sigma_concentrated(eps, delta)`` of the point ``data[index]``, i.e.

        delta_1(sigma) = min(1, (N - 1) Phi(-Delta_(1) / (2 sigma) + L sigma / Delta_(1))),
        L = ln((1 - eps)(N - 1) / eps),

    with ``Delta_(1)`` the distance to the nearest other training point (so ``P(w_1 >= 1 - eps) >= 1 - delta_1``
    at this ``sigma``). ``sigma``: a number or a tensor broadcasting with ``index``. A point with an
    exact copy (``Delta_(1) = 0``) has ``delta_1 = 1``. Returns a float for an int ``index``, else a
    float64 tensor.
    """
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    eps = checks.probability(eps, "eps", 0.5)
    n = data.shape[0]
    idx, scalar = _indices(index, n)
    if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
        sig = checks.sigmas(sigma, "sigma").numpy()
    else:
        sig = np.asarray(checks.sigma(sigma))
    out = _delta1(_nn_other(data, idx).cpu().numpy(), n, sig, eps)
    if scalar and out.size == 1:
        return float(out.reshape(-1)[0])
    return torch.as_tensor(out, dtype=torch.float64)


class ThresholdMonteCarlo(NamedTuple):
    """Result of :func:`threshold_monte_carlo` (``p`` points, ``S`` noise levels, ``m`` noises per point).

    ``points``: the data indices checked ``(p,)``. ``thresholds``: their :class:`Thresholds` (float64 ``(p,)``).
    ``sigmas``: the grid ``(S,)``. ``weights``: the point's own weight ``w_1(y_1 + sigma n; sigma)``
    ``(S, p, m)`` (noise shared across the grid). ``p_concentrated`` / ``p_spread``: the fractions of
    draws with ``w_1 >= 1 - eps`` / ``w_1 <= eps`` on the grid ``(S, p)``. ``at_concentrated`` /
    ``at_spread``: the same fractions at each point's own ``sigma_concentrated`` / ``sigma_spread``, from
    ``4 m`` fresh draws in float64 ``(p,)`` (``nan`` where the threshold is 0 or infinite).
    ``n_at``: draws behind each of those fractions.
    """

    points: torch.Tensor
    thresholds: Thresholds
    sigmas: torch.Tensor
    weights: torch.Tensor
    p_concentrated: torch.Tensor
    p_spread: torch.Tensor
    at_concentrated: torch.Tensor
    at_spread: torch.Tensor
    n_at: int


def threshold_monte_carlo(data: torch.Tensor, sigmas, *, n_points: int, point_seed: int, n_noise: int,
                          noise_seed: int, eps: float = 0.05, delta: float = 0.05,
                          points=None) -> ThresholdMonteCarlo:
    """Theorem 4.2 against simulation (Remark 4.3): the weight of a point at noisy copies of itself.

    Points: ``n_points`` indices drawn without replacement by ``torch.randperm(N)`` with a CPU generator
    seeded ``point_seed`` (or the given ``points``). For each point ``y_1`` (in order) ``n_noise`` noises
    ``n`` are drawn from a generator on ``data``'s device seeded ``noise_seed`` and
    ``w_1(y_1 + sigma n; sigma)`` is computed at every ``sigma`` of the grid (in ``data``'s dtype), then
    ``4 n_noise`` fresh noises give ``w_1`` in float64 at the point's ``sigma_concentrated`` and at its
    ``sigma_spread`` (:func:`concentration_thresholds` with ``eps``, ``delta``). The theorem holds when
    ``at_concentrated`` and ``at_spread`` are ``>= 1 - delta`` (up to Monte Carlo error), and the
    empirical thresholds are where ``p_concentrated`` / ``p_spread`` cross ``1 - delta`` on the grid.
    """
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    sig = checks.sigmas(sigmas)
    n = data.shape[0]
    m = checks.positive_int(n_noise, "n_noise")
    noise_seed = checks.integer(noise_seed, "noise_seed", 0)
    eps = checks.probability(eps, "eps", 0.5)
    delta = checks.probability(delta, "delta")
    if points is None:
        n_points = checks.integer(n_points, "n_points", 1, n)
        point_seed = checks.integer(point_seed, "point_seed", 0)
        pts = torch.randperm(n, generator=torch.Generator().manual_seed(point_seed))[:n_points]
    else:
        pts = torch.as_tensor(_indices(points, n)[0], dtype=torch.long)
    th = concentration_thresholds(data, pts, eps, delta)
    dev = data.device
    g = torch.Generator(device=dev).manual_seed(noise_seed)
    S, p = sig.numel(), pts.numel()
    grid = torch.empty(S, p, m, dtype=torch.float64)
    at_c = torch.full((p,), math.nan, dtype=torch.float64)
    at_s = torch.full((p,), math.nan, dtype=torch.float64)
    for j, i in enumerate(pts.tolist()):
        noise = torch.randn(m, data.shape[1], generator=g, device=dev, dtype=data.dtype)
        for k, s in enumerate(sig.tolist()):
            grid[k, j] = log_posterior_weights(data[i] + s * noise, data, s)[:, i].double().exp().cpu()
        noise = torch.randn(4 * m, data.shape[1], generator=g, device=dev, dtype=data.dtype)
        for out, s, test in ((at_c, float(th.sigma_concentrated[j]), lambda w: w >= 1 - eps),
                             (at_s, float(th.sigma_spread[j]), lambda w: w <= eps)):
            if 0 < s < math.inf and s >= checks.SIGMA_MIN:
                w = log_posterior_weights(data[i] + s * noise, data, s, dtype=torch.float64)[:, i].exp().cpu()
                out[j] = test(w).double().mean()
    return ThresholdMonteCarlo(points=pts, thresholds=Thresholds(th.sigma_spread.cpu(), th.sigma_concentrated.cpu()),
                               sigmas=sig, weights=grid, p_concentrated=(grid >= 1 - eps).double().mean(2),
                               p_spread=(grid <= eps).double().mean(2), at_concentrated=at_c, at_spread=at_s,
                               n_at=4 * m)


class CorollaryA2(NamedTuple):
    """Result of :func:`corollary_a2` (``p`` images, ``m`` noises each).

    ``index`` ``(p,)``; ``nn``: distance to the nearest other training point ``Delta_(1)``; ``R``:
    ``R_1 = max_j ||y_j - y_1||``; ``delta1``: Theorem 4.2's failure probability at ``sigma``
    (:func:`failure_probability`); ``ratio_bound = eta R_1 / ((1 - t) r_-)``; ``cos_bound``: the
    corollary's lower bound on the cosine similarity (0 where ``ratio_bound >= 1``); ``probability``:
    ``max(0, 1 - delta1 - e^{-tail})``. Monte Carlo, ``(p, m)``: ``log_ratio = log(||u* - u|| / ||u||)``
    and ``log_1mw = log(1 - w_1)``. ``n``: training set size; ``sigma = (1 - t) / t``.
    """

    index: torch.Tensor
    nn: torch.Tensor
    R: torch.Tensor
    delta1: torch.Tensor
    ratio_bound: torch.Tensor
    cos_bound: torch.Tensor
    probability: torch.Tensor
    log_ratio: torch.Tensor
    log_1mw: torch.Tensor
    n: int
    sigma: float


def corollary_a2(data: torch.Tensor, *, t: float, eta: float, n_images: int, n_noise: int, seed: int,
                 tail: float = 5.0, chunk: int = 100) -> CorollaryA2:
    r"""Corollary A.2 in the companion's form (a variant of the paper's statement, whose formulas were
    lost), with its Monte Carlo check, for flow matching ``x_t = t y + (1 - t) eps`` on ``data``.

    With ``sigma = (1 - t)/t``, ``u_t(x | y) = (y - x)/(1 - t)`` and the empirical optimal field
    ``u*_t(x) = (D - x)/(1 - t)``, ``D = sum_i w_i(x/t; sigma) y_i`` (Eq. 2-3): if ``eta R_1 < (1 - t) r_-``
    (``r_-`` of Lemma 4.5 with ``tail``), then with probability ``>= 1 - delta_1 - e^{-tail}``

        cos(u*_t(x_t), u_t(x_t | y_1)) >= sqrt(1 - (eta R_1 / ((1 - t) r_-))^2),

    ``delta_1`` being Theorem 4.2's failure probability at level ``eta`` (:func:`failure_probability`).
    (Proof: ``||D - y_1|| <= (1 - w_1) R_1 <= eta R_1`` when ``w_1 >= 1 - eta``; ``||u|| = ||y_1 - eps||/(1-t)``
    is ``>= r_-/(1-t)`` except with probability ``e^{-tail}`` by Anderson's inequality and Laurent-Massart;
    ``cos(a, a + e) >= sqrt(1 - ||e||^2/||a||^2)``.)

    Images: ``n_images`` drawn by ``randperm`` from a generator on ``data``'s device seeded ``seed``; the
    same generator then draws ``n_noise`` noises per image. The Monte Carlo computes
    ``||u* - u|| / ||u|| = ||D - y_1|| / ((1 - t) ||y_1 - eps||)`` from log weights (relative to the
    largest other weight), so tiny values stay exact.
    """
    Xa = checks.points(data, "data", min_rows=2)
    checks.finite(Xa, "data")
    t = checks.number(t, "t", low=0.0, high=1.0, low_open=True, high_open=True)
    eta = checks.probability(eta, "eta", 0.5)
    Na, da = Xa.shape
    n_images = checks.integer(n_images, "n_images", 1, Na)
    k = checks.positive_int(n_noise, "n_noise")
    seed = checks.integer(seed, "seed", 0)
    chunk = checks.positive_int(chunk, "chunk")
    dev = Xa.device
    sig = (1 - t) / t
    g = torch.Generator(device=dev).manual_seed(seed)
    idx = torch.randperm(Na, generator=g, device=g.device)[:n_images].to(dev)
    Y = Xa[idx]
    nn = nearest_neighbors(Y, Xa, 2)[0][:, 1]  # column 0: the image itself
    R = torch.zeros(len(idx), dtype=torch.float64, device=dev)
    Y64 = Y.double()
    for c0 in range(0, Na, 10_000):  # R_1 = max_j ||y_j - y_1|| (float64, chunked)
        ch = Xa[c0:c0 + 10_000].double()
        d2 = (Y64.square().sum(1, keepdim=True) + ch.square().sum(1) - 2 * Y64 @ ch.T).amax(1)
        R = torch.maximum(R, d2.clamp_min(0).sqrt())
    eps_ = torch.randn(len(idx), k, da, generator=g, device=dev, dtype=Xa.dtype)
    q = ((t * Y.unsqueeze(1) + (1 - t) * eps_) / t).reshape(-1, da)
    own = idx.repeat_interleave(k)
    log_e, log_rest = [], []
    for c0 in range(0, q.shape[0], chunk):
        lw = log_posterior_weights(q[c0:c0 + chunk], Xa, sig)
        o = own[c0:c0 + chunk]
        lw[torch.arange(lw.shape[0], device=dev), o] = -math.inf
        mx = lw.amax(1, keepdim=True)
        wt = (lw - mx).exp()
        e = wt @ Xa - wt.sum(1, keepdim=True) * Xa[o]
        log_e.append((mx.squeeze(1) + e.norm(dim=1).log()).double().cpu())
        log_rest.append((mx.squeeze(1) + wt.sum(1).log()).double().cpu())  # log(1 - w_1)
    log_u = torch.linalg.vector_norm(Y.unsqueeze(1) - eps_, dim=2).log().reshape(-1).double().cpu()
    log_ratio = (torch.cat(log_e) - math.log(1 - t) - log_u).reshape(len(idx), k)
    nn_c, R_c = nn.cpu(), R.cpu()
    delta1 = torch.as_tensor(_delta1(nn_c.numpy(), Na, sig, eta), dtype=torch.float64)
    rm, _ = shell_radii(da, tail)
    ratio_bound = eta * R_c / ((1 - t) * rm) if rm > 0 else torch.full_like(R_c, math.inf)
    cos_bound = (1 - ratio_bound ** 2).clamp_min(0).sqrt()
    prob = (1 - delta1 - math.exp(-checks.number(tail, "tail", low=0.0, low_open=True))).clamp_min(0)
    return CorollaryA2(index=idx.cpu(), nn=nn_c, R=R_c, delta1=delta1, ratio_bound=ratio_bound, cos_bound=cos_bound,
                       probability=prob, log_ratio=log_ratio, log_1mw=torch.cat(log_rest).reshape(len(idx), k),
                       n=Na, sigma=sig)


class LemmaA1(NamedTuple):
    """Result of :func:`lemma_a1_monte_carlo` (``p`` points, ``S`` noise levels, ``m`` noises per point).

    ``points`` ``(p,)``; ``sigmas`` ``(S,)``; ``R``: ``R_1 = max_j ||y_j - y_1||`` ``(p,)``; ``bound``: Eq. 18's
    ``eps R_1`` ``(p,)``; ``guarantee``: the lemma's probability ``max(0, 1 - delta_1(sigma))``
    (:func:`failure_probability`) ``(S, p)``; ``within``: the fraction of draws with
    ``||D*(x) - y_1|| <= eps R_1`` ``(S, p)``; ``log_deviation`` / ``log_1mw``: ``log ||D*(x) - y_1||`` and
    ``log(1 - w_1(x))`` per draw ``(S, p, m)`` (``-inf`` where they underflow to 0 in float64).
    """

    points: torch.Tensor
    sigmas: torch.Tensor
    R: torch.Tensor
    bound: torch.Tensor
    guarantee: torch.Tensor
    within: torch.Tensor
    log_deviation: torch.Tensor
    log_1mw: torch.Tensor
    eps: float


def lemma_a1_monte_carlo(data: torch.Tensor, sigmas, *, points, n_noise: int, noise_seed: int,
                         eps: float = 0.05, chunk: int = 256) -> LemmaA1:
    r"""Lemma A.1 (Eq. 18) against simulation: the empirical optimal denoiser is close to the point a
    noisy sample came from.

    The companion's reading of the lemma (its formulas were lost): for ``y_1 = data[i]``,
    ``x = y_1 + sigma n`` and ``0 < eps < 1/2``, with probability at least ``1 - delta_1(sigma)``
    (Theorem 4.2, part 1, :func:`failure_probability`) ``w_1(x; sigma) >= 1 - eps``, and consequently

        ||D*(x; sigma) - y_1|| <= eps R_1,     R_1 = max_j ||y_j - y_1||     (Eq. 18),

    since ``D* - y_1 = sum_{j != 1} w_j (y_j - y_1)`` has norm ``<= (1 - w_1) R_1`` (``R_1`` is at most the
    diameter of the data set, so a form with the diameter follows).

    For each point (in order) ``n_noise`` noises are drawn from a generator on ``data``'s device seeded
    ``noise_seed`` and shared across ``sigmas``. ``D* - y_1`` and ``1 - w_1`` are computed from the log
    weights of the *other* points relative to their largest one, so tiny values keep their relative
    accuracy; ``chunk`` noisy queries at a time.
    """
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    sig = checks.sigmas(sigmas)
    eps = checks.probability(eps, "eps", 0.5)
    m = checks.positive_int(n_noise, "n_noise")
    noise_seed = checks.integer(noise_seed, "noise_seed", 0)
    chunk = checks.positive_int(chunk, "chunk")
    n, d = data.shape
    pts = torch.as_tensor(_indices(points, n)[0], dtype=torch.long)
    dev = data.device
    g = torch.Generator(device=dev).manual_seed(noise_seed)
    S, p = sig.numel(), pts.numel()
    log_dev = torch.empty(S, p, m, dtype=torch.float64)
    log_1mw = torch.empty_like(log_dev)
    R = torch.empty(p, dtype=torch.float64)
    for j, i in enumerate(pts.tolist()):
        y1 = data[i]
        R[j] = torch.linalg.vector_norm(data.to(torch.float64) - y1.to(torch.float64), dim=1).max().cpu()
        noise = torch.randn(m, d, generator=g, device=dev, dtype=data.dtype)
        for k, s in enumerate(sig.tolist()):
            for c0 in range(0, m, chunk):
                lw = log_posterior_weights(y1 + s * noise[c0:c0 + chunk], data, s)
                lw[:, i] = -math.inf
                mx = lw.amax(1, keepdim=True)
                wt = (lw - mx).exp()
                e = wt @ data - wt.sum(1, keepdim=True) * y1
                log_dev[k, j, c0:c0 + chunk] = (mx.squeeze(1) + e.norm(dim=1).log()).double().cpu()
                log_1mw[k, j, c0:c0 + chunk] = (mx.squeeze(1) + wt.sum(1).log()).double().cpu()
    bound = eps * R
    delta1 = torch.as_tensor(_delta1(_nn_other(data, pts.tolist()).cpu().numpy()[None, :], n,
                                     sig.numpy()[:, None], eps), dtype=torch.float64)
    within = (log_dev <= bound.log()[None, :, None]).double().mean(2)
    return LemmaA1(points=pts, sigmas=sig, R=R, bound=bound, guarantee=(1 - delta1).clamp_min(0), within=within,
                   log_deviation=log_dev, log_1mw=log_1mw, eps=eps)
