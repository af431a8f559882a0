"""Local coverage and per-point memorization (related paper: Merger & Goldt, "Local Coverage Governs
Memorization in Diffusion Models", arXiv 2606.14390).

The related paper's full text is not available offline. Its metric conventions come from its public code;
the KDE criterion below is the companion's own derivation (checked by Monte Carlo in
``tests/test_local_coverage.py`` and in chapter 07).

**Per-point quantities** (training points ``y_1..y_N`` in R^d, images flattened):

* local sparsity of ``y_i``: the mean distance to its ``k`` nearest *other* training points
  (:func:`local_sparsity`; ``squared=True`` gives the related paper's mean squared per-coordinate distance);
* the memorization rate of a set of samples per training point: each sample is assigned to its nearest
  training point, and a point's rate is memorized assigned / assigned (:func:`per_point_memorization`).
  The rule is the main paper's on plain distances, ``d1 < ratio * d2`` (Sec. 3); the related paper's
  ``d1^2 / d2^2 < tau`` is ``ratio = sqrt(tau)`` (so the main paper's 1/3 is their ``tau = 1/9``);
* the per-sample dominance ``log(d2^2 / d1^2)`` (:func:`dominance`, their convention on squared distances).

**The KDE model.** The Gaussian kernel density estimate of bandwidth ``h``, ``p_h = (1/N) sum_i N(y_i, h^2 I)``,
has the exact denoiser (posterior mean of ``x0 ~ p_h`` given ``x = x0 + sigma n``)

    D_h(x; sigma) = sigma^2/(sigma^2 + h^2) D*(x; sqrt(sigma^2 + h^2)) + h^2/(sigma^2 + h^2) x,

with ``D*`` the empirical denoiser of Eq. 2 (:func:`kde_denoiser`): the empirical denoiser of the data
smoothed by ``h``. Its probability-flow ODE ends at samples ``x = y_J + h n`` (``J`` uniform, ``n ~ N(0, I)``),
drawn directly by :func:`kde_sample`. (Running the empirical denoiser's ODE down to ``sigma = h`` and stopping
gives the same law, since the ODE keeps the marginals ``p * N(0, sigma^2 I)``.)

**The criterion** (derivation). Let ``r1`` be the distance from ``y_J`` to its nearest other training point
``y_K``, ``a = y_K - y_J``, ``u = h n``. Against that one competitor the sample is memorized iff
``||u|| < ratio ||u - a||``; with ``t = ratio`` and ``c = t^2 / (1 - t^2)`` this is the Apollonius ball
``||u + c a||^2 < t^2 r1^2 / (1 - t^2)^2``, so ``||n + (c/h) a||^2`` is noncentral chi-square with ``d`` degrees
of freedom and noncentrality ``lam = c^2 r1^2 / h^2``:

    P(memorized | r1, h) = F_ncx2(d, lam)( t^2 r1^2 / (h^2 (1 - t^2)^2) ),   lam = t^4 r1^2 / (h^2 (1 - t^2)^2)

(:func:`memorization_probability`). Farther competitors only shrink the ball, so this is an upper bound that
is tight when the nearest competitor dominates. At the mean of the chi-square (``d + lam``) the condition is
``r1^2 t^2 / (h^2 (1 - t^2)) = d``, and the relative spread of the chi-square is ``O(d^-1/2)``: for large ``d`` a
step at

    r1* = h sqrt((1/t^2 - 1) d)      (= 2 sqrt(2) h sqrt(d) at t = 1/3)

(:func:`critical_distance`; per point, the critical bandwidth ``h* = r1 / sqrt((1/t^2 - 1) d)``,
:func:`critical_bandwidth`). Isolated points (``r1 > r1*``) are memorized, points in dense regions are not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize as _optimize
from scipy import stats as _stats

from . import checks, geometry, memorization

__all__ = [
    "other_neighbors",
    "local_sparsity",
    "PerPointMemorization",
    "per_point_memorization",
    "dominance",
    "rate_by_group",
    "quantile_bins",
    "kde_denoiser",
    "KDEDenoiser",
    "kde_sample",
    "memorization_probability",
    "critical_distance",
    "critical_bandwidth",
    "fit_bandwidth",
]


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def _ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not (0 < ratio < 1):
        raise ValueError(f"ratio must be a number in (0, 1), got {ratio!r}")
    return float(ratio)


def _positive(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def _array(v, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().to(torch.float64).numpy()
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers (array, tensor or float), got {type(v).__name__}") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


# ----------------------------------------------------------------------------------------------
# per-point geometry
# ----------------------------------------------------------------------------------------------
def other_neighbors(data: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest *other* points of every point of ``data``: ``(distances, indices)``, each ``(N, k)``.

    Exact Euclidean distances (float64, increasing along a row) from
    :func:`paperlib.geometry.nearest_neighbors` (streamed over data chunks); the point itself is left out
    (a duplicate of it is kept, at distance 0). ``distances[:, 0]`` is ``r1``, the nearest-neighbour distance.
    """
    data = checks.points(data, "data", min_rows=2)
    k = checks.positive_int(k, "k")
    n = data.shape[0]
    if k > n - 1:
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} points in data, got {n}")
    dist, idx = geometry.nearest_neighbors(data, data, k + 1, names=("data", "data"))
    own = idx == torch.arange(n, device=idx.device).unsqueeze(1)
    # drop the point itself; rows where it was crowded out by duplicates (all at distance 0) drop the last
    drop = torch.where(own.any(dim=1), own.to(torch.int8).argmax(dim=1), torch.full((n,), k, device=idx.device))
    keep = torch.ones_like(own)
    keep[torch.arange(n, device=idx.device), drop] = False
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def local_sparsity(data: torch.Tensor, k: int = 10, *, squared: bool = False) -> torch.Tensor:
    """Local sparsity of every training point (float64, ``(N,)``): the mean distance to its ``k`` nearest
    other points (:func:`other_neighbors`).

    ``squared=True``: the related paper's convention, the mean *squared per-coordinate* distance
    ``(1/k) sum_j ||y_i - y_j||^2 / d`` (they use ``k = 10`` on CIFAR-10, ``k = 5`` on CIFAR-10 + MNIST).
    """
    dist, _ = other_neighbors(data, k)
    if squared:
        d = checks.points(data, "data").shape[1]
        return dist.square().mean(dim=1) / d
    return dist.mean(dim=1)


