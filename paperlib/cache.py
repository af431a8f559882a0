"""The result cache: a result is reused only when everything it depends on is identical.

Chapters cache their expensive computations with one decorator::

    @cache.memoize(depends=[sampling, memorization])
    def per_level_rates(model, x_test, train, sigmas, seed): ...

The key of a call holds (1) the function's own source, (2) the source of the ``paperlib`` modules it
declares in ``depends`` and of every ``paperlib`` module those import (:func:`code_version`), and (3)
every argument, with tensors, arrays and models fingerprinted by their full content
(:func:`fingerprint`). A cached function may not read variables of the notebook: a global that is
data (a settings dict, a tensor) raises ``TypeError`` naming it, so it has to become an argument; a
``paperlib`` module or function it uses must be covered by ``depends``. Editing a dependency module, an
argument tensor's content or a seed therefore gives a new key; source is compared without comments
and docstrings, so editing those does not.

Each result is stored under ``cache_dir() / name / key``, written atomically (temporary file, then
rename) next to a ``.sha256`` sidecar; a file whose checksum does not match is treated as missing and
recomputed, never loaded. The entry also stores its full key, so a different key can never be served
by accident. :func:`cached` is the same store for a hand-made config dict (used by ``training``).
"""
from __future__ import annotations

import ast
import dataclasses
import dis
import functools
import hashlib
import inspect
import io
import json
import os
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import config as _config

__all__ = ["memoize", "fingerprint", "code_version", "module_closure", "cached", "key", "entry_dir", "save",
           "load"]

#: paperlib modules that never change a result (bookkeeping, folders, plotting): left out of code versions.
INFRASTRUCTURE = frozenset({"paperlib.cache", "paperlib.config", "paperlib.report", "paperlib.plotting",
                            "paperlib.progress"})


# ----------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------
def _canonical(cfg: dict) -> str:
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a dict, got {type(cfg).__name__}")
    return json.dumps(cfg, sort_keys=True, default=_json_default)


def _json_default(value):
    raise TypeError(f"config holds a {type(value).__name__}, which has no exact JSON form; "
                    "use cache.fingerprint() for tensors, arrays and models")


