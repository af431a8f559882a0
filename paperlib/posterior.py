"""Posterior weights and the empirical optimal denoiser: paper Sec. 2 (Eq. 2-3) and Def. 4.1 / Fig. 7.

Notation: training points ``y_1..y_N`` in R^d (``data``, shape ``(N, d)``; images ``(N, C, H, W)`` are
flattened), a query ``x`` (``(b, d)``), noise level ``sigma > 0``.

* Eq. 3  ``w_i(x; sigma) = softmax_i(-||x - y_i||^2 / (2 sigma^2))`` -- :func:`log_posterior_weights`.
* Eq. 2  ``D*(x; sigma) = sum_i w_i y_i``                         -- :func:`empirical_denoiser`.
* Def. 4.1  ``W(sigma) = E_{x0 ~ data} E_n max_i w_i(x0 + sigma n)`` -- :func:`max_posterior_weight`
  (and Fig. 7's self weight, :func:`self_posterior_weight`; both at once: :func:`posterior_weight_curves`).

**How it is computed.** ``-||x - y||^2 = 2 x.y - ||y||^2 - ||x||^2`` and the last term is constant in
a row, so the logits of a query block are one ``addmm`` against a chunk of the data; the softmax is
streamed over data chunks (running max, running sum of exponentials, running weighted sum), so memory
stays bounded by :data:`paperlib.blocking.BLOCK_BYTES` for any ``N``. Matrix products run in the
input's floating dtype (``float16``/``bfloat16`` promoted to ``float32``; mixed inputs compute in
``float64``); exponents are taken after subtracting the row maximum, so nothing overflows. For noise
levels so small that ``1/sigma^2`` times the logits would overflow the dtype (e.g. ``sigma = 1e-30``),
the row maximum is subtracted *before* scaling (two passes), which gives the exact limit.

**Accuracy.** float64 inputs: exact to float64 rounding. float32 inputs: a logit carries the float32
error of ``||y||^2 - 2 x.y``, about ``2^-24 (||x||^2 + ||y||^2)``, divided by ``2 sigma^2``. The Monte
Carlo curves compute the few nearest distances of each base point exactly
(:func:`paperlib.blocking.refine_nearest`), so a point and its exact copies in the data are treated
alike (a duplicated point has weight 1/2 at small ``sigma``, in float32 as in float64).

**Monte Carlo curves** use common random numbers: one noise draw per (point, repetition) is shared by
all ``sigmas`` (``||x0 + sigma n - y||^2 = ||x0 - y||^2 - 2 sigma n.(y - x0) + sigma^2 ||n||^2``), so a
curve costs two matrix products plus cheap elementwise work per ``sigma``. Each point of a curve is an
unbiased estimate; neighbouring points are positively correlated, which makes curves smooth.
"""
from __future__ import annotations

import torch

from . import blocking, checks

__all__ = ["log_posterior_weights", "posterior_weights", "empirical_denoiser", "max_weight_at",
           "posterior_weight_curves", "max_posterior_weight", "self_posterior_weight"]


def _prepare(x, data, dtype=None, xname="x", dname="data"):
    x = checks.points(x, xname)
    data = checks.points(data, dname)
    checks.pair(x, data, xname, dname)
    cd = checks.compute_dtype(x, data, dtype=dtype)
    x = x.to(cd)
    data = data.to(cd)
    yy = blocking.finite_sqnorms(data, dname)
    xx = blocking.finite_sqnorms(x, xname)
    return x, data, yy, xx


def _magnitude(xx: torch.Tensor, yy: torch.Tensor) -> float:
    """Bound on ``|x.y - ||y||^2 / 2|`` over all pairs."""
    xm, ym = float(xx.max()), float(yy.max())
    return (xm * ym) ** 0.5 + 0.5 * ym


