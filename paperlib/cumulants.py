"""Easy to hard: the mixed cumulant model and the diffusion information exponent.

Related paper: Bardone, Merger & Goldt, arXiv 2603.12901 (full text not available offline). The data model
and the network follow the paper's public code (``MCM_twolayer_minimal``); the population loss against the
overlap, its exponent and the step-size scaling of online SGD are the companion's own reconstruction,
checked against Monte Carlo in ``tests/test_cumulants.py``.

**Mixed cumulant model.** A clean point ``a`` in ``R^d`` has independent standard normal coordinates except
three planted ones (the code's layout): ``a_0`` a non-Gaussian latent of unit variance (a symmetric three-point
law with a chosen excess kurtosis; ``-2`` is Rademacher), ``a_1 ~ N(0, spike)`` (a covariance spike),
``a_2 ~ N(mean, 1)`` (a mean shift); with ``correlated=True`` the latent is ``a_0 = sign(a_1)`` (pair-wise and
higher-order statistics share a latent). Diffusion noising at time ``t`` (variance preserving)::

    x = e^{-t} a + delta z,      delta = sqrt(1 - e^{-2t}),     z ~ N(0, I).

**Tied two-layer denoiser** (predicts the noise ``z``; hidden rows ``w_i`` of unit norm)::

    z_hat(x) = s x + eps * sum_i w_i g(c w_i . x + b),      c = e^{-t} / delta,

with ``g = tanh``. The code uses ``eps = +1``, ``b = 0`` and learns ``s``; the default skip here is the
Gaussian optimum ``s = delta``. ``eps = -1`` is the same unit on the data-prediction side
(``a_hat = (x - delta z_hat) e^t``), the sign that lets a unit gain from a variance above 1, a mean shift or a
negative excess kurtosis (see the chapter).

**Population loss against the overlap** (*derived here*). For one unit ``w`` (``|w| = 1``) with overlaps
``m_k = w . e_k`` and ``u = w . x``, Stein's lemma on ``w . z`` gives::

    L(w) = E|z - s x|^2 + E[ g(cu+b)^2 - 2 eps delta c g'(cu+b) + 2 eps s u g(cu+b) ],
    E|z - s x|^2 = d (1 - s delta)^2 + s^2 e^{-2t} E|a|^2,

and ``u`` is Gaussian given the non-Gaussian latents, so ``L`` is a one-dimensional quadrature.
``L(m) - L(0)`` grows like ``m^k`` where ``k`` is the order of the first cumulant of ``w . a`` that differs
from the standard normal's: ``k = 1`` for a mean (``2`` when ``g`` is odd and ``b = 0``: the network is even in
``w``), ``2`` for a variance spike, ``4`` for a kurtosis-only latent, ``2`` again along a direction that mixes a
correlated latent with its partner. Online SGD on the sphere with step ``eta ~ batch * d^(-max(1, k/2))``
then needs ``~ d^(k-1)`` samples (``d log d`` for ``k = 2``) to leave the equator (Ben Arous, Gheissari &
Jagannath 2021, information exponent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, stats

from . import progress

__all__ = ["MixedCumulantModel", "three_point_law", "diffusion_noise", "TiedDenoiser", "overlaps",
           "population_loss", "loss_curve", "fit_exponent", "sgd_step_size", "online_sgd",
           "gaussian_clone", "grayscale", "sample_complexity", "NONGAUSS", "SPIKE", "MEAN"]

F64 = torch.float64
#: coordinates of the planted latents (the public code's layout)
NONGAUSS, SPIKE, MEAN = 0, 1, 2
# Gaussian expectations: the trapezoid rule on [-13, 13], step 0.01. For an integrand analytic in a strip
# |Im| < a its error is ~exp(-2 pi a / h) (tanh's poles give a >= 0.25 here: error < 1e-60), far better
# than Gauss-Hermite, whose convergence those poles slow down.
_NODES = np.linspace(-13.0, 13.0, 2601)
_WEIGHTS = np.exp(-0.5 * _NODES ** 2) * (_NODES[1] - _NODES[0]) / math.sqrt(2 * math.pi)


def _number(v, name: str, *, low: float | None = None, strict: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or (low is not None and (v <= low if strict else v < low)):
        raise ValueError(f"{name} must be finite{'' if low is None else (' and > ' if strict else ' and >= ') + str(low)}, got {v!r}")
    return v


def _int(v, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if int(v) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    return int(v)


def _time(t) -> tuple[float, float, float]:
    t = _number(t, "t", low=0.0, strict=True)
    e = math.exp(-t)
    delta = math.sqrt(-math.expm1(-2 * t))
    return t, e, delta


def three_point_law(kurtosis: float) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of the symmetric unit-variance law on ``{-y, 0, y}`` with excess kurtosis
    ``kurtosis >= -2``: ``P(+-y) = p``, ``p = 1 / (2 (kurtosis + 3))``, ``y = 1 / sqrt(2p)`` (the code's
    ``three_mixture``; ``-2`` is Rademacher)."""
    k = _number(kurtosis, "kurtosis", low=-2.0)
    p = 1.0 / (2.0 * (k + 3.0))
    y = 1.0 / math.sqrt(2.0 * p)
    if p >= 0.5 - 1e-15:
        return np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    return np.array([-y, 0.0, y]), np.array([p, 1.0 - 2.0 * p, p])


