"""Run-time configuration: the active profile, where data and results live, the compute device.

Everything is set by environment variables so that notebooks, nbmake, the book build and Colab
all honour the same switches:

- ``PAPERLIB_PROFILE``: ``smoke`` (seconds, for CI), ``cpu`` (the book build, 2 cores) or ``gpu``
  (the paper's scale). Default: ``gpu`` when CUDA is available, else ``cpu``.
- ``PAPERLIB_DATA``: folder holding the datasets (layout in :mod:`paperlib.data`).
  Default: ``~/.cache/paperlib/data`` (where Colab downloads go).
- ``PAPERLIB_CACHE``: folder for cached results (trained models, curves). Default: ``~/.cache/paperlib/results``.
- ``PAPERLIB_DEVICE``: torch device for heavy work. Default: ``cuda`` when available, else ``cpu``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

PROFILES = ("smoke", "cpu", "gpu")


def profile() -> str:
    """The active profile name (``PAPERLIB_PROFILE``)."""
    name = os.environ.get("PAPERLIB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"PAPERLIB_PROFILE={name!r}: expected one of {PROFILES}")
    return name


def choose(**by_profile):
    """Return the settings of the active profile: ``choose(smoke=..., cpu=..., gpu=...)``.

    Every profile must be given, so a notebook shows the reader all three scales side by side.
    """
    missing = [p for p in PROFILES if p not in by_profile]
    extra = [p for p in by_profile if p not in PROFILES]
    if missing or extra:
        raise ValueError(f"choose() needs exactly the profiles {PROFILES}; missing {missing}, unknown {extra}")
    return by_profile[profile()]


def _dir(var: str, default: Path) -> Path:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Folder holding the datasets (``PAPERLIB_DATA``)."""
    return _dir("PAPERLIB_DATA", Path.home() / ".cache" / "paperlib" / "data")


def cache_dir() -> Path:
    """Folder for cached results (``PAPERLIB_CACHE``)."""
    return _dir("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib" / "results")


def device() -> torch.device:
    """Device for heavy computations (``PAPERLIB_DEVICE``)."""
    name = os.environ.get("PAPERLIB_DEVICE", "").strip()
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
