"""Sampling and per-noise-level evaluation of denoisers (paper Sec. 3, App. E.1, E.6, E.7).

A *denoiser* here is any callable ``D(x, sigma) -> Tensor`` with ``x`` of shape ``(b, ...)`` and
``sigma`` a ``(b,)`` tensor (all entries equal inside the samplers), e.g.
:class:`paperlib.edm.Precond`, :class:`EmpiricalDenoiser`, or a closed-form function.

Step convention (used by the samplers and by the denoiser swap of Table 1 / App. E.6).
With ``sigmas = karras_sigmas(K)`` (``K + 1`` entries, the last exactly 0), *step* ``i``
(zero-based, ``i = 0 .. K-1``) moves the state from ``sigmas[i]`` to ``sigmas[i+1]``. The paper
counts steps from 1, so its "step j" is our index ``j - 1``. Heun's method evaluates the denoiser
at ``sigmas[i]`` and, except on the last step (``sigmas[K] = 0``), once more at ``sigmas[i+1]``:
``2K - 1`` evaluations (35 for K = 18), Euler ``K`` evaluations. When denoisers are swapped, both
evaluations of a step use the denoiser chosen for that step.

Swap regions for the 18-step schedule (:data:`SWAP_REGIONS`): the paper's medium region is
"steps 7-13" (App. E.6), i.e. indices 6..12, whose steps start at sigma = 8.40 ... 0.296 and end at
5.32 ... 0.140; large is indices 0..5 (start 80 ... 12.9) and small indices 13..17 (start 0.140
... 0.002, ending at 0). The paper lost the sigma ranges of large/small in extraction; the
companion takes them as the complements of the medium steps (a reconstruction).
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch
from tqdm import tqdm

from . import geometry
from .edm import _as_sigma, _check_finite, karras_sigmas

#: Zero-based step indices of the three swap regions of Table 1 for the 18-step schedule.
SWAP_REGIONS = {"large": tuple(range(0, 6)), "medium": tuple(range(6, 13)), "small": tuple(range(13, 18))}


def region_steps(region, sigmas: torch.Tensor | None = None) -> tuple[int, ...]:
    """Zero-based step indices for a swap region.

    ``region`` is ``"large" | "medium" | "small"`` (:data:`SWAP_REGIONS`, 18-step schedule only), an
    iterable of step indices, or ``(lo, hi)`` given as ``("sigma", lo, hi)``: the steps whose start
    noise level ``sigmas[i]`` lies in ``[lo, hi]`` (``sigmas`` default: ``karras_sigmas(18)``).
    """
    sigmas = karras_sigmas(18) if sigmas is None else sigmas
    steps = len(sigmas) - 1
    if isinstance(region, str):
        if region not in SWAP_REGIONS:
            raise ValueError(f"region must be one of {tuple(SWAP_REGIONS)}, got {region!r}")
        if steps != 18:
            raise ValueError(f"named region {region!r} is defined for the 18-step schedule; got {steps} steps "
                             "(pass step indices or ('sigma', lo, hi))")
        return SWAP_REGIONS[region]
    region = tuple(region)
    if len(region) == 3 and region[0] == "sigma":
        lo, hi = float(region[1]), float(region[2])
        if not 0 <= lo <= hi:
            raise ValueError(f"sigma region needs 0 <= lo <= hi, got {region!r}")
        return tuple(i for i in range(steps) if lo <= float(sigmas[i]) <= hi)
    idx = tuple(int(i) for i in region)
    if any(i < 0 or i >= steps for i in idx):
        raise ValueError(f"step indices must lie in [0, {steps}), got {idx}")
    return idx


def swap(model_a, model_b, region, sigmas: torch.Tensor | None = None) -> Callable[[int], Callable]:
    """``denoiser_for_step`` that uses ``model_b`` on the steps of ``region`` and ``model_a`` elsewhere.

    Table 1, "EDM-1K -> EDM-50K, medium":
    ``sample(edm_1k, n, shape, denoiser_for_step=swap(edm_1k, edm_50k, "medium"))``.
    """
    chosen = frozenset(region_steps(region, sigmas))
    return lambda i: model_b if i in chosen else model_a


def _prepare(x: torch.Tensor, dtype, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got "
                         f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    _check_finite(name, x)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    return x.to(dtype)


@torch.no_grad()
def solve(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, method: str = "heun",
          denoiser_for_step: Callable[[int], Callable] | None = None, dtype: torch.dtype = torch.float32,
          return_trajectory: bool = False):
    """Integrate the probability-flow ODE (Eq. 4) ``dx/dsigma = (x - D(x; sigma)) / sigma`` from
    ``x`` at ``sigmas[0]`` down the decreasing schedule ``sigmas`` (last entry 0 allowed).

    EDM Algorithm 1 with ``S_churn = 0``: ``method="heun"`` takes a Heun (trapezoidal) step on every
    step but the last, which is an Euler step to ``sigma = 0``; ``method="euler"`` takes Euler steps
    only (App. E.7). The state is kept in ``dtype`` (float32 by default, float64 for accuracy studies);
    ``denoiser_for_step(i)`` returns the denoiser for step ``i`` (module docstring), default
    ``denoiser`` everywhere. Returns the final state, and with ``return_trajectory`` also the
    ``(len(sigmas), *x.shape)`` states at every ``sigmas[i]``.
    """
    if method not in ("heun", "euler"):
        raise ValueError(f"method must be 'heun' or 'euler', got {method!r}")
    sig = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sig.numel() < 2 or not torch.isfinite(sig).all() or (sig[:-1] <= 0).any() or sig[-1] < 0 \
            or (sig[1:] >= sig[:-1]).any():
        raise ValueError("sigmas must be finite, strictly decreasing, positive except a final 0, length >= 2")
    x = _prepare(x, dtype)
    pick = denoiser_for_step or (lambda i: denoiser)
    b = x.shape[0]
    traj = [x.clone()] if return_trajectory else None

    def slope(D, x, s):
        return (x - D(x, torch.full((b,), s, dtype=dtype, device=x.device)).to(dtype)) / s

    for i in range(len(sig) - 1):
        s, s_next = float(sig[i]), float(sig[i + 1])
        D = pick(i)
        d = slope(D, x, s)
        x_next = x + (s_next - s) * d
        if method == "heun" and s_next > 0:
            x_next = x + (s_next - s) * 0.5 * (d + slope(D, x_next, s_next))
        x = x_next
        if return_trajectory:
            traj.append(x.clone())
    return (x, torch.stack(traj)) if return_trajectory else x


@torch.no_grad()
def sample(denoiser, n: int, shape, *, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
           rho: float = 7.0, method: str = "heun", denoiser_for_step: Callable[[int], Callable] | None = None,
           generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
           batch_size: int = 256, dtype: torch.dtype = torch.float32, device=None, progress: bool = False) -> torch.Tensor:
    """Generate ``n`` samples of shape ``shape`` with the deterministic EDM sampler on
    ``karras_sigmas(steps, sigma_min, sigma_max, rho)`` (App. E.1; :func:`solve` for the method).

    The initial noise is ``sigma_max * latents`` with ``latents ~ N(0, I)`` drawn at once from
    ``generator`` (so the result does not depend on ``batch_size``), or given as ``latents``
    ``(n, *shape)``. Sampling runs in batches of ``batch_size`` on ``device`` (default: the device of
    the denoiser's parameters or buffers, else the latents'). Returns ``(n, *shape)`` in ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if latents is None:
        gen_device = generator.device if generator is not None else "cpu"
        latents = torch.randn((n, *shape), generator=generator, device=gen_device, dtype=torch.float64)
    elif not isinstance(latents, torch.Tensor) or tuple(latents.shape) != (n, *shape):
        raise ValueError(f"latents has shape {tuple(getattr(latents, 'shape', ()))}, expected {(n, *shape)}")
    else:
        _prepare(latents, torch.float64, "latents")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        tensors = itertools.chain(denoiser.parameters(), denoiser.buffers()) \
            if isinstance(denoiser, torch.nn.Module) else iter(())
        first = next(tensors, None)
        device = first.device if first is not None else latents.device
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
    out = []
    for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress, leave=False):
        x = latents[start:start + batch_size].to(device=device, dtype=torch.float64) * sigmas[0].item()
        out.append(solve(denoiser, x, sigmas, method=method, denoiser_for_step=denoiser_for_step, dtype=dtype))
    return torch.cat(out)


