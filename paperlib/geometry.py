"""The paper's geometric objects (Sec. 2 and 4, App. A-C), one module per paper section.

This module re-exports every public name of the modules that implement them, so
``paperlib.geometry.<name>`` keeps working:

* :mod:`paperlib.posterior`      posterior weights and the empirical denoiser (Eq. 2-3), Def. 4.1, Fig. 7;
* :mod:`paperlib.neighbors`      exact nearest neighbours;
* :mod:`paperlib.concentration`  concentration thresholds (Thm 4.2), its Monte Carlo check, Corollary A.2;
* :mod:`paperlib.shells`         shells and coverage (Lemma 4.5 - Thm 4.8);
* :mod:`paperlib.gaussian`       the Gaussian linear denoiser (Eq. 7, Thm 4.11).

Shared pieces: :mod:`paperlib.checks` (input validation), :mod:`paperlib.blocking` (memory-bounded
kernels and rounding-error bounds).
"""
from __future__ import annotations

from .blocking import BLOCK_BYTES
from .concentration import (CorollaryA2, LemmaA1, ThresholdMonteCarlo, Thresholds, concentration_thresholds,
                            corollary_a2, failure_probability, lemma_a1_monte_carlo, threshold_monte_carlo)
from .gaussian import GaussianLinearDenoiser, fit_gaussian, gaussian_linear_denoiser, linear_gap, third_moment
from .neighbors import nearest_neighbor_distances, nearest_neighbors
from .posterior import (empirical_denoiser, log_posterior_weights, max_posterior_weight, max_weight_at,
                        posterior_weight_curves, posterior_weights, self_posterior_weight)
from .shells import coverage, coverage_bounds, pair_upper_bound, shell_hit_probability, shell_radii

__all__ = [
    "BLOCK_BYTES",
    "log_posterior_weights",
    "posterior_weights",
    "empirical_denoiser",
    "max_posterior_weight",
    "self_posterior_weight",
    "posterior_weight_curves",
    "shell_radii",
    "shell_hit_probability",
    "coverage",
    "coverage_bounds",
    "pair_upper_bound",
    "Thresholds",
    "concentration_thresholds",
    "failure_probability",
    "ThresholdMonteCarlo",
    "threshold_monte_carlo",
    "CorollaryA2",
    "corollary_a2",
    "LemmaA1",
    "lemma_a1_monte_carlo",
    "max_weight_at",
    "nearest_neighbors",
    "nearest_neighbor_distances",
    "fit_gaussian",
    "gaussian_linear_denoiser",
    "GaussianLinearDenoiser",
    "third_moment",
    "linear_gap",
]