@dataclass(frozen=True)
class MixedCumulantModel:
    """The mixed cumulant model in ``d`` dimensions (see the module docstring).

    ``mean``: shift of ``a_2`` (0: none); ``spike``: variance of ``a_1`` (1: none); ``kurtosis``: excess
    kurtosis of the latent ``a_0`` (None: Gaussian); ``correlated``: ``a_0 = sign(a_1)`` (needs ``kurtosis``
    None or -2, the Rademacher marginal)."""
    d: int
    mean: float = 0.0
    spike: float = 1.0
    kurtosis: float | None = None
    correlated: bool = False

    def __post_init__(self):
        _int(self.d, "d", 3)
        _number(self.mean, "mean")
        _number(self.spike, "spike", low=0.0, strict=True)
        if self.kurtosis is not None:
            three_point_law(self.kurtosis)
        if not isinstance(self.correlated, bool):
            raise TypeError(f"correlated must be a bool, got {type(self.correlated).__name__}")
        if self.correlated and self.kurtosis not in (None, -2, -2.0):
            raise ValueError(f"kurtosis must be None or -2 with correlated=True (a_0 = sign(a_1)), got {self.kurtosis!r}")

    def latent_law(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Values and probabilities of ``a_0`` (None when Gaussian or correlated)."""
        return None if self.kurtosis is None or self.correlated else three_point_law(self.kurtosis)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=F64) -> torch.Tensor:
        """``n`` clean points ``a`` ``(n, d)``."""
        n = _int(n, "n", 1)
        a = torch.randn(n, self.d, generator=generator, dtype=dtype)
        return self._latents(a, torch.rand(n, generator=generator, dtype=F64))

    def _latents(self, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Turn standard normal rows ``a`` into the model's clean points (in place); ``u`` uniform, one per row."""
        a[:, SPIKE] *= math.sqrt(self.spike)
        a[:, MEAN] += self.mean
        if self.correlated:
            a[:, NONGAUSS] = torch.sign(a[:, SPIKE])
        elif self.kurtosis is not None:
            vals, probs = three_point_law(self.kurtosis)
            idx = torch.bucketize(u, torch.as_tensor(np.cumsum(probs)[:-1], dtype=F64))
            a[:, NONGAUSS] = torch.as_tensor(vals, dtype=a.dtype)[idx]
        return a

    def noisy(self, n: int, t: float, generator: torch.Generator | None = None, dtype=F64):
        """``(x, z)``: ``n`` noised points ``x = e^{-t} a + delta z`` and their noise ``z``."""
        _, e, delta = _time(t)
        n = _int(n, "n", 1)
        az = torch.randn(n, 2, self.d, generator=generator, dtype=dtype)
        a, z = self._latents(az[:, 0], torch.rand(n, generator=generator, dtype=F64)), az[:, 1]
        return e * a + delta * z, z

    def _noisy_numpy(self, n: int, e: float, delta: float, rng: np.random.Generator, dtype=np.float32):
        """As :meth:`noisy`, drawn with numpy's (faster) generator."""
        az = torch.from_numpy(rng.standard_normal((n, 2, self.d), dtype=dtype))
        a, z = self._latents(az[:, 0], torch.from_numpy(rng.random(n))), az[:, 1]
        return e * a + delta * z, z

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean and covariance of ``a`` (float64); with ``correlated``, ``Cov(a_0, a_1) = E|a_1|``."""
        mu = torch.zeros(self.d, dtype=F64)
        mu[MEAN] = self.mean
        cov = torch.eye(self.d, dtype=F64)
        cov[SPIKE, SPIKE] = self.spike
        if self.correlated:
            cov[NONGAUSS, SPIKE] = cov[SPIKE, NONGAUSS] = math.sqrt(2 * self.spike / math.pi)
        return mu, cov

    def directions(self) -> dict[str, torch.Tensor]:
        """The planted unit vectors (float64) by name: ``nongauss``, ``spike``, ``mean`` and, with
        ``correlated``, ``pair`` = ``(e_0 + e_1) / sqrt 2``."""
        e = torch.eye(self.d, dtype=F64)
        out = {"nongauss": e[NONGAUSS], "spike": e[SPIKE], "mean": e[MEAN]}
        if self.correlated:
            out["pair"] = (e[NONGAUSS] + e[SPIKE]) / math.sqrt(2)
        return out


def diffusion_noise(a: torch.Tensor, t: float, generator: torch.Generator | None = None):
    """``(x, z)`` with ``x = e^{-t} a + sqrt(1 - e^{-2t}) z``, ``z ~ N(0, I)`` (the code's ``make_x``)."""
    if not isinstance(a, torch.Tensor) or not a.is_floating_point():
        raise TypeError("a must be a floating-point torch.Tensor")
    _, e, delta = _time(t)
    z = torch.randn(a.shape, generator=generator, dtype=a.dtype)
    return e * a + delta * z, z


# ----------------------------------------------------------------------------------------------
# the tied two-layer denoiser
# ----------------------------------------------------------------------------------------------
class TiedDenoiser(torch.nn.Module):
    """``z_hat(x) = s x + eps * W^T tanh(c W x + b)`` with ``c = e^{-t}/delta`` (rows of ``W``: the hidden
    units). ``skip`` defaults to ``delta`` (the Gaussian optimum); ``init_std`` is the code's ``0.1/sqrt(d)``
    unless given; ``normalize`` rescales the rows to unit norm (the code's ``norm_transpose_weight``)."""

    def __init__(self, d: int, width: int = 1, t: float = 0.1, *, sign: int = -1, bias: float = 0.0,
                 skip: float | None = None, generator: torch.Generator | None = None, normalize: bool = True,
                 dtype=F64):
        super().__init__()
        d, width = _int(d, "d", 1), _int(width, "width", 1)
        self.t, self.e, self.delta = _time(t)
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign!r}")
        self.sign, self.bias = int(sign), _number(bias, "bias")
        self.c = self.e / self.delta
        self.skip = self.delta if skip is None else _number(skip, "skip")
        w = torch.randn(width, d, generator=generator, dtype=dtype) * (0.1 / math.sqrt(d))
        self.weight = torch.nn.Parameter(w)
        if normalize:
            self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight /= self.weight.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c * x @ self.weight.T + self.bias)
        return self.skip * x + self.sign * h @ self.weight

    def loss_and_grad(self, x: torch.Tensor, z: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Batch loss ``mean_b |z - z_hat(x)|^2`` and its gradient in ``W`` (closed form, no autograd)."""
        W = self.weight.detach()
        pre = self.c * x @ W.T + self.bias
        g = torch.tanh(pre)
        r = z - self.skip * x - self.sign * g @ W
        b = x.shape[0]
        grad = -(2.0 * self.sign / b) * (g.T @ r + self.c * ((1 - g * g) * (r @ W.T)).T @ x)
        return float(r.pow(2).sum(1).mean()), grad


def overlaps(weight: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``|w_i . v_k| / |w_i|`` for every row ``w_i`` of ``weight`` and unit vector ``v_k`` (rows of
    ``directions``): ``(width, k)``; the code logs the best unit's overlap ``max_i``."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be (width, d), got shape {tuple(weight.shape)}")
    directions = directions.reshape(-1, directions.shape[-1]).to(weight.dtype)
    if directions.shape[1] != weight.shape[1]:
        raise ValueError(f"directions must have d = {weight.shape[1]} columns, got {directions.shape[1]}")
    return (weight @ directions.T).abs() / weight.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# population loss by quadrature
# ----------------------------------------------------------------------------------------------
def _unit_terms(u: np.ndarray, c: float, delta: float, s: float, sign: int, bias: float) -> np.ndarray:
    g = np.tanh(c * u + bias)
    return g * g - sign * 2 * delta * c * (1 - g * g) + sign * 2 * s * u * g


def _gauss(mu, var, c, delta, s, sign, bias):
    """E h(mu + sqrt(var) G) for arrays of mu (trapezoid rule, see ``_NODES``)."""
    mu = np.asarray(mu, dtype=np.float64)[..., None]
    return _unit_terms(mu + math.sqrt(var) * _NODES, c, delta, s, sign, bias) @ _WEIGHTS


def population_loss(model: MixedCumulantModel, m, t: float, *, sign: int = -1, bias: float = 0.0,
                    skip: float | None = None) -> float:
    """Population loss ``E|z - z_hat(x)|^2`` of a one-unit :class:`TiedDenoiser` whose unit vector has
    overlaps ``m = (m_0, m_1, m_2)`` with the planted ``e_0, e_1, e_2`` and the rest of its norm in a direction
    orthogonal to them (see the module docstring; quadrature: the trapezoid rule in the Gaussian part, scipy ``quad``
    over ``a_1`` when the latents are correlated)."""
    if not isinstance(model, MixedCumulantModel):
        raise TypeError(f"model must be a MixedCumulantModel, got {type(model).__name__}")
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if m.size != 3 or not np.isfinite(m).all():
        raise ValueError(f"m must hold three finite overlaps (m_0, m_1, m_2), got {m!r}")
    rest = 1.0 - float(m @ m)
    if rest < -1e-12:
        raise ValueError(f"m must have norm <= 1, got {math.sqrt(float(m @ m)):.4g}")
    rest = max(rest, 0.0)
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    _, e, delta = _time(t)
    s = delta if skip is None else _number(skip, "skip")
    bias = _number(bias, "bias")
    c = e / delta
    d = model.d
    mu, cov = model.moments()
    base = d * (1 - s * delta) ** 2 + s * s * e * e * float(torch.trace(cov) + mu @ mu)
    m0, m1, m2 = m
    args = (c, delta, s, sign, bias)
    if model.correlated:
        var = e * e * (m2 * m2 + rest) + delta * delta
        sd1 = math.sqrt(model.spike)

        def f(a1):  # both signs of a_1 at once; a_1 = +-a1 has density phi(a1 / sd1) / sd1
            v = _gauss([e * (m0 + m1 * a1 + m2 * model.mean), e * (-m0 - m1 * a1 + m2 * model.mean)], var, *args)
            return float(v.sum()) * math.exp(-0.5 * (a1 / sd1) ** 2) / (sd1 * math.sqrt(2 * math.pi))

        unit = integrate.quad(f, 0.0, np.inf, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    else:
        var = e * e * (m1 * m1 * model.spike + m2 * m2 + rest) + delta * delta
        law = model.latent_law()
        vals, probs = (np.array([0.0]), np.array([1.0])) if law is None else law
        if law is None:
            var += e * e * m0 * m0
        unit = float(probs @ _gauss(e * (m0 * vals + m2 * model.mean), var, *args))
    return base + unit


def loss_curve(model: MixedCumulantModel, direction, ms, t: float, **kwargs) -> np.ndarray:
    """``L(m v) - L(0)`` for overlaps ``ms`` along the planted unit vector ``direction = (v_0, v_1, v_2)``."""
    v = np.asarray(direction, dtype=np.float64).reshape(-1)
    if v.size != 3 or abs(float(v @ v) - 1) > 1e-9:
        raise ValueError(f"direction must be a unit vector (v_0, v_1, v_2), got {direction!r}")
    ms = np.asarray(ms, dtype=np.float64).reshape(-1)
    if not ((ms >= 0) & (ms <= 1)).all():
        raise ValueError("ms must lie in [0, 1]")
    l0 = population_loss(model, np.zeros(3), t, **kwargs)
    return np.array([population_loss(model, mm * v, t, **kwargs) - l0 for mm in ms])


def fit_exponent(x, y) -> tuple[float, float, float]:
    """Least-squares line through ``(ln x, ln |y|)``: ``(slope, standard error, prefactor)`` (scipy ``linregress``)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.abs(np.asarray(y, dtype=np.float64).reshape(-1))
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"x and y must have the same length >= 3, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        raise ValueError("x and |y| must be finite and > 0 for a log-log fit")
    r = stats.linregress(np.log(x), np.log(y))
    return float(r.slope), float(r.stderr), float(math.exp(r.intercept))


# ----------------------------------------------------------------------------------------------
# online SGD
# ----------------------------------------------------------------------------------------------
def sgd_step_size(d: int, k: int, batch: int, eta0: float) -> float:
    """The step size that information-exponent theory needs on the sphere: ``eta0 * batch * d^(-max(1, k/2))``
    (then the samples to leave the equator scale as ``d^(k-1)``, ``d log d`` for ``k = 2``)."""
    d, k, batch = _int(d, "d", 1), _int(k, "k", 1), _int(batch, "batch", 1)
    return _number(eta0, "eta0", low=0.0, strict=True) * batch * d ** (-max(1.0, k / 2))


def online_sgd(model: MixedCumulantModel, target: str, *, t: float, lr: float, batch: int, max_samples: int,
               threshold: float = 0.5, width: int = 1, sign: int = -1, bias: float = 0.0, skip: float | None = None,
               init_overlap: float | None = None, seed: int = 0, log_points: int = 40) -> dict:
    """Online SGD of a :class:`TiedDenoiser` on fresh batches of the model (rows renormalized after each step),
    until the best unit's overlap with ``model.directions()[target]`` reaches ``threshold``. With
    ``init_overlap`` every unit starts at exactly that overlap (the rest of it random); otherwise the rows
    are random (the code's initialisation, typical overlap ``~ 1/sqrt(d)``).

    Returns ``samples`` (fresh samples used when the threshold was first reached; ``nan`` if not within
    ``max_samples``), ``samples_seen``, ``init_overlap`` and a log ``history`` of ``(samples, best overlap)``.
    """
    if not isinstance(model, MixedCumulantModel):
        raise TypeError(f"model must be a MixedCumulantModel, got {type(model).__name__}")
    dirs = model.directions()
    if target not in dirs:
        raise ValueError(f"target must be one of {sorted(dirs)}, got {target!r}")
    lr = _number(lr, "lr", low=0.0, strict=True)
    batch, max_samples = _int(batch, "batch", 1), _int(max_samples, "max_samples", 1)
    threshold = _number(threshold, "threshold", low=0.0, strict=True)
    gen = torch.Generator().manual_seed(_int(seed, "seed", 0))
    net = TiedDenoiser(model.d, width, t, sign=sign, bias=bias, skip=skip, generator=gen, dtype=torch.float32)
    v = dirs[target].float()
    W = net.weight.data
    if init_overlap is not None:
        m0 = _number(init_overlap, "init_overlap", low=0.0)
        if m0 >= threshold or m0 > 1:
            raise ValueError(f"init_overlap must be below threshold = {threshold} and <= 1, got {m0!r}")
        perp = W - (W @ v)[:, None] * v
        W.copy_(m0 * v + math.sqrt(1 - m0 * m0) * perp / perp.norm(dim=1, keepdim=True))
    best = float(overlaps(W, v).max())
    init, seen, hit = best, 0, math.nan
    marks = set(np.unique(np.geomspace(1, max(1, max_samples // batch), log_points).astype(int)).tolist())
    history = [(0, best)]
    step = 0
    rng = np.random.default_rng(seed)
    while seen < max_samples:
        x, z = model._noisy_numpy(batch, net.e, net.delta, rng)
        _, grad = net.loss_and_grad(x, z)
        W -= lr * grad
        W /= W.norm(dim=1, keepdim=True)
        seen += batch
        step += 1
        best = float((W @ v).abs().max())
        if step in marks:
            history.append((seen, best))
        if best >= threshold:
            hit = seen
            history.append((seen, best))
            break
    return {"samples": hit, "samples_seen": seen, "init_overlap": init, "history": np.array(history)}


def sample_complexity(model_for_d, target: str, ds, seeds, *, k: int, eta0: float, batch: int, t: float,
                      max_samples_for_d, threshold: float = 0.5, desc: str = "online SGD", **kwargs) -> np.ndarray:
    """Samples to reach ``threshold`` (:func:`online_sgd`) for every ``d`` in ``ds`` and seed in ``seeds``:
    ``(len(ds), len(seeds))`` (``nan``: not reached). ``model_for_d(d)`` builds the model, the step size is
    :func:`sgd_step_size` ``(d, k, batch, eta0)``, each run starts at overlap ``1/sqrt(d)`` (the typical random
    overlap) unless ``init_overlap`` is given, and ``max_samples_for_d(d)`` caps each run."""
    ds, seeds = [int(d) for d in ds], [int(s) for s in seeds]
    out = np.full((len(ds), len(seeds)), np.nan)
    bar = progress.bar(total=len(ds) * len(seeds), desc=desc)
    for i, d in enumerate(ds):
        lr = sgd_step_size(d, k, batch, eta0)
        for j, seed in enumerate(seeds):
            kw = dict(kwargs)
            kw.setdefault("init_overlap", 1 / math.sqrt(d))
            out[i, j] = online_sgd(model_for_d(d), target, t=t, lr=lr, batch=batch, threshold=threshold,
                                   max_samples=int(max_samples_for_d(d)), seed=seed, **kw)["samples"]
            bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------------------------
# Gaussian clones of a data set
# ----------------------------------------------------------------------------------------------
def gaussian_clone(data: torch.Tensor, n: int, kind: str = "mean_cov", generator: torch.Generator | None = None):
    """``n`` Gaussian samples shaped like ``data`` ``(N, ...)`` with the same mean and (``kind="mean_cov"``)
    the same covariance (``1/N``), or (``kind="mean"``) the isotropic covariance of the same average variance
    (the code's data clones)."""
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise TypeError("data must be a floating-point torch.Tensor")
    if kind not in ("mean", "mean_cov"):
        raise ValueError(f"kind must be 'mean' or 'mean_cov', got {kind!r}")
    n = _int(n, "n", 1)
    x = data.reshape(data.shape[0], -1).to(F64)
    if x.shape[0] < 2:
        raise ValueError(f"data must hold at least 2 points, got {x.shape[0]}")
    mu = x.mean(0)
    xc = x - mu
    g = torch.randn(n, x.shape[1], generator=generator, dtype=F64)
    if kind == "mean":
        out = mu + g * xc.pow(2).mean(0).mean().sqrt()
    else:
        cov = xc.T @ xc / x.shape[0]
        lam, q = torch.linalg.eigh(cov)
        out = mu + (g * lam.clamp_min(0).sqrt()) @ q.T
    return out.to(data.dtype).reshape(n, *data.shape[1:])


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """RGB images ``(n, 3, H, W)`` to one channel ``(n, 1, H, W)`` with the ITU-R 601 luma weights."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (n, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)
