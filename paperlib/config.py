"""Run-time configuration: the active profile, where data and results live, the compute device.

Everything is set by environment variables so that notebooks, nbmake, the book build and Colab
all honour the same switches:

- ``PAPERLIB_PROFILE``: the scale of every chapter, by intent (:data:`PROFILES`):
  ``smoke`` (seconds, for CI), ``cpu`` (the book build, 2 CPU cores), ``gpu`` (one Colab session on
  a T4-class GPU: at most 45 minutes per chapter, smaller than the paper) and ``paper`` (the paper's
  data sizes, models and iterations; days of GPU time for the training chapters).
  Default: ``gpu`` when CUDA is available, else ``cpu``.
- ``PAPERLIB_DATA``: folder holding the datasets (layout in :mod:`paperlib.data`).
  Default: ``~/.cache/paperlib/data`` (where Colab downloads go).
- ``PAPERLIB_CACHE``: folder for cached results (trained models, curves). Default: ``~/.cache/paperlib/results``.
- ``PAPERLIB_DEVICE``: torch device for heavy work. Default: ``cuda`` when available, else ``cpu``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

PROFILES = ("smoke", "cpu", "gpu", "paper")

#: What each profile is for (shown above every chapter's settings table).
PURPOSE = {
    "smoke": "seconds; CI runs every chapter at this scale",
    "cpu": "the book build: minutes on 2 CPU cores",
    "gpu": "one Colab session: at most 45 minutes per chapter on a T4-class GPU; 32x32 images, "
           "models and data smaller than the paper's",
    "paper": "the paper's data sizes, models and iteration counts: days of GPU time for the training "
             "chapters (several GPUs through torchrun -m paperlib.distributed)",
}


def profile() -> str:
    """The active profile name (``PAPERLIB_PROFILE``)."""
    name = os.environ.get("PAPERLIB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"PAPERLIB_PROFILE={name!r}: expected one of {PROFILES}")
    return name


def choose(**by_profile):
    """Return the settings of the active profile: ``choose(smoke=..., cpu=..., gpu=..., paper=...)``.

    Every profile must be given, so a notebook shows the reader all four scales side by side
    (:func:`settings_table`).
    """
    missing = [p for p in PROFILES if p not in by_profile]
    extra = [p for p in by_profile if p not in PROFILES]
    if missing or extra:
        raise ValueError(f"choose() needs exactly the profiles {PROFILES}; missing {missing}, unknown {extra}")
    return by_profile[profile()]


def _cell(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items()) or "–"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def settings_table(settings: dict, notes: dict | None = None) -> str:
    """The settings of every profile side by side, as Markdown (the active profile's column in bold).

    ``settings``: ``{profile: {name: value}}`` as passed to :func:`choose`; ``notes``: optional
    ``{name: what it means}`` shown in a last column.
    """
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise ValueError(f"settings needs every profile {PROFILES}; missing {missing}")
    active = profile()
    names: list[str] = []
    for p in PROFILES:
        names += [k for k in settings[p] if k not in names]
    notes = notes or {}
    head = ["setting"] + [f"**{p}** (running)" if p == active else p for p in PROFILES] + (["meaning"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in names:
        cells = [f"`{k}`"] + [_cell(settings[p].get(k, "–")).replace("|", "\\|") for p in PROFILES]
        cells = [f"**{c}**" if i == PROFILES.index(active) + 1 and c != "–" else c for i, c in enumerate(cells)]
        lines.append("| " + " | ".join(cells + ([notes.get(k, "")] if notes else [])) + " |")
    return "\n".join(lines)


def show_settings(settings: dict, notes: dict | None = None):
    """Display :func:`settings_table` in a notebook (IPython Markdown) and return the active settings."""
    from IPython.display import Markdown, display
    display(Markdown(f"Profile **`{profile()}`** ({PURPOSE[profile()]}). Set `PAPERLIB_PROFILE` to "
                     f"one of {', '.join(f'`{p}`' for p in PROFILES)} to rerun at another scale.\n\n"
                     + settings_table(settings, notes)))
    return choose(**settings)


def _dir(var: str, default: Path) -> Path:
    value = os.environ.get(var, "").strip()
    if not value:
        return default
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{var}={value!r} is a file, not a folder")
    return path


def data_dir() -> Path:
    """Folder holding the datasets (``PAPERLIB_DATA``)."""
    return _dir("PAPERLIB_DATA", Path.home() / ".cache" / "paperlib" / "data")


def cache_dir() -> Path:
    """Folder for cached results (``PAPERLIB_CACHE``)."""
    return _dir("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib" / "results")


def device() -> torch.device:
    """Device for heavy computations (``PAPERLIB_DEVICE``)."""
    name = os.environ.get("PAPERLIB_DEVICE", "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"PAPERLIB_DEVICE={name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"PAPERLIB_DEVICE={name!r}, but CUDA is not available on this machine")
    return dev
