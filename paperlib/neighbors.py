"""Exact nearest neighbours (used by the 1/3 rule of Sec. 3, Thm 4.8's lower bound and the chapters).

:func:`nearest_neighbors` finds candidates with chunked matrix products in the input dtype
(``||y||^2 - 2 x.y``) and re-scores them exactly in float64; the re-scoring is certified per row by a
rounding-error bound (rows where it is not sufficient are recomputed in float64), so distances and
indices equal those of a brute-force float64 computation (exactly equal distances may come in
either order).
"""
from __future__ import annotations

import torch

from . import blocking, checks

__all__ = ["nearest_neighbors", "nearest_neighbor_distances"]


def _candidates(x, data, yy, kk, budget=None):
    """Per query row, the ``kk`` smallest values of ``s_j = ||y_j||^2 - 2 x.y_j`` (approximate).

    Data chunks are cast to ``x``'s dtype on the fly (no full copy of ``data``)."""
    b, n = x.shape[0], data.shape[0]
    c = blocking.data_chunk(n, b, x.element_size(), budget)
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
    ``names``: how error messages call the two arguments (e.g. ``("samples", "train")``).
    """
    xn, dn = names
    x = checks.points(x, xn)
    data = checks.points(data, dn)
    checks.pair(x, data, xn, dn)
    k = checks.positive_int(k, "k")
    n = data.shape[0]
    if k > n:
        raise ValueError(f"k = {k} exceeds the number of {dn} points ({n})")
    extra = checks.positive_int(extra, "extra", 0)
    cd = checks.compute_dtype(x, data)
    xc, dc = x.to(cd), data.to(cd)
    yy = blocking.finite_sqnorms(dc, dn)
    xx = blocking.finite_sqnorms(xc, xn)
    b = x.shape[0]
    kk = min(n, k + extra)
    dist = torch.empty(b, k, dtype=torch.float64, device=x.device)
    idx = torch.empty(b, k, dtype=torch.long, device=x.device)
    bq = blocking.query_block(b, n, xc.element_size(), budget)
    d = x.shape[1]
    u = blocking.unit_roundoff(cd, x.device)
    ymax = float(yy.max()) if n else 0.0
    for q0 in range(0, b, bq):
        xq = xc[q0:q0 + bq]
        v, i = _candidates(xq, dc, yy, kk, budget)
        ex = blocking.exact_sqdist_rows(x[q0:q0 + bq], data, i)  # exact, from the original inputs
        ex, order = torch.sort(ex, dim=1)
        i = torch.gather(i, 1, order)
        if kk < n:
            bound = blocking.sqdist_error_bound(xx[q0:q0 + bq], ymax, d, u)
            kth_left_out = v[:, -1].to(torch.float64) - bound  # lower bound on s_j of any point not re-scored
            ok = kth_left_out >= ex[:, k - 1] - xx[q0:q0 + bq].to(torch.float64)
            # (ex - xx is the exact s_j of the k-th candidate, up to float64 rounding)
            bad = torch.nonzero(~ok).flatten()
            if bad.numel():
                xb = x[q0:q0 + bq][bad].to(torch.float64)
                yy64 = torch.cat([blocking.sqnorms(data[r0:r0 + 4096].to(torch.float64)) for r0 in range(0, n, 4096)])
                _, ib = _candidates(xb, data, yy64, kk, budget)
                eb = blocking.exact_sqdist_rows(xb, data, ib)
                eb, ob = torch.sort(eb, dim=1)
                ex[bad] = eb
                i[bad] = torch.gather(ib, 1, ob)
        dist[q0:q0 + bq] = ex[:, :k].clamp_min_(0).sqrt_()
        idx[q0:q0 + bq] = i[:, :k]
    return dist, idx


def nearest_neighbor_distances(x: torch.Tensor, data: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Exact Euclidean distances (float64, ``(b, k)``) from each query to its ``k`` nearest data points."""
    return nearest_neighbors(x, data, k)[0]