def log_posterior_weights(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """Log posterior weights ``log w_i(x; sigma)`` of Eq. 3, shape ``(b, n)``; every row logsumexps to 0.

    ``w_i(x; sigma) = exp(-||x - y_i||^2 / (2 sigma^2)) / sum_j exp(-||x - y_j||^2 / (2 sigma^2))``,
    computed in log space (never ``0/0``) from one matrix product per query block.
    ``sigma``: python float or 0-d tensor. ``dtype``: compute dtype (default: the inputs').
    """
    s = checks.sigma(sigma)
    x, data, yy, xx = _prepare(x, data, dtype)
    b, n = x.shape[0], data.shape[0]
    out = torch.empty(b, n, dtype=x.dtype, device=x.device)
    inv = 1.0 / (s * s)
    safe = blocking.scale_is_safe(inv, _magnitude(xx, yy), x.dtype)
    bias = yy.unsqueeze(0)
    bq = blocking.query_block(b, n, x.element_size(), min_chunk=n)
    for q0 in range(0, b, bq):
        if safe:
            logits = torch.addmm(bias, x[q0:q0 + bq], data.T, beta=-0.5 * inv, alpha=inv)
        else:  # shift by the row maximum first, then scale: exact limit, no overflow
            logits = torch.addmm(bias, x[q0:q0 + bq], data.T, beta=-0.5)
            logits = logits.sub_(logits.amax(dim=1, keepdim=True)).to(torch.float64).div_(s).div_(s)
        out[q0:q0 + bq] = torch.log_softmax(logits, dim=1)
    return out


def posterior_weights(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """Posterior weights ``w_i(x; sigma)`` of Eq. 3, shape ``(b, n)`` (``exp`` of :func:`log_posterior_weights`)."""
    return log_posterior_weights(x, data, sigma, dtype=dtype).exp_()


def _stream(x: torch.Tensor, data: torch.Tensor, yy: torch.Tensor, s: float, *, need_acc: bool,
            budget: int | None = None, safe: bool = True):
    """Streaming softmax of the logits ``(x.y - ||y||^2/2) / sigma^2`` over chunks of ``data``.

    Returns ``(z, acc)``: ``z = sum_i exp(l_i - m)`` with ``m`` the row maximum and (if ``need_acc``)
    ``acc = sum_i exp(l_i - m) y_i``. Then ``max_i w_i = 1 / z`` and ``D* = acc / z``. With
    ``safe=False`` (``1/sigma^2`` too large for the dtype) the row maxima of the unscaled logits are
    found in a first pass and subtracted before scaling.
    """
    b, n = x.shape[0], data.shape[0]
    inv = 1.0 / (s * s)
    c = blocking.data_chunk(n, b, x.element_size(), budget)
    floor = blocking.exp_floor(x.dtype)
    if not safe:
        gmax = None
        for c0 in range(0, n, c):
            g = torch.addmm(yy[c0:c0 + c].unsqueeze(0), x, data[c0:c0 + c].T, beta=-0.5).amax(dim=1)
            gmax = g if gmax is None else torch.maximum(gmax, g)
        z = torch.zeros(b, dtype=x.dtype, device=x.device)
        acc = torch.zeros_like(x) if need_acc else None
        for c0 in range(0, n, c):
            ch = data[c0:c0 + c]
            lg = torch.addmm(yy[c0:c0 + c].unsqueeze(0), x, ch.T, beta=-0.5)
            lg = lg.sub_(gmax.unsqueeze(1)).to(torch.float64).div_(s).div_(s).clamp_min_(floor).exp_().to(x.dtype)
            z.add_(lg.sum(dim=1))
            if need_acc:
                acc.addmm_(lg, ch)
        return z, acc
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
    return z, acc


def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None,
                       budget: int | None = None) -> torch.Tensor:
    """The empirical optimal denoiser of Eq. 2, ``D*(x; sigma) = sum_i w_i(x; sigma) y_i``.

    ``x``: ``(b, d)`` or ``(b, C, H, W)``; the result has ``x``'s shape. Streams over chunks of
    ``data`` (memory ``<= budget`` bytes of logits, default :data:`paperlib.blocking.BLOCK_BYTES`):
    two matrix products per chunk plus a few elementwise passes.
    """
    shape = x.shape if isinstance(x, torch.Tensor) else None
    s = checks.sigma(sigma)
    xf, data, yy, xx = _prepare(x, data, dtype)
    safe = blocking.scale_is_safe(1.0 / (s * s), _magnitude(xx, yy), xf.dtype)
    b, n = xf.shape[0], data.shape[0]
    out = torch.empty_like(xf)
    bq = blocking.query_block(b, n, xf.element_size(), budget)
    for q0 in range(0, b, bq):
        z, acc = _stream(xf[q0:q0 + bq], data, yy, s, need_acc=True, budget=budget, safe=safe)
        torch.div(acc, z.unsqueeze(1), out=out[q0:q0 + bq])
    return out.reshape(shape)


def max_weight_at(x: torch.Tensor, data: torch.Tensor, sigma, *, dtype=None) -> torch.Tensor:
    """``max_i w_i(x; sigma)`` for each query row (streamed; shape ``(b,)``)."""
    s = checks.sigma(sigma)
    xf, data, yy, xx = _prepare(x, data, dtype)
    safe = blocking.scale_is_safe(1.0 / (s * s), _magnitude(xx, yy), xf.dtype)
    b, n = xf.shape[0], data.shape[0]
    out = torch.empty(b, dtype=xf.dtype, device=xf.device)
    bq = blocking.query_block(b, n, xf.element_size())
    for q0 in range(0, b, bq):
        z, _ = _stream(xf[q0:q0 + bq], data, yy, s, need_acc=False, safe=safe)
        out[q0:q0 + bq] = z.reciprocal()
    return out


def curve_setup(data, sigmas, n_noise, dname="data"):
    """Checked ``(data (n, d), sigmas (S,) float64, n_noise)`` for the Monte Carlo curves."""
    data = checks.points(data, dname)
    sig = checks.sigmas(sigmas)
    n_noise = checks.positive_int(n_noise, "n_noise")
    blocking.finite_sqnorms(data, dname)
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
    data, sig, n_noise = curve_setup(data, sigmas, n_noise)
    cd = checks.compute_dtype(data, dtype=dtype)
    n = data.shape[0]
    sub = blocking.subsample(n, n_points, generator)
    base = torch.arange(n) if sub is None else sub
    pts = data[base.to(data.device)]
    m = pts.shape[0]
    S = sig.numel()
    mx = torch.empty(S, m, n_noise, dtype=torch.float64, device=data.device)
    sw = torch.empty_like(mx)
    rows = torch.arange(m, device=data.device)
    bar = blocking.progress_bar(S * m, progress, "posterior weights")
    for blk in blocking.noisy_blocks(pts, data, n_noise, generator, cd=cd):
        D0, R, p0, pb = blk["D0"], blk["R"], blk["start"], blk["rows"]
        selfcol = base[p0:p0 + pb].to(data.device)
        D0b = D0.unsqueeze(1)
        dmax = float(D0.max())
        r = rows[:pb]
        buf = torch.empty_like(R)
        for k, s in enumerate(sig.tolist()):
            # l_i = n.(y_i - x0) / sigma - ||x0 - y_i||^2 / (2 sigma^2)   (row constants dropped)
            if blocking.scale_is_safe(0.5 / (s * s), dmax, cd):
                torch.mul(R, 1.0 / s, out=buf)
                buf.add_(D0b, alpha=-0.5 / (s * s))
                b_, floor = buf, blocking.exp_floor(cd)
            else:  # tiny sigma: float64, shifted by the nearest distance before scaling
                b_ = R.to(torch.float64).div_(s)
                b_.sub_((D0b - D0b.amin(dim=2, keepdim=True)).to(torch.float64).div_(s).div_(s).mul_(0.5))
                floor = blocking.exp_floor(torch.float64)
            mrow = b_.amax(dim=2, keepdim=True)
            lself = b_[r, :, selfcol].unsqueeze(2)  # (pb, r, 1)
            b_.sub_(mrow).clamp_min_(floor).exp_()
            z = b_.sum(dim=2)
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
