"""Progress bars for long work, visible where the person waiting can see them.

``PAPERLIB_PROGRESS`` chooses where :func:`bar` writes:

- unset or ``auto``: standard error (a terminal, or a notebook's stderr stream);
- ``terminal``: the *process's own* standard error (``sys.__stderr__``), bypassing Jupyter's capture:
  in a book build the kernel inherits the terminal of ``make book``, so bars show there while the
  executed pages stay clean;
- ``off``: no bars.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

MODES = ("auto", "terminal", "off")


def mode() -> str:
    """The active mode (``PAPERLIB_PROGRESS``)."""
    m = os.environ.get("PAPERLIB_PROGRESS", "").strip().lower() or "auto"
    if m not in MODES:
        raise ValueError(f"PAPERLIB_PROGRESS={m!r}: expected one of {MODES}")
    return m


def bar(iterable=None, *, total=None, desc: str = "", disable: bool = False, **kwargs) -> tqdm:
    """A ``tqdm`` bar (rate and ETA) written according to :func:`mode`; ``disable`` turns it off."""
    m = mode()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", m == "terminal")
    if m == "terminal":
        kwargs["file"] = sys.__stderr__
        kwargs.setdefault("mininterval", 2.0)
    return tqdm(iterable, total=total, desc=desc, disable=disable or m == "off", **kwargs)


def note(message: str) -> None:
    """A one-line message for the person waiting (e.g. "resuming from checkpoint 4000"), on the same
    stream as the bars (and also printed normally when that is not the terminal)."""
    m = mode()
    if m == "off":
        return
    if m == "terminal":
        print(message, file=sys.__stderr__, flush=True)
    else:
        print(message, file=sys.stderr, flush=True)
