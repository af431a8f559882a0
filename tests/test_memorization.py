"""paperlib.memorization: the 1/3 nearest-neighbour rule against brute-force float64 distances."""
from __future__ import annotations

import pytest
import torch

from paperlib import geometry, memorization as mem

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def brute(samples, train, ratio=1 / 3):
    """Independent float64 reference: direct differences (not torch.cdist's matmul mode), sort."""
    d = torch.cdist(samples.flatten(1).double(), train.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    v, i = d.sort(dim=1)
    return v[:, 0] < ratio * v[:, 1], v, i


def planted(dtype=torch.float32, m_mem=20, m_new=30, n=400, shape=(3, 8, 8), seed=0):
    train = torch.rand(n, *shape, generator=gen(seed), dtype=F64).mul_(2).sub_(1)
    idx = torch.randint(0, n, (m_mem,), generator=gen(seed + 1))
    noise = torch.randn(m_mem, *shape, generator=gen(seed + 2), dtype=F64)
    scale = torch.logspace(-8, 0.5, m_mem, dtype=F64).reshape(-1, *[1] * len(shape))  # memorized ... not
    near = train[idx] + scale * noise / noise.flatten(1).norm(dim=1).reshape(-1, *[1] * len(shape))
    new = torch.rand(m_new, *shape, generator=gen(seed + 3), dtype=F64).mul_(2).sub_(1)
    return torch.cat([near, new]).to(dtype), train.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_is_memorized_matches_brute_force_float64(dtype):
    samples, train = planted(dtype)
    got = mem.is_memorized(samples, train)
    ref, v, _ = brute(samples, train)
    assert got.dtype == torch.bool and got.shape == (50,)
    assert torch.equal(got, ref)
    assert got[:5].all() and not got[-30:].any()  # planted copies yes, fresh points no
    assert mem.memorization_rate(samples, train) == pytest.approx(ref.double().mean().item())
    # flattened input gives the same answer
    assert torch.equal(mem.is_memorized(samples.flatten(1), train.flatten(1)), got)


def test_ratio_argument_and_boundary():
    samples, train = planted(F64)
    for r in (0.1, 0.5, 0.9):
        assert torch.equal(mem.is_memorized(samples, train, ratio=r), brute(samples, train, r)[0])
    ratio = mem.nn_ratio(samples, train)
    _, v, _ = brute(samples, train)
    assert torch.allclose(ratio, v[:, 0] / v[:, 1], rtol=1e-12)


def test_nearest_neighbors_exact_distances_and_indices():
    samples, train = planted(torch.float32, shape=(3072,))
    dist, idx = mem.nearest_neighbors(samples, train, k=2)
    _, v, i = brute(samples, train)
    assert dist.dtype == F64 and idx.shape == (50, 2)
    assert torch.allclose(dist, v[:, :2], rtol=1e-12, atol=1e-300)
    assert torch.equal(idx, i[:, :2])
    # a sample equal to a training image: d1 is exactly 0 (float32 expansion would give noise)
    d0, i0 = mem.nearest_neighbors(train[7:8], train, k=2)
    assert d0[0, 0].item() == 0.0 and i0[0, 0].item() == 7


def test_chunked_path_equals_brute_force(monkeypatch):
    monkeypatch.setattr(geometry, "BLOCK_BYTES", 4 * 16 * 37)  # tiny blocks: many query blocks and data chunks
    samples, train = planted(torch.float32, m_mem=12, m_new=20, n=257, shape=(1, 6, 6), seed=5)
    assert torch.equal(mem.is_memorized(samples, train), brute(samples, train)[0])
    dist, idx = mem.nearest_neighbors(samples, train, k=3)
    _, v, i = brute(samples, train)
    assert torch.allclose(dist, v[:, :3], rtol=1e-12) and torch.equal(idx, i[:, :3])


def test_duplicate_training_images_are_not_memorized_under_the_strict_rule():
    train = torch.randn(20, 10, generator=gen(9), dtype=F64)
    train[5] = train[4]
    assert not mem.is_memorized(train[4:5], train).item()  # d1 = d2 = 0
    assert mem.is_memorized(train[6:7] + 1e-6, train).item()


def test_bad_input():
    samples, train = planted(F64, m_mem=3, m_new=3)
    cases = [
        (lambda: mem.is_memorized(samples, train[:1]), "train"),
        (lambda: mem.memorization_rate(samples, train[:1]), "train"),
        (lambda: mem.is_memorized(samples, train, ratio=0.0), "ratio"),
        (lambda: mem.is_memorized(samples, train, ratio=float("nan")), "ratio"),
        (lambda: mem.is_memorized(samples[:, :2], train), "dimension"),
        (lambda: mem.is_memorized(samples.flatten(1)[0], train), "samples"),
        (lambda: mem.is_memorized(samples.to("meta"), train), "device"),
        (lambda: mem.is_memorized(torch.full_like(samples, float("nan")), train), "samples"),
        (lambda: mem.is_memorized(samples, train.to(torch.uint8)), "train"),
        (lambda: mem.nearest_neighbors(samples, train[:2], k=3), "k"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


# ---------------------------------------------------------------------------------------------
# per-noise-level memorization (Fig. 2)
# ---------------------------------------------------------------------------------------------
def _emp_f64(train):
    """Independent empirical optimal denoiser (Eq. 2) in float64: a softmax over -||x - y_i||^2 / 2 sigma^2."""
    t = train.flatten(1).double()

    def D(x, sigma):
        xf = x.flatten(1).double()
        logits = -torch.cdist(xf, t, compute_mode="donot_use_mm_for_euclid_dist").pow(2) / (2 * sigma.double()[:, None] ** 2)
        return (logits.softmax(1) @ t).reshape(x.shape).to(x.dtype)
    return D


def test_per_level_rates_match_a_direct_computation():
    train = torch.rand(30, 3, 4, 4, generator=gen(5), dtype=F64) * 2 - 1
    x0 = torch.cat([train[:10] + 1e-3 * torch.randn(10, 3, 4, 4, generator=gen(6), dtype=F64),
                    torch.rand(10, 3, 4, 4, generator=gen(7), dtype=F64) * 2 - 1])
    sigmas = [1e-3, 0.05, 0.2, 0.5, 3.0, 50.0]
    D = _emp_f64(train)
    got = mem.per_level_rates(D, x0, train, sigmas, seed=11)
    noise = torch.randn(x0.shape, generator=gen(11), dtype=F64)  # one draw shared by every sigma
    ref = torch.stack([brute(D(x0 + s * noise, torch.full((20,), s, dtype=F64)), train)[0].double().mean()
                       for s in sigmas])
    assert got.dtype == F64 and got.shape == (len(sigmas),)
    assert torch.equal(got, ref)
    assert got[0] == 1.0 and got[-1] == 0.0  # the empirical denoiser snaps to a training image / returns the mean
    assert torch.equal(mem.per_level_rates(D, x0, train, sigmas, seed=11), got)  # seeded
    strict = mem.per_level_rates(D, x0, train, sigmas, seed=11, ratio=0.01)
    assert (strict <= got).all()


def test_per_level_rates_bad_input():
    train = torch.rand(5, 3, 4, 4, generator=gen(0))
    D = _emp_f64(train)
    with pytest.raises(TypeError, match="seed"):
        mem.per_level_rates(D, train, train, [0.1], seed=1.5)
    with pytest.raises(ValueError, match="train"):
        mem.per_level_rates(D, train, train[:1], [0.1])
    with pytest.raises(ValueError, match="ratio"):
        mem.per_level_rates(D, train, train, [0.1], ratio=0)
    with pytest.raises(ValueError, match="sigma"):
        mem.per_level_rates(D, train, train, [-0.1])
