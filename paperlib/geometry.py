"""Posterior weights, Gaussian shells and coverage: the paper's geometric objects (Sec. 2 and 4, App. A-C).

Notation: training points ``y_1..y_N`` in R^d (``data``, shape ``(N, d)``; images ``(N, C, H, W)`` are
flattened), a query ``x`` (``(b, d)``), noise level ``sigma > 0``.

* Eq. 3  ``w_i(x; sigma) = softmax_i(-||x - y_i||^2 / (2 sigma^2))`` -- :func:`log_posterior_weights`.
* Eq. 2  ``D*(x; sigma) = sum_i w_i y_i``                         -- :func:`empirical_denoiser`.
* Def. 4.1  ``W(sigma) = E_{x0 ~ data} E_n max_i w_i(x0 + sigma n)`` -- :func:`max_posterior_weight`
  (and Fig. 7's self weight, :func:`self_posterior_weight`).
* Thm 4.2  concentration thresholds                               -- :func:`concentration_thresholds`.
* Lemma 4.5 / Def. 4.6-4.7 / Thm 4.8  shells, coverage, bounds    -- :func:`shell_radii`,
  :func:`shell_hit_probability`, :func:`coverage`, :func:`coverage_bounds`.
* Eq. 7 / Thm 4.11  Gaussian linear denoiser                      -- :func:`gaussian_linear_denoiser`,
  :class:`GaussianLinearDenoiser`.
* exact nearest neighbours                                        -- :func:`nearest_neighbors`.

**How it is computed.** Everything that touches all ``N`` training points is a matrix product:
``-||x - y||^2 = 2 x.y - ||y||^2 - ||x||^2`` and the last term is constant in a row, so the logits of a
query block are one ``addmm`` against a chunk of the data; the softmax is streamed over data chunks
(running max, running sum of exponentials, running weighted sum ``acc <- acc e^{m_old - m_new} +
e^{l - m_new} @ chunk``), so memory stays bounded by :data:`BLOCK_BYTES` of logits for any ``N`` and any
number of queries. Matrix products run in the input's floating dtype (``float16``/``bfloat16`` are
promoted to ``float32``; mixed ``float32``/``float64`` inputs compute in ``float64``); every exponent is
taken after subtracting the running row maximum, so nothing overflows or underflows to ``0/0`` even at
``sigma = 0.002`` in ``d = 3072``.

**Accuracy.** With ``float64`` inputs the results are exact to ``float64`` rounding. With ``float32``
inputs a logit carries the ``float32`` error of ``||y||^2 - 2 x.y``, about ``2^-24 (||x||^2 + ||y||^2)``
(about ``1e-4`` for CIFAR-10 in [-1, 1]), divided by ``2 sigma^2``: the weights are right to that
relative accuracy (``1e-6`` at ``sigma = 80``; near ties at ``sigma <= 0.1`` may need
``dtype=torch.float64``). Nearest-neighbour distances are always exact: candidates found in the input
dtype are re-scored in ``float64`` and the re-scoring is proven sufficient by a rounding-error bound
(rows where it is not are recomputed in ``float64``).

**Monte Carlo curves** (:func:`max_posterior_weight`, :func:`self_posterior_weight`, :func:`coverage`)
use common random numbers: one noise draw per (point, repetition) is shared by all ``sigmas``, so a
curve costs two matrix products plus cheap elementwise work per ``sigma``
(``||x0 + sigma n - y||^2 = ||x0 - y||^2 + 2 sigma n.(x0 - y) + sigma^2 ||n||^2``). Each point of a curve is
an unbiased estimate; neighbouring points are positively correlated, which makes curves smooth.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator

import numpy as np
import torch
from scipy import special as _special
from scipy import stats as _stats
from tqdm import tqdm

__all__ = [
    "BLOCK_BYTES",
    "log_posterior_weights",
    "posterior_weights",
    "empirical_denoiser",
    "max_posterior_weight",
    "self_posterior_weight",
    "posterior_weight_curves",
    "shell_radii",
    "shell_hit_probability",
    "coverage",
    "coverage_bounds",
    "concentration_thresholds",
    "max_weight_at",
    "nearest_neighbors",
    "nearest_neighbor_distances",
    "fit_gaussian",
    "gaussian_linear_denoiser",
    "GaussianLinearDenoiser",
]

#: Upper bound (bytes) on the block of logits / distances held at once (per query block x data chunk).
BLOCK_BYTES = 32 * 2**20

_SHELL_TAIL = 1e-18  # phi_sigma(r) is tabulated up to r/sigma where its (monotone) upper bound < this


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _points(t, name: str, *, min_rows: int = 1) -> torch.Tensor:
    """``t`` as a 2-D floating tensor ``(n, d)`` (trailing dims flattened); raises ValueError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (n, d) or (n, C, H, W); got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (images scaled to [-1, 1]), got {t.dtype}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} point(s), got {t.shape[0]}")
    t = t.reshape(t.shape[0], -1)
    if t.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0 (shape {tuple(t.shape)})")
    return t


def _check_finite_tensor(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_pair(x: torch.Tensor, data: torch.Tensor, xname: str, dname: str) -> None:
    if x.device != data.device:
        raise ValueError(f"{xname} is on {x.device} but {dname} is on {data.device}; move them to one device")
    if x.shape[1] != data.shape[1]:
        raise ValueError(f"{xname} has dimension {x.shape[1]} but {dname} has dimension {data.shape[1]}")


def _sigma(sigma, name: str = "sigma") -> float:
    """A python float ``> 0`` from a float or a 0-d (or one-element) tensor."""
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"{name} must be a number or a 0-d tensor, got shape {tuple(sigma.shape)}")
        sigma = sigma.item()
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive finite number, got {sigma!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name} must be finite and > 0, got {sigma!r}")
    return sigma


