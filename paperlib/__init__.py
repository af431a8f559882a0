"""paperlib: the companion library of "Two Calm Ends and the Wild Middle" (2026).

Modules are named for what they hold: :mod:`~paperlib.edm` (noise schedule, preconditioning,
loss, sampler), :mod:`~paperlib.geometry` (posterior weights, shells, coverage, bounds),
:mod:`~paperlib.memorization` (the 1/3 nearest-neighbour rule), :mod:`~paperlib.data`
(offline datasets), :mod:`~paperlib.config` (profiles, folders), :mod:`~paperlib.cache`.
Related papers: :mod:`~paperlib.mixtures` (Pai et al.'s Gaussian-mixture laboratory, the crossover model size).
:mod:`~paperlib.linear` (linear diffusion models: the memorization-to-generalization transition at N ~ d).
"""
__version__ = "0.1.0"
