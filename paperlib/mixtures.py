"""The Gaussian-mixture laboratory of "On the Edge of Memorization in Diffusion Models" (Buchanan, Pai,
Ma & De Bortoli, NeurIPS 2025; code github.com/DruvPai/diffusion_mem_gen).

Everything is written in the main paper's EDM convention, ``x = x0 + sigma n`` (the related paper's
variance-preserving process ``x_t = alpha_t x0 + sigma_t eps`` is the same after dividing by
``alpha_t``: ``sigma = sigma_t / alpha_t``, and its ``psi_t = alpha_t^2 / sigma_t^2`` is ``1 / sigma^2``).

* Data: ``K`` true means on the sphere of radius ``sqrt(d)``, isotropic component variance ``s^2``,
  uniform weights                                                   -- :func:`laboratory`.
* The exact denoiser of a uniform mixture of ``N(m_k, v I)``:
  ``D(x) = mbar + v / (v + sigma^2) (x - mbar)``, ``mbar = sum_k r_k(x) m_k``,
  ``r = softmax_k(-||x - m_k||^2 / (2 (v + sigma^2)))``; with ``v = 0`` it is the empirical
  denoiser (Eq. 2 of the main paper) of the points ``m_k``             -- :func:`mixture_denoiser`.
* Three reference models: *generalizing* (the true mixture), *fully memorizing* (the empirical
  denoiser of all ``N`` training points) and *M-point memorizing* (that of ``M`` of them); their
  training losses per noise level, by Monte Carlo with common random numbers  -- :func:`lab_losses`.
* Theorem 1 (gap generalizing - memorizing, ``d s^2 / (psi s^2 + 1)``), Theorem 2 (gap
  M-point - memorizing, ``C (1 - M/N) d s^2``, ``C`` in [1, 2]) and the crossover formula
  ``M* = N (1 - E[lam / (psi s^2 + 1)] / (C E[lam]))``           -- :func:`theorem1_gap`,
  :func:`theorem2_gap`, :func:`crossover_formula`; the Monte Carlo crossover -- :func:`crossover_mc`.
* Training an ``M``-component mixture denoiser (means and one shared variance, memorizing
  initialisation) on a noise grid with a loss weighting             -- :func:`train_mixture`;
  sampling it with the deterministic DDIM sampler                   -- :func:`sample`.

The loss weighting ``lam(sigma)`` multiplies the clean-image (``x0``) loss ``||D - x0||^2``:
``"x0"`` is 1, noise prediction (``"eps"``, the related paper's choice) is ``1 / sigma^2`` and
EDM's is ``(sigma^2 + sd^2) / (sigma sd)^2`` (:func:`loss_weights`). Sources: model, data, initialisation, noise grid and the two theorems'
forms from the public code and slides; the rest is the companion's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import checks, memorization, progress

__all__ = [
    "Laboratory", "laboratory", "sample_mixture", "mixture_denoiser", "MixtureDenoiser", "vp_sigmas",
    "loss_weights", "weighted_mean", "LabLosses", "lab_losses", "theorem1_gap", "theorem2_gap",
    "crossover_formula", "crossover_mc", "effective_constant", "train_mixture", "sample",
    "level_crossing", "one_step_memorization",
]

WEIGHTINGS = ("x0", "eps", "edm")


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------
def _int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _nonneg(v, name: str) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name} must be a single number, got shape {tuple(v.shape)}")
        v = float(v.detach())
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def _sigma_arg(sigma, b: int, like: torch.Tensor) -> torch.Tensor:
    """``sigma`` (a number, or a tensor of ``1`` or ``b`` entries, all ``> 0``) as a ``(b, 1)`` tensor."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1)
    if s.numel() not in (1, b):
        raise ValueError(f"sigma must be a number or have one entry per row of x ({b}), got {s.numel()}")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"sigma must be finite and > 0, got {s.min().item() if s.numel() else s}")
    return s.expand(b).reshape(b, 1)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
