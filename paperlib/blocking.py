"""Blocked, memory-bounded kernels shared by the geometry modules (no paper object of its own).

Everything that touches all ``N`` training points is a matrix product on blocks of queries against
chunks of the data, so memory stays bounded by :data:`BLOCK_BYTES` for any ``N`` and any number of
queries. This module holds the block sizes, the rounding-error bounds that certify float32 results,
the exact float64 re-scoring of nearest entries, and the Monte Carlo blocks (noisy copies of base
points) shared by :mod:`~paperlib.posterior` and :mod:`~paperlib.shells`.

**Near entries are exact.** A squared distance ``||x||^2 + ||y||^2 - 2 x.y`` computed in float32
carries an absolute error of about ``2^-24 (||x||^2 + ||y||^2)``. At small ``sigma`` what matters are
the few smallest distances of each row (the nearest points, the point itself, its exact copies), so
:func:`refine_nearest` recomputes the ``K`` smallest entries of each row by direct
differences of the original inputs -- an exact copy of the query gets exactly 0, the same as the
query itself -- and rows where the remaining entries are not provably farther are recomputed whole.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from tqdm import tqdm

from . import checks

__all__ = ["BLOCK_BYTES", "NEAR", "sqnorms", "data_chunk", "query_block", "unit_roundoff", "exp_floor",
           "finite_sqnorms", "center", "progress_bar", "randn", "subsample", "exact_sqdist_rows", "sqdist_error_bound", "refine_nearest",
           "noisy_blocks", "scale_is_safe"]

#: Upper bound (bytes) on the block of logits / distances held at once (per query block x data chunk).
BLOCK_BYTES = 32 * 2**20

#: Entries per row recomputed exactly by :func:`refine_nearest`.
NEAR = 4


def sqnorms(t: torch.Tensor) -> torch.Tensor:
    """Row squared norms, accumulated in the tensor's dtype without an ``(n, d)`` temporary."""
    return torch.linalg.vector_norm(t, dim=1).square_()


