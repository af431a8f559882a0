"""Where a sampler commits to a training image (Sec. 3, Sec. 5): commitment along trajectories,
sub-window denoiser swaps, per-level memorization and bootstrap intervals for rates.

Sec. 5 rests on the claim that trajectory-level memorization is *formed* in the danger zone. Three
measurements test where it is formed, on any denoiser (a trained :class:`paperlib.edm.Precond`, the
empirical optimum, ...):

- :func:`commitment`: run the deterministic sampler (Euler or Heun, :mod:`paperlib.sampling`) and, at
  every step ``i``, find the nearest training image of the denoiser's output ``D(x_i; sigma_i)``. A
  trajectory *commits* at the first step from which that nearest image never changes again (it then
  equals the nearest image of the final sample); its commitment noise level is ``sigma`` of that step.
  :class:`Commitment` gives the fraction of (memorized) trajectories committed by each noise level.
- :func:`window_swaps`: sample with a non-memorizing *partner* everywhere and the memorizing model only
  on a sub-window of steps (``"model in window"``), and the reverse (``"partner in window"``); the
  memorization rate of each says how much of it that window alone carries (Table 1's swap, App. E.6,
  on finer windows).
- per-noise-level memorization (Fig. 2's memorization panel) is :func:`paperlib.memorization.per_level_rates`.

:func:`bootstrap_rate` gives a percentile bootstrap interval for a rate (the fraction of ``True``
flags), pooled over several sample sets (seeds) if given a list.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from . import edm, memorization, sampling

__all__ = ["Commitment", "commitment", "window_swaps", "step_windows", "bootstrap_rate", "Rate"]


# ----------------------------------------------------------------------------------------------
# rates with bootstrap intervals
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """A rate (fraction of ``True``) with its percentile-bootstrap interval ``[lo, hi]`` and count ``n``."""

    rate: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.rate:.1%} [{self.lo:.1%}, {self.hi:.1%}]"


def _flags(flags) -> np.ndarray:
    if isinstance(flags, (list, tuple)):
        if not flags:
            raise ValueError("flags must not be empty")
        return np.concatenate([_flags(f) for f in flags])
    arr = flags.detach().cpu().numpy() if isinstance(flags, torch.Tensor) else np.asarray(flags)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype != bool:
        raise ValueError(f"flags must be a non-empty 1-D bool tensor/array (or a list of them), got "
                         f"dtype {arr.dtype}, shape {arr.shape}")
    return arr


def bootstrap_rate(flags, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Rate:
    """The fraction of ``True`` in ``flags`` with a percentile bootstrap interval at ``level``
    (``scipy.stats.bootstrap``; a list of flag arrays, e.g. one per seed, is pooled). An all-equal
    sample has a zero-width interval (the bootstrap cannot see beyond it)."""
    x = _flags(flags)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    r = float(x.mean())
    if x.all() or not x.any():
        return Rate(r, r, r, int(x.size))
    ci = stats.bootstrap((x.astype(float),), np.mean, confidence_level=level, n_resamples=n_boot,
                         method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
    return Rate(r, float(ci.low), float(ci.high), int(x.size))


# ----------------------------------------------------------------------------------------------
# commitment along trajectories
# ----------------------------------------------------------------------------------------------
@dataclass
class Commitment:
    """Result of :func:`commitment` for ``n`` trajectories of a ``K``-step sampler.

    ``sigmas``: ``(K,)`` the noise level at the start of each step (where ``D`` is evaluated first);
    ``nn``: ``(K, n)`` nearest training image of ``D(x_i; sigma_i)``; ``final_nn``, ``memorized``:
    nearest training image and 1/3-rule flag of the final samples; ``commit_step``: the first step
    ``i`` with ``nn[j] == final_nn`` for all ``j >= i`` (``K`` if even the last step disagrees);
    ``samples``: the final samples.
    """

    sigmas: torch.Tensor
    nn: torch.Tensor
    final_nn: torch.Tensor
    memorized: torch.Tensor
    commit_step: torch.Tensor
    samples: torch.Tensor

    @property
    def commit_sigma(self) -> torch.Tensor:
        """``(n,)`` the noise level at which each trajectory commits (0 if it never does before the end)."""
        s = torch.cat([self.sigmas, self.sigmas.new_zeros(1)])
        return s[self.commit_step]

    def committed_fraction(self, among: str = "memorized") -> torch.Tensor:
        """``(K,)``: fraction of trajectories committed by step ``i`` (``commit_step <= i``), among the
        ``"memorized"`` ones (default), the ``"not memorized"`` ones (a control: when does a trajectory that
        ends *between* training images settle on its nearest one?) or ``"all"``; NaN where there are none."""
        choices = {"memorized": self.memorized, "not memorized": ~self.memorized, "all": torch.ones_like(self.memorized)}
        if among not in choices:
            raise ValueError(f"among must be one of {tuple(choices)}, got {among!r}")
        rows = choices[among]
        if not rows.any():
            return torch.full((len(self.sigmas),), float("nan"), dtype=torch.float64)
        steps = torch.arange(len(self.sigmas))[:, None]
        return (self.commit_step[rows][None, :] <= steps).double().mean(1)

    def median_commit_sigma(self, memorized: bool = True) -> float:
        """Median commitment noise level of the memorized trajectories (``memorized=False``: of the others;
        NaN if none)."""
        cs = self.commit_sigma[self.memorized if memorized else ~self.memorized]
        return float(cs.double().median()) if cs.numel() else float("nan")


class _Recorder:
    """Wraps the denoiser of each step and keeps the nearest training index of its first output
    (Euler calls it once per step; Heun twice but on the last step, the first call at ``sigmas[i]``)."""

    def __init__(self, pick, train_flat):
        self.pick, self.train, self.nn = pick, train_flat, []

    def for_step(self, i):
        model, first = self.pick(i), [True]

        def denoise(x, sigma):
            out = model(x, sigma)
            if first[0]:
                first[0] = False
                self.nn.append(memorization.nearest_neighbors(out.float().flatten(1), self.train, 1)[1][:, 0])
            return out
        return denoise


@torch.no_grad()
def commitment(denoiser, train: torch.Tensor, latents: torch.Tensor, *, steps: int = 18, method: str = "euler",
               denoiser_for_step=None, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               batch_size: int = 256) -> Commitment:
    """Sample from ``sigma_max * latents`` (``(n, *shape)``) with the deterministic EDM sampler and follow
    the nearest training image of ``D(x_i; sigma_i)`` along each trajectory (module docstring).

    ``denoiser_for_step(i)`` (e.g. :func:`paperlib.sampling.swap`) picks the denoiser per step, as in
    :func:`paperlib.sampling.solve`. The final samples are clamped to ``[-1, 1]`` before the 1/3 rule.
    """
    if not isinstance(train, torch.Tensor) or train.ndim < 2 or train.shape[0] < 2:
        raise ValueError("train must be a tensor of at least 2 training images (n, ...)")
    if not isinstance(latents, torch.Tensor) or latents.ndim < 2 or tuple(latents.shape[1:]) != tuple(train.shape[1:]):
        raise ValueError(f"latents must have shape (n, *{tuple(train.shape[1:])}), got "
                         f"{tuple(getattr(latents, 'shape', ()))}")
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    sig = edm.karras_sigmas(steps, sigma_min, sigma_max, rho)
    flat = train.float().flatten(1)
    pick = denoiser_for_step or (lambda i: denoiser)
    nns, finals = [], []
    for start in range(0, latents.shape[0], batch_size):
        rec = _Recorder(pick, flat)
        x = latents[start:start + batch_size].double() * float(sig[0])
        finals.append(sampling.solve(denoiser, x, sig, method=method, denoiser_for_step=rec.for_step).float())
        nns.append(torch.stack(rec.nn))
    samples = torch.cat(finals).clamp(-1, 1)
    nn = torch.cat(nns, 1)
    dist, idx = memorization.nearest_neighbors(samples.flatten(1), flat, 2)
    final_nn = idx[:, 0]
    agree = nn == final_nn[None, :]
    # first step from which all later steps agree: scan from the end
    tail = torch.flip(torch.cumprod(torch.flip(agree, [0]).long(), 0), [0]).bool()  # tail[i]: agree for all j >= i
    commit = (~tail).long().sum(0)  # number of leading steps not in the agreeing tail
    return Commitment(sigmas=sig[:-1].clone(), nn=nn, final_nn=final_nn, memorized=dist[:, 0] < dist[:, 1] / 3,
                      commit_step=commit, samples=samples)


# ----------------------------------------------------------------------------------------------
# sub-window swaps
# ----------------------------------------------------------------------------------------------
def step_windows(steps: int = 18, width: int = 3) -> list[tuple[int, ...]]:
    """Consecutive windows of ``width`` step indices covering ``0 .. steps - 1`` (the last may be shorter)."""
    if not isinstance(steps, int) or steps < 1 or not isinstance(width, int) or width < 1:
        raise ValueError(f"steps and width must be positive integers, got {steps!r}, {width!r}")
    return [tuple(range(a, min(a + width, steps))) for a in range(0, steps, width)]


@torch.no_grad()
def window_swaps(model, partner, train: torch.Tensor, latents: torch.Tensor, windows, *, steps: int = 18,
                 method: str = "euler") -> dict:
    """Memorization when only one window of steps uses ``model`` (the rest ``partner``) and when only
    that window uses ``partner`` (the rest ``model``), for each window of step indices.

    Returns ``{"windows", "sigma_start", "sigma_end", "model_in_window", "partner_in_window"}``: the
    last two are lists of bool flag tensors (memorized samples, 1/3 rule), one per window, all from the
    same ``latents``; wrap them with :func:`bootstrap_rate`.
    """
    windows = [tuple(int(i) for i in w) for w in windows]
    sig = edm.karras_sigmas(steps)
    if not windows or any(not w or min(w) < 0 or max(w) >= steps for w in windows):
        raise ValueError(f"windows must be non-empty tuples of step indices in [0, {steps})")
    flat = train.float().flatten(1)

    def run(a, b, w):
        x = sampling.sample(a, latents.shape[0], tuple(latents.shape[1:]), steps=steps, method=method,
                            latents=latents, denoiser_for_step=sampling.swap(a, b, w, sig))
        return memorization.is_memorized(x.float().clamp(-1, 1).flatten(1), flat)

    return {"windows": windows, "sigma_start": [float(sig[w[0]]) for w in windows],
            "sigma_end": [float(sig[w[-1] + 1]) for w in windows],
            "model_in_window": [run(partner, model, w) for w in windows],
            "partner_in_window": [run(model, partner, w) for w in windows]}