def _sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    """A 1-D float64 CPU tensor of finite positive noise levels."""
    if isinstance(sigmas, torch.Tensor):
        s = sigmas.detach().to("cpu", torch.float64)
    else:
        try:
            s = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a 1-D tensor of noise levels: {e}") from None
    if s.dim() == 0:
        s = s.reshape(1)
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"{name} must be finite and > 0 (got min {s.min().item()!r}, max {s.max().item()!r})")
    return s


def _positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _compute_dtype(*tensors: torch.Tensor, dtype=None) -> torch.dtype:
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit roundoff of a matrix product in ``dtype`` on ``device`` (TF32 / bf16 modes included)."""
    if dtype == torch.float64:
        return 2.0**-53
    prec = torch.get_float32_matmul_precision()
    if prec == "medium":
        return 2.0**-8
    if device.type == "cuda" and (prec == "high" or torch.backends.cuda.matmul.allow_tf32):
        return 2.0**-11
    if prec == "high":
        return 2.0**-11
    return 2.0**-24


def _sqnorms(t: torch.Tensor) -> torch.Tensor:
    """Row squared norms, accumulated in the tensor's dtype without an ``(n, d)`` temporary."""
    return torch.linalg.vector_norm(t, dim=1).square_()


def _generator_randn(shape, generator, device, dtype) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _subsample(n: int, n_points, generator, name: str = "n_points") -> torch.Tensor | None:
    """Indices of ``n_points`` distinct points out of ``n`` (None: all points, in order)."""
    if n_points is None or n_points == n:
        return None
    k = _positive_int(n_points, name)
    if k > n:
        raise ValueError(f"{name} = {k} exceeds the number of points ({n})")
    if generator is None:
        perm = torch.randperm(n)
    else:
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
    return perm[:k].sort().values


def _progress(total: int, progress: bool, desc: str):
    return tqdm(total=total, disable=not progress, desc=desc, leave=False)


