"""Input checks shared by the library: one validator per kind of argument.

Every check raises ``ValueError`` (or ``TypeError`` for a value of the wrong kind where the caller
asks for it) with a message that names the argument, and returns the value in the form the
computation uses. The geometry modules (:mod:`~paperlib.posterior`, :mod:`~paperlib.neighbors`,
:mod:`~paperlib.concentration`, :mod:`~paperlib.shells`, :mod:`~paperlib.gaussian`) and the modules
built on them (:mod:`~paperlib.memorization`, :mod:`~paperlib.regimes`, :mod:`~paperlib.mixtures`,
:mod:`~paperlib.edm`, :mod:`~paperlib.quality`) use these instead of writing their own.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["SIGMA_MIN", "points", "finite", "pair", "sigma", "sigmas", "integer", "positive_int", "number",
           "probability", "generator", "compute_dtype"]

#: Smallest noise level accepted: ``1 / sigma^2`` must be a finite float64 (``sigma^2`` does not underflow).
SIGMA_MIN = 1e-150


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def points(t, name: str, *, min_rows: int = 1) -> torch.Tensor:
    """``t`` as a 2-D floating tensor ``(n, d)`` (trailing dims flattened); raises ValueError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (n, d) or (n, C, H, W); got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (images scaled to [-1, 1]), got {t.dtype}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} point(s), got {t.shape[0]}")
    t = t.reshape(t.shape[0], -1)
    if t.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0 (shape {tuple(t.shape)})")
    return t


def interval(v, name: str = "interval") -> tuple[float, float]:
    """A pair ``(lo, hi)`` of noise levels with ``0 < lo < hi``, both finite."""
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of noise levels, got {v!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"{name} must satisfy 0 < lo < hi (finite), got {v!r}")
    return lo, hi


def finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` unchanged if every entry is finite; else ValueError naming ``name``."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def pair(x: torch.Tensor, data: torch.Tensor, xname: str, dname: str) -> None:
    """Two point sets on one device with one dimension."""
    if x.device != data.device:
        raise ValueError(f"{xname} is on {x.device} but {dname} is on {data.device}; move them to one device")
    if x.shape[1] != data.shape[1]:
        raise ValueError(f"{xname} has dimension {x.shape[1]} but {dname} has dimension {data.shape[1]}")


def sigma(v, name: str = "sigma") -> float:
    """A noise level: a python float in ``[SIGMA_MIN, inf)`` from a number or a one-element tensor/array."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        if (v.size if isinstance(v, np.ndarray) else v.numel()) != 1:
            raise ValueError(f"{name} must be a number or a 0-d tensor, got shape {tuple(v.shape)}")
        v = v.item()
    if not _is_real(v):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    if v < SIGMA_MIN:
        raise ValueError(f"{name} = {v!r} is below {SIGMA_MIN:g}: 1/{name}^2 overflows float64")
    return v


def sigmas(v, name: str = "sigmas") -> torch.Tensor:
    """A non-empty 1-D float64 CPU tensor of noise levels in ``[SIGMA_MIN, inf)``."""
    if isinstance(v, str):
        raise ValueError(f"{name} must be a 1-D tensor of noise levels, got a string {v!r}")
    if isinstance(v, torch.Tensor):
        if v.dtype == torch.bool:
            raise ValueError(f"{name} must hold noise levels, got a bool tensor")
        s = v.detach().to("cpu", torch.float64)
    else:
        try:
            arr = np.asarray(v)
            if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
                raise TypeError(f"got dtype {arr.dtype}")
            s = torch.as_tensor(arr.astype(np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a 1-D tensor of noise levels: {e}") from None
    if s.dim() == 0:
        s = s.reshape(1)
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"{name} must be finite and > 0 (got min {s.min().item()!r}, max {s.max().item()!r})")
    if bool((s < SIGMA_MIN).any()):
        raise ValueError(f"{name} has values below {SIGMA_MIN:g} (1/sigma^2 overflows float64)")
    return s


def integer(v, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A python int (not a bool, not a float) in ``[minimum, maximum]``."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {v!r}")
    return v


def positive_int(v, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (default 1)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def number(v, name: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False) -> float:
    """A finite real number (not a bool, not a string) in the given interval, as a python float."""
    if isinstance(v, (torch.Tensor, np.ndarray)) and (v.size if isinstance(v, np.ndarray) else v.numel()) == 1 \
            and not (v.dtype == torch.bool if isinstance(v, torch.Tensor) else v.dtype == np.bool_):
        v = v.item()
    if not _is_real(v):
        raise ValueError(f"{name} must be a finite number, got {v!r} ({type(v).__name__})")
    v = float(v)
    bad = not math.isfinite(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high)
    if bad:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lb}{low:g}, {high:g}{hb}, got {v!r}")
    return v


def probability(v, name: str, high: float = 1.0) -> float:
    """A number in the open interval ``(0, high)``."""
    return number(v, name, low=0.0, high=high, low_open=True, high_open=True)


def generator(g, name: str = "generator"):
    """``None`` or a ``torch.Generator``."""
    if g is not None and not isinstance(g, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(g).__name__}")
    return g


def compute_dtype(*tensors: torch.Tensor, dtype=None) -> torch.dtype:
    """float64 if asked or if any input is float64, else float32 (float16/bfloat16 are promoted)."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
