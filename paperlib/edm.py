"""EDM (Karras et al. 2022): noise schedule, preconditioning, loss and sampler (paper Sec. 2, App. E.1)."""
from __future__ import annotations

import math

import torch

from . import checks


def karras_sigmas(steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM sampling schedule (App. E.1), float64, decreasing, with a final exact 0 (length ``steps + 1``).

    ``sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max})")
    i = torch.arange(steps, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


# ----------------------------------------------------------------------------------------------
# Input checks (shared by the modules that build on this one).

def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _as_sigma(sigma, name: str = "sigma", *, device=None, dtype=None) -> torch.Tensor:
    """``sigma`` as a tensor, checked to be finite and > 0 (``ValueError`` naming ``name`` if not)."""
    s = torch.as_tensor(sigma, device=device)
    if dtype is not None:
        s = s.to(dtype)
    elif not s.is_floating_point():
        s = s.to(torch.get_default_dtype())
    if s.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {s.flatten()[:8].tolist()}")
    return s


def _per_sample(sigma: torch.Tensor, x: torch.Tensor, name: str = "sigma") -> torch.Tensor:
    """Broadcast a scalar, ``(b,)`` or ``(b, 1, ..., 1)`` sigma to shape ``(b, 1, ..., 1)`` like ``x``."""
    if sigma.ndim == 0:
        return sigma.reshape([1] * x.ndim)
    if sigma.shape[0] not in (1, x.shape[0]) or sigma.numel() != sigma.shape[0]:
        raise ValueError(f"{name} has shape {tuple(sigma.shape)}; expected a scalar or one value per "
                         f"sample of x (batch {x.shape[0]})")
    return sigma.reshape([sigma.shape[0]] + [1] * (x.ndim - 1))


# ----------------------------------------------------------------------------------------------
# Preconditioning (EDM Table 1; notes "Notation"): D(x; s) = c_skip x + c_out F(c_in x; c_noise).

def _formula_args(sigma, sigma_data=0.5):
    """``(sigma, sigma_data)`` checked for the formula helpers: ``sigma`` a number or a tensor (kept as
    given) with finite entries > 0, ``sigma_data`` a finite number > 0; ValueError naming the argument."""
    if isinstance(sigma, torch.Tensor):
        if not (sigma.is_floating_point() or sigma.dtype in (torch.int32, torch.int64)) or sigma.dtype == torch.bool:
            raise ValueError(f"sigma must hold real numbers, got dtype {sigma.dtype}")
        if sigma.numel() and not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
            raise ValueError(f"sigma must be finite and > 0, got {sigma.flatten()[:8].tolist()}")
    else:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise ValueError(f"sigma must be a number or a tensor, got {sigma!r} ({type(sigma).__name__})")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or \
            not (math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return sigma, sigma_data


def c_skip(sigma, sigma_data: float = 0.5):
    """``sigma_data^2 / (sigma^2 + sigma_data^2)``: the share of the noisy input kept as is."""
    return _c_skip(*_formula_args(sigma, sigma_data))


def c_out(sigma, sigma_data: float = 0.5):
    """``sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``: the scale of the network's output."""
    return _c_out(*_formula_args(sigma, sigma_data))


def c_in(sigma, sigma_data: float = 0.5):
    """``1 / sqrt(sigma^2 + sigma_data^2)``: gives the network an input of unit variance."""
    return _c_in(*_formula_args(sigma, sigma_data))


def c_noise(sigma):
    """``ln(sigma) / 4``: the noise level as the network sees it."""
    return _c_noise(_formula_args(sigma)[0])


def loss_weight(sigma, sigma_data: float = 0.5):
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Eq. 1), ``= 1 / c_out^2``."""
    return _loss_weight(*_formula_args(sigma, sigma_data))


# unchecked forms, for callers that have checked sigma already (no extra device sync per call)
def _c_skip(sigma, sigma_data):
    return sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)


def _c_out(sigma, sigma_data):
    return sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5


def _c_in(sigma, sigma_data):
    return 1 / (sigma ** 2 + sigma_data ** 2) ** 0.5


def _c_noise(sigma):
    return torch.log(torch.as_tensor(sigma)) / 4


def _loss_weight(sigma, sigma_data):
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


class Precond(torch.nn.Module):
    """EDM-preconditioned denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise, class)``.

    ``net(x_in, c_noise, class_labels=None)`` is the raw network F (e.g.
    :class:`paperlib.networks.UNet`). Call as ``D(x, sigma, class_labels=None)`` with ``x`` of shape
    ``(b, ...)`` and ``sigma`` a scalar or one value per sample; the result has ``x``'s shape and dtype
    (F runs in its own parameter dtype, like the EDM reference, so a float64 ODE can drive a float32 net).

    Class-conditional nets (``net.num_classes > 0``, e.g. the dummy-class baseline of Yoon et al.,
    Sec. 5) take integer labels; when none are passed the fixed ``class_label`` is used (the
    training code sets it to the real-data class 0), and without either a ``ValueError`` is raised.
    """

    def __init__(self, net: torch.nn.Module, sigma_data: float = 0.5, class_label: int | None = None):
        super().__init__()
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be finite and > 0, got {sigma_data!r}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.num_classes = int(getattr(net, "num_classes", 0) or 0)
        if class_label is not None and not (self.num_classes and 0 <= class_label < self.num_classes):
            raise ValueError(f"class_label={class_label!r} needs a class-conditional net with more classes "
                             f"(num_classes={self.num_classes})")
        self.class_label = class_label

    def _labels(self, class_labels, b: int, device) -> torch.Tensor | None:
        if self.num_classes == 0:
            if class_labels is not None:
                raise ValueError("class_labels given, but the network is unconditional (num_classes=0)")
            return None
        if class_labels is None:
            if self.class_label is None:
                raise ValueError("class_labels is required: the network is class-conditional and no "
                                 "default class_label is set")
            return torch.full((b,), self.class_label, dtype=torch.long, device=device)
        labels = torch.as_tensor(class_labels, device=device).long().reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(b)
        if labels.shape[0] != b or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"class_labels must be {b} integers in [0, {self.num_classes})")
        return labels

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        sigma = _per_sample(_as_sigma(sigma, device=x.device, dtype=x.dtype), x)
        sd = self.sigma_data
        net_dtype = next(self.net.parameters()).dtype
        x_in = (_c_in(sigma, sd) * x).to(net_dtype)
        noise_in = _c_noise(sigma).expand(x.shape[0], *sigma.shape[1:]).reshape(x.shape[0]).to(net_dtype)
        f = self.net(x_in, noise_in, class_labels=self._labels(class_labels, x.shape[0], x.device))
        return _c_skip(sigma, sd) * x + _c_out(sigma, sd) * f.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Training loss (Eq. 1) and training noise levels.

def edm_loss(denoiser, x0: torch.Tensor, sigma, sigma_data: float = 0.5, *, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None, class_labels=None, reduction: str = "mean") -> torch.Tensor:
    """EDM training loss (Eq. 1): ``lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 / d``.

    ``x0`` is ``(b, ...)``; ``sigma`` a scalar or one value per sample; ``noise`` (default: fresh
    ``N(0, I)`` from ``generator``) has ``x0``'s shape. The squared error is averaged over the
    ``d`` entries of each sample, so with the EDM weighting it equals the mean squared error of F
    against its unit-variance target ``(x0 - c_skip x) / c_out``. ``reduction="mean"`` averages over
    the batch, ``"none"`` returns the ``(b,)`` per-sample losses.
    """
    _check_finite("x0", x0)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    sigma = _per_sample(_as_sigma(sigma, device=x0.device, dtype=x0.dtype), x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                            device=generator.device if generator is not None else x0.device).to(x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, x0 has {tuple(x0.shape)}")
    kwargs = {} if class_labels is None else {"class_labels": class_labels}
    denoised = denoiser(x0 + sigma * noise, sigma.reshape(-1), **kwargs)
    _formula_args(1.0, sigma_data)
    per_sample = (_loss_weight(sigma, sigma_data) * (denoised - x0) ** 2).flatten(1).mean(1)
    return per_sample.mean() if reduction == "mean" else per_sample


def lognormal_mass(lo: float, hi: float, P_mean: float = -1.2, P_std: float = 1.2) -> float:
    """Probability that ``sigma`` with ``ln sigma ~ N(P_mean, P_std^2)`` lies in ``[lo, hi]``."""
    lo, hi = checks.interval((lo, hi), "gap")
    for name, v in (("P_mean", P_mean), ("P_std", P_std)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not P_std > 0:
        raise ValueError(f"P_std must be > 0, got {P_std!r}")
    a = (math.log(lo) - P_mean) / (P_std * math.sqrt(2))
    b = (math.log(hi) - P_mean) / (P_std * math.sqrt(2))
    return 0.5 * (math.erf(b) - math.erf(a))


def sample_training_sigmas(n: int, P_mean: float = -1.2, P_std: float = 1.2, gap=None,
                           generator: torch.Generator | None = None, *, device=None,
                           dtype: torch.dtype = torch.float32, max_gap_mass: float = 0.99) -> torch.Tensor:
    """``n`` training noise levels, ``ln sigma ~ N(P_mean, P_std^2)`` (EDM; Eq. 1).

    With ``gap=(lo, hi)`` ("gap training", Sec. 5) noise levels in the closed interval ``[lo, hi]``
    are rejected: the result is an i.i.d. sample of the log-normal conditioned on lying outside the
    gap (its renormalised restriction), drawn by vectorised rejection (batches of proposals, the
    first ``n`` accepted ones kept, in order). ``ValueError`` if the gap holds more than
    ``max_gap_mass`` of the probability. Random numbers come from ``generator`` (on its device)
    and the result is moved to ``device`` (default: the generator's device).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(P_mean, bool) or isinstance(P_std, bool) or not (math.isfinite(P_mean) and math.isfinite(P_std) and P_std > 0):
        raise ValueError(f"P_mean must be finite and P_std finite and > 0, got {P_mean!r}, {P_std!r}")
    gen_device = generator.device if generator is not None else (torch.device(device) if device is not None else None)
    out_device = device if device is not None else gen_device

    def draw(m):
        log_sigma = torch.randn(m, generator=generator, device=gen_device, dtype=torch.float64) * P_std + P_mean
        return log_sigma.exp().to(dtype)

    if gap is None:
        return draw(n).to(out_device)
    lo, hi = checks.interval(gap, "gap")
    mass = lognormal_mass(lo, hi, P_mean, P_std)
    if mass > max_gap_mass:
        raise ValueError(f"gap={gap!r} holds {mass:.4f} of the noise distribution (more than "
                         f"max_gap_mass={max_gap_mass}): almost every sample would be rejected")
    accepted, have = [], 0
    while have < n:
        need = n - have
        proposals = draw(int(need / (1 - mass) * 1.1) + 16)
        wide = proposals.double()  # the test is done on the values as returned (after rounding to dtype)
        keep = proposals[(wide < lo) | (wide > hi)][:need]
        accepted.append(keep)
        have += keep.numel()
    return (torch.cat(accepted) if accepted else draw(0)).to(out_device)
