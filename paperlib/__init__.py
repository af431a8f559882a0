"""paperlib: the companion library of "Two Calm Ends and the Wild Middle" (2026).

Modules are named for what they hold, in layers (each uses only the ones before it):

* data: :mod:`paperlib.data` (offline datasets, the image resizer :func:`paperlib.data.resize`);
* geometry of Sec. 2 and 4, one module per paper section: :mod:`paperlib.posterior` (posterior weights and
  the empirical denoiser, Eq. 2-3, Def. 4.1), :mod:`paperlib.neighbors` (exact nearest neighbours),
  :mod:`paperlib.concentration` (Thm 4.2, Cor. A.2), :mod:`paperlib.shells` (shells and coverage,
  Lemma 4.5 - Thm 4.8), :mod:`paperlib.gaussian` (the Gaussian linear denoiser, Thm 4.11), all
  re-exported by :mod:`paperlib.geometry`; shared :mod:`paperlib.checks` (input validation) and
  :mod:`paperlib.blocking` (memory-bounded kernels); :mod:`paperlib.edm` (noise schedule, preconditioning,
  loss), :mod:`paperlib.networks`, :mod:`paperlib.circulant`;
* :mod:`paperlib.sampling`, :mod:`paperlib.training`, :mod:`paperlib.distributed` (data-parallel training
  under torchrun), :mod:`paperlib.trajectories` (commitment along sampling trajectories, window swaps);
* :mod:`paperlib.regimes` (danger zone), :mod:`paperlib.gaps` (Section 5's gap rules and controls),
  :mod:`paperlib.memorization` (the 1/3 nearest-neighbour rule, per-level rates),
  :mod:`paperlib.quality` (patch-FD); related papers: :mod:`paperlib.mixtures` (Pai et al.'s
  Gaussian-mixture laboratory), :mod:`paperlib.linear` (linear diffusion models, the N ~ d transition),
  :mod:`paperlib.local_coverage` (Merger & Goldt's local coverage), :mod:`paperlib.cumulants` (the mixed
  cumulant model);
* infrastructure: :mod:`paperlib.config` (profiles, folders), :mod:`paperlib.cache`, :mod:`paperlib.report`,
  :mod:`paperlib.plotting`, :mod:`paperlib.progress`, :mod:`paperlib.recipes`.
"""
__version__ = "0.1.0"