def key(cfg: dict) -> str:
    """Short, stable hash of a JSON-able config dict (tensors are refused: see :func:`fingerprint`)."""
    return hashlib.sha256(_canonical(cfg).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# fingerprints of values
# ----------------------------------------------------------------------------------------------
def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.is_complex():
        t = torch.view_as_real(t).reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _feed(h, value, where: str, seen: set) -> None:
    """Feed an exact, type-tagged encoding of ``value`` into the hash ``h``."""
    if value is None or isinstance(value, (bool, np.bool_)):
        h.update(f"<{value!r}>".encode())
    elif isinstance(value, (int, np.integer)):
        h.update(f"<int {int(value)}>".encode())
    elif isinstance(value, (float, np.floating)):
        h.update(f"<float {float(value).hex()}>".encode())
    elif isinstance(value, str):
        h.update(f"<str {len(value)}>".encode() + value.encode())
    elif isinstance(value, bytes):
        h.update(f"<bytes {len(value)}>".encode() + value)
    elif isinstance(value, torch.Tensor):
        h.update(f"<tensor {value.dtype} {tuple(value.shape)}>".encode())
        h.update(hashlib.sha256(_tensor_bytes(value)).digest())
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: object arrays have no exact fingerprint")
        h.update(f"<ndarray {value.dtype.str} {value.shape}>".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
    elif isinstance(value, (torch.dtype, torch.device)):
        h.update(f"<{type(value).__name__} {value}>".encode())
    elif isinstance(value, Path):
        h.update(f"<path {value}>".encode())
    elif isinstance(value, dict):
        h.update(f"<dict {len(value)}>".encode())
        items = [(fingerprint(k, f"{where} key"), k, v) for k, v in value.items()]
        for kf, k, v in sorted(items, key=lambda t: t[0]):
            h.update(kf.encode())
            _feed(h, v, f"{where}[{k!r}]", seen)
    elif isinstance(value, (list, tuple)):
        h.update(f"<{type(value).__name__} {len(value)}>".encode())
        for i, v in enumerate(value):
            _feed(h, v, f"{where}[{i}]", seen)
    elif isinstance(value, (set, frozenset)):
        h.update(f"<set {len(value)}>".encode())
        for f in sorted(fingerprint(v, f"{where} element") for v in value):
            h.update(f.encode())
    elif isinstance(value, torch.nn.Module):
        _feed_module(h, value, where, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(f"<dataclass {type(value).__module__}.{type(value).__qualname__}>".encode())
        for f in dataclasses.fields(value):
            h.update(f.name.encode())
            _feed(h, getattr(value, f.name), f"{where}.{f.name}", seen)
    elif isinstance(value, (types.FunctionType, types.MethodType)):
        h.update(b"<function>")
        h.update(_function_version(value, where, seen).encode())
    elif isinstance(value, types.ModuleType):
        h.update(f"<module {value.__name__}>".encode() + code_version(value).encode())
    elif isinstance(value, torch.Generator):
        raise TypeError(f"{where}: a torch.Generator's state cannot be a cache key; pass an integer seed "
                        "and make the generator inside the cached function")
    else:
        raise TypeError(f"{where}: cannot fingerprint a {type(value).__module__}.{type(value).__qualname__}; "
                        "pass numbers, strings, tensors, arrays, models, or lists/dicts of them")


def _feed_module(h, module: torch.nn.Module, where: str, seen: set) -> None:
    """A model: its class, its plain attributes (e.g. ``sigma_data``), and the content of its state."""
    for name, sub in module.named_modules():
        cls = type(sub)
        h.update(f"<module {name} {cls.__module__}.{cls.__qualname__}>".encode())
        for attr, v in sorted(vars(sub).items()):
            if attr.startswith("_") or attr == "training":
                continue
            if v is None or isinstance(v, (bool, int, float, str)) or (
                    isinstance(v, tuple) and all(isinstance(e, (bool, int, float, str)) for e in v)):
                h.update(attr.encode())
                _feed(h, v, f"{where}.{attr}", seen)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        _feed(h, t, f"{where}.{name}", seen)


def fingerprint(value, where: str = "value") -> str:
    """A sha256 hex digest of ``value``'s full content: equal digests mean equal values.

    Tensors and arrays are hashed byte for byte with their dtype and shape (not their ``str``, which
    elides large tensors); ``torch.nn.Module``\\ s by class, plain attributes and every state tensor;
    floats exactly (``float.hex``); dicts independently of their order; functions by their source
    (:func:`code_version`). Anything else raises ``TypeError`` naming ``where``.
    """
    h = hashlib.sha256()
    _feed(h, value, where, set())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# versions of code
# ----------------------------------------------------------------------------------------------
def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _normalized_source(obj) -> str:
    """Source of ``obj`` without comments, docstrings or formatting (so editing those changes nothing)."""
    try:
        src = inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise TypeError(f"the source of {obj!r} is not available ({exc}); it cannot be part of a cache key") from None
    return _normalize(src)


@functools.lru_cache(maxsize=512)
def _normalize(src: str) -> str:
    """(Memoized on the text: parsing a large module takes a good part of a second.)"""
    try:
        return ast.unparse(_strip_docstrings(ast.parse(textwrap.dedent(src))))
    except SyntaxError:  # e.g. a lambda cut out of a longer line: fall back to the raw text
        return src


def _is_paperlib(name: str | None) -> bool:
    return bool(name) and (name == "paperlib" or name.startswith("paperlib."))


def _imported_modules(mod: types.ModuleType) -> list[types.ModuleType]:
    """paperlib modules imported anywhere in ``mod``'s source, also inside functions (lazy imports)."""
    try:
        src = inspect.getsource(mod)
    except (OSError, TypeError):
        return []
    package = mod.__name__.rpartition(".")[0] if not hasattr(mod, "__path__") else mod.__name__
    return [sys.modules[n] for n in _import_names(src, package) if n in sys.modules]


@functools.lru_cache(maxsize=512)
def _import_names(src: str, package: str) -> tuple[str, ...]:
    """Names of the paperlib modules imported in ``src`` (memoized on the text)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return ()
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return tuple(n for n in names if n.startswith("paperlib."))


def module_closure(*modules: types.ModuleType) -> list[types.ModuleType]:
    """The given ``paperlib`` modules and every ``paperlib`` module they use, transitively (sorted by
    name), leaving out :data:`INFRASTRUCTURE`. A module counts as used when it, or a function or
    class taken from it, is one of the module's globals."""
    todo = list(modules)
    found: dict[str, types.ModuleType] = {}
    while todo:
        mod = todo.pop()
        if not isinstance(mod, types.ModuleType):
            raise TypeError(f"depends must hold modules, got {mod!r}")
        if mod.__name__ in found or mod.__name__ in INFRASTRUCTURE or not mod.__name__.startswith("paperlib."):
            continue
        found[mod.__name__] = mod
        todo += _imported_modules(mod)
        for v in vars(mod).values():
            if isinstance(v, types.ModuleType) and _is_paperlib(v.__name__):
                todo.append(v)
            elif isinstance(v, (types.FunctionType, type)) and _is_paperlib(getattr(v, "__module__", None)):
                todo.append(sys.modules[v.__module__])
    return [found[k] for k in sorted(found)]


def code_version(*objects) -> str:
    """Hash of the source of modules / functions / classes, to put in a cache key.

    A module stands for itself and every ``paperlib`` module it uses (:func:`module_closure`).
    Comments, docstrings and formatting are ignored.
    """
    h = hashlib.sha256()
    for obj in objects:
        if isinstance(obj, types.ModuleType):
            for mod in module_closure(obj):
                h.update(mod.__name__.encode() + _normalized_source(mod).encode())
        else:
            h.update(_normalized_source(obj).encode())
    return h.hexdigest()[:16]


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the functions nested in it) loads as globals."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return {n for n in names if isinstance(n, str)}


def _function_version(fn, where: str, seen: set, allowed: list | None = None) -> str:
    """Version of a function: its source, its closure and default values, and the functions of the
    same notebook / module that it calls (recursively). Data it reads from globals raises TypeError."""
    fn = getattr(fn, "__func__", fn)
    if id(fn) in seen:
        return "<recursive>"
    seen = seen | {id(fn)}
    h = hashlib.sha256(_normalized_source(fn).encode())
    if fn.__defaults__:
        _feed(h, list(fn.__defaults__), f"{where} (defaults of {fn.__name__})", seen)
    if fn.__kwdefaults__:
        _feed(h, fn.__kwdefaults__, f"{where} (defaults of {fn.__name__})", seen)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            _feed(h, cell.cell_contents, f"{where}: variable {name!r} of {fn.__name__}", seen)
        except ValueError:  # an empty cell (a variable assigned later)
            pass
    g = fn.__globals__
    for name in sorted(_global_names(fn.__code__)):
        if name not in g:
            continue  # a builtin
        v = g[name]
        if isinstance(v, types.ModuleType):
            if _is_paperlib(v.__name__):
                _require_covered(v, fn, name, allowed)
            continue  # other libraries (torch, numpy, math) are part of the environment
        if isinstance(v, (types.FunctionType, type)) and _is_paperlib(getattr(v, "__module__", None)):
            _require_covered(sys.modules[v.__module__], fn, name, allowed)
            continue
        if isinstance(v, types.FunctionType) and v.__module__ == fn.__module__:
            h.update(name.encode() + _function_version(v, where, seen, allowed).encode())
            continue
        if callable(v) and not isinstance(v, torch.nn.Module):
            continue  # functions and classes of other libraries
        raise TypeError(f"{fn.__name__} reads the global variable {name!r} ({type(v).__name__}); a cached "
                        f"function must get every value it uses as an argument, so that it is part of the key")
    return h.hexdigest()


def _require_covered(mod: types.ModuleType, fn, name: str, allowed) -> None:
    if allowed is None or mod.__name__ in INFRASTRUCTURE:
        return
    if mod.__name__ not in {m.__name__ for m in allowed}:
        raise ValueError(f"{fn.__name__} uses {name!r} from {mod.__name__}, which is not covered by its "
                         f"depends={[m.__name__ for m in allowed]}: add that module to depends")


def memoize(depends, *, name: str | None = None, map_location="cpu"):
    """Decorator: cache the function's results on disk (see the module docstring).

    ``depends``: the ``paperlib`` modules the function relies on (required; the modules those use are
    added). ``name``: the cache folder (default: the function's name). The wrapped function gets a
    ``key(*args, **kwargs)`` method returning the key dict of a call, for tests and inspection.
    """
    if isinstance(depends, types.ModuleType):
        depends = [depends]
    depends = list(depends)
    if not all(isinstance(m, types.ModuleType) and _is_paperlib(m.__name__) for m in depends):
        raise TypeError("depends must be a list of paperlib modules, e.g. depends=[geometry, sampling]")

    def wrap(fn: Callable):
        if not isinstance(fn, types.FunctionType):
            raise TypeError(f"memoize wraps plain functions, got {type(fn).__name__}")
        sig = inspect.signature(fn)
        folder = name or fn.__name__

        def key_of(*args, **kwargs) -> dict:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            closure = module_closure(*depends)
            args_fp = {k: fingerprint(v, f"argument {k!r} of {fn.__name__}") for k, v in bound.arguments.items()}
            return {"function": f"{fn.__module__}.{fn.__qualname__}",
                    "source": _function_version(fn, fn.__name__, set(), closure)[:16],
                    "code": code_version(*closure) if closure else "", "modules": [m.__name__ for m in closure],
                    "args": args_fp}

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return cached(folder, key_of(*args, **kwargs), lambda: fn(*args, **kwargs), map_location=map_location)

        wrapper.key = key_of
        return wrapper

    return wrap


# ----------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------
def entry_dir(name: str, cfg: dict) -> Path:
    """Folder of the cache entry for ``(name, cfg)``; created, with the config written beside."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
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
    """Return ``compute()``, reusing the stored result for the same ``(name, cfg)``.

    ``cfg`` must describe *everything* the result depends on; chapters use :func:`memoize`, which
    builds it. A result that is not finite where it should be is still stored: caching is not judging.
    """
    path = entry_dir(name, cfg) / "result.pt"
    stored = load(path, map_location=map_location)
    if stored is not None and stored.get("config") == json.loads(_canonical(cfg)):
        return stored["value"]
    value = compute()
    save({"config": json.loads(_canonical(cfg)), "value": value}, path)
    return value
