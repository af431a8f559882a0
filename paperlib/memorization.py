"""The 1/3 nearest-neighbour memorization rule (Sec. 3; Yoon et al. 2023).

A generated sample ``x`` is *memorized* when ``d(x, NN_1) < ratio * d(x, NN_2)`` with ``ratio = 1/3``,
where ``NN_1``, ``NN_2`` are its nearest and second-nearest training points (Euclidean distance on the
flattened images). The memorization rate is the fraction of memorized samples. Per noise level
(Fig. 2), apply the same rule to one-step denoiser outputs ``D(x0 + sigma n; sigma)``.

:func:`one_third_rule` returns the whole decision (mask, nearest index, both distances);
:func:`is_memorized` and :func:`memorization_rate` are its mask and mean. Distances come from
:func:`paperlib.neighbors.nearest_neighbors` (re-exported here): chunked matrix products in the input
dtype to find candidates, exact ``float64`` re-scoring certified by a rounding-error bound, so the
decisions equal those of a brute-force ``float64`` computation (ties between exactly equal distances
aside: a sample equal to a training image that appears twice has ``d1 = d2 = 0`` and is not memorized
under the strict inequality).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import checks
from .neighbors import nearest_neighbors

__all__ = ["nearest_neighbors", "OneThirdRule", "one_third_rule", "is_memorized", "memorization_rate", "nn_ratio",
           "per_level_rates"]


class OneThirdRule(NamedTuple):
    """Result of :func:`one_third_rule` for ``m`` samples.

    ``memorized``: bool ``(m,)``, ``d1 < ratio * d2``; ``nearest``: index of the nearest training point
    ``(m,)``; ``d1``, ``d2``: exact distances to the nearest and second-nearest training points (float64)."""

    memorized: torch.Tensor
    nearest: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor


def _two_nearest(samples, train):
    samples = checks.points(samples, "samples")
    train = checks.points(train, "train")
    if train.shape[0] < 2:
        raise ValueError(f"train must have at least 2 points (n >= 2), got {train.shape[0]}")
    checks.pair(samples, train, "samples", "train")
    return nearest_neighbors(samples, train, 2, names=("samples", "train"))


def one_third_rule(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> OneThirdRule:
    """The 1/3 rule with its evidence: ``(memorized, nearest, d1, d2)`` (see :class:`OneThirdRule`).

    ``samples``: ``(m, d)`` or ``(m, C, H, W)``; ``train``: ``n >= 2`` points of the same flattened
    dimension. ``ratio``: the threshold (1/3 in the paper). Results on the samples' device."""
    r = checks.number(ratio, "ratio", low=0.0, low_open=True)
    dist, idx = _two_nearest(samples, train)
    d1, d2 = dist[:, 0], dist[:, 1]
    return OneThirdRule(memorized=d1 < r * d2, nearest=idx[:, 0], d1=d1, d2=d2)


def nn_ratio(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """``d(x, NN_1) / d(x, NN_2)`` for each sample (float64, ``(m,)``; ``0/0`` is reported as 1)."""
    dist, _ = _two_nearest(samples, train)
    d1, d2 = dist[:, 0], dist[:, 1]
    return torch.where(d2 > 0, d1 / d2.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(d1))


def is_memorized(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> torch.Tensor:
    """``d(x, NN_1) < ratio * d(x, NN_2)`` for each sample: a bool tensor ``(m,)`` on the samples' device.

    ``train`` needs ``n >= 2`` points. Exact distances (see module docstring)."""
    return one_third_rule(samples, train, ratio).memorized


def memorization_rate(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> float:
    """Fraction of ``samples`` that are memorized (:func:`is_memorized`), a python float in [0, 1]."""
    return float(is_memorized(samples, train, ratio).to(torch.float64).mean())


def per_level_rates(denoiser, x0: torch.Tensor, train: torch.Tensor, sigmas, *, seed: int = 0,
                    ratio: float = 1 / 3, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Per-noise-level memorization (Sec. 3, Fig. 2): for each ``sigma``, the fraction of one-step
    outputs ``D(x0 + sigma n; sigma)`` that the ``ratio`` rule (:func:`is_memorized`) calls memorized
    against ``train``.

    ``x0``: ``(m, C, H, W)`` query images (the paper uses test images); ``n`` is one standard normal
    draw per image from a generator seeded with ``seed`` (on ``x0``'s device), shared by every sigma
    (:func:`paperlib.sampling.one_step_outputs`). Returns a float64 ``Tensor[len(sigmas)]`` in [0, 1].
    """
    from . import sampling

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if isinstance(train, torch.Tensor) and train.dim() >= 1 and train.shape[0] < 2:
        raise ValueError(f"train must have at least 2 points (n >= 2), got {train.shape[0]}")
    checks.number(ratio, "ratio", low=0.0, low_open=True)
    g = torch.Generator(device=x0.device).manual_seed(seed)
    outputs = sampling.one_step_outputs(denoiser, x0, sigmas, generator=g, batch_size=batch_size, progress=progress)
    train = train.to(x0.device)
    return torch.tensor([memorization_rate(o, train, ratio) for o in outputs], dtype=torch.float64)
