"""paperlib.recipes: Section 3's shared models (seeds, parallel training equal to sequential training)."""
from __future__ import annotations

import pytest
import torch

from paperlib import recipes


def _states(models):
    return {k: {n: t.clone() for n, t in m.state_dict().items()} for k, (m, _) in models.items()}


def test_empirical_models_seeds_and_workers(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "parallel"))
    par = recipes.empirical_models("smoke", device="cpu", seeds=(0, 1), progress=False, workers=2)
    assert set(par) == {("small", 0), ("small", 1), ("large", 0)}  # EDM-large at seed 0 only
    assert not any(h["from_cache"] for _, h in par.values())
    again = recipes.empirical_models("smoke", device="cpu", seeds=(0, 1), progress=False, workers=2)
    assert all(h["from_cache"] for _, h in again.values())
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path / "sequential"))
    seq = recipes.empirical_models("smoke", device="cpu", seeds=(0, 1), progress=False, workers=1)
    a, b = _states(par), _states(seq)
    for key in a:  # training is deterministic on CPU: worker processes give the same weights
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key])
    assert not all(torch.equal(a["small", 0][n], a["small", 1][n]) for n in a["small", 0])


def test_empirical_models_bad_input():
    with pytest.raises(ValueError, match="seeds"):
        recipes.empirical_models("smoke", seeds=())
    with pytest.raises(ValueError, match="seeds"):
        recipes.empirical_models("smoke", seeds=(-1,))
    with pytest.raises(ValueError, match="workers"):
        recipes.empirical_models("smoke", workers=0)
    with pytest.raises(ValueError, match="profile"):
        recipes.empirical_models("nope")
    with pytest.raises(ValueError, match="which"):
        recipes.empirical_recipe("smoke", "medium")
