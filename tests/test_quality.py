"""patch-FD (paperlib.quality): the Fréchet distance against closed forms, and the metric's ranking.

The ranking checks are the validation the chapter repeats on real data: held-out real images score
better than blurred, noise-added and other-class images, while copies of the training set score as
well as held-out images (quality metrics cannot see memorization).
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from paperlib import quality

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frechet_distance_matches_scipy_sqrtm():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(6, 6)), g.normal(size=(6, 6))
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    m1, m2 = g.normal(size=6), g.normal(size=6)
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2)).real
    got = quality.frechet_distance(torch.tensor(m1), torch.tensor(c1), torch.tensor(m2), torch.tensor(c2))
    assert got == pytest.approx(ref, rel=1e-9)
    # Closed forms: identical Gaussians -> 0; isotropic N(0, s1^2 I) vs N(0, s2^2 I) -> d (s1 - s2)^2.
    assert quality.frechet_distance(m1, c1, m1, c1) == pytest.approx(0, abs=1e-9)
    d = 5
    assert quality.frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(d * 1.0)
    # Singular covariances are fine (round-off clamped).
    assert quality.frechet_distance(np.zeros(3), np.zeros((3, 3)), np.zeros(3), np.eye(3)) == pytest.approx(3.0)


def test_gaussian_fit_and_patches():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    p = quality.patches(x, 2)
    assert p.shape == (2 * 9, 4)
    assert torch.equal(p[0], torch.tensor([0.0, 1, 4, 5], dtype=torch.float64))
    mu, cov = quality.gaussian_fit(p)
    assert torch.allclose(mu, p.mean(0)) and torch.allclose(cov, torch.cov(p.T))
    with pytest.raises(ValueError):
        quality.patches(x, 5)
    with pytest.raises(ValueError):
        quality.gaussian_fit(torch.zeros(1, 3))


def _fields(n, seed, slope=2.0, tint=(0.0, 0.0, 0.0), res=16):
    """Random colour images with a 1/f^slope power spectrum (a crude model of natural images)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(res)
    r = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().clamp_min(1 / res)
    spec = torch.fft.fft2(torch.randn(n, 3, res, res, generator=g)) * r ** (-slope / 2)
    x = torch.fft.ifft2(spec).real
    x = 0.45 * x / x.std() + torch.tensor(tint).reshape(1, 3, 1, 1)
    return x.clamp(-1, 1).float()


def _blur(x):
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


def _check_ranking(metric, train, held_out, other):
    g = torch.Generator().manual_seed(9)
    scores = {
        "held-out": metric(held_out),
        "train copies": metric(train),
        "blurred": metric(_blur(held_out)),
        "noise-added": metric((held_out + 0.1 * torch.randn(held_out.shape, generator=g)).clamp(-1, 1)),
        "other class": metric(other),
    }
    for bad in ("blurred", "noise-added", "other class"):
        assert scores["held-out"] < scores[bad], scores
    # Copies of real images score like real images: quality cannot detect memorization.
    assert scores["train copies"] < min(scores[b] for b in ("blurred", "noise-added", "other class")), scores
    return scores


def test_patch_fd_ranks_synthetic_sets():
    ref = _fields(300, 0)
    metric = quality.PatchFD(ref, k=4, scales=(1, 2))
    _check_ranking(metric, _fields(120, 1), _fields(120, 2), _fields(120, 3, slope=1.0, tint=(0.3, 0.0, -0.3)))
    assert quality.patch_fd(_fields(50, 2), ref) == pytest.approx(metric(_fields(50, 2)))
    assert len(metric.per_scale(ref[:10])) == 2
    with pytest.raises(ValueError):
        metric(torch.zeros(4, 1, 16, 16))


def test_patch_fd_ranks_real_cifar_sets():
    root = os.environ.get("PAPERLIB_DATA", "").strip()
    if not root or not Path(root, "cifar10").is_dir():
        pytest.skip("PAPERLIB_DATA with cifar10 is needed for the real-data ranking check")
    from paperlib import data

    x = F.avg_pool2d(data.load("cifar10", "train", 4000), 2)
    y = data.load_labels("cifar10", "train", 4000)
    cars, planes = x[y == 1], x[y == 0]
    ref, train, held_out = cars[:200], cars[200:300], cars[300:400]
    metric = quality.PatchFD(ref, k=4, scales=(1, 2))
    _check_ranking(metric, train, held_out, planes[:100])