@dataclass
class PerPointMemorization:
    """Samples assigned to their nearest training points (:func:`per_point_memorization`).

    Per sample (``(m,)``): ``nearest`` (index of the nearest training point), ``d1``, ``d2`` (distances to the
    nearest and second-nearest, float64) and ``memorized`` (``d1 < ratio * d2``). Per training point
    (``(N,)``): ``assigned`` and ``memorized_count`` (int64), ``rate`` = memorized_count / assigned (float64,
    NaN where nothing was assigned).
    """
    nearest: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor
    memorized: torch.Tensor
    assigned: torch.Tensor
    memorized_count: torch.Tensor
    ratio: float

    @property
    def rate(self) -> torch.Tensor:
        a = self.assigned.to(torch.float64)
        return torch.where(self.assigned > 0, self.memorized_count.to(torch.float64) / a.clamp_min(1),
                           torch.full_like(a, math.nan))

    @property
    def global_rate(self) -> float:
        """Fraction of all samples that are memorized."""
        return float(self.memorized.to(torch.float64).mean())

    @property
    def dominance(self) -> torch.Tensor:
        """``log(d2^2 / d1^2)`` per sample (float64; ``inf`` where ``d1 = 0 < d2``)."""
        return _dominance(self.d1, self.d2)


def _dominance(d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    with np.errstate(divide="ignore"):
        return 2 * (torch.log(d2) - torch.log(d1))


def per_point_memorization(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3, *,
                           neighbors: tuple[torch.Tensor, torch.Tensor] | None = None) -> PerPointMemorization:
    """Assign each sample to its nearest training point and count memorized samples per training point.

    A sample is memorized when ``d1 < ratio * d2`` (plain distances; the related paper's squared-distance
    threshold ``tau`` is ``ratio = sqrt(tau)``). Distances are exact
    (:func:`paperlib.memorization.nearest_neighbors`), so the decisions equal
    :func:`paperlib.memorization.is_memorized`. ``neighbors``: that function's ``(distances, indices)``
    with ``k >= 2``, when already computed (to evaluate several ratios on one set of samples).
    """
    r = _ratio(ratio)
    train_f = checks.points(train, "train", min_rows=2)
    if neighbors is None:
        dist, idx = memorization.nearest_neighbors(samples, train_f, 2, names=("samples", "train"))
    else:
        dist, idx = neighbors
        if dist.dim() != 2 or dist.shape[1] < 2 or idx.shape != dist.shape:
            raise ValueError("neighbors must be (distances, indices) of shape (m, k >= 2)")
    d1, d2 = dist[:, 0], dist[:, 1]
    mem = d1 < r * d2
    n = train_f.shape[0]
    nearest = idx[:, 0]
    assigned = torch.bincount(nearest, minlength=n)
    mcount = torch.bincount(nearest[mem], minlength=n)
    return PerPointMemorization(nearest=nearest, d1=d1, d2=d2, memorized=mem, assigned=assigned,
                                memorized_count=mcount, ratio=r)


def dominance(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Per-sample dominance ``log(d2^2 / d1^2)`` of the nearest over the second-nearest training point
    (the related paper's convention on squared distances; float64, ``(m,)``, ``inf`` where ``d1 = 0 < d2``).
    A sample is memorized under the squared-distance threshold ``tau`` iff its dominance exceeds ``log(1/tau)``."""
    train = checks.points(train, "train", min_rows=2)
    dist, _ = memorization.nearest_neighbors(samples, train, 2)
    return _dominance(dist[:, 0], dist[:, 1])


def quantile_bins(values, n_bins: int = 10) -> np.ndarray:
    """Bin index (``0..n_bins-1``) of every value by the values' own quantiles (equal-count bins, the
    related paper's 10 sparsity bins); ties go to the lower bin."""
    v = _array(values, "values").reshape(-1)
    n_bins = checks.positive_int(n_bins, "n_bins")
    if v.size < n_bins:
        raise ValueError(f"need at least n_bins = {n_bins} values, got {v.size}")
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, v, side="left")


def rate_by_group(groups, memorized_count, assigned) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled memorization rate per group of training points: ``(labels, rate, n_assigned)`` with
    ``rate[g] = sum memorized_count / sum assigned`` over the points of group ``g`` (NaN if none assigned).
    ``groups``: one label per training point (e.g. :func:`quantile_bins` of the sparsity, or classes)."""
    g = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups).reshape(-1)
    m = _array(memorized_count, "memorized_count").reshape(-1)
    a = _array(assigned, "assigned").reshape(-1)
    if not (g.size == m.size == a.size):
        raise ValueError(f"groups, memorized_count and assigned must have one entry per training point; "
                         f"got {g.size}, {m.size}, {a.size}")
    labels, inv = np.unique(g, return_inverse=True)
    num = np.bincount(inv, weights=m, minlength=labels.size)
    den = np.bincount(inv, weights=a, minlength=labels.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(den > 0, num / den, np.nan)
    return labels, rate, den.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# the Gaussian-KDE model
# ----------------------------------------------------------------------------------------------
def kde_denoiser(x: torch.Tensor, data: torch.Tensor, sigma, h, *, dtype=None) -> torch.Tensor:
    """Exact denoiser of the Gaussian KDE of bandwidth ``h`` of ``data`` (module docstring):
    ``sigma^2/(sigma^2+h^2) D*(x; sqrt(sigma^2+h^2)) + h^2/(sigma^2+h^2) x``, with ``D*`` the empirical
    denoiser (Eq. 2, :func:`paperlib.geometry.empirical_denoiser`). ``h = 0`` gives ``D*`` itself."""
    s = checks.sigma(sigma)
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not (math.isfinite(h) and h >= 0):
        raise ValueError(f"h must be a finite number >= 0, got {h!r}")
    h = float(h)
    s2, h2 = s * s, h * h
    dn = geometry.empirical_denoiser(x, data, math.sqrt(s2 + h2), dtype=dtype)
    if h2 == 0:
        return dn
    return dn.mul_(s2 / (s2 + h2)).add_(x.to(dn.dtype).reshape(dn.shape), alpha=h2 / (s2 + h2))


class KDEDenoiser(torch.nn.Module):
    """:func:`kde_denoiser` as a denoiser ``D(x, sigma)`` for :func:`paperlib.sampling.sample` (one sigma per
    batch, as the samplers call it). ``train``: ``(N, ...)``; ``h >= 0``."""

    def __init__(self, train: torch.Tensor, h: float):
        super().__init__()
        if not isinstance(train, torch.Tensor) or train.dim() < 2:
            raise ValueError("train must be a tensor of shape (N, ...)")
        self.register_buffer("train_flat", train.reshape(train.shape[0], -1).clone())
        self.h = float(h)

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        if s.numel() > 1 and not bool((s == s[0]).all()):
            raise ValueError("KDEDenoiser takes one sigma per batch")
        out = kde_denoiser(x.reshape(x.shape[0], -1), self.train_flat.to(x.dtype), float(s[0]), self.h)
        return out.to(x.dtype).reshape(x.shape)


def kde_sample(data: torch.Tensor, n: int, h, *, generator: torch.Generator | None = None,
               sources: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of the Gaussian KDE of bandwidth ``h``: ``(y_J + h noise, J)``, ``J`` uniform (or the given
    ``sources``, ``(n,)`` indices), in ``data``'s shape and dtype. The exact output law of the probability-flow
    ODE of :func:`kde_denoiser`."""
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or not data.is_floating_point():
        raise ValueError("data must be a floating tensor of shape (N, ...)")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not (math.isfinite(h) and h >= 0):
        raise ValueError(f"h must be a finite number >= 0, got {h!r}")
    N = data.shape[0]
    gdev = generator.device if generator is not None else torch.device("cpu")
    if sources is None:
        J = torch.randint(N, (int(n),), generator=generator, device=gdev)
    else:
        J = torch.as_tensor(sources).reshape(-1).long()
        if J.numel() != n or (J < 0).any() or (J >= N).any():
            raise ValueError(f"sources must hold n = {n} indices in [0, {N})")
    noise = torch.randn((int(n), *data.shape[1:]), generator=generator, device=gdev, dtype=torch.float64)
    x = data[J.to(data.device)].to(torch.float64) + float(h) * noise.to(data.device)
    return x.to(data.dtype), J.to(data.device)


def memorization_probability(r1, h, d: int, ratio: float = 1 / 3) -> np.ndarray:
    """Predicted probability that a KDE sample drawn from a point with nearest-neighbour distance ``r1`` is
    memorized (module docstring; noncentral chi-square, ``scipy.stats.ncx2``; nearest competitor only).

    ``r1``: distances (array, tensor or float, ``>= 0``); ``h > 0`` (scalar or broadcastable); ``d`` the
    dimension; ``ratio`` the plain-distance threshold. Returns a float64 array of ``r1``'s broadcast shape."""
    t = _ratio(ratio)
    r = _array(r1, "r1")
    hh = _array(h, "h")
    if np.any(r < 0):
        raise ValueError("r1 must be >= 0")
    if np.any(hh <= 0):
        raise ValueError("h must be > 0")
    d = checks.positive_int(d, "d")
    q = (r / hh) ** 2 / (1 - t * t) ** 2
    return _stats.ncx2.cdf(t * t * q, d, t ** 4 * q)


def critical_distance(h, d: int, ratio: float = 1 / 3):
    """High-dimensional threshold ``r1* = h sqrt((1/ratio^2 - 1) d)``: points whose nearest-neighbour distance
    exceeds it are memorized by the KDE of bandwidth ``h`` (``2 sqrt(2) h sqrt(d)`` at ratio 1/3)."""
    t = _ratio(ratio)
    d = checks.positive_int(d, "d")
    return _array(h, "h") * math.sqrt((1 / (t * t) - 1) * d)


def critical_bandwidth(r1, d: int, ratio: float = 1 / 3):
    """Per point, the bandwidth below which it is memorized: ``h* = r1 / sqrt((1/ratio^2 - 1) d)``."""
    t = _ratio(ratio)
    d = checks.positive_int(d, "d")
    return _array(r1, "r1") / math.sqrt((1 / (t * t) - 1) * d)


def fit_bandwidth(r1, memorized, d: int, ratio: float = 1 / 3, *, weights=None) -> float:
    """Effective bandwidth: the ``h`` maximising the Bernoulli likelihood of the outcomes ``memorized``
    (bool/0-1 per sample, or memorized counts with ``weights`` = trials) under
    :func:`memorization_probability` with each sample's ``r1`` (the nearest-neighbour distance of its
    assigned training point).

    The answer is searched on ``log h`` over the range where the prediction moves from ~1 to ~0 for the
    given ``r1``; when every outcome is memorized (or none is) the likelihood is monotone and the
    returned ``h`` is the end of that range (a bound, not an estimate).
    """
    t = _ratio(ratio)
    d = checks.positive_int(d, "d")
    r = _array(r1, "r1").reshape(-1)
    k = _array(memorized, "memorized").reshape(-1)
    w = np.ones_like(k) if weights is None else _array(weights, "weights").reshape(-1)
    if not (r.size == k.size == w.size) or r.size == 0:
        raise ValueError(f"r1, memorized and weights must have the same non-zero length; got {r.size}, {k.size}, {w.size}")
    if np.any(k < 0) or np.any(k > w):
        raise ValueError("memorized must lie in [0, weights]")
    keep = (w > 0) & (r > 0)
    if not keep.any():
        raise ValueError("need at least one sample with r1 > 0 and weight > 0")
    r, k, w = r[keep], k[keep], w[keep]
    scale = math.sqrt((1 / (t * t) - 1) * d)
    lo, hi = math.log(r.min() / scale / 4), math.log(r.max() / scale * 4)

    def nll(logh):
        q = (r / math.exp(logh)) ** 2 / (1 - t * t) ** 2
        lp = _stats.ncx2.logcdf(t * t * q, d, t ** 4 * q)
        lq = _stats.ncx2.logsf(t * t * q, d, t ** 4 * q)
        return -float(np.sum(k * np.maximum(lp, -700) + (w - k) * np.maximum(lq, -700)))

    res = _optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options=dict(xatol=1e-6))
    return float(math.exp(res.x))