# ----------------------------------------------------------------------------------------------
# blocking
# ----------------------------------------------------------------------------------------------
def _data_chunk(n: int, rows: int, itemsize: int, budget: int | None = None) -> int:
    """Number of data rows per chunk so that ``rows x chunk`` values fit in ``budget`` bytes."""
    budget = BLOCK_BYTES if budget is None else budget
    return int(max(1, min(n, budget // max(1, rows * itemsize))))


def _query_block(b: int, n: int, itemsize: int, budget: int | None = None, min_chunk: int = 2048) -> int:
    budget = BLOCK_BYTES if budget is None else budget
    return int(max(1, min(b, budget // max(1, itemsize * min(n, min_chunk)))))


# ----------------------------------------------------------------------------------------------
# posterior weights and the empirical denoiser (Eq. 2-3)
# ----------------------------------------------------------------------------------------------
def _prepare(x, data, dtype=None, xname="x", dname="data"):
    x = _points(x, xname)
    data = _points(data, dname)
    _check_pair(x, data, xname, dname)
    cd = _compute_dtype(x, data, dtype=dtype)
    x = x.to(cd)
    data = data.to(cd)
    yy = _sqnorms(data)
    if not bool(torch.isfinite(yy).all()):
        raise ValueError(f"{dname} contains NaN or infinite values (or values whose square overflows)")
    _check_finite_tensor(x, xname)
    return x, data, yy


def log_posterior_weights(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """Log posterior weights ``log w_i(x; sigma)`` of Eq. 3, shape ``(b, n)``; every row logsumexps to 0.

    ``w_i(x; sigma) = exp(-||x - y_i||^2 / (2 sigma^2)) / sum_j exp(-||x - y_j||^2 / (2 sigma^2))``,
    computed in log space (never ``0/0``) from one matrix product per query block.
    ``sigma``: python float or 0-d tensor. ``dtype``: compute dtype (default: the inputs').
    """
    s = _sigma(sigma)
    x, data, yy = _prepare(x, data, dtype)
    b, n = x.shape[0], data.shape[0]
    out = torch.empty(b, n, dtype=x.dtype, device=x.device)
    inv = 1.0 / (s * s)
    bias = yy.unsqueeze(0)
    bq = _query_block(b, n, x.element_size(), min_chunk=n)
    for q0 in range(0, b, bq):
        logits = torch.addmm(bias, x[q0:q0 + bq], data.T, beta=-0.5 * inv, alpha=inv)
        torch.log_softmax(logits, dim=1, out=out[q0:q0 + bq])
    return out


def posterior_weights(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """Posterior weights ``w_i(x; sigma)`` of Eq. 3, shape ``(b, n)`` (``exp`` of :func:`log_posterior_weights`)."""
    return log_posterior_weights(x, data, sigma, dtype=dtype).exp_()


def _exp_floor(dtype: torch.dtype) -> float:
    """Exponents below this are raised to it before ``exp``: ``exp(floor)`` is the smallest normal
    number, so no subnormals are produced (they make ``exp`` ~6x slower on CPU). Each raised term adds
    at most ``exp(floor)`` (1.2e-38 in float32) to sums that are >= 1: invisible at the dtype's precision."""
    return math.log(torch.finfo(dtype).tiny) + 1e-3


def _stream(x: torch.Tensor, data: torch.Tensor, yy: torch.Tensor, s: float, *, need_acc: bool,
            budget: int | None = None):
    """Streaming softmax of the logits ``(x.y - ||y||^2/2) / sigma^2`` over chunks of ``data``.

    Returns ``(m, z, acc)``: the row maxima of the logits, ``z = sum_i exp(l_i - m)`` and (if
    ``need_acc``) ``acc = sum_i exp(l_i - m) y_i``. Then ``max_i w_i = 1 / z`` and ``D* = acc / z``.
    """
    b, n = x.shape[0], data.shape[0]
    inv = 1.0 / (s * s)
    c = _data_chunk(n, b, x.element_size(), budget)
    floor = _exp_floor(x.dtype)
    m = z = acc = None
    for c0 in range(0, n, c):
        ch = data[c0:c0 + c]
        lg = torch.addmm(yy[c0:c0 + c].unsqueeze(0), x, ch.T, beta=-0.5 * inv, alpha=inv)
        cm = lg.amax(dim=1)
        if m is None:
            m = cm
            lg.sub_(m.unsqueeze(1)).clamp_min_(floor).exp_()
            z = lg.sum(dim=1)
            if need_acc:
                acc = lg @ ch
        else:
            m_new = torch.maximum(m, cm)
            scale = torch.exp(m - m_new)
            lg.sub_(m_new.unsqueeze(1)).clamp_min_(floor).exp_()
            z = z.mul_(scale).add_(lg.sum(dim=1))
            if need_acc:
                acc.mul_(scale.unsqueeze(1)).addmm_(lg, ch)
            m = m_new
    return m, z, acc


def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None,
                       budget: int | None = None) -> torch.Tensor:
    """The empirical optimal denoiser of Eq. 2, ``D*(x; sigma) = sum_i w_i(x; sigma) y_i``.

    ``x``: ``(b, d)`` or ``(b, C, H, W)``; the result has ``x``'s shape. Streams over chunks of
    ``data`` (memory ``<= budget`` bytes of logits, default :data:`BLOCK_BYTES`): two matrix products
    per chunk plus a few elementwise passes.
    """
    shape = x.shape if isinstance(x, torch.Tensor) else None
    s = _sigma(sigma)
    xf, data, yy = _prepare(x, data, dtype)
    b, n = xf.shape[0], data.shape[0]
    out = torch.empty_like(xf)
    bq = _query_block(b, n, xf.element_size(), budget)
    for q0 in range(0, b, bq):
        _, z, acc = _stream(xf[q0:q0 + bq], data, yy, s, need_acc=True, budget=budget)
        torch.div(acc, z.unsqueeze(1), out=out[q0:q0 + bq])
    return out.reshape(shape)


def max_weight_at(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """``max_i w_i(x; sigma)`` for each query row (streamed; shape ``(b,)``)."""
    s = _sigma(sigma)
    xf, data, yy = _prepare(x, data, dtype)
    b, n = xf.shape[0], data.shape[0]
    out = torch.empty(b, dtype=xf.dtype, device=xf.device)
    bq = _query_block(b, n, xf.element_size())
    for q0 in range(0, b, bq):
        _, z, _ = _stream(xf[q0:q0 + bq], data, yy, s, need_acc=False)
        out[q0:q0 + bq] = z.reciprocal()
    return out


# ----------------------------------------------------------------------------------------------
# exact nearest neighbours
# ----------------------------------------------------------------------------------------------
def _exact_sqdist_rows(x: torch.Tensor, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``||x_r - data[idx[r, j]]||^2`` in float64 by direct differences (chunked over rows)."""
    b, k = idx.shape
    d = x.shape[1]
    out = torch.empty(b, k, dtype=torch.float64, device=x.device)
    rows = max(1, (8 * 2**20) // max(1, 8 * k * d))
    for r0 in range(0, b, rows):
        diff = data[idx[r0:r0 + rows]].to(torch.float64)  # (r, k, d)
        diff.sub_(x[r0:r0 + rows].to(torch.float64).unsqueeze(1))
        out[r0:r0 + rows] = torch.linalg.vector_norm(diff, dim=2).square_()
    return out


def _candidates(x, data, yy, kk, budget=None):
    """Per query row, the ``kk`` smallest values of ``s_j = ||y_j||^2 - 2 x.y_j`` (approximate).

    Data chunks are cast to ``x``'s dtype on the fly (no full copy of ``data``)."""
    b, n = x.shape[0], data.shape[0]
    c = _data_chunk(n, b, x.element_size(), budget)
    best_v = best_i = None
    for c0 in range(0, n, c):
        ch = data[c0:c0 + c].to(x.dtype)
        sv = torch.addmm(yy[c0:c0 + c].unsqueeze(0), x, ch.T, alpha=-2.0)
        kc = min(kk, sv.shape[1])
        v, i = torch.topk(sv, kc, dim=1, largest=False)
        i += c0
        if best_v is None:
            best_v, best_i = v, i
        else:
            v = torch.cat([best_v, v], dim=1)
            i = torch.cat([best_i, i], dim=1)
            kc = min(kk, v.shape[1])
            best_v, sel = torch.topk(v, kc, dim=1, largest=False)
            best_i = torch.gather(i, 1, sel)
    return best_v, best_i


def nearest_neighbors(x: torch.Tensor, data: torch.Tensor, k: int = 1, *, extra: int = 8,
                      budget: int | None = None, names: tuple[str, str] = ("x", "data")) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``k`` nearest neighbours of each query in ``data``: ``(distances, indices)``, each ``(b, k)``.

    Distances are Euclidean, ``float64``, increasing along a row. Candidates (``k + extra`` per row)
    are found with chunked matrix products in the input dtype (``||y||^2 - 2 x.y``) and re-scored
    exactly in ``float64``. The re-scoring is certified per row with the rounding-error bound
    ``|err| <= 3 d u (||x||^2 + max_j ||y_j||^2)`` of a ``d``-term dot product in unit roundoff ``u``:
    any point left out has a true ``||y||^2 - 2 x.y`` at least ``(k+extra)``-th candidate value minus
    that bound; rows where this does not clear the exact ``k``-th distance are recomputed in ``float64``.
    Equal distances (duplicate training points) may be returned in either order.
    ``names``: how error messages call the two arguments.
    """
    xn, dn = names
    x = _points(x, xn)
    data = _points(data, dn)
    _check_pair(x, data, xn, dn)
    k = _positive_int(k, "k")
    n = data.shape[0]
    if k > n:
        raise ValueError(f"k = {k} exceeds the number of {dn} points ({n})")
    extra = _positive_int(extra, "extra", 0)
    cd = _compute_dtype(x, data)
    xc, dc = x.to(cd), data.to(cd)
    yy = _sqnorms(dc)
    if not bool(torch.isfinite(yy).all()):
        raise ValueError(f"{dn} contains NaN or infinite values (or values whose square overflows)")
    _check_finite_tensor(xc, xn)
    xx = _sqnorms(xc)
    b = x.shape[0]
    kk = min(n, k + extra)
    dist = torch.empty(b, k, dtype=torch.float64, device=x.device)
    idx = torch.empty(b, k, dtype=torch.long, device=x.device)
    bq = _query_block(b, n, xc.element_size(), budget)
    d = x.shape[1]
    u = _unit_roundoff(cd, x.device)
    gamma = d * u / max(1e-300, 1 - d * u) if d * u < 1 else math.inf
    ymax = float(yy.max()) if n else 0.0
    for q0 in range(0, b, bq):
        xq = xc[q0:q0 + bq]
        v, i = _candidates(xq, dc, yy, kk, budget)
        ex = _exact_sqdist_rows(x[q0:q0 + bq], data, i)  # exact, from the original inputs
        ex, order = torch.sort(ex, dim=1)
        i = torch.gather(i, 1, order)
        if kk < n:
            bound = 3.0 * gamma * (xx[q0:q0 + bq].to(torch.float64) + ymax) + 4 * u * (xx[q0:q0 + bq].double() + ymax)
            kth_left_out = v[:, -1].to(torch.float64) - bound  # lower bound on s_j of any point not re-scored
            ok = kth_left_out >= ex[:, k - 1] - xx[q0:q0 + bq].to(torch.float64)
            # (ex - xx is the exact s_j of the k-th candidate, up to float64 rounding)
            bad = torch.nonzero(~ok).flatten()
            if bad.numel():
                xb = x[q0:q0 + bq][bad].to(torch.float64)
                yy64 = torch.cat([_sqnorms(data[r0:r0 + 4096].to(torch.float64)) for r0 in range(0, n, 4096)])
                _, ib = _candidates(xb, data, yy64, kk, budget)
                eb = _exact_sqdist_rows(xb, data, ib)
                eb, ob = torch.sort(eb, dim=1)
                ex[bad] = eb
                i[bad] = torch.gather(ib, 1, ob)
        dist[q0:q0 + bq] = ex[:, :k].clamp_min_(0).sqrt_()
        idx[q0:q0 + bq] = i[:, :k]
    return dist, idx


def nearest_neighbor_distances(x: torch.Tensor, data: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Exact Euclidean distances (float64, ``(b, k)``) from each query to its ``k`` nearest data points."""
    return nearest_neighbors(x, data, k)[0]


# ----------------------------------------------------------------------------------------------
# Monte Carlo blocks shared by the curve functions
# ----------------------------------------------------------------------------------------------
def _noisy_blocks(points: torch.Tensor, data: torch.Tensor, n_noise: int, generator, *, cd,
                  self_index: torch.Tensor | None = None, budget: int | None = None) -> Iterator[dict]:
    """For blocks of base points ``x0``: ``D0 = ||x0 - y||^2`` and the noise projections.

    Yields dicts with ``D0`` ``(p, n)``, ``P = n.(y - c)`` ``(p, r, n)``, ``nx = n.(x0 - c)`` ``(p, r)``
    and ``nn = ||n||^2`` ``(p, r)``, with ``c`` the data mean (centring reduces the cancellation in
    ``||x0||^2 + ||y||^2 - 2 x0.y``) and ``r = n_noise``; the noise of a block is
    ``randn((p, n_noise, d), generator=generator)``. ``self_index[j]`` (if given) is the data row equal
    to ``points[j]``: its ``D0`` is set to exactly 0. Memory: ``budget`` bytes (default 8 x BLOCK_BYTES).
    """
    n, d = data.shape
    m = points.shape[0]
    dev = data.device
    es = torch.finfo(cd).bits // 8
    budget = (8 * BLOCK_BYTES) if budget is None else budget
    p = int(max(1, min(m, budget // max(1, es * n * (1 + 2 * n_noise)))))
    center = data.mean(dim=0, dtype=torch.float64).to(cd)
    c = _data_chunk(n, p * (1 + n_noise), es, BLOCK_BYTES)
    yy = torch.empty(n, dtype=cd, device=dev)
    for c0 in range(0, n, c):
        yy[c0:c0 + c] = _sqnorms(data[c0:c0 + c].to(cd) - center)
    for p0 in range(0, m, p):
        x0 = points[p0:p0 + p].to(cd) - center
        pb = x0.shape[0]
        noise = _generator_randn((pb, n_noise, d), generator, dev, cd)
        xx = _sqnorms(x0)
        D0 = torch.empty(pb, n, dtype=cd, device=dev)
        P = torch.empty(pb, n_noise, n, dtype=cd, device=dev)
        nf = noise.reshape(pb * n_noise, d)
        for c0 in range(0, n, c):
            ch = data[c0:c0 + c].to(cd) - center
            D0c = D0[:, c0:c0 + c]
            torch.addmm(yy[c0:c0 + c].unsqueeze(0), x0, ch.T, alpha=-2.0, out=D0c)
            D0c.add_(xx.unsqueeze(1)).clamp_min_(0)
            P[:, :, c0:c0 + c] = (nf @ ch.T).reshape(pb, n_noise, -1)
        if self_index is not None:
            D0[torch.arange(pb, device=dev), self_index[p0:p0 + pb].to(dev)] = 0
        yield {"D0": D0, "P": P, "nx": torch.einsum("prd,pd->pr", noise, x0),
               "nn": _sqnorms(nf).reshape(pb, n_noise), "start": p0, "rows": pb}


def _curve_setup(data, sigmas, n_noise, dname="data"):
    data = _points(data, dname)
    sig = _sigmas(sigmas)
    n_noise = _positive_int(n_noise, "n_noise")
    yy = _sqnorms(data)
    if not bool(torch.isfinite(yy).all()):
        raise ValueError(f"{dname} contains NaN or infinite values")
    return data, sig, n_noise


def posterior_weight_curves(data: torch.Tensor, sigmas, n_noise: int = 4, generator: torch.Generator | None = None,
                            *, n_points: int | None = None, reduce: bool = True, progress: bool = True,
                            dtype=None):
    """Max and self posterior weights along ``sigmas`` (Def. 4.1 and Fig. 7), in one pass.

    For base points ``x0 = y_{i0}`` (all of ``data``, or ``n_points`` drawn without replacement) and
    ``n_noise`` noises each: ``max_i w_i(x0 + sigma n; sigma)`` and ``w_{i0}(x0 + sigma n; sigma)``.
    Returns ``(max_weight, self_weight)``: float64 tensors of shape ``(len(sigmas),)``, or with
    ``reduce=False`` the per-sample values ``(len(sigmas), n_points, n_noise)``.
    """
    data, sig, n_noise = _curve_setup(data, sigmas, n_noise)
    cd = _compute_dtype(data, dtype=dtype)
    n = data.shape[0]
    sub = _subsample(n, n_points, generator)
    base = torch.arange(n) if sub is None else sub
    pts = data[base.to(data.device)]
    m = pts.shape[0]
    S = sig.numel()
    mx = torch.empty(S, m, n_noise, dtype=torch.float64, device=data.device)
    sw = torch.empty_like(mx)
    rows = torch.arange(m, device=data.device)
    floor = _exp_floor(cd)
    bar = _progress(S * m, progress, "posterior weights")
    for blk in _noisy_blocks(pts, data, n_noise, generator, cd=cd, self_index=base):
        D0, P, p0, pb = blk["D0"], blk["P"], blk["start"], blk["rows"]
        selfcol = base[p0:p0 + pb].to(data.device)
        buf = torch.empty_like(P)
        D0b = D0.unsqueeze(1)
        r = rows[:pb]
        for k, s in enumerate(sig.tolist()):
            # l_i = n.y_i / sigma - ||x0 - y_i||^2 / (2 sigma^2)   (row constants dropped)
            torch.mul(P, 1.0 / s, out=buf)
            buf.add_(D0b, alpha=-0.5 / (s * s))
            mrow = buf.amax(dim=2, keepdim=True)
            lself = buf[r, :, selfcol].unsqueeze(2)  # (pb, r, 1)
            buf.sub_(mrow).clamp_min_(floor).exp_()
            z = buf.sum(dim=2)
            mx[k, p0:p0 + pb] = z.reciprocal().to(torch.float64)
            sw[k, p0:p0 + pb] = (torch.exp(lself - mrow).squeeze(2) / z).to(torch.float64)
            bar.update(pb)
    bar.close()
    if not reduce:
        return mx, sw
    return mx.mean(dim=(1, 2)), sw.mean(dim=(1, 2))


def max_posterior_weight(data: torch.Tensor, sigmas, n_noise: int = 4, generator: torch.Generator | None = None,
                         *, n_points: int | None = None, reduce: bool = True, progress: bool = True,
                         dtype=None) -> torch.Tensor:
    """Def. 4.1: ``W(sigma) = E_{x0 ~ data} E_n max_i w_i(x0 + sigma n; sigma)`` for each ``sigma``.

    Monte Carlo over ``n_noise`` Gaussian noises per base point (all points of ``data``, or
    ``n_points`` of them drawn without replacement with ``generator``); noise shared across ``sigmas``.
    Returns float64 ``(len(sigmas),)`` (``reduce=False``: ``(len(sigmas), n_points, n_noise)``).
    """
    return posterior_weight_curves(data, sigmas, n_noise, generator, n_points=n_points, reduce=reduce,
                                   progress=progress, dtype=dtype)[0]


def self_posterior_weight(data: torch.Tensor, sigmas, n_noise: int = 4, generator: torch.Generator | None = None,
                          *, n_points: int | None = None, reduce: bool = True, progress: bool = True,
                          dtype=None) -> torch.Tensor:
    """Fig. 7: the expected weight of the point itself, ``E_{i0} E_n w_{i0}(y_{i0} + sigma n; sigma)``.

    Same estimator (and, for the same generator state, the same noise) as :func:`max_posterior_weight`.
    """
    return posterior_weight_curves(data, sigmas, n_noise, generator, n_points=n_points, reduce=reduce,
                                   progress=progress, dtype=dtype)[1]


# ----------------------------------------------------------------------------------------------
# Gaussian shells (Lemma 4.5, Def. 4.7)
# ----------------------------------------------------------------------------------------------
def _shell_args(d, x):
    d = _positive_int(d, "d")
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not (math.isfinite(x) and x > 0):
        raise ValueError(f"x must be a finite number > 0, got {x!r}")
    return d, float(x)


def shell_radii(d: int, x: float = 5.0) -> tuple[float, float]:
    """Lemma 4.5 radii for unit noise ``n ~ N(0, I_d)``: ``(r_minus, r_plus)`` with
    ``r_minus = sqrt(max(d - 2 sqrt(x d), 0))``, ``r_plus = sqrt(d + 2 sqrt(x d) + 2 x)``.

    By Laurent-Massart, ``P(r_minus <= ||n|| <= r_plus) >= 1 - 2 e^{-x}`` (0.9865 at ``x = 5``).
    (When ``d <= 4 x`` the lower tail bound is vacuous and ``r_minus = 0``.)
    """
    d, x = _shell_args(d, x)
    return math.sqrt(max(d - 2.0 * math.sqrt(x * d), 0.0)), math.sqrt(d + 2.0 * math.sqrt(x * d) + 2.0 * x)


def _phi_exact(t: np.ndarray, d: int, x: float) -> np.ndarray:
    """phi as a function of ``t = r / sigma`` (float64 numpy), exact via the noncentral chi-square."""
    rm, rp = shell_radii(d, x)
    nc = np.asarray(t, dtype=np.float64) ** 2
    lo, hi = rm * rm, rp * rp
    # P(lo <= X <= hi), X ~ ncx2(d, nc); use the tail that keeps precision
    F_hi = _stats.ncx2.cdf(hi, d, nc)
    F_lo = _stats.ncx2.cdf(lo, d, nc) if lo > 0 else np.zeros_like(nc)
    S_lo = _stats.ncx2.sf(lo, d, nc) if lo > 0 else np.ones_like(nc)
    S_hi = _stats.ncx2.sf(hi, d, nc)
    mean = d + nc
    out = np.where(mean > hi, F_hi - F_lo, S_lo - S_hi)
    return np.clip(out, 0.0, 1.0)


def shell_hit_probability(r, sigma, d: int, x: float = 5.0) -> torch.Tensor:
    """Def. 4.7, exactly: ``phi_sigma(r) = P_n(sigma r_- <= ||a + sigma n|| <= sigma r_+)`` for ``||a|| = r``.

    ``||a + sigma n||^2 / sigma^2`` is noncentral chi-square with ``d`` degrees of freedom and
    noncentrality ``r^2 / sigma^2``, so ``phi = F(r_+^2) - F(r_-^2)`` (``scipy.stats.ncx2``, using the
    survival function where that keeps precision). ``r`` (>= 0) and ``sigma`` (> 0) broadcast; float64
    result on ``r``'s device (CPU for python numbers).
    """
    d, x = _shell_args(d, x)
    dev = r.device if isinstance(r, torch.Tensor) else (sigma.device if isinstance(sigma, torch.Tensor) else torch.device("cpu"))
    rr = r.detach().cpu().double().numpy() if isinstance(r, torch.Tensor) else np.asarray(r, dtype=np.float64)
    ss = sigma.detach().cpu().double().numpy() if isinstance(sigma, torch.Tensor) else np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(rr)) or np.any(rr < 0):
        raise ValueError("r must be finite and >= 0")
    if not np.all(np.isfinite(ss)) or np.any(ss <= 0):
        raise ValueError("sigma must be finite and > 0")
    rr, ss = np.broadcast_arrays(rr, ss)
    return torch.as_tensor(_phi_exact(rr / ss, d, x), dtype=torch.float64).to(dev)


@functools.lru_cache(maxsize=32)
def _phi_table(d: int, x: float, tol: float = 1e-11):
    """``phi`` tabulated on a uniform grid of ``t = r/sigma`` in ``[0, t_max]`` for 4-point Lagrange
    interpolation; the grid is refined until the interpolant matches the exact value within ``tol``
    at off-grid check points. Beyond ``t_max``, ``phi(t) <= F_{d, t^2}(r_+^2) <= _SHELL_TAIL``.
    """
    rm, rp = shell_radii(d, x)
    hi = rp * rp
    t_max = 1.0
    while _stats.ncx2.cdf(hi, d, t_max * t_max) > _SHELL_TAIL:
        t_max *= 1.5
    h = t_max / 2048
    for _ in range(8):
        K = int(math.ceil(t_max / h)) + 3
        grid = np.arange(-1, K) * h  # one point left of 0 (phi is even in t)
        vals = _phi_exact(np.abs(grid), d, x)
        check = (np.arange(1, K - 3) + np.array([[0.23], [0.5], [0.81]])).ravel() * h
        approx = _lagrange4(torch.as_tensor(check), torch.as_tensor(vals), h).numpy()
        err = np.max(np.abs(approx - _phi_exact(check, d, x)))
        if err <= tol:
            return h, torch.as_tensor(vals), t_max, err
        h /= 2
    raise RuntimeError(f"phi table did not reach tolerance {tol} (error {err:.3g}) for d={d}, x={x}")


def _lagrange4(t: torch.Tensor, vals: torch.Tensor, h: float) -> torch.Tensor:
    """4-point Lagrange interpolation of ``vals`` (grid ``(j - 1) h``, ``j = 0..``) at ``t >= 0``; 0 past the end."""
    K = vals.numel()
    u = t / h + 1.0  # position in grid index units
    j = torch.floor(u).clamp_(1, K - 3)
    f = (u - j).to(vals.dtype)
    j = j.long()
    v0, v1, v2, v3 = vals[j - 1], vals[j], vals[j + 1], vals[j + 2]
    w0 = -f * (f - 1) * (f - 2) / 6
    w1 = (f + 1) * (f - 1) * (f - 2) / 2
    w2 = -(f + 1) * f * (f - 2) / 2
    w3 = (f + 1) * f * (f - 1) / 6
    out = w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3
    return torch.where(u > K - 2, torch.zeros_like(out), out).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# coverage (Def. 4.6) and its bounds (Thm 4.8)
# ----------------------------------------------------------------------------------------------
def _coverage(train, queries, sigmas, n_noise, generator, *, x, n_points, exclude_self, progress, dtype,
              reduce=True):
    train, sig, n_noise = _curve_setup(train, sigmas, n_noise, "train")
    queries = _points(queries, "test")
    _check_pair(queries, train, "test", "train")
    _check_finite_tensor(queries, "test")
    if exclude_self and train.shape[0] < 2:
        raise ValueError("train must have at least 2 points for leave-one-out coverage")
    d = train.shape[1]
    _, x = _shell_args(d, x)
    rm, rp = shell_radii(d, x)
    cd = _compute_dtype(train, queries, dtype=dtype)
    sub = _subsample(queries.shape[0], n_points, generator)
    qidx = torch.arange(queries.shape[0]) if sub is None else sub
    pts = queries[qidx.to(queries.device)]
    m = pts.shape[0]
    S = sig.numel()
    hit = torch.empty(S, m, n_noise, dtype=torch.bool, device=train.device)
    bar = _progress(S * m, progress, "coverage")
    a_mid, a_half = 0.5 * (rm * rm + rp * rp), 0.5 * (rp * rp - rm * rm)
    for blk in _noisy_blocks(pts, train, n_noise, generator, cd=cd, budget=None):
        D0, P, p0, pb = blk["D0"], blk["P"], blk["start"], blk["rows"]
        if exclude_self:
            D0[torch.arange(pb, device=D0.device), qidx[p0:p0 + pb].to(D0.device)] = math.inf
        nx, nn = blk["nx"], blk["nn"]
        buf = torch.empty_like(P)
        D0b = D0.unsqueeze(1)
        for k, s in enumerate(sig.tolist()):
            # ||x0 + s n - y||^2 = D0 - 2 s n.y + (2 s n.x0 + s^2 ||n||^2); shell: s^2 r_-^2 <= . <= s^2 r_+^2
            torch.add(D0b, P, alpha=-2.0 * s, out=buf)
            cq = 2.0 * s * nx + (s * s) * nn  # (pb, r)
            mid = (s * s * a_mid - cq).unsqueeze(2)
            buf.sub_(mid).abs_()
            hit[k, p0:p0 + pb] = buf.amin(dim=2) <= s * s * a_half
            bar.update(pb)
    bar.close()
    if not reduce:
        return hit
    return hit.to(torch.float64).mean(dim=(1, 2))


def coverage(train: torch.Tensor, test: torch.Tensor, sigmas, n_noise: int = 4, generator: torch.Generator | None = None,
             *, x: float = 5.0, n_points: int | None = None, reduce: bool = True, progress: bool = True,
             dtype=None) -> torch.Tensor:
    """Def. 4.6 by Monte Carlo: ``C(sigma) = P_{x0 ~ test, n}(x0 + sigma n in U_i S_sigma(y_i))``.

    ``S_sigma(y) = {z : sigma r_- <= ||z - y|| <= sigma r_+}`` (Eq. 6, radii from :func:`shell_radii`).
    Averages over the test points (or ``n_points`` of them) and ``n_noise`` noises each, the noise
    shared across ``sigmas``. Returns float64 ``(len(sigmas),)`` (``reduce=False``: the boolean hits
    ``(len(sigmas), n_points, n_noise)``).
    """
    return _coverage(train, test, sigmas, n_noise, generator, x=x, n_points=n_points, exclude_self=False,
                     progress=progress, dtype=dtype, reduce=reduce)


def coverage_bounds(train: torch.Tensor, test: torch.Tensor, sigmas, *, x: float = 5.0,
                    n_points: int | None = None, generator: torch.Generator | None = None,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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
    terms with ``r / sigma`` past the table, where ``phi < 1e-18``, are 0). ``n_points``: average over
    that many test points drawn without replacement with ``generator`` (default: all). Cost: one
    ``(m, N)`` distance matrix (chunked) plus ``O(m N)`` interpolations per ``sigma``.
    """
    train = _points(train, "train")
    test = _points(test, "test")
    _check_pair(test, train, "test", "train")
    sig = _sigmas(sigmas)
    sub = _subsample(test.shape[0], n_points, generator)
    if sub is not None:
        test = test[sub.to(test.device)]
    d = train.shape[1]
    _, x = _shell_args(d, x)
    h, vals, t_max, _ = _phi_table(d, x)
    dist_nn = nearest_neighbors(test, train, 1)[0][:, 0].cpu().numpy()
    lower = torch.as_tensor([_phi_exact(dist_nn / s, d, x).mean() for s in sig.tolist()], dtype=torch.float64)
    # upper: all pairwise distances, chunked over test points
    dev = train.device
    vals = vals.to(dev)
    cd = _compute_dtype(train, test)
    center = train.mean(dim=0, dtype=torch.float64).to(cd)
    trc = train.to(cd) - center
    yy = _sqnorms(trc)
    _check_finite_tensor(yy, "train")
    _check_finite_tensor(test, "test")
    m, n = test.shape[0], train.shape[0]
    upper_sum = torch.zeros(sig.numel(), dtype=torch.float64, device=dev)
    rows = _query_block(m, n, 8, BLOCK_BYTES // 8, min_chunk=n)
    bar = _progress(sig.numel() * m, progress, "coverage bounds")
    for q0 in range(0, m, rows):
        xq = test[q0:q0 + rows].to(cd) - center
        d2 = torch.addmm(yy.unsqueeze(0), xq, trc.T, alpha=-2.0).add_(_sqnorms(xq).unsqueeze(1)).clamp_min_(0)
        r = d2.to(torch.float64).sqrt_()
        for k, s in enumerate(sig.tolist()):
            tot = _lagrange4(r / s, vals, h).sum(dim=1)
            upper_sum[k] += tot.clamp_max_(1.0).sum()
            bar.update(r.shape[0])
    bar.close()
    return lower.to(dev), upper_sum / m


# ----------------------------------------------------------------------------------------------
# Theorem 4.2 (posterior concentration thresholds)
# ----------------------------------------------------------------------------------------------
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
                             sharp: bool = False):
    r"""Theorem 4.2 for the point ``y_1 = data[index]``: ``(sigma_lo, sigma_hi)`` such that, for
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

    ``index``: an int (returns two floats) or a sequence of ints (returns two float64 tensors).
    ``0 < eps < 1/2``, ``0 < delta < 1``; ``data`` needs ``N >= 2`` points.
    """
    data = _points(data, "data", min_rows=2)
    _check_finite_tensor(data, "data")
    for name, v, hi in (("eps", eps, 0.5), ("delta", delta, 1.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not (0 < v < hi):
            raise ValueError(f"{name} must be in (0, {hi}), got {v!r}")
    n = data.shape[0]
    scalar = isinstance(index, (int, np.integer)) and not isinstance(index, bool)
    idx = [int(index)] if scalar else [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
    if not idx:
        raise ValueError("index must be an int or a non-empty sequence of ints")
    for i in idx:
        if not -n <= i < n:
            raise ValueError(f"index {i} out of range for data with {n} points")
    res = [_thresholds_one(_distances_from(data, i % n), float(eps), float(delta), sharp) for i in idx]
    if scalar:
        return res[0]
    lo = torch.tensor([r[0] for r in res], dtype=torch.float64, device=data.device)
    hi = torch.tensor([r[1] for r in res], dtype=torch.float64, device=data.device)
    return lo, hi


# ----------------------------------------------------------------------------------------------
# Gaussian linear denoiser (Eq. 7, Thm 4.11)
# ----------------------------------------------------------------------------------------------
def fit_gaussian(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``mu`` and covariance ``Sigma = (1/N) sum_i (y_i - mu)(y_i - mu)^T`` (float64) of the
    empirical distribution of ``data`` (the Gaussian of Eq. 7 matches these two moments)."""
    data = _points(data, "data")
    _check_finite_tensor(data, "data")
    n, d = data.shape
    mu = data.mean(dim=0, dtype=torch.float64)
    cov = torch.zeros(d, d, dtype=torch.float64, device=data.device)
    rows = max(1, (64 * 2**20) // (8 * d))
    for r0 in range(0, n, rows):
        c = data[r0:r0 + rows].to(torch.float64) - mu
        cov.addmm_(c.T, c)
    cov /= n
    return mu, cov


def gaussian_linear_denoiser(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, sigma) -> torch.Tensor:
    """Eq. 7: ``D_G(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)`` (the optimal denoiser
    of ``N(mu, Sigma)``), computed as ``x - sigma^2 (Sigma + sigma^2 I)^{-1} (x - mu)`` by a Cholesky
    solve in float64. Result in ``x``'s dtype and shape. For many sigmas use :class:`GaussianLinearDenoiser`."""
    shape = x.shape if isinstance(x, torch.Tensor) else None
    s = _sigma(sigma)
    xf = _points(x, "x")
    if not isinstance(mean, torch.Tensor) or mean.dim() != 1 or mean.shape[0] != xf.shape[1]:
        raise ValueError(f"mean must be a 1-D tensor of length {xf.shape[1]}")
    if not isinstance(cov, torch.Tensor) or cov.shape != (xf.shape[1], xf.shape[1]):
        raise ValueError(f"cov must have shape ({xf.shape[1]}, {xf.shape[1]}), got "
                         f"{tuple(cov.shape) if isinstance(cov, torch.Tensor) else type(cov).__name__}")
    for name, t in (("mean", mean), ("cov", cov)):
        if t.device != xf.device:
            raise ValueError(f"{name} is on {t.device} but x is on {xf.device}")
        _check_finite_tensor(t, name)
    _check_finite_tensor(xf, "x")
    A = cov.to(torch.float64) + (s * s) * torch.eye(xf.shape[1], dtype=torch.float64, device=xf.device)
    r = (xf.to(torch.float64) - mean.to(torch.float64)).T
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        raise ValueError("cov + sigma^2 I is not positive definite: cov must be symmetric positive semi-definite")
    z = torch.cholesky_solve(r, L)
    out = xf.to(torch.float64) - (s * s) * z.T
    return out.to(xf.dtype).reshape(shape)


class GaussianLinearDenoiser:
    """Eq. 7 with the covariance diagonalised once, so each ``sigma`` costs two ``(b, d) x (d, d)`` products.

    ``Sigma = U diag(lambda) U^T``  =>  ``D_G(x; sigma) = mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu)``.
    Build with :meth:`fit` (from data) or from ``(mean, cov)``. Eigenvalues below 0 (rounding of a
    PSD matrix) are set to 0.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        if not isinstance(mean, torch.Tensor) or mean.dim() != 1:
            raise ValueError("mean must be a 1-D tensor")
        d = mean.shape[0]
        if not isinstance(cov, torch.Tensor) or cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d})")
        if cov.device != mean.device:
            raise ValueError(f"cov is on {cov.device} but mean is on {mean.device}")
        _check_finite_tensor(mean, "mean")
        _check_finite_tensor(cov, "cov")
        c64 = cov.to(torch.float64)
        lam, U = torch.linalg.eigh(0.5 * (c64 + c64.T))
        self.mean = mean.to(torch.float64)
        self.eigvals = lam.clamp_min(0)
        self.eigvecs = U

    @classmethod
    def fit(cls, data: torch.Tensor) -> "GaussianLinearDenoiser":
        """Fit mean and covariance of ``data`` (:func:`fit_gaussian`) and diagonalise.

        With fewer points than dimensions (``N < d``) the covariance has rank ``< N``: its nonzero
        eigenpairs come from a thin SVD of the centred data (``S^2 / N`` and the right singular
        vectors), which is exact and much cheaper than a ``d x d`` eigendecomposition."""
        data = _points(data, "data")
        n, d = data.shape
        if n >= d:
            return cls(*fit_gaussian(data))
        _check_finite_tensor(data, "data")
        mu = data.mean(dim=0, dtype=torch.float64)
        _, S, Vh = torch.linalg.svd(data.to(torch.float64) - mu, full_matrices=False)
        obj = cls.__new__(cls)
        obj.mean, obj.eigvals, obj.eigvecs = mu, (S * S / n).flip(0), Vh.flip(0).T
        return obj

    @property
    def cov(self) -> torch.Tensor:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def gains(self, sigma) -> torch.Tensor:
        """Eigenvalues ``lambda / (lambda + sigma^2)`` of the linear map (float64, ascending lambda)."""
        s = _sigma(sigma)
        return self.eigvals / (self.eigvals + s * s)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        shape = x.shape if isinstance(x, torch.Tensor) else None
        s = _sigma(sigma)
        xf = _points(x, "x")
        if xf.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x has dimension {xf.shape[1]} but the Gaussian has dimension {self.mean.shape[0]}")
        if xf.device != self.mean.device:
            raise ValueError(f"x is on {xf.device} but the Gaussian is on {self.mean.device}")
        _check_finite_tensor(xf, "x")
        cd = xf.dtype if xf.dtype in (torch.float32, torch.float64) else torch.float32
        U = self.eigvecs.to(cd)
        mu = self.mean.to(cd)
        g = self.gains(s).to(cd)
        out = ((xf.to(cd) - mu) @ U).mul_(g) @ U.T
        return out.add_(mu).reshape(shape)
