"""Circulant (cyclic-stationary) Gaussian models: the exact denoiser Jacobian and its decay (Thm 4.10, App. D).

Signals are 1-D cyclic, shape ``(N,)``, or 2-D cyclic images, shape ``(H, W)`` (one channel, as in
App. D; channels are treated separately or averaged). A circulant covariance has entries
``C[p, q] = c[(q - p) mod N]`` for its first row (autocovariance) ``c``; it is symmetric, so
``c[m] = c[-m]`` and its eigenvalues ``lambda = fft(c)`` are real (Lemma D.3). The Gaussian optimal
denoiser (Eq. 7) ``D(x) = mu + C (C + sigma^2 I)^-1 (x - mu)`` has the circulant Jacobian
``J = C (C + sigma^2 I)^-1`` with eigenvalues ``g = lambda / (lambda + sigma^2)`` (the *gain*), so
``J[p, p + m] = h[m]`` with ``h = ifft(g)``.

Sensitivity bound (our precise version of Thm 4.10 / Thm D.4; the constant is our own derivation).
With ``V(g) = sum_k |g[k+1] - g[k]|`` (indices mod N, i.e. the total variation of the gain around the
frequency cycle) and ``d = min(m, N - m) >= 1`` the wrap-around distance, cyclic summation by parts
(Abel) gives ``(e^{2 pi i m/N} - 1) sum_k g_k e^{2 pi i k m/N} = sum_k (g[k-1] - g[k]) e^{2 pi i k m/N}``, so::

    |h[m]| <= V(g) / (N |2 sin(pi d / N)|) <= V(g) / (4 d)        (the second step: sin x >= 2x/pi).

In 2-D, applying the same identity along axis ``a`` for each fixed frequency of the other axis gives,
for every offset with ``d_a != 0``, ``|h[m1, m2]| <= TV_a(g) / (H W |2 sin(pi d_a / N_a)|)
<= Vbar_a / (4 d_a)``, where ``TV_a`` is the cyclic total variation of ``g`` along axis ``a`` summed
over the other axis and ``Vbar_a`` is its mean over the other axis (``TV_0 / W``, ``TV_1 / H``).
Taking the better axis: ``|h| <= max(Vbar_0, Vbar_1) / (4 d_inf)`` with ``d_inf = max(d_0, d_1)``.
If ``lambda`` is nonincreasing in the frequency magnitude, ``g`` rises and falls once around each
cycle, so ``V = 2 (g_max - g_min)`` and ``K = V / 4 <= 1/2``: close eigenvalues (a concentrated
spectrum) give a small constant, and ``K -> 0`` as ``sigma -> 0`` (if all ``lambda > 0``) and ``sigma -> inf``.
"""
from __future__ import annotations

import math

