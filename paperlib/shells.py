"""Gaussian shells and coverage: paper Sec. 4.2, Lemma 4.5, Def. 4.6-4.7 and Theorem 4.8 (App. B).

* Lemma 4.5  shell radii for unit noise (Laurent-Massart)   -- :func:`shell_radii`.
* Def. 4.7   ``phi_sigma(r)``, the probability of hitting a shell at distance ``r`` -- :func:`shell_hit_probability`.
* Def. 4.6   coverage ``C(sigma)`` by Monte Carlo           -- :func:`coverage` (``leave_one_out=True``:
  each training point against the shells of the others).
* Thm 4.8    lower and upper bounds on the coverage          -- :func:`coverage_bounds` (for a given
  training set), :func:`pair_upper_bound` (the paper's upper bound ``N E phi(||X - X'||)``, App. E.2).

The Laurent-Massart parameter (the paper's ``x`` in ``1 - 2 e^{-x}``) is called ``tail`` here, so that
``x`` always means query points; ``x=`` is still accepted as a keyword for it.

**Accuracy.** The Monte Carlo shares one noise draw per (point, repetition) across all ``sigmas`` and
computes the few nearest squared distances of every test point exactly
(:func:`paperlib.blocking.refine_nearest`), so a test point that is a copy of a training point (or the
training point itself) sits exactly at the centre of its shell, in float32 as in float64, and a few
far outliers in the data (which shift the centring and inflate float32 rounding) do not change
whether a noisy point lands in its nearest shells.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import stats as _stats

from . import blocking, checks

__all__ = ["shell_radii", "shell_hit_probability", "coverage", "coverage_bounds", "pair_upper_bound"]

_SHELL_TAIL = 1e-18  # phi_sigma(r) is tabulated up to r/sigma where its (monotone) upper bound < this


def _tail(d, tail, x=None):
    """Checked ``(d, tail)``; ``x`` is the older keyword for ``tail``."""
    if x is not None:
        tail = x
    d = checks.positive_int(d, "d")
    tail = checks.number(tail, "tail", low=0.0, low_open=True)
    return d, tail


def shell_radii(d: int, tail: float = 5.0, *, x: float | None = None) -> tuple[float, float]:
    """Lemma 4.5 radii for unit noise ``n ~ N(0, I_d)``: ``(r_minus, r_plus)`` with
    ``r_minus = sqrt(max(d - 2 sqrt(tail d), 0))``, ``r_plus = sqrt(d + 2 sqrt(tail d) + 2 tail)``.

    By Laurent-Massart, ``P(r_minus <= ||n|| <= r_plus) >= 1 - 2 e^{-tail}`` (0.9865 at ``tail = 5``;
    the paper calls ``tail`` ``x``, still accepted as a keyword). (When ``d <= 4 tail`` the lower tail
    bound is vacuous and ``r_minus = 0``.)
    """
    d, t = _tail(d, tail, x)
    return math.sqrt(max(d - 2.0 * math.sqrt(t * d), 0.0)), math.sqrt(d + 2.0 * math.sqrt(t * d) + 2.0 * t)


def _phi_exact(t: np.ndarray, d: int, tail: float) -> np.ndarray:
    """phi as a function of ``t = r / sigma`` (float64 numpy), exact via the noncentral chi-square.

    Beyond ``t_cut = r_+ + sqrt(d) + 40``, ``phi(t) <= P(||n|| >= t - r_+) <= e^{-800}``, which is 0 in
    float64 (scipy's ``ncx2`` returns NaN for huge noncentralities, so those are not evaluated)."""
    rm, rp = shell_radii(d, tail)
    t = np.abs(np.asarray(t, dtype=np.float64))
    far = t > rp + math.sqrt(d) + 40.0
    nc = np.where(far, 0.0, t) ** 2
    lo, hi = rm * rm, rp * rp
    # P(lo <= X <= hi), X ~ ncx2(d, nc); use the tail that keeps precision
    F_hi = _stats.ncx2.cdf(hi, d, nc)
    F_lo = _stats.ncx2.cdf(lo, d, nc) if lo > 0 else np.zeros_like(nc)
    S_lo = _stats.ncx2.sf(lo, d, nc) if lo > 0 else np.ones_like(nc)
    S_hi = _stats.ncx2.sf(hi, d, nc)
    mean = d + nc
    out = np.where(mean > hi, F_hi - F_lo, S_lo - S_hi)
    out = np.where(far, 0.0, out)
    if np.isnan(out).any():
        raise RuntimeError(f"scipy.stats.ncx2 returned NaN for d={d}, t in [{t.min():.3g}, {t.max():.3g}]")
    return np.clip(out, 0.0, 1.0)


def shell_hit_probability(r, sigma, d: int, tail: float = 5.0, *, x: float | None = None) -> torch.Tensor:
    """Def. 4.7, exactly: ``phi_sigma(r) = P_n(sigma r_- <= ||a + sigma n|| <= sigma r_+)`` for ``||a|| = r``.

    ``||a + sigma n||^2 / sigma^2`` is noncentral chi-square with ``d`` degrees of freedom and
    noncentrality ``r^2 / sigma^2``, so ``phi = F(r_+^2) - F(r_-^2)`` (``scipy.stats.ncx2``, using the
    survival function where that keeps precision; exactly 0 in float64 for far points). ``r`` (>= 0)
    and ``sigma`` (> 0) broadcast; float64 result on ``r``'s device (CPU for python numbers).
    """
    d, t = _tail(d, tail, x)
    dev = r.device if isinstance(r, torch.Tensor) else (sigma.device if isinstance(sigma, torch.Tensor) else torch.device("cpu"))
    rr, ss = (_array(v, name) for v, name in ((r, "r"), (sigma, "sigma")))
    if not np.all(np.isfinite(rr)) or np.any(rr < 0):
        raise ValueError("r must be finite and >= 0")
    if not np.all(np.isfinite(ss)) or np.any(ss <= 0):
        raise ValueError("sigma must be finite and > 0")
    try:
        rr, ss = np.broadcast_arrays(rr, ss)
    except ValueError:
        raise ValueError(f"r (shape {rr.shape}) and sigma (shape {ss.shape}) do not broadcast") from None
    with np.errstate(over="ignore"):
        q = rr / ss
    return torch.as_tensor(_phi_exact(q, d, t), dtype=torch.float64).to(dev)


def _array(v, name):
    if isinstance(v, torch.Tensor):
        if v.dtype == torch.bool or v.is_complex():
            raise ValueError(f"{name} must be real numbers, got {v.dtype}")
        return v.detach().cpu().double().numpy()
    if isinstance(v, (bool, np.bool_, str)):
        raise ValueError(f"{name} must be a number or a tensor of numbers, got {v!r}")
    try:
        a = np.asarray(v)
        if a.dtype == np.bool_ or a.dtype.kind not in "iuf":
            raise TypeError(a.dtype)
        return a.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a tensor of numbers, got {v!r}") from None


@functools.lru_cache(maxsize=32)
def _phi_table(d: int, tail: float, tol: float = 1e-11):
    """``phi`` tabulated on a uniform grid of ``t = r/sigma`` in ``[0, t_max]`` for 4-point Lagrange
    interpolation; the grid is refined until the interpolant matches the exact value within ``tol``
    at off-grid check points. Beyond ``t_max``, ``phi(t) <= F_{d, t^2}(r_+^2) <= _SHELL_TAIL``.
    """
    rm, rp = shell_radii(d, tail)
    hi = rp * rp
    t_max = 1.0
    while _stats.ncx2.cdf(hi, d, t_max * t_max) > _SHELL_TAIL:
        t_max *= 1.5
    h = t_max / 2048
    for _ in range(8):
        K = int(math.ceil(t_max / h)) + 3
        grid = np.arange(-1, K) * h  # one point left of 0 (phi is even in t)
        vals = _phi_exact(np.abs(grid), d, tail)
        check = (np.arange(1, K - 3) + np.array([[0.23], [0.5], [0.81]])).ravel() * h
        approx = _lagrange4(torch.as_tensor(check), torch.as_tensor(vals), h).numpy()
        err = np.max(np.abs(approx - _phi_exact(check, d, tail)))
        if err <= tol:
            return h, torch.as_tensor(vals), t_max, err
        h /= 2
    raise RuntimeError(f"phi table did not reach tolerance {tol} (error {err:.3g}) for d={d}, tail={tail}")


def _lagrange4(t: torch.Tensor, vals: torch.Tensor, h: float) -> torch.Tensor:
    """4-point Lagrange interpolation of ``vals`` (grid ``(j - 1) h``, ``j = 0..``) at ``t >= 0``; 0 past the end."""
    K = vals.numel()
    u = t / h + 1.0  # position in grid index units
    j = torch.floor(u.clamp(max=float(K))).clamp_(1, K - 3)
    f = (u - j).to(vals.dtype)
    j = j.long()
    v0, v1, v2, v3 = vals[j - 1], vals[j], vals[j + 1], vals[j + 2]
    w0 = -f * (f - 1) * (f - 2) / 6
    w1 = (f + 1) * (f - 1) * (f - 2) / 2
    w2 = -(f + 1) * f * (f - 2) / 2
    w3 = (f + 1) * f * (f - 1) / 6
    out = w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3
    return torch.where(u > K - 2, torch.zeros_like(out), out).clamp_(0.0, 1.0)


def coverage(train: torch.Tensor, test: torch.Tensor | None, sigmas, n_noise: int = 4,
             generator: torch.Generator | None = None, *, tail: float = 5.0, n_points: int | None = None,
             reduce: bool = True, progress: bool = True, dtype=None, leave_one_out: bool = False,
             x: float | None = None) -> torch.Tensor:
    """Def. 4.6 by Monte Carlo: ``C(sigma) = P_{x0 ~ test, n}(x0 + sigma n in U_i S_sigma(y_i))``.

    ``S_sigma(y) = {z : sigma r_- <= ||z - y|| <= sigma r_+}`` (Eq. 6, radii from :func:`shell_radii`
    with Laurent-Massart parameter ``tail``). Averages over the test points (or ``n_points`` of them)
    and ``n_noise`` noises each, the noise shared across ``sigmas``. ``leave_one_out=True``: the test
    points are the training points (``test`` is ``None`` or ``train`` itself) and each is covered only by
    the shells of the other ``N - 1`` (an unbiased estimate of the coverage of a size-``N - 1`` training
    set; exact copies of a point still count as other points). Returns float64 ``(len(sigmas),)``
    (``reduce=False``: the boolean hits ``(len(sigmas), n_points, n_noise)``).
    """
    if not isinstance(leave_one_out, (bool, np.bool_)):
        raise ValueError(f"leave_one_out must be True or False, got {leave_one_out!r}")
    train = checks.points(train, "train")
    sig = checks.sigmas(sigmas)
    n_noise = checks.positive_int(n_noise, "n_noise")
    blocking.finite_sqnorms(train, "train")
    if leave_one_out:
        if test is not None and test is not train:
            tq = checks.points(test, "test")
            if tq.shape != train.shape or not torch.equal(tq, train):
                raise ValueError("with leave_one_out=True, test must be None or the training set itself")
        queries = train
        if train.shape[0] < 2:
            raise ValueError("train must have at least 2 points for leave-one-out coverage")
    else:
        if test is None:
            raise ValueError("test is None: give test points, or leave_one_out=True for leave-one-out coverage")
        queries = checks.points(test, "test")
        checks.pair(queries, train, "test", "train")
        checks.finite(queries, "test")
    d = train.shape[1]
    _, t = _tail(d, tail, x)
    rm, rp = shell_radii(d, t)
    cd = checks.compute_dtype(train, queries, dtype=dtype)
    sub = blocking.subsample(queries.shape[0], n_points, generator)
    qidx = torch.arange(queries.shape[0]) if sub is None else sub
    pts = queries[qidx.to(queries.device)]
    m = pts.shape[0]
    S = sig.numel()
    hit = torch.empty(S, m, n_noise, dtype=torch.bool, device=train.device)
    bar = blocking.progress_bar(S * m, progress, "coverage")
    a_mid, a_half = 0.5 * (rm * rm + rp * rp), 0.5 * (rp * rp - rm * rm)
    tiny = torch.finfo(cd).tiny * 2.0**30
    for blk in blocking.noisy_blocks(pts, train, n_noise, generator, cd=cd):
        D0, R, p0, pb = blk["D0"], blk["R"], blk["start"], blk["rows"]
        if leave_one_out:
            D0[torch.arange(pb, device=D0.device), qidx[p0:p0 + pb].to(D0.device)] = math.inf
        nn = blk["nn"]
        buf = torch.empty_like(R)
        D0b = D0.unsqueeze(1)
        for k, s in enumerate(sig.tolist()):
            # ||x0 + s n - y||^2 = D0 - 2 s n.(y - x0) + s^2 ||n||^2; shell: s^2 r_-^2 <= . <= s^2 r_+^2
            if s * s * min(a_half, 1.0) > tiny:
                torch.add(D0b, R, alpha=-2.0 * s, out=buf)
                buf.add_(((s * s) * (nn - a_mid)).unsqueeze(2)).abs_()
                hit[k, p0:p0 + pb] = buf.amin(dim=2) <= s * s * a_half
            else:  # tiny sigma: the same test divided by sigma^2, in float64
                b64 = R.to(torch.float64).mul_(-2.0 / s)
                b64.add_(D0b.to(torch.float64).div(s).div_(s)).add_((nn.to(torch.float64) - a_mid).unsqueeze(2)).abs_()
                hit[k, p0:p0 + pb] = b64.amin(dim=2) <= a_half
            bar.update(pb)
    bar.close()
    if not reduce:
        return hit
    return hit.to(torch.float64).mean(dim=(1, 2))


def coverage_bounds(train: torch.Tensor, test: torch.Tensor, sigmas, *, tail: float = 5.0,
                    n_points: int | None = None, generator: torch.Generator | None = None,
                    progress: bool = True, x: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 4.8 for a given training set: ``(lower, upper)``, float64 ``(len(sigmas),)`` each, with

        lower(sigma) = mean_{x0 in test} phi_sigma(d_NN(x0))
                    <= C(sigma) = mean_{x0 in test} P_n(x0 + sigma n in U_i S_sigma(y_i))
                    <= mean_{x0 in test} min(1, sum_i phi_sigma(||x0 - y_i||)) = upper(sigma).

    Proof (conditional on the training set): for a fixed ``x0`` the event contains the event of the
    nearest shell, whose probability is ``phi_sigma(d_NN(x0))`` (Lemma B.4: it depends on ``x0 - y``
    only through its norm); the union bound over the ``N`` shells gives the upper bound, and a
    probability is ``<= 1``. Averaging over ``x0`` gives the statement. The paper (App. B.1) states the
    same bounds for a random i.i.d. training set, where taking the expectation over it turns
    ``sum_i phi_sigma(||x0 - y_i||)`` into ``N E[phi_sigma(||X - X'||)]`` (``X'`` an independent copy).

    ``phi`` is exact (:func:`shell_hit_probability`) for the lower bound; for the ``N``-term sums it is
    interpolated from an exact table in ``r / sigma`` (error ``< 1e-11`` per term, checked when built;
    terms with ``r / sigma`` past the table, where ``phi < 1e-18``, are 0). The nearest distances in
    the sums are exact (so ``upper >= lower - 1e-11`` also in float32, copies of training points
    included). ``n_points``: average over that many test points drawn without replacement with
    ``generator`` (default: all). Cost: one ``(m, N)`` distance matrix (chunked) plus ``O(m N)``
    interpolations per ``sigma``.
    """
    from .neighbors import nearest_neighbors

    train = checks.points(train, "train")
    test = checks.points(test, "test")
    checks.pair(test, train, "test", "train")
    sig = checks.sigmas(sigmas)
    sub = blocking.subsample(test.shape[0], n_points, generator)
    if sub is not None:
        test = test[sub.to(test.device)]
    d = train.shape[1]
    _, t = _tail(d, tail, x)
    h, vals, t_max, _ = _phi_table(d, t)
    dist_nn = nearest_neighbors(test, train, 1, names=("test", "train"))[0][:, 0].cpu().numpy()
    lower = torch.as_tensor([_phi_exact(dist_nn / s, d, t).mean() for s in sig.tolist()], dtype=torch.float64)
    # upper: all pairwise distances, chunked over test points
    dev = train.device
    vals = vals.to(dev)
    cd = checks.compute_dtype(train, test)
    ctr = blocking.center(train, cd)
    trc = train.to(cd) - ctr
    yy = blocking.sqnorms(trc)
    ymax = float(yy.max())
    u = blocking.unit_roundoff(cd, dev)
    m, n = test.shape[0], train.shape[0]
    upper_sum = torch.zeros(sig.numel(), dtype=torch.float64, device=dev)
    rows = blocking.query_block(m, n, 8, blocking.BLOCK_BYTES // 8, min_chunk=n)
    bar = blocking.progress_bar(sig.numel() * m, progress, "coverage bounds")
    for q0 in range(0, m, rows):
        xq = test[q0:q0 + rows].to(cd) - ctr
        xx = blocking.sqnorms(xq)
        d2 = torch.addmm(yy.unsqueeze(0), xq, trc.T, alpha=-2.0).add_(xx.unsqueeze(1)).clamp_min_(0)
        blocking.refine_nearest(d2, test[q0:q0 + rows], train, blocking.sqdist_error_bound(xx, ymax, d, u))
        r = d2.to(torch.float64).sqrt_()
        for k, s in enumerate(sig.tolist()):
            tot = _lagrange4(r / s, vals, h).sum(dim=1)
            upper_sum[k] += tot.clamp_max_(1.0).sum()
            bar.update(r.shape[0])
    bar.close()
    return lower.to(dev), upper_sum / m


def pair_upper_bound(data: torch.Tensor, sigmas, n_train: int, *, n_pairs: int, seed: int,
                     tail: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Theorem 4.8's upper bound as the paper states it, ``N E[phi_sigma(||X - X'||)]``: ``X`` and ``X'``
    independent draws from the data distribution, ``N = n_train`` the size of an i.i.d. training set
    (App. B.1). Estimated as in App. E.2 from ``n_pairs`` random pairs of distinct points of ``data``
    (indices uniform, from a CPU generator seeded ``seed``), ``phi`` interpolated from its exact table.

    Returns ``(bound, standard_error)``, float64 ``(len(sigmas),)``. Not clipped at 1 (a coverage is a
    probability, so ``min(1, bound)`` is the usable form). It bounds the coverage *averaged over random
    training sets*; for a given set, :func:`coverage_bounds`'s ``upper`` (clipped per test point) is
    the conditional form, and on average over sets it is never looser than this one (Jensen:
    ``E min(1, S) <= min(1, E S)``).
    """
    data = checks.points(data, "data", min_rows=2)
    checks.finite(data, "data")
    sig = checks.sigmas(sigmas)
    n_train = checks.positive_int(n_train, "n_train")
    n_pairs = checks.positive_int(n_pairs, "n_pairs", 2)
    seed = checks.integer(seed, "seed", 0)
    m, d = data.shape
    _, t = _tail(d, tail)
    h, vals, _, _ = _phi_table(d, t)
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, m, (n_pairs,), generator=g)
    j = torch.randint(0, m - 1, (n_pairs,), generator=g)
    j = j + (j >= i).long()  # uniform over the other points
    dist = torch.empty(n_pairs, dtype=torch.float64)
    rows = max(1, (16 * 2**20) // (8 * d))
    for r0 in range(0, n_pairs, rows):
        a = data[i[r0:r0 + rows].to(data.device)].to(torch.float64)
        b = data[j[r0:r0 + rows].to(data.device)].to(torch.float64)
        dist[r0:r0 + rows] = torch.linalg.vector_norm(a - b, dim=1).cpu()
    bound = torch.empty(sig.numel(), dtype=torch.float64)
    se = torch.empty_like(bound)
    for k, s in enumerate(sig.tolist()):
        v = n_train * _lagrange4(dist / s, vals, h)
        bound[k] = v.mean()
        se[k] = v.std() / math.sqrt(n_pairs)
    return bound, se
