"""EDM preconditioning, loss weighting and the training noise-level sampler (paperlib.edm)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from paperlib import edm
from paperlib.networks import UNet, count_parameters

SD = 0.5
SIGMAS = [0.002, 0.05, 0.3, 0.5, 1.0, 4.0, 80.0]


pytestmark = pytest.mark.usefixtures("one_thread")


class ZeroNet(torch.nn.Module):
    """F = 0 (with one parameter, so Precond can read a dtype)."""

    num_classes = 0

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, c_noise, class_labels=None):
        return torch.zeros_like(x)


class RecordingNet(torch.nn.Module):
    """F(x, c) = a * x + c, recording its inputs."""

    def __init__(self, num_classes=0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.num_classes = num_classes
        self.calls = []

    def forward(self, x, c_noise, class_labels=None):
        self.calls.append((x.clone(), c_noise.clone(), class_labels))
        return self.a * x + c_noise.reshape(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("sigma", SIGMAS)
def test_preconditioning_identities(sigma):
    s = torch.tensor(sigma, dtype=torch.float64)
    # lambda(sigma) c_out(sigma)^2 = 1: the weighted loss is the plain MSE of F against its target.
    assert float(edm.loss_weight(s, SD) * edm.c_out(s, SD) ** 2) == pytest.approx(1.0, rel=1e-12)
    # c_skip^2 sd^2 ... : the variance of the skip-corrected target, (1-c_skip)^2 sd^2 + c_skip^2 s^2 = c_out^2.
    lhs = (1 - edm.c_skip(s, SD)) ** 2 * SD ** 2 + edm.c_skip(s, SD) ** 2 * s ** 2
    assert float(lhs) == pytest.approx(float(edm.c_out(s, SD) ** 2), rel=1e-12)
    # c_in normalises the noisy input: c_in^2 (sd^2 + s^2) = 1.
    assert float(edm.c_in(s, SD) ** 2 * (SD ** 2 + s ** 2)) == pytest.approx(1.0, rel=1e-12)
    assert float(edm.c_noise(s)) == pytest.approx(math.log(sigma) / 4, rel=1e-12, abs=1e-15)


def test_zero_network_gives_c_skip_times_x():
    D = edm.Precond(ZeroNet(), sigma_data=SD)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    sig = torch.tensor([0.01, 0.1, 0.5, 2.0, 50.0], dtype=torch.float64)
    out = D(x, sig)
    expected = x * (SD ** 2 / (sig ** 2 + SD ** 2)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    # Scalar sigma broadcasts.
    torch.testing.assert_close(D(x, 0.5), x * 0.5, rtol=1e-12, atol=0)


def test_precond_feeds_network_scaled_input_and_noise():
    net = RecordingNet()
    D = edm.Precond(net, sigma_data=SD)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    sig = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    out = D(x, sig)
    x_in, c_n, _ = net.calls[-1]
    cin = (1 / torch.sqrt(sig ** 2 + SD ** 2)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_in, cin * x)
    torch.testing.assert_close(c_n, torch.log(sig) / 4)
    f = 0.3 * cin * x + (torch.log(sig) / 4).reshape(-1, 1, 1, 1)
    s4 = sig.reshape(-1, 1, 1, 1)
    direct = SD ** 2 / (s4 ** 2 + SD ** 2) * x + s4 * SD / torch.sqrt(s4 ** 2 + SD ** 2) * f
    torch.testing.assert_close(out, direct)


@pytest.mark.parametrize("sigma", [0.02, 0.5, 5.0, 80.0])
def test_effective_target_has_unit_variance(sigma):
    """With data variance sd^2, F's regression target (x0 - c_skip x) / c_out has variance 1 (MC)."""
    g = torch.Generator().manual_seed(1)
    m = 400_000
    x0 = SD * torch.randn(m, generator=g, dtype=torch.float64)
    x = x0 + sigma * torch.randn(m, generator=g, dtype=torch.float64)
    s = torch.tensor(sigma, dtype=torch.float64)
    target = (x0 - edm.c_skip(s, SD) * x) / edm.c_out(s, SD)
    net_input = edm.c_in(s, SD) * x
    # Var of a sample variance of m unit normals: 2/m -> sd ~ 0.0022; allow 5 sd.
    assert float(target.var()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / m))
    assert float(net_input.var()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / m))