@dataclass
class Laboratory:
    """A Gaussian-mixture data set: ``K`` true ``means`` (``(K, d)``), component ``variance`` ``s^2``,
    uniform weights, and ``N`` training points ``train`` with their component ``labels``."""

    means: torch.Tensor
    variance: float
    train: torch.Tensor
    labels: torch.Tensor
    seed: int = 0

    @property
    def d(self) -> int:
        return self.means.shape[1]

    @property
    def K(self) -> int:
        return self.means.shape[0]

    @property
    def N(self) -> int:
        return self.train.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fresh points of the true mixture (test data)."""
        return sample_mixture(self.means, self.variance, n, generator)[0]

    def generalizing(self) -> "MixtureDenoiser":
        """The true mixture's exact denoiser (the related paper's generalizing model)."""
        return MixtureDenoiser(self.means, self.variance)

    def memorizing(self, M: int | None = None, generator: torch.Generator | None = None) -> "MixtureDenoiser":
        """The empirical denoiser of all training points, or of ``M`` of them drawn without replacement."""
        if M is None:
            return MixtureDenoiser(self.train, 0.0)
        M = _int(M, "M")
        if M > self.N:
            raise ValueError(f"M must be <= N = {self.N}, got {M}")
        idx = torch.randperm(self.N, generator=generator)[:M]
        return MixtureDenoiser(self.train[idx], 0.0)


def sample_mixture(means: torch.Tensor, variance, n: int, generator: torch.Generator | None = None):
    """``n`` points of the uniform mixture of ``N(means[k], variance I)``: ``(points (n, d), labels (n,))``."""
    means = checks.points(means, "means")
    v = _nonneg(variance, "variance")
    n = _int(n, "n")
    labels = torch.randint(means.shape[0], (n,), generator=generator)
    noise = torch.randn(n, means.shape[1], generator=generator, dtype=means.dtype)
    return means[labels] + math.sqrt(v) * noise, labels


def laboratory(d: int, K: int, N: int, *, variance: float = 1.0, radius: float | None = None,
               seed: int = 0, dtype=torch.float64) -> Laboratory:
    """The related paper's data: ``K`` means ``g / ||g|| * radius`` (``g`` standard Gaussian, default
    ``radius = sqrt(d)``), component variance ``variance``, and ``N`` training points."""
    d, K, N = _int(d, "d"), _int(K, "K"), _int(N, "N", 2)
    v = _nonneg(variance, "variance")
    r = math.sqrt(d) if radius is None else _nonneg(radius, "radius")
    gen = torch.Generator().manual_seed(int(seed))
    g = torch.randn(K, d, generator=gen, dtype=dtype)
    means = g / g.norm(dim=1, keepdim=True) * r
    train, labels = sample_mixture(means, v, N, gen)
    return Laboratory(means=means, variance=v, train=train, labels=labels, seed=int(seed))


# ----------------------------------------------------------------------------------------------
# the mixture denoiser
# ----------------------------------------------------------------------------------------------
def mixture_denoiser(x: torch.Tensor, means: torch.Tensor, variance, sigma) -> torch.Tensor:
    """Exact posterior mean ``E[x0 | x0 + sigma n = x]`` for ``x0`` from the uniform mixture of
    ``N(means[k], variance I)``: ``mbar + variance / (variance + sigma^2) (x - mbar)`` with
    ``mbar = sum_k r_k m_k`` and ``r = softmax_k(-||x - m_k||^2 / (2 (variance + sigma^2)))``.

    ``x``: ``(b, d)``; ``means``: ``(M, d)``; ``variance``: a number or 0-d tensor ``>= 0`` (may
    require grad); ``sigma``: a number or ``(b,)`` tensor ``> 0``. Differentiable in ``means`` and
    ``variance``. With ``variance = 0`` it is the empirical denoiser of the points ``means``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a (b, d) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(means, torch.Tensor) or means.dim() != 2 or means.shape[0] < 1:
        raise ValueError(f"means must be a non-empty (M, d) tensor, got {getattr(means, 'shape', type(means).__name__)}")
    if means.shape[1] != x.shape[1]:
        raise ValueError(f"x has dimension {x.shape[1]} but means has {means.shape[1]}")
    for name, t in (("x", x), ("means", means)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite entries")
    if isinstance(variance, torch.Tensor):
        if variance.numel() != 1 or not torch.isfinite(variance).all() or (variance < 0).any():
            raise ValueError(f"variance must be one finite number >= 0, got {variance}")
        v = variance.reshape(()).to(x.dtype)
    else:
        v = torch.tensor(_nonneg(variance, "variance"), dtype=x.dtype, device=x.device)
    return _posterior_mean(x, means, v, _sigma_arg(sigma, x.shape[0], x) ** 2)


def _posterior_mean(x: torch.Tensor, means: torch.Tensor, v: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """:func:`mixture_denoiser` without the checks (``s2``: ``(b, 1)`` squared noise levels)."""
    tot = v + s2                                                      # (b, 1)
    logits = (x @ means.T - 0.5 * (means * means).sum(1)) / tot        # ||x||^2 is constant in a row
    mbar = torch.softmax(logits, dim=1) @ means
    return mbar + (v / tot) * (x - mbar)


@dataclass
class MixtureDenoiser:
    """A uniform mixture of ``N(means[k], variance I)`` as a denoiser ``D(x, sigma)`` (:func:`mixture_denoiser`)."""

    means: torch.Tensor
    variance: float

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return mixture_denoiser(x, self.means, self.variance, sigma)

    @property
    def M(self) -> int:
        return self.means.shape[0]


# ----------------------------------------------------------------------------------------------
# noise grid and loss weightings
# ----------------------------------------------------------------------------------------------
def vp_sigmas(n: int = 26, t_min: float = 0.001, t_max: float = 0.999) -> torch.Tensor:
    """The related paper's noise grid: ``n`` times uniform in ``[t_min, t_max]`` of the VP process
    ``alpha_t = sqrt(1 - t^2), sigma_t = t``, as EDM noise levels ``t / sqrt(1 - t^2)`` (increasing, float64)."""
    n = _int(n, "n", 2)
    if not (0 < t_min < t_max < 1):
        raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min!r}, t_max={t_max!r}")
    t = torch.linspace(t_min, t_max, n, dtype=torch.float64)
    return t / torch.sqrt(1 - t * t)


def loss_weights(sigmas, kind: str = "x0", sigma_data: float = 0.5) -> torch.Tensor:
    """Weights ``lam(sigma)`` of the clean-image loss that make it the loss of another parametrisation:
    ``"x0"``: 1; ``"eps"`` (noise prediction, ``||eps_hat - eps||^2 = ||D - x0||^2 / sigma^2``):
    ``1 / sigma^2``; ``"edm"``: EDM's ``(sigma^2 + sd^2) / (sigma sd)^2``. Float64, same length as ``sigmas``."""
    s = checks.sigmas(sigmas, "sigmas")
    if kind == "x0":
        return torch.ones_like(s)
    if kind == "eps":
        return 1 / s**2
    if kind == "edm":
        sd = _nonneg(sigma_data, "sigma_data")
        if sd == 0:
            raise ValueError("sigma_data must be > 0")
        return (s**2 + sd**2) / (s * sd) ** 2
    raise ValueError(f"kind must be one of {WEIGHTINGS}, got {kind!r}")


def _weights(weights, n: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.numel() != n:
        raise ValueError(f"weights has {w.numel()} entries for {n} noise levels")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    return w


def weighted_mean(per_sigma, weights) -> torch.Tensor:
    """``sum_j lam_j l_j / sum_j lam_j`` over the last axis (the noise grid; uniform sampling of the grid)."""
    ls = torch.as_tensor(per_sigma, dtype=torch.float64)
    w = _weights(weights, ls.shape[-1])
    return (ls * w).sum(-1) / w.sum()


# ----------------------------------------------------------------------------------------------
# exact (Monte Carlo) losses of the three reference models
# ----------------------------------------------------------------------------------------------
@dataclass
class LabLosses:
    """Training losses per noise level, ``l(sigma) = mean_i E_n ||D(y_i + sigma n; sigma) - y_i||^2``.

    ``gen``, ``mem``: ``(S,)``; ``pmem``: ``(len(Ms), n_subsets, S)`` for the M-point memorizing
    models (nested random subsets: subset ``j`` of size ``M`` is the first ``M`` points of the ``j``-th
    random permutation). ``*_se``: Monte Carlo standard errors of ``gen - mem`` and ``pmem - mem``
    (paired: all models see the same noise).
    """

    sigmas: torch.Tensor
    Ms: list
    N: int
    d: int
    variance: float
    gen: torch.Tensor
    mem: torch.Tensor
    pmem: torch.Tensor
    gap_gen_se: torch.Tensor
    gap_pmem_se: torch.Tensor
    settings: dict = field(default_factory=dict)

    @property
    def gap_gen(self) -> torch.Tensor:
        """Per-sigma ``L(gen) - L(mem)`` (the memorization pressure)."""
        return self.gen - self.mem

    @property
    def gap_pmem(self) -> torch.Tensor:
        """Per-sigma ``L(M-point) - L(mem)``, averaged over subsets: ``(len(Ms), S)``."""
        return self.pmem.mean(1) - self.mem


def lab_losses(lab: Laboratory, sigmas, Ms=(), *, n_noise: int = 8, n_subsets: int = 4, seed: int = 0,
               device=None, show_progress: bool = True) -> LabLosses:
    """Monte Carlo training losses of the generalizing, fully memorizing and M-point memorizing models
    (:class:`LabLosses`), with one noise draw per (point, repetition) shared by all models and all
    ``sigmas`` (common random numbers: the gaps are estimated far more precisely than the losses).
    The random numbers are drawn on the CPU; ``device`` (default: the data's) only sets where the
    denoisers run. Results are CPU float64 tensors."""
    sig = checks.sigmas(sigmas, "sigmas")
    n_noise, n_subsets = _int(n_noise, "n_noise"), _int(n_subsets, "n_subsets")
    Ms = [_int(M, "Ms") for M in Ms]
    if any(M > lab.N for M in Ms):
        raise ValueError(f"every M in Ms must be <= N = {lab.N}, got {max(Ms)}")
    gen = torch.Generator().manual_seed(int(seed))
    dev = lab.train.device if device is None else torch.device(device)
    y, mu = lab.train.to(dev), lab.means.to(dev)
    perms = [torch.randperm(lab.N, generator=gen) for _ in range(n_subsets)]
    z = torch.randn(n_noise, lab.N, lab.d, generator=gen, dtype=y.dtype).reshape(-1, lab.d).to(dev)
    y_rep = y.repeat(n_noise, 1)
    S = len(sig)
    out_gen, out_mem = torch.empty(S, dtype=torch.float64), torch.empty(S, dtype=torch.float64)
    out_p = torch.empty(len(Ms), n_subsets, S, dtype=torch.float64)
    se_g, se_p = torch.empty(S, dtype=torch.float64), torch.empty(len(Ms), S, dtype=torch.float64)
    cnt = y_rep.shape[0]
    for j in progress.bar(range(S), desc="lab losses", disable=not show_progress):
        s = float(sig[j])
        x = y_rep + s * z
        e_gen = (mixture_denoiser(x, mu, lab.variance, s) - y_rep).pow(2).sum(1)
        e_mem = (mixture_denoiser(x, y, 0.0, s) - y_rep).pow(2).sum(1)
        out_gen[j], out_mem[j] = e_gen.mean(), e_mem.mean()
        se_g[j] = (e_gen - e_mem).std() / math.sqrt(cnt)
        for a, M in enumerate(Ms):
            diffs = []
            for b, p in enumerate(perms):
                e_p = (mixture_denoiser(x, y[p[:M].to(dev)], 0.0, s) - y_rep).pow(2).sum(1)
                out_p[a, b, j] = e_p.mean()
                diffs.append(e_p - e_mem)
            dd = torch.stack(diffs).mean(0)
            se_p[a, j] = dd.std() / math.sqrt(cnt)
    return LabLosses(sigmas=sig, Ms=Ms, N=lab.N, d=lab.d, variance=lab.variance, gen=out_gen, mem=out_mem,
                     pmem=out_p, gap_gen_se=se_g, gap_pmem_se=se_p,
                     settings={"n_noise": n_noise, "n_subsets": n_subsets, "seed": int(seed)})


# ----------------------------------------------------------------------------------------------
# the two theorems and the crossover
# ----------------------------------------------------------------------------------------------
def theorem1_gap(sigmas, d: int, variance: float = 1.0) -> torch.Tensor:
    """Theorem 1's form of ``E[L(gen) - L(mem)]`` at each noise level: ``d s^2 / (psi s^2 + 1)`` with
    ``psi = 1 / sigma^2``, i.e. ``d s^2 sigma^2 / (s^2 + sigma^2)`` (the MMSE of one Gaussian component;
    the theorem states it up to constants, Theta(.))."""
    s = checks.sigmas(sigmas, "sigmas")
    v = _nonneg(variance, "variance")
    return _int(d, "d") * v * s**2 / (v + s**2)


def theorem2_gap(M, N: int, d: int, variance: float = 1.0, C: float = 1.0) -> torch.Tensor:
    """Theorem 2's form of ``E[L(M-point) - L(mem)]``: ``C (1 - M/N) d s^2`` (the same at every noise
    level; the slides give ``C`` in [1, 2])."""
    N = _int(N, "N")
    m = torch.as_tensor(M, dtype=torch.float64)
    if (m < 0).any() or (m > N).any():
        raise ValueError(f"M must lie in [0, N = {N}]")
    return _nonneg(C, "C") * (1 - m / N) * _int(d, "d") * _nonneg(variance, "variance")


def crossover_formula(sigmas, weights, N: int, variance: float = 1.0, C: float = 1.0) -> float:
    """The crossover formula ``M* = N (1 - E[lam / (psi s^2 + 1)] / (C E[lam]))`` over the noise grid
    (uniform over ``sigmas``), where the weighted Theorem 1 and Theorem 2 gaps are equal."""
    s = checks.sigmas(sigmas, "sigmas")
    w = _weights(weights, len(s))
    v = _nonneg(variance, "variance")
    C = _nonneg(C, "C")
    if C == 0:
        raise ValueError("C must be > 0")
    ratio = float((w * s**2 / (v + s**2)).sum() / (C * w.sum()))
    return _int(N, "N") * (1 - ratio)


def level_crossing(xs, ys, level: float) -> float:
    """The first ``x`` at which the curve ``ys(xs)`` (``xs`` increasing) reaches ``level`` from below,
    by linear interpolation between the two grid points around it; ``nan`` if it never does (and the
    first ``x`` if it starts at or above ``level``)."""
    x = np.asarray(xs, dtype=float).reshape(-1)
    y = np.asarray(ys, dtype=float).reshape(-1)
    if x.shape != y.shape or x.size < 1:
        raise ValueError(f"xs and ys must have the same non-zero length, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("xs and ys must be finite")
    if (np.diff(x) <= 0).any():
        raise ValueError("xs must be strictly increasing")
    if y[0] >= level:
        return float(x[0])
    up = np.nonzero((y[:-1] < level) & (y[1:] >= level))[0]
    if up.size == 0:
        return float("nan")
    i = int(up[0])
    return float(x[i] + (level - y[i]) / (y[i + 1] - y[i]) * (x[i + 1] - x[i]))


def crossover_mc(losses: LabLosses, weights, *, per_subset: bool = False):
    """The Monte Carlo crossover: the model size ``M*`` at which the weighted loss of the M-point
    memorizing model falls to that of the generalizing model (linear interpolation between the
    ``Ms`` of ``losses``; ``nan`` if it never does). ``per_subset=True``: one ``M*`` per subset."""
    if not losses.Ms:
        raise ValueError("losses has no M-point memorizing models (Ms is empty)")
    Ms = np.asarray(losses.Ms, dtype=float)
    o = np.argsort(Ms)
    L_gen = float(weighted_mean(losses.gen, weights))
    L_p = weighted_mean(losses.pmem, weights).numpy()            # (len(Ms), n_subsets)
    curves = L_p.T if per_subset else [L_p.mean(1)]
    # L(M) decreases with M: find where L_gen - L(M) reaches 0 from below
    res = [level_crossing(Ms[o], (L_gen - np.asarray(c))[o], 0.0) for c in curves]
    return res if per_subset else res[0]


def effective_constant(losses: LabLosses, weights) -> torch.Tensor:
    """Theorem 2's constant measured: ``E[lam (L(M-point) - L(mem))] / (E[lam] (1 - M/N) d s^2)`` for
    each ``M < N`` of ``losses`` (``nan`` at ``M = N``)."""
    gap = weighted_mean(losses.gap_pmem, weights)
    frac = 1 - torch.as_tensor(losses.Ms, dtype=torch.float64) / losses.N
    scale = frac * losses.d * losses.variance
    return torch.where(frac > 0, gap / scale.clamp_min(1e-300), torch.full_like(gap, float("nan")))


# ----------------------------------------------------------------------------------------------
# training an M-component mixture denoiser, and sampling it
# ----------------------------------------------------------------------------------------------
def train_mixture(train: torch.Tensor, M: int, sigmas, weights, *, steps: int = 2000, lr: float = 1e-2,
                  n_noise: int = 8, init: str = "memorizing", init_variance: float = 1e-6,
                  warmup: float = 0.1, final_lr: float = 1e-3, seed: int = 0, dtype=torch.float32,
                  show_progress: bool = True) -> tuple[MixtureDenoiser, dict]:
    """Train ``M`` means and one shared variance ``v = std^2`` of a uniform mixture denoiser by Adam on
    the weighted clean-image loss ``E_j E_i E_n lam_j ||D(y_i + sigma_j n; sigma_j) - y_i||^2``: each
    step uses every training point once, each with a noise level drawn uniformly from ``sigmas`` and
    ``n_noise`` noises (the related paper's full-batch scheme; ``weights`` are rescaled to mean 1).
    Learning rate: linear warm-up over a ``warmup`` fraction of the steps, then cosine decay to
    ``final_lr * lr``. Computes in ``dtype`` (float32: 3-4x faster than float64 on a CPU) on
    ``train``'s device; returns the model in ``train``'s dtype.

    ``init="memorizing"`` (the related paper's PMEM): the means start on ``M <= N`` distinct training
    points drawn at random, ``std = sqrt(init_variance)``. ``init="generalizing"`` (a control): the
    means start on ``M`` points drawn from ``N(mean, cov)`` of the training set, same ``std``.
    Returns the trained model and a history ``{"step", "loss", "variance"}`` (every 1 % of the steps).
    """
    train = checks.points(train, "train", min_rows=2)
    N, d = train.shape
    dev, out_dtype = train.device, train.dtype
    M = _int(M, "M")
    steps, n_noise = _int(steps, "steps"), _int(n_noise, "n_noise")
    for name, v in (("lr", lr), ("final_lr", final_lr)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), got {warmup!r}")
    y0 = train.to(dtype)
    sig = checks.sigmas(sigmas, "sigmas").to(device=dev, dtype=dtype)
    w = _weights(weights, len(sig))
    w = (w / w.mean()).to(device=dev, dtype=dtype)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    if init == "memorizing":
        if M > N:
            raise ValueError(f"the memorizing initialisation needs M <= N = {N}, got M = {M}")
        means0 = y0[torch.randperm(N, generator=gen, device=dev)[:M]].clone()
    elif init == "generalizing":
        cov = torch.cov(y0.T.double()) + 1e-6 * torch.eye(d, dtype=torch.float64, device=dev)
        chol = torch.linalg.cholesky(cov).to(dtype)
        means0 = y0.mean(0) + torch.randn(M, d, generator=gen, dtype=dtype, device=dev) @ chol.T
    else:
        raise ValueError(f"init must be 'memorizing' or 'generalizing', got {init!r}")
    means = means0.requires_grad_(True)
    std = torch.tensor(math.sqrt(_nonneg(init_variance, "init_variance")), dtype=dtype, device=dev,
                       requires_grad=True)
    opt = torch.optim.Adam([means, std], lr=lr, foreach=False)   # two tensors: the plain loop is faster
    n_warm = int(warmup * steps)

    def lr_factor(k):
        if k < n_warm:
            return (k + 1) / n_warm
        u = (k - n_warm) / max(1, steps - n_warm)
        return final_lr + (1 - final_lr) * 0.5 * (1 + math.cos(math.pi * u))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    y = y0.repeat(n_noise, 1)
    hist = {"step": [], "loss": [], "variance": []}
    every = max(1, steps // 100)
    for k in progress.bar(range(steps), desc=f"train M={M}", disable=not show_progress):
        j = torch.randint(len(sig), (N,), generator=gen, device=dev).repeat(n_noise)
        s = sig[j, None]
        x = y + s * torch.randn(y.shape, generator=gen, dtype=dtype, device=dev)
        err = (_posterior_mean(x, means, std * std, s * s) - y).pow(2).sum(1)   # inputs checked above
        loss = (w[j] * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if k % every == 0 or k == steps - 1:
            hist["step"].append(k)
            hist["loss"].append(float(loss.detach()))
            hist["variance"].append(float(std.detach() ** 2))
    model = MixtureDenoiser(means.detach().to(out_dtype).clone(), float(std.detach().double() ** 2))
    return model, hist


def sample(denoiser, sigmas, n: int, d: int, *, generator: torch.Generator | None = None,
           dtype=torch.float64) -> torch.Tensor:
    """``n`` samples by the deterministic DDIM sampler on the noise grid ``sigmas`` (used from the
    largest to the smallest), written in EDM form: it is Euler's method for ``dx/dsigma = (x - D(x; sigma)) / sigma``
    (exactly DDIM after dividing the VP state by ``alpha_t``). The start ``x ~ N(0, (1 + sigma_max^2) I)``
    is the VP process's ``N(0, I)``. Returns the state at the smallest noise level."""
    sig = checks.sigmas(sigmas, "sigmas").sort(descending=True).values
    n, d = _int(n, "n"), _int(d, "d")
    x = torch.randn(n, d, generator=generator, dtype=dtype) * math.sqrt(1 + float(sig[0]) ** 2)
    for a, b in zip(sig[:-1].tolist(), sig[1:].tolist()):
        x = x + (b - a) * (x - denoiser(x, a)) / a
    return x


def one_step_memorization(denoiser, x0: torch.Tensor, train: torch.Tensor, sigmas, *, n_noise: int = 1,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-noise-level memorization (the main paper's Sec. 3, Fig. 2): the fraction of one-step outputs
    ``D(x0 + sigma n; sigma)`` that the 1/3 rule calls memorized, for each ``sigma`` (float64 ``(S,)``)."""
    sig = checks.sigmas(sigmas, "sigmas")
    x0 = checks.points(x0, "x0")
    z = torch.randn(_int(n_noise, "n_noise"), *x0.shape, generator=generator, dtype=x0.dtype).reshape(-1, x0.shape[1])
    xr = x0.repeat(n_noise, 1)
    out = torch.empty(len(sig), dtype=torch.float64)
    for j, s in enumerate(sig.tolist()):
        out[j] = memorization.is_memorized(denoiser(xr + s * z, s), train).to(torch.float64).mean()
    return out
