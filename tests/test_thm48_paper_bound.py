"""Theorem 4.8's upper bound in the paper's form, N E phi(||X - X'||) over random pairs (App. E.2)."""
from __future__ import annotations

import math

import pytest
import torch

from paperlib import shells

F64 = torch.float64


def pool(m=12, d=8, seed=0):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_pair_bound_matches_the_exact_average_over_all_pairs():
    X = pool()
    sig = torch.tensor([0.4, 1.0, 2.5], dtype=F64)
    n_train = 7
    bound, se = shells.pair_upper_bound(X, sig, n_train, n_pairs=100_000, seed=3)
    D = torch.cdist(X, X)
    off = ~torch.eye(len(X), dtype=torch.bool)
    for k, s in enumerate(sig.tolist()):
        exact = n_train * shells.shell_hit_probability(D[off], s, X.shape[1]).mean().item()  # exact phi (ncx2)
        assert abs(bound[k].item() - exact) <= 4 * se[k].item() + 1e-10
        assert se[k] > 0


def test_pair_bound_is_seeded_and_bounds_the_mean_coverage_over_random_training_sets():
    X = pool(m=300, d=32, seed=1)
    sig = torch.tensor([1.0, 1.4, 2.0], dtype=F64)
    n_train = 20
    b1, _ = shells.pair_upper_bound(X, sig, n_train, n_pairs=20_000, seed=5)
    b2, _ = shells.pair_upper_bound(X, sig, n_train, n_pairs=20_000, seed=5)
    b3, _ = shells.pair_upper_bound(X, sig, n_train, n_pairs=20_000, seed=6)
    assert torch.equal(b1, b2) and not torch.equal(b1, b3)
    g = torch.Generator().manual_seed(7)
    cov = torch.zeros(len(sig), dtype=F64)
    trials = 30
    for _ in range(trials):
        perm = torch.randperm(len(X), generator=g)
        cov += shells.coverage(X[perm[:n_train]], X[perm[n_train:]], sig, n_noise=4, generator=g, progress=False)
    cov /= trials
    assert bool((cov <= torch.clamp(b1, max=1.0) + 0.02).all())
    assert bool((b1 > 0).all())


def test_pair_bound_bad_input():
    X = pool()
    with pytest.raises(ValueError, match="n_pairs"):
        shells.pair_upper_bound(X, [1.0], 5, n_pairs=1, seed=0)
    with pytest.raises(ValueError, match="n_train"):
        shells.pair_upper_bound(X, [1.0], 0, n_pairs=10, seed=0)
    with pytest.raises(ValueError, match="data"):
        shells.pair_upper_bound(X[:1], [1.0], 5, n_pairs=10, seed=0)
    with pytest.raises(ValueError, match="sigma"):
        shells.pair_upper_bound(X, [-1.0], 5, n_pairs=10, seed=0)
