"""Gap training (Sec. 5): the sigma rejection sampler and the dummy-class data path.

``tests/test_edm.py`` already checks that no sigma falls in a gap and a KS test against the renormalised
truncated log-normal for three float32 gaps, and ``tests/test_training.py`` that training with a gap
never sees gap sigmas and that dummy-class batches pair label 1 with the noise images. Here: the
closed-interval edges, float64 output, a gap in the far tail, the renormalised mass of *each* side
against an independent Monte Carlo reference, the gaps the chapter builds from DDPM timesteps, and the
dummy-class details (noise statistics, both noise kinds, class-0 generation, label balance).
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from paperlib import edm, regimes, training

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gap_edges_are_rejected_and_float64_is_exact():
    lo, hi = 0.25, 0.75
    s = edm.sample_training_sigmas(30_000, gap=(lo, hi), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.float64)
    assert s.dtype == torch.float64 and s.shape == (30_000,)
    assert not ((s >= lo) & (s <= hi)).any()
    # An exact edge value is rejected (closed interval): a gap that starts exactly at a proposal.
    g = torch.Generator().manual_seed(5)
    first = edm.sample_training_sigmas(1, generator=g, dtype=torch.float64)
    again = edm.sample_training_sigmas(50, gap=(float(first[0]), 10.0), generator=torch.Generator().manual_seed(5),
                                       dtype=torch.float64)
    assert float(first[0]) not in again.tolist()


@pytest.mark.parametrize("gap", [(1.064, 5.079), (0.315, 1.419), (5.0, 80.0)])
def test_outside_distribution_is_the_original_renormalised(gap):
    """Compare with an independent reference: plain log-normal draws (numpy) with the gap removed."""
    lo, hi = gap
    n = 40_000
    s = edm.sample_training_sigmas(n, gap=gap, generator=torch.Generator().manual_seed(2)).double().numpy()
    assert not ((s >= lo) & (s <= hi)).any()
    ref = np.exp(np.random.default_rng(0).normal(-1.2, 1.2, size=3 * n))
    ref = ref[(ref < lo) | (ref > hi)][:n]
    assert stats.ks_2samp(np.log(s), np.log(ref)).pvalue > 1e-3
    # Each side keeps its share of the original mass, renormalised by 1 - P(gap).
    below = stats.norm(-1.2, 1.2).cdf(math.log(lo))
    p_below = below / (1 - edm.lognormal_mass(lo, hi))
    assert abs((s < lo).mean() - p_below) < 5 * math.sqrt(p_below * (1 - p_below) / n) + 1e-12


def test_ddpm_gap_translation_round_trips():
    """The chapter's gaps: DDPM timesteps [t0, t1] -> sigmas -> back to the same timesteps."""
    sig = regimes.ddpm_sigmas()
    for t0, t1 in ((100, 200), (100, 275), (100, 350), (93, 328)):
        gap = (float(sig[t0 - 1]), float(sig[t1 - 1]))
        assert regimes.ddpm_timesteps(gap) == (t0, t1)
        s = edm.sample_training_sigmas(5000, gap=gap, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)
        assert not ((s >= gap[0]) & (s <= gap[1])).any()


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_dummy_images_are_noise(noise):
    data = torch.zeros(400, 3, 8, 8)
    full = training.resolve_config({"dummy_class": True, "dummy_noise": noise})
    d = training._dummy_images(full, data)
    assert d.shape == data.shape
    flat = d.flatten().double().numpy()
    if noise == "uniform":
        assert stats.kstest(flat, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    else:
        assert stats.kstest(flat, stats.norm(0, full["sigma_data"]).cdf).pvalue > 1e-3
    # Independent of the data, fixed by the seed, different for another seed.
    assert torch.equal(d, training._dummy_images(full, torch.ones(400, 3, 8, 8)))
    other = training._dummy_images(training.resolve_config({"dummy_class": True, "dummy_noise": noise, "seed": 1}),
                                   data)
    assert not torch.equal(d, other)
    # dummy_count sets how many.
    full = training.resolve_config({"dummy_class": True, "dummy_count": 7})
    assert training._dummy_images(full, data).shape == (7, 3, 8, 8)


def test_dummy_class_model_generates_class_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_CACHE", str(tmp_path))
    data = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seen = []
    original = edm.edm_loss

    def recording(denoiser, x0, sigma, *args, **kwargs):
        seen.append(kwargs.get("class_labels").clone())
        return original(denoiser, x0, sigma, *args, **kwargs)

    monkeypatch.setattr(edm, "edm_loss", recording)
    cfg = {"steps": 12, "batch_size": 8, "warmup_steps": 2, "dummy_class": True,
           "network": {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": []}}
    model, _ = training.train(cfg, data, name="gapdummy", progress=False, device="cpu", num_threads=1)
    labels = torch.cat(seen)
    assert labels.dtype == torch.long and set(labels.tolist()) == {0, 1}
    # Equal class sizes (dummy_count defaults to the data size): about half the labels are 1.
    assert abs(labels.float().mean().item() - 0.5) < 0.2
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        default = model(x, 0.7)
        assert torch.equal(default, model(x, 0.7, class_labels=0))
        assert not torch.allclose(default, model(x, 0.7, class_labels=1))
