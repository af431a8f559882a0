"""Sample quality without downloads: the patch Fréchet distance ("patch-FD"), and FID where possible.

The paper scores samples with FID (Fréchet distance between Gaussian fits of Inception-v3 features,
Sec. 5, App. E.5). Inception weights must be downloaded, so offline the companion uses a stand-in
computed in a feature space that needs none:

**patch-FD.** Every ``k x k`` patch (stride 1) of every image is a feature vector of dimension
``C k^2``; this is done at several scales (the image, and the image average-pooled by 2, 4, ...).
At each scale the patches of the *reference* set are PCA-whitened (mean 0, covariance ``I``, with a
small floor ``eps`` on the eigenvalues), and the Fréchet distance

    ``FD = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr( (S_1^{1/2} S_2 S_1^{1/2})^{1/2} )``

between the Gaussian fits of the whitened patches of the samples and of the reference is computed
(float64, with symmetric eigendecompositions instead of a general ``sqrtm``). patch-FD is the sum over
scales. Lower is better; it is a "bag of patches" statistic: it sees colour, texture, sharpness and
noise at the patch scales, not the global arrangement of an image. It is *not* FID and its values are
not comparable to FID values. Like FID it rewards copies of real images (a memorizing model scores
well), which is why memorization is measured separately.

:func:`inception_fid` computes the real FID when ``pytorch_fid`` (and its weights) can be had, e.g. on Colab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import checks

__all__ = ["frechet_distance", "gaussian_fit", "patches", "PatchFD", "patch_fd", "inception_fid"]


def _images(x, name: str, min_count: int = 1) -> torch.Tensor:
    """``x`` checked as floating-point images ``(m, C, H, W)`` with finite values (ValueError naming ``name``)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of images (m, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] < min_count:
        raise ValueError(f"{name} must be (m >= {min_count}, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating-point images in [-1, 1], got {x.dtype} "
                         "(for uint8 pixels use x / 127.5 - 1)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of the rows of ``features`` ``(m, d)``, float64."""
    f = torch.as_tensor(features)
    if f.dtype == torch.bool or f.is_complex():
        raise ValueError(f"features must be real numbers, got {f.dtype}")
    f = f.double()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (m, d) with m >= 2, got {tuple(f.shape)}")
    checks.finite(f, "features")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((s + s.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2})`` is computed from the eigenvalues of the symmetric PSD
    matrix ``cov1^{1/2} cov2 cov1^{1/2}`` (negative round-off clamped to 0), in float64.
    """
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    cov1, cov2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError("means must have shape (d,) and covariances (d, d), the same for both")
    for name, t in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        checks.finite(t, name)
    a = _psd_sqrt(cov1)
    m = a @ cov2 @ a
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


def patches(images: torch.Tensor, k: int) -> torch.Tensor:
    """All ``k x k`` patches (stride 1) of ``images`` ``(m, C, H, W)``, as rows ``(m * P, C k^2)``."""
    images = _images(images, "images")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(images.shape[-2:]):
        raise ValueError(f"patch size k={k} must be in [1, {min(images.shape[-2:])}]")
    p = F.unfold(images.double(), kernel_size=k)  # (m, C k^2, P)
    return p.transpose(1, 2).reshape(-1, p.shape[1])


class PatchFD:
    """patch-FD against a fixed ``reference`` set ``(n, C, H, W)`` in [-1, 1] (see the module docstring).

    ``k``: patch size; ``scales``: average-pooling factors (1 = full resolution); ``eps``: eigenvalue
    floor of the whitening, relative to the mean eigenvalue at that scale. Call with a set of images
    to get its patch-FD (a float); :meth:`per_scale` gives the terms. Compare sets of equal size:
    like FID, the estimate is biased upwards for small sets.
    """

    def __init__(self, reference: torch.Tensor, k: int = 4, scales=(1, 2), eps: float = 1e-3):
        reference = _images(reference, "reference", 2)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(reference.shape[-2:]):
            raise ValueError(f"k must be an integer patch size in [1, {min(reference.shape[-2:])}], got {k!r}")
        try:
            scales = tuple(scales)
        except TypeError:
            raise ValueError(f"scales must be a sequence of pooling factors, got {scales!r}") from None
        if not scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 or reference.shape[-1] // s < k
                             for s in scales):
            raise ValueError(f"scales must be integers >= 1 leaving images of at least k={k} pixels, got {scales!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and eps < float("inf")):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.k, self.scales, self.eps = int(k), tuple(int(s) for s in scales), float(eps)
        self.shape = tuple(reference.shape[1:])
        self._white = []
        for s in self.scales:
            mu, cov = gaussian_fit(patches(self._pool(reference, s), self.k))
            vals, vecs = torch.linalg.eigh(cov)
            floor = self.eps * vals.clamp_min(0).mean()
            self._white.append((mu, vecs / vals.clamp_min(0).add(floor).sqrt()))
        self._ref_stats = [gaussian_fit(self._features(reference, i)) for i in range(len(self.scales))]

    def _pool(self, x: torch.Tensor, s: int) -> torch.Tensor:
        return x.double() if s == 1 else F.avg_pool2d(x.double(), s)

    def _features(self, images: torch.Tensor, i: int) -> torch.Tensor:
        mu, w = self._white[i]
        return (patches(self._pool(images, self.scales[i]), self.k) - mu) @ w

    def per_scale(self, images: torch.Tensor) -> list[float]:
        """The Fréchet distance at each scale (whitened patch features)."""
        images = _images(images, "images")
        if tuple(images.shape[1:]) != self.shape or images.shape[0] < 1:
            raise ValueError(f"images must be (m, {', '.join(map(str, self.shape))}), got {tuple(images.shape)}")
        out = []
        for i in range(len(self.scales)):
            mu, cov = gaussian_fit(self._features(images, i))
            out.append(frechet_distance(mu, cov, *self._ref_stats[i]))
        return out

    def __call__(self, images: torch.Tensor) -> float:
        return float(sum(self.per_scale(images)))


def patch_fd(samples: torch.Tensor, reference: torch.Tensor, **kwargs) -> float:
    """patch-FD of ``samples`` against ``reference`` (:class:`PatchFD` keyword arguments)."""
    return PatchFD(reference, **kwargs)(samples)


@torch.no_grad()
def inception_fid(samples: torch.Tensor, reference: torch.Tensor, device=None, batch_size: int = 200) -> float:
    """The real FID (Inception-v3 pool features, ``pytorch_fid``); raises ``ImportError`` when
    ``pytorch_fid`` is not installed and whatever its weight download raises when offline."""
    from pytorch_fid.inception import InceptionV3  # noqa: PLC0415 (optional dependency)

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    def feats(x):
        out = []
        for i in range(0, x.shape[0], batch_size):
            b = ((x[i:i + batch_size].float().clamp(-1, 1) + 1) / 2).to(device)
            if b.shape[1] == 1:
                b = b.expand(-1, 3, -1, -1)
            out.append(net(b)[0].flatten(1).double().cpu())
        return torch.cat(out)

    return frechet_distance(*gaussian_fit(feats(samples)), *gaussian_fit(feats(reference)))