def finite_sqnorms(t: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`sqnorms` of ``t``, or a ``ValueError`` naming ``name`` when a value or its square is not finite."""
    nn = sqnorms(t)
    if not bool(torch.isfinite(nn).all()):
        raise ValueError(f"{name} contains NaN or infinite values (or values whose square overflows)")
    return nn


def data_chunk(n: int, rows: int, itemsize: int, budget: int | None = None) -> int:
    """Number of data rows per chunk so that ``rows x chunk`` values fit in ``budget`` bytes."""
    budget = BLOCK_BYTES if budget is None else budget
    return int(max(1, min(n, budget // max(1, rows * itemsize))))


def query_block(b: int, n: int, itemsize: int, budget: int | None = None, min_chunk: int = 2048) -> int:
    """Number of query rows per block so that ``rows x min(n, min_chunk)`` values fit in ``budget``."""
    budget = BLOCK_BYTES if budget is None else budget
    return int(max(1, min(b, budget // max(1, itemsize * min(n, min_chunk)))))


def unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
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


def sqdist_error_bound(xx: torch.Tensor, ymax: float, d: int, u: float) -> torch.Tensor:
    """Bound on the rounding error of ``||x||^2 + ||y||^2 - 2 x.y`` for a ``d``-term dot product in unit
    roundoff ``u`` (``xx``: the queries' squared norms; ``ymax``: the largest data squared norm)."""
    gamma = d * u / max(1e-300, 1 - d * u) if d * u < 1 else math.inf
    s = xx.to(torch.float64) + ymax
    return 3.0 * gamma * s + 4 * u * s


def exp_floor(dtype: torch.dtype) -> float:
    """Exponents below this are raised to it before ``exp``: ``exp(floor)`` is the smallest normal
    number, so no subnormals are produced (they make ``exp`` ~6x slower on CPU). Each raised term adds
    at most ``exp(floor)`` (1.2e-38 in float32) to sums that are >= 1: invisible at the dtype's precision."""
    return math.log(torch.finfo(dtype).tiny) + 1e-3


def scale_is_safe(inv: float, magnitude: float, dtype: torch.dtype) -> bool:
    """Whether logits ``inv * (values of size <= magnitude)`` stay far from overflow in ``dtype``."""
    big = torch.finfo(dtype).max / 1e4
    return inv < big and inv * max(magnitude, 1.0) < big


def center(data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A point to centre ``data`` on before ``||x||^2 + ||y||^2 - 2 x.y`` (less cancellation): the
    coordinate-wise median of at most 129 evenly spaced rows. Unlike the mean, a few far outliers do
    not move it, so the bulk of the data keeps small norms (and small float32 errors)."""
    n = data.shape[0]
    rows = data[:: max(1, n // 129)][:129]
    return rows.T.to(dtype).contiguous().median(dim=1).values


def progress_bar(total: int, progress: bool, desc: str):
    return tqdm(total=total, disable=not progress, desc=desc, leave=False)


def randn(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal draws from ``generator`` (on its device), moved to ``device``."""
    checks.generator(generator)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def subsample(n: int, n_points, generator, name: str = "n_points") -> torch.Tensor | None:
    """Indices of ``n_points`` distinct points out of ``n`` (None: all points, in order)."""
    checks.generator(generator)
    if n_points is None or (not isinstance(n_points, bool) and n_points == n):
        return None
    k = checks.positive_int(n_points, name)
    if k > n:
        raise ValueError(f"{name} = {k} exceeds the number of points ({n})")
    if generator is None:
        perm = torch.randperm(n)
    else:
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
    return perm[:k].sort().values


def exact_sqdist_rows(x: torch.Tensor, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
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


def _exact_row(x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """All squared distances of one point ``x`` ``(d,)`` to ``data`` by direct float64 differences."""
    n = data.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=data.device)
    x64 = x.to(torch.float64)
    rows = max(1, (16 * 2**20) // (8 * data.shape[1]))
    for c0 in range(0, n, rows):
        out[c0:c0 + rows] = torch.linalg.vector_norm(data[c0:c0 + rows].to(torch.float64) - x64, dim=1).square_()
    return out


def refine_nearest(D: torch.Tensor, x: torch.Tensor, data: torch.Tensor, err: torch.Tensor,
                   k: int = NEAR, noise: torch.Tensor | None = None, R: torch.Tensor | None = None) -> None:
    """In place: replace the ``k`` smallest entries of each row of the squared distances ``D`` ``(b, n)``
    (computed from ``x`` ``(b, d)`` and ``data`` ``(n, d)`` with absolute error ``<= err`` per row) by
    values from direct differences (in ``D``'s dtype: exactly 0 for a copy, relative error only); rows where an entry left out could be within
    ``2 err`` of the row minimum are recomputed whole. Given ``noise`` ``(b, r, d)`` and ``R`` ``(b, r, n)``,
    the same entries of ``R = noise . (y - x)`` are recomputed from the differences too."""
    b, n = D.shape
    k = min(k, n)
    v, idx = torch.topk(D, k, dim=1, largest=False)
    rows = max(1, (8 * 2**20) // max(1, 8 * k * x.shape[1]))
    cd = D.dtype
    for r0 in range(0, b, rows):
        ii = idx[r0:r0 + rows]
        # direct differences: exact 0 for a copy; relative (not absolute) rounding error otherwise
        diff = data[ii].to(cd).sub_(x[r0:r0 + rows].to(cd).unsqueeze(1))  # (r, k, d)
        D[r0:r0 + rows].scatter_(1, ii, torch.linalg.vector_norm(diff, dim=2).square_())
        if R is not None:
            ex = torch.bmm(noise[r0:r0 + rows].to(cd), diff.transpose(1, 2))  # (r, n_noise, k)
            R[r0:r0 + rows].scatter_(2, ii.unsqueeze(1).expand(-1, R.shape[1], -1), ex)
    if k < n:
        dmin = D.gather(1, idx).amin(dim=1).to(torch.float64)
        bad = torch.nonzero(v[:, -1].to(torch.float64) - err < dmin + err).flatten()
        for r in bad.tolist():
            D[r] = _exact_row(x[r], data).to(D.dtype)
            if R is not None:
                for c0 in range(0, n, 4096):
                    diff = data[c0:c0 + 4096].to(torch.float64) - x[r].to(torch.float64)
                    R[r, :, c0:c0 + 4096] = (noise[r].to(torch.float64) @ diff.T).to(R.dtype)


def noisy_blocks(points: torch.Tensor, data: torch.Tensor, n_noise: int, generator, *, cd,
                 budget: int | None = None) -> Iterator[dict]:
    """For blocks of base points ``x0``: ``D0 = ||x0 - y||^2`` and ``R = n.(y - x0)``.

    Yields dicts with ``D0`` ``(p, n)``, ``R`` ``(p, r, n)`` and ``nn = ||n||^2`` ``(p, r)`` with
    ``r = n_noise``, so that ``||x0 + sigma n - y||^2 = D0 - 2 sigma R + sigma^2 nn``. The noise of a block
    is ``randn((p, n_noise, d), generator=generator)``. The bulk is computed by matrix products in
    ``cd`` after centring on :func:`center` (less cancellation); the :data:`NEAR` smallest entries of each
    row of ``D0`` and ``R`` are exact (:func:`refine_nearest`), so a base point and its exact copies in
    ``data`` get ``D0 = 0`` and ``R = 0`` alike. Memory: ``budget`` bytes (default 8 x BLOCK_BYTES).
    """
    n, d = data.shape
    m = points.shape[0]
    dev = data.device
    es = torch.finfo(cd).bits // 8
    budget = (8 * BLOCK_BYTES) if budget is None else budget
    p = int(max(1, min(m, budget // max(1, es * n * (1 + 2 * n_noise)))))
    mid = center(data, cd)
    c = data_chunk(n, p * (1 + n_noise), es, BLOCK_BYTES)
    yy = torch.empty(n, dtype=cd, device=dev)
    for c0 in range(0, n, c):
        yy[c0:c0 + c] = sqnorms(data[c0:c0 + c].to(cd) - mid)
    ymax = float(yy.max())
    u = unit_roundoff(cd, torch.device(dev) if not isinstance(dev, torch.device) else dev)
    for p0 in range(0, m, p):
        x0 = points[p0:p0 + p].to(cd) - mid
        pb = x0.shape[0]
        noise = randn((pb, n_noise, d), generator, dev, cd)
        xx = sqnorms(x0)
        D0 = torch.empty(pb, n, dtype=cd, device=dev)
        R = torch.empty(pb, n_noise, n, dtype=cd, device=dev)
        nf = noise.reshape(pb * n_noise, d)
        for c0 in range(0, n, c):
            ch = data[c0:c0 + c].to(cd) - mid
            D0c = D0[:, c0:c0 + c]
            torch.addmm(yy[c0:c0 + c].unsqueeze(0), x0, ch.T, alpha=-2.0, out=D0c)
            D0c.add_(xx.unsqueeze(1)).clamp_min_(0)
            R[:, :, c0:c0 + c] = (nf @ ch.T).reshape(pb, n_noise, -1)
        R.sub_(torch.einsum("prd,pd->pr", noise, x0).unsqueeze(2))
        err = sqdist_error_bound(xx, ymax, d, u)
        refine_nearest(D0, points[p0:p0 + pb], data, err, noise=noise, R=R)
        yield {"D0": D0, "R": R, "nn": sqnorms(nf).reshape(pb, n_noise), "start": p0, "rows": pb}