def _sigma_list(sigmas) -> torch.Tensor:
    return _as_sigma(sigmas, "sigmas", dtype=torch.float64).reshape(-1)


@torch.no_grad()
def one_step_outputs(denoiser, x0: torch.Tensor, sigmas, generator: torch.Generator | None = None, *,
                     shared_noise: bool = True, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """One-step denoiser outputs ``D(x0 + sigma n; sigma)`` for every sigma (Sec. 3, Fig. 2, App. E.7).

    ``x0`` is ``(m, ...)`` (e.g. test images), ``sigmas`` a list of noise levels. Returns
    ``(len(sigmas), m, ...)`` in ``x0``'s dtype. With ``shared_noise`` (default) the same noise
    ``n`` (drawn once from ``generator``) is scaled by every sigma (common random numbers, as in
    the App. E.7 rows); otherwise a fresh noise is drawn per sigma.
    """
    _check_finite("x0", x0)
    sig = _sigma_list(sigmas)
    gen_device = generator.device if generator is not None else x0.device
    draw = lambda: torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    noise = draw() if shared_noise else None
    out = torch.empty((len(sig), *x0.shape), dtype=x0.dtype, device=x0.device)
    for k in tqdm(range(len(sig)), desc="one-step outputs", disable=not progress, leave=False):
        n_k = noise if shared_noise else draw()
        s = float(sig[k])
        for start in range(0, x0.shape[0], batch_size):
            xb = x0[start:start + batch_size]
            sb = torch.full((xb.shape[0],), s, dtype=x0.dtype, device=x0.device)
            out[k, start:start + batch_size] = denoiser(xb + s * n_k[start:start + batch_size], sb).to(x0.dtype)
    return out


@torch.no_grad()
def denoising_mse(denoiser, x0: torch.Tensor, sigmas, n_noise: int = 1, generator: torch.Generator | None = None,
                  *, batch_size: int = 256, return_se: bool = False, progress: bool = False):
    """Fixed-sigma denoising error (Eq. 5): ``MSE(sigma) = E_{x0} E_n ||D(x0 + sigma n; sigma) - x0||^2``.

    The squared norm is summed over the ``d`` entries of an image (divide by ``d`` for a per-pixel
    error) and averaged over the ``m`` points of ``x0`` (train or test set) and ``n_noise`` noise
    draws per point. Returns a float64 ``Tensor[len(sigmas)]``, and with ``return_se`` also its Monte
    Carlo standard error (std of the ``m * n_noise`` terms / sqrt(count)).
    """
    _check_finite("x0", x0)
    if not isinstance(n_noise, int) or n_noise < 1:
        raise ValueError(f"n_noise must be a positive integer, got {n_noise!r}")
    sig = _sigma_list(sigmas)
    gen_device = generator.device if generator is not None else x0.device
    mean = torch.empty(len(sig), dtype=torch.float64)
    se = torch.empty(len(sig), dtype=torch.float64)
    for k in tqdm(range(len(sig)), desc="denoising MSE", disable=not progress, leave=False):
        s = float(sig[k])
        terms = []
        for _ in range(n_noise):
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
            for start in range(0, x0.shape[0], batch_size):
                xb = x0[start:start + batch_size]
                sb = torch.full((xb.shape[0],), s, dtype=x0.dtype, device=x0.device)
                err = denoiser(xb + s * noise[start:start + batch_size], sb).to(torch.float64) - xb.to(torch.float64)
                terms.append(err.flatten(1).pow(2).sum(1).cpu())
        t = torch.cat(terms)
        mean[k] = t.mean()
        se[k] = t.std() / t.numel() ** 0.5 if t.numel() > 1 else float("nan")
    return (mean, se) if return_se else mean


class EmpiricalDenoiser(torch.nn.Module):
    """The empirical optimal denoiser of a training set (Eq. 2), as a denoiser ``D(x, sigma)``.

    ``train`` is ``(n, ...)`` (images or points); calls flatten ``x`` to ``(b, d)`` and use
    :func:`paperlib.geometry.empirical_denoiser` (log-space softmax weights, Eq. 3). Inputs with
    different sigmas in one batch are handled one sigma value at a time. This is EMP-1K of Sec. 3.
    """

    def __init__(self, train: torch.Tensor):
        super().__init__()
        if not isinstance(train, torch.Tensor) or train.ndim < 2 or train.shape[0] < 1:
            raise ValueError(f"train must be a tensor of n >= 1 points or images (n, ...), got "
                             f"{tuple(train.shape) if isinstance(train, torch.Tensor) else type(train).__name__}")
        if not train.is_floating_point():
            raise ValueError(f"train must be floating point (images in [-1, 1]), got {train.dtype}")
        _check_finite("train", train)
        self.register_buffer("train_flat", train.reshape(train.shape[0], -1).clone())
        self.sample_shape = tuple(train.shape[1:])

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x has sample shape {tuple(x.shape[1:])}, the training set {self.sample_shape}")
        s = _as_sigma(sigma, device=x.device, dtype=torch.float64).reshape(-1)
        if s.numel() not in (1, x.shape[0]):
            raise ValueError(f"sigma must be a scalar or one value per sample, got {s.numel()} for batch {x.shape[0]}")
        flat = x.reshape(x.shape[0], -1)
        data = self.train_flat.to(device=x.device, dtype=x.dtype)
        if s.numel() == 1 or bool((s == s[0]).all()):
            out = geometry.empirical_denoiser(flat, data, float(s[0]))
        else:
            out = torch.empty_like(flat)
            for value in torch.unique(s):
                rows = s == value
                out[rows] = geometry.empirical_denoiser(flat[rows], data, float(value)).to(flat.dtype)
        return out.to(x.dtype).reshape(x.shape)