import torch

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# validation helpers
def _as_f64(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if x.is_complex():
        raise ValueError(f"{name} must be real")
    x = x.to(_F64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_signal(x: torch.Tensor, name: str) -> None:
    if x.dim() not in (1, 2):
        raise ValueError(f"{name} must be 1-D (N,) or 2-D (H, W), got shape {tuple(x.shape)}")


def _dims(ndim: int):
    return tuple(range(-ndim, 0))


def _sigma(sigma, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=_F64, device=like.device)
    if s.dim() > 1 or s.numel() == 0:
        raise ValueError(f"sigma must be a positive number or a 1-D tensor of them, got shape {tuple(s.shape)}")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    return s


# ----------------------------------------------------------------------------------------------
# circulant covariances and their spectra (Def. D.2, Lemma D.3)
def circulant_eigenvalues(first_row) -> torch.Tensor:
    """Eigenvalues of the symmetric circulant (1-D) / block-circulant (2-D) matrix with first row
    ``first_row`` (Lemma D.3): ``fft(c)`` (``fft2`` in 2-D), real, float64, in FFT frequency order.

    Raises ``ValueError`` when the row is not symmetric (``c[m] != c[-m]``), i.e. not a covariance.
    """
    c = _as_f64(first_row, "first_row")
    _check_signal(c, "first_row")
    lam = torch.fft.fftn(c, dim=_dims(c.dim()))
    scale = lam.abs().max().clamp_min(1e-300)
    if (lam.imag.abs().max() / scale) > 1e-10:
        raise ValueError("first_row must be symmetric, c[m] == c[-m] (the first row of a covariance)")
    return lam.real


def autocovariance(spectrum) -> torch.Tensor:
    """The first row ``c = ifft(lambda)`` of the circulant matrix with eigenvalues ``spectrum``."""
    lam = _as_f64(spectrum, "spectrum")
    _check_signal(lam, "spectrum")
    return torch.fft.ifftn(lam, dim=_dims(lam.dim())).real


def circulant_matrix(first_row) -> torch.Tensor:
    """Dense circulant matrix ``C[p, q] = c[(q - p) mod N]`` (2-D: block-circulant on flattened
    ``(H, W)`` images, ``C[(p0,p1), (q0,q1)] = c[(q0-p0) mod H, (q1-p1) mod W]``). For tests."""
    c = _as_f64(first_row, "first_row")
    _check_signal(c, "first_row")
    if c.dim() == 1:
        n = c.shape[0]
        idx = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
        return c[idx.to(c.device)]
    h, w = c.shape
    i0, i1 = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    i0, i1 = i0.reshape(-1), i1.reshape(-1)
    d0 = (i0[None, :] - i0[:, None]) % h
    d1 = (i1[None, :] - i1[:, None]) % w
    return c[d0.to(c.device), d1.to(c.device)]


def frequency_magnitude(shape) -> torch.Tensor:
    """Integer frequency magnitude of each FFT bin: ``min(k, N - k)`` in 1-D, the Euclidean norm of
    ``(min(k0, H - k0), min(k1, W - k1))`` in 2-D (float64). A frequency index wraps around like an
    offset, so this is :func:`wrap_distance` with the Euclidean norm."""
    return wrap_distance(shape, "euclidean")


def power_law_spectrum(shape, alpha: float, variance: float = 1.0) -> torch.Tensor:
    """Synthetic stationary spectrum ``lambda_k ∝ 1 / max(|f_k|, 1)^alpha`` (the DC bin gets the
    value of the lowest frequency), scaled so that each pixel has variance ``variance``
    (``c[0] = mean(lambda) = variance``). Larger ``alpha``: spectrum more concentrated at low frequency."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be finite and > 0, got {variance!r}")
    f = frequency_magnitude(shape).clamp_min(1.0)
    lam = f ** (-float(alpha))
    return lam * (variance / lam.mean())


# ----------------------------------------------------------------------------------------------
# the Gaussian denoiser and its Jacobian (Eq. 7, Thm D.4)
def denoiser_gain(spectrum, sigma) -> torch.Tensor:
    """Eigenvalues ``g = lambda / (lambda + sigma^2)`` of ``J = C (C + sigma^2 I)^-1`` (Thm D.4).

    ``sigma``: a number (result shaped like ``spectrum``) or a 1-D tensor (result ``(S, *shape)``).
    """
    lam = _as_f64(spectrum, "spectrum")
    _check_signal(lam, "spectrum")
    if (lam < -1e-12 * lam.abs().max()).any():
        raise ValueError("spectrum must be nonnegative (eigenvalues of a covariance)")
    s = _sigma(sigma, lam)
    s2 = (s ** 2).reshape(s.shape + (1,) * lam.dim())
    g = lam / (lam + s2)
    return g if s.dim() == 1 else g.reshape(lam.shape)


def jacobian_row(spectrum, sigma) -> torch.Tensor:
    """Exact Jacobian kernel ``h = ifft(g)`` (real, float64): ``J[p, p + m] = h[m]`` (offsets mod N,
    2-D: mod (H, W)). ``h[0]`` is the self-sensitivity; by symmetry ``h[m] = h[-m]``."""
    g = denoiser_gain(spectrum, sigma)
    nd = torch.as_tensor(spectrum).dim()
    return torch.fft.ifftn(g, dim=_dims(nd)).real


def jacobian_matrix(spectrum, sigma: float) -> torch.Tensor:
    """Dense ``J = C (C + sigma^2 I)^-1`` by a linear solve (independent of the FFT route; for tests)."""
    lam = _as_f64(spectrum, "spectrum")
    s = float(_sigma(sigma, lam).reshape(()))
    c = circulant_matrix(autocovariance(lam))
    eye = torch.eye(c.shape[0], dtype=_F64, device=c.device)
    # J = C (C + s^2 I)^-1  <=>  J^T = (C + s^2 I)^-T C^T ; both matrices are symmetric
    return torch.linalg.solve(c + s * s * eye, c).T


def gaussian_denoiser(x, mean, spectrum, sigma: float) -> torch.Tensor:
    """Optimal denoiser of the cyclic-stationary Gaussian (Eq. 7), ``mu + ifft(g * fft(x - mu))``.

    ``x``: a batch ``(..., N)`` or ``(..., H, W)`` matching ``spectrum``; ``mean`` broadcasts with ``x``.
    Differentiable in ``x`` (kept in ``x``'s dtype).
    """
    lam = _as_f64(spectrum, "spectrum")
    if not isinstance(x, torch.Tensor):
        raise ValueError("x must be a tensor")
    nd = lam.dim()
    if tuple(x.shape[-nd:]) != tuple(lam.shape):
        raise ValueError(f"x has trailing shape {tuple(x.shape[-nd:])}, spectrum has shape {tuple(lam.shape)}")
    g = denoiser_gain(lam.to(x.device), sigma).to(x.dtype if x.is_floating_point() else _F64)
    z = x - mean
    return mean + torch.fft.ifftn(g * torch.fft.fftn(z, dim=_dims(nd)), dim=_dims(nd)).real


# ----------------------------------------------------------------------------------------------
# distances and the summation-by-parts bound (Thm 4.10 / D.4, precise form above)
def wrap_distance(shape, norm: str = "euclidean") -> torch.Tensor:
    """Wrap-around distance of each offset from 0: ``min(m, N - m)`` in 1-D; in 2-D the
    ``"euclidean"`` norm, ``"chebyshev"`` (max) or ``"manhattan"`` of the per-axis wrap distances."""
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list, torch.Size)) else (shape,)))
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise ValueError(f"shape must be (N,) or (H, W) with positive sizes, got {shape}")
    ds = [torch.minimum(torch.arange(n), n - torch.arange(n)).to(_F64) for n in shape]
    if len(ds) == 1:
        return ds[0]
    d0, d1 = ds[0][:, None].expand(shape), ds[1][None, :].expand(shape)
    if norm == "euclidean":
        return torch.sqrt(d0 ** 2 + d1 ** 2)
    if norm == "chebyshev":
        return torch.maximum(d0, d1)
    if norm == "manhattan":
        return d0 + d1
    raise ValueError(f"norm must be 'euclidean', 'chebyshev' or 'manhattan', got {norm!r}")


def total_variation(gain, dim: int = -1) -> torch.Tensor:
    """Cyclic total variation ``sum_k |g[k+1] - g[k]|`` along ``dim`` (the wrap term
    ``|g[0] - g[N-1]|`` included); the other axes are kept."""
    g = _as_f64(gain, "gain")
    tv = (torch.roll(g, -1, dims=dim) - g).abs().sum(dim=dim)
    return tv


def sensitivity_constant(spectrum, sigma) -> torch.Tensor:
    """The constant ``K`` of Thm 4.10 in the form ``|J_pq| <= K / d`` (our derivation):
    1-D ``K = V(g) / 4``; 2-D ``K = max(Vbar_0, Vbar_1) / 4`` with ``d`` the Chebyshev wrap distance.
    Shape: scalar, or ``(S,)`` for a 1-D tensor of sigmas."""
    lam = _as_f64(spectrum, "spectrum")
    _check_signal(lam, "spectrum")
    g = denoiser_gain(lam, sigma)
    if lam.dim() == 1:
        return total_variation(g, -1) / 4
    h, w = lam.shape
    v0 = total_variation(g, -2).sum(-1) / w
    v1 = total_variation(g, -1).sum(-1) / h
    return torch.maximum(v0, v1) / 4


def sensitivity_bound(spectrum, sigma, form: str = "sine") -> torch.Tensor:
    """Upper bound on ``|h[m]| = |J[p, p + m]|`` for every offset (Thm 4.10 / D.4, precise form in
    the module docstring), shaped like :func:`jacobian_row`; ``inf`` at the offset 0 (and, in 2-D,
    for ``form="sine"`` only where both axis offsets are 0).

    ``form="sine"``: ``V / (N |2 sin(pi d / N)|)`` (2-D: the smaller of the two per-axis bounds);
    ``form="linear"``: ``K / d`` with ``K`` from :func:`sensitivity_constant` (2-D: ``d = d_inf``).
    """
    lam = _as_f64(spectrum, "spectrum")
    _check_signal(lam, "spectrum")
    g = denoiser_gain(lam, sigma)
    batched = g.dim() > lam.dim()
    inf = torch.tensor(math.inf, dtype=_F64, device=lam.device)
    if form == "linear":
        k = sensitivity_constant(lam, sigma)
        d = wrap_distance(tuple(lam.shape), "chebyshev").to(lam.device)
        k = k.reshape(k.shape + (1,) * lam.dim())
        return torch.where(d > 0, k / d.clamp_min(1), inf)
    if form != "sine":
        raise ValueError(f"form must be 'sine' or 'linear', got {form!r}")
    if lam.dim() == 1:
        n = lam.shape[0]
        v = total_variation(g, -1)
        v = v[..., None] if batched else v
        s = (2 * torch.sin(math.pi * torch.arange(n, dtype=_F64, device=lam.device) / n)).abs()
        return torch.where(torch.arange(n, device=lam.device) > 0, v / (n * s.clamp_min(1e-300)), inf)
    h, w = lam.shape
    tv0 = total_variation(g, -2).sum(-1)  # variation along axis 0, summed over axis 1
    tv1 = total_variation(g, -1).sum(-1)
    if batched:
        tv0, tv1 = tv0[:, None, None], tv1[:, None, None]
    s0 = (2 * torch.sin(math.pi * torch.arange(h, dtype=_F64, device=lam.device) / h)).abs()[:, None]
    s1 = (2 * torch.sin(math.pi * torch.arange(w, dtype=_F64, device=lam.device) / w)).abs()[None, :]
    b0 = torch.where(s0 > 0, tv0 / (h * w * s0.clamp_min(1e-300)), inf)
    b1 = torch.where(s1 > 0, tv1 / (h * w * s1.clamp_min(1e-300)), inf)
    return torch.minimum(b0, b1)


# ----------------------------------------------------------------------------------------------
# the stationary covariance fitted to images, and the receptive field
def fit_stationary_spectrum(images, center: str = "channel") -> torch.Tensor:
    """Circulant eigenvalues of the stationary covariance fitted to images ``(n, C, H, W)`` (or
    ``(n, H, W)``): the periodogram ``|fft2(x - mu)|^2 / (H W)`` averaged over images and channels.

    Its inverse FFT is the cyclic autocovariance ``c[m] = mean_{i, ch, p} x~(p) x~(p + m)``.
    ``center="channel"``: subtract each channel's mean over images and pixels (a stationary mean);
    ``"pixel"``: subtract the mean image. Float64, real, nonnegative, shape ``(H, W)``.
    """
    x = _as_f64(images, "images")
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise ValueError(f"images must be (n, C, H, W) or (n, H, W), got shape {tuple(x.shape)}")
    if center == "channel":
        x = x - x.mean(dim=(0, 2, 3), keepdim=True)
    elif center == "pixel":
        x = x - x.mean(dim=0, keepdim=True)
    else:
        raise ValueError(f"center must be 'channel' or 'pixel', got {center!r}")
    h, w = x.shape[-2:]
    total = torch.zeros(h, w, dtype=_F64, device=x.device)
    for chunk in torch.split(x, 2048):  # bounded memory
        total += torch.fft.fft2(chunk).abs().square().sum(dim=(0, 1))
    return total / (x.shape[0] * x.shape[1] * h * w)


def receptive_field_radius(J_row, mass: float = 0.9, weight: str = "abs", norm: str = "euclidean",
                           ndim: int | None = None) -> torch.Tensor:
    """Smallest wrap-around radius ``r`` with ``sum_{dist(m) <= r} w(h[m]) >= mass * sum_m w(h[m])``.

    ``J_row``: a Jacobian kernel ``h`` (:func:`jacobian_row`; 1-D ``(N,)`` or 2-D ``(H, W)``, offsets
    in FFT order), or a batch of them along a leading axis (e.g. one per sigma). ``ndim`` is the
    signal dimension (default: ``J_row.dim()``, or 2 for a 3-D input; pass ``ndim=1`` for a batch of
    1-D kernels). ``w = |h|`` (``weight="abs"``, the default) or ``h^2`` (``"energy"``); ``dist`` is
    :func:`wrap_distance` (``norm`` in 2-D). ``r`` is one of the occurring distances, 0 when the
    self-sensitivity ``h[0]`` alone holds the fraction ``mass``.
    """
    h = _as_f64(J_row, "J_row")
    if not (0 < mass <= 1):
        raise ValueError(f"mass must be in (0, 1], got {mass!r}")
    if ndim is None:
        ndim = h.dim() if h.dim() in (1, 2) else 2
    if ndim not in (1, 2) or h.dim() not in (ndim, ndim + 1):
        raise ValueError(f"J_row of shape {tuple(h.shape)} is not a (batch of) {ndim}-D kernel(s)")
    batched = h.dim() == ndim + 1
    if weight == "abs":
        wgt = h.abs()
    elif weight == "energy":
        wgt = h.square()
    else:
        raise ValueError(f"weight must be 'abs' or 'energy', got {weight!r}")
    d = wrap_distance(tuple(h.shape[-ndim:]), norm).to(h.device).reshape(-1)
    wgt = wgt.reshape(-1, d.numel())
    tot = wgt.sum(-1, keepdim=True)
    if (tot <= 0).any():
        raise ValueError("J_row is identically zero: it has no receptive field")
    order = torch.argsort(d, stable=True)
    ds, cum = d[order], wgt[:, order].cumsum(-1)
    last = torch.ones_like(ds, dtype=torch.bool)  # last index of each group of equal distances
    last[:-1] = ds[1:] != ds[:-1]
    frac = cum[:, last] / tot
    radii = ds[last]
    idx = (frac >= mass * (1 - 1e-12)).to(torch.int8).argmax(-1)
    r = radii[idx]
    return r if batched else r.reshape(())


# ----------------------------------------------------------------------------------------------
# Jacobians of any denoiser (trained networks), to compare with the circulant theory (Sec. 4.2.1)
def denoiser_jacobian_rows(denoiser, x, sigma: float, pixels) -> torch.Tensor:
    """Jacobian rows of a denoiser at chosen output pixels, as kernels over offsets: ``(b, P, H, W)``.

    ``denoiser(x, sigma)`` maps images ``(b, C, H, W)`` (and a ``(b,)`` sigma) to images of the same
    shape, e.g. a trained :class:`paperlib.edm.Precond`; ``x`` is ``(b, C, H, W)`` (the points where the
    Jacobian is taken, typically noisy images ``x0 + sigma n``); ``pixels`` a list of ``(i, j)``.
    For each image and pixel ``p`` the row ``J[(c, p), (c', q)] = d D(x)_{c, p} / d x_{c', q}`` is taken
    by autograd (one backward pass per output channel) and summarised, like App. D's per-channel
    kernels, as ``h[m] = sqrt(mean_c sum_c' J[(c, p), (c', p + m)]^2)`` with offsets ``m`` in FFT order
    (wrap-around), so that :func:`receptive_field_radius` (with ``weight="energy"``) and
    :func:`sensitivity_bound` apply. For a single-channel linear circulant denoiser this is exactly
    ``|jacobian_row|`` (tested).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of images (b, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    s = float(_sigma(sigma, torch.zeros(1)).reshape(-1)[0])
    b, C, H, W = x.shape
    pix = [(int(i), int(j)) for i, j in pixels]
    if not pix or any(not (0 <= i < H and 0 <= j < W) for i, j in pix):
        raise ValueError(f"pixels must be a non-empty list of (i, j) inside the {H}x{W} image, got {pixels!r}")
    out = torch.empty(b, len(pix), H, W, dtype=_F64)
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        y = denoiser(xi, torch.full((b,), s, dtype=x.dtype, device=x.device))
        if y.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        for k, (i, j) in enumerate(pix):
            energy = torch.zeros(b, H, W, dtype=_F64, device=x.device)
            for c in range(C):
                grad, = torch.autograd.grad(y[:, c, i, j].sum(), xi, retain_graph=True)
                energy += grad.detach().to(_F64).square().sum(1)  # images are independent in a batch
            out[:, k] = torch.roll(energy / C, shifts=(-i, -j), dims=(1, 2)).sqrt().cpu()
    return out