@torch.no_grad()
def test_edm_loss_matches_direct_computation():
    net = RecordingNet()
    D = edm.Precond(net, sigma_data=SD)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    sig = torch.tensor([0.003, 0.1, 0.4, 1.0, 3.0, 70.0], dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    loss = edm.edm_loss(D, x0, sig, SD, noise=noise, reduction="none")
    for i in range(6):
        s = float(sig[i])
        den = D(x0[i:i + 1] + s * noise[i:i + 1], torch.tensor([s], dtype=torch.float64))
        lam = (s ** 2 + SD ** 2) / (s * SD) ** 2
        direct = lam * float(((den - x0[i:i + 1]) ** 2).sum()) / x0[i].numel()
        assert float(loss[i]) == pytest.approx(direct, rel=1e-10)
        # Same number as F's plain MSE against its target (lambda c_out^2 = 1).
        xi = x0[i:i + 1] + s * noise[i:i + 1]
        cin = 1 / math.sqrt(s ** 2 + SD ** 2)
        f = 0.3 * cin * xi + math.log(s) / 4
        target = (x0[i:i + 1] - SD ** 2 / (s ** 2 + SD ** 2) * xi) / (s * SD / math.sqrt(s ** 2 + SD ** 2))
        assert float(loss[i]) == pytest.approx(float(((f - target) ** 2).mean()), rel=1e-9)
    assert float(edm.edm_loss(D, x0, sig, SD, noise=noise)) == pytest.approx(float(loss.mean()), rel=1e-12)


def test_bad_inputs_raise():
    D = edm.Precond(ZeroNet())
    x = torch.randn(2, 1, 2, 2)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            D(x, bad)
    with pytest.raises(ValueError, match="sigma"):
        D(x, torch.ones(3))
    with pytest.raises(ValueError, match="x0"):
        edm.edm_loss(D, torch.full((2, 1, 2, 2), float("nan")), 1.0)
    with pytest.raises(ValueError, match="gap"):
        edm.sample_training_sigmas(10, gap=(2.0, 1.0))
    with pytest.raises(ValueError, match="gap"):
        edm.sample_training_sigmas(10, gap=(1e-6, 1e6))  # holds almost all mass


def test_class_conditional_hook():
    net = RecordingNet(num_classes=2)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="class_labels"):
        edm.Precond(net)(x, 1.0)
    D = edm.Precond(net, class_label=0)
    D(x, 1.0)
    assert net.calls[-1][2].tolist() == [0, 0, 0]
    D(x, 1.0, class_labels=torch.tensor([1, 0, 1]))
    assert net.calls[-1][2].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="class_labels"):
        D(x, 1.0, class_labels=torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match="class_labels"):
        edm.Precond(ZeroNet())(x.float(), 1.0, class_labels=torch.tensor([0, 0, 0]))
    # A real class-conditional U-Net: different labels give different outputs once the label
    # embedding matters (perturb the near-zero output layer).
    unet = UNet(8, 1, model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), num_classes=2)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    Du = edm.Precond(unet, class_label=0)
    xi = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(Du(xi, 1.0, class_labels=torch.tensor([0, 0])), Du(xi, 1.0, class_labels=torch.tensor([1, 1])))
    torch.testing.assert_close(Du(xi, 1.0), Du(xi, 1.0, class_labels=torch.tensor([0, 0])))


@pytest.mark.parametrize("res,ch,mult", [(16, 1, (1, 2, 2)), (28, 1, (1, 2, 2)), (32, 3, (1, 2, 2)), (64, 3, (1, 2, 2, 2))])
def test_unet_shapes(res, ch, mult):
    net = UNet(res, ch, model_channels=8, channel_mult=mult, num_blocks=1, attn_resolutions=(res // 2,))
    out = net(torch.randn(2, ch, res, res), torch.zeros(2))
    assert out.shape == (2, ch, res, res)
    assert count_parameters(net) > 0
    with pytest.raises(ValueError, match="img_resolution"):
        UNet(30, 1, channel_mult=(1, 2, 2))


def test_default_small_unet_size():
    """The CPU-profile network (training.DEFAULTS) at 16x16 has ~370k parameters."""
    net = UNet(16, 1, model_channels=16, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,))
    assert 350_000 < count_parameters(net) < 400_000


def test_training_sigmas_are_lognormal():
    g = torch.Generator().manual_seed(0)
    s = edm.sample_training_sigmas(20_000, generator=g, dtype=torch.float64)
    assert s.shape == (20_000,) and (s > 0).all()
    res = stats.kstest(np.log(s.numpy()), stats.norm(loc=-1.2, scale=1.2).cdf)
    assert res.pvalue > 1e-3
    # And is not, say, N(-1.0, 1.2): the test has power.
    assert stats.kstest(np.log(s.numpy()), stats.norm(loc=-1.0, scale=1.2).cdf).pvalue < 1e-6
    # Seeded: reproducible.
    s2 = edm.sample_training_sigmas(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(s, s2)


@pytest.mark.parametrize("gap", [(0.5, 2.0), (0.05, 0.1), (1.0, 40.0)])
def test_gap_sampler_is_truncated_lognormal(gap):
    lo, hi = gap
    g = torch.Generator().manual_seed(3)
    s = edm.sample_training_sigmas(20_000, gap=gap, generator=g)
    assert s.shape == (20_000,) and s.dtype == torch.float32
    assert not ((s >= lo) & (s <= hi)).any()
    base = stats.norm(loc=-1.2, scale=1.2)
    a, b = math.log(lo), math.log(hi)
    pa, pb = base.cdf(a), base.cdf(b)
    mass = pb - pa
    assert edm.lognormal_mass(lo, hi) == pytest.approx(mass, rel=1e-10)

    def truncated_cdf(t):
        t = np.asarray(t, dtype=float)
        F = base.cdf(t)
        return np.where(t < a, F, np.where(t > b, F - mass, pa)) / (1 - mass)

    logs = np.log(s.double().numpy())
    assert stats.kstest(logs, truncated_cdf).pvalue > 1e-3
    # The fraction below the gap equals the renormalised mass there.
    frac_below = float((s < lo).double().mean())
    p_below = pa / (1 - mass)
    assert abs(frac_below - p_below) < 5 * math.sqrt(p_below * (1 - p_below) / 20_000)
