"""A result cache keyed by configuration (and code version), with verified, atomic files.

Expensive results (trained models, curves over sigma) are stored under
``cache_dir() / name / key(config)``. Each file is written atomically (temporary file, then
rename) next to a ``.sha256`` sidecar; a file whose checksum does not match is treated as
missing and recomputed, never loaded. The entry also stores its full config, so a different
config can never be served by accident.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from . import config as _config


def _canonical(cfg: dict) -> str:
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a dict, got {type(cfg).__name__}")
    return json.dumps(cfg, sort_keys=True, default=str)


def key(cfg: dict) -> str:
    """Short, stable hash of a JSON-able config dict."""
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:16]


def code_version(*objects) -> str:
    """Hash of the source code of modules / functions / classes, to put in a config.

    A change to that code then changes the cache key, so a stale result is never reused.
    """
    h = hashlib.sha256()
    for obj in objects:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def entry_dir(name: str, cfg: dict) -> Path:
    """Folder of the cache entry for ``(name, cfg)``; created, with the config written beside."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain non-empty folder name, got {name!r}")
    path = _config.cache_dir() / name / key(cfg)
    path.mkdir(parents=True, exist_ok=True)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        _atomic_write(cfg_file, _canonical(cfg).encode())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically, with a sha256 sidecar."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    # Data first, checksum second: a crash in between leaves a mismatch, i.e. "missing".
    _atomic_write(path, data)
    _atomic_write(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def load(path: Path, map_location="cpu"):
    """Load a file written by :func:`save`; ``None`` when missing, truncated or corrupted."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
        warnings.warn(f"cache file {path} failed its checksum; it will be recomputed", stacklevel=2)
        return None
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as exc:  # a file that hashes right but does not unpickle is still unusable
        warnings.warn(f"cache file {path} could not be read ({exc}); it will be recomputed", stacklevel=2)
        return None


def cached(name: str, cfg: dict, compute: Callable[[], Any], *, map_location="cpu"):
    """Return ``compute()``, reusing the stored result for the same ``(name, cfg)``."""
    path = entry_dir(name, cfg) / "result.pt"
    stored = load(path, map_location=map_location)
    if stored is not None and stored.get("config") == json.loads(_canonical(cfg)):
        return stored["value"]
    value = compute()
    save({"config": json.loads(_canonical(cfg)), "value": value}, path)
    return value
