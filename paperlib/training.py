"""Training EDM denoisers (Eq. 1), with gap training and the dummy-class baseline (Sec. 5).

``train(config, data)`` trains an EDM-preconditioned :class:`paperlib.networks.UNet` with Adam,
learning-rate warm-up and an EMA of the weights, and returns the EMA denoiser and a history.
Everything is cached under ``paperlib.cache.entry_dir(name, key)`` where the key holds the full
config (defaults filled in), a fingerprint of the data and ``cache.code_version`` of the code that
determines the result. Hence:

- a rerun with the same config and data returns the finished model without training;
- a run that was interrupted (killed, kernel restarted, Ctrl-C) resumes from its last checkpoint,
  and because the checkpoint holds every random-number state (data order, noise levels, noise,
  dropout), the resumed run ends with exactly the weights of an uninterrupted one (on CPU;
  GPU kernels may not be bitwise deterministic);
- a corrupted checkpoint fails its checksum (``cache.load`` returns None) and is skipped: training
  continues from the previous good checkpoint, or from scratch.

Config keys (all optional, :data:`DEFAULTS`): ``seed``, ``steps``, ``batch_size``, ``lr``,
``warmup_steps`` (linear warm-up), ``adam_betas``, ``adam_eps``, ``grad_clip`` (max grad norm or
None), ``ema_halflife`` (in optimizer steps; with ``ema_rampup`` r the half-life used at step t
is ``min(ema_halflife, r t)``, as in EDM) or ``ema_decay`` (a fixed decay instead), ``sigma_data``,
``P_mean``, ``P_std``, ``gap`` (``[lo, hi]``: training noise levels in the gap are rejected,
:func:`paperlib.edm.sample_training_sigmas`), ``dummy_class`` (Yoon et al.: ``dummy_count``
random-noise images, default as many as the data, form a second class and the model is
class-conditional; the returned model generates class 0, the real data), ``dummy_noise``
(``"uniform"`` on [-1, 1] or ``"gaussian"`` N(0, sigma_data^2) pixels), ``network`` (keyword
arguments of :class:`~paperlib.networks.UNet` except the image size, channels and classes,
which come from the data), ``snapshots`` (steps at which EMA snapshots are kept, for
checkpoints-over-training figures; :func:`load_snapshot`), ``precision`` and ``channels_last``
(below).

Mixed precision: ``precision`` is ``"fp32"``, ``"bf16"`` (autocast to bfloat16), ``"fp16"``
(autocast to float16 with dynamic loss scaling, for GPUs without bf16 such as the T4) or
``"auto"`` (the default: bf16 on GPUs that support it, else fp16 on CUDA; fp32 on CPUs, where
bf16 autocast was measured to change too little, see ``book/running.md``). The network runs under
autocast; the preconditioning, the loss, the weights, Adam and the EMA stay in float32. A precision
the device cannot run (fp16 on a CPU, bf16 on a CPU without bf16 instructions) falls back to fp32
with a warning. ``channels_last`` stores the network's activations in NHWC order (faster
convolutions on tensor-core GPUs; measured slower on CPUs). Both change results only at rounding
level, so they enter the cache key only when they are not fp32 / contiguous: the key holds the
*effective* precision on the training device (:func:`effective_precision`), and an fp32 run is
keyed as before these options existed.
"""
from __future__ import annotations

import concurrent.futures
import copy
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import cache, checks, edm, networks
from . import config as _config
from . import progress as _progress

DEFAULTS = {
    "seed": 0,
    "steps": 3000,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 200,
    "adam_betas": [0.9, 0.999],
    "adam_eps": 1e-8,
    "grad_clip": None,
    "ema_halflife": 500,
    "ema_rampup": 0.05,
    "ema_decay": None,
    "sigma_data": 0.5,
    "P_mean": -1.2,
    "P_std": 1.2,
    "gap": None,
    "dummy_class": False,
    "dummy_count": None,
    "dummy_noise": "uniform",
    "network": {
        "model_channels": 16,
        "channel_mult": [1, 2, 2],
        "num_blocks": 2,
        "attn_resolutions": [8],
        "dropout": 0.0,
        "embedding": "positional",
        "channel_mult_emb": 4,
    },
    "snapshots": [],
    "precision": "auto",
    "channels_last": False,
}

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 instructions (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def effective_precision(precision: str, device) -> str:
    """The precision that training with ``precision`` actually uses on ``device`` (``"auto"`` resolved,
    unsupported choices replaced by ``"fp32"``; see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "auto":
            return "bf16" if bf16 else "fp16"
        if precision == "bf16" and not bf16:
            warnings.warn("precision='bf16': this GPU has no bfloat16 units; training in fp32")
            return "fp32"
        return precision
    if precision == "auto" or precision == "fp32":
        return "fp32"
    if device.type == "cpu" and precision == "bf16" and cpu_has_bf16():
        return "bf16"
    warnings.warn(f"precision={precision!r} is not supported on this {device.type} device; training in fp32")
    return "fp32"


def resolve_config(config: dict | None) -> dict:
    """``config`` with every default filled in, checked, as plain JSON types (the cache key's part)."""
    config = dict(config or {})
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    net = dict(config.pop("network", None) or {})
    full = {**copy.deepcopy(DEFAULTS), **config}
    if config.get("ema_decay") is not None and "ema_halflife" not in config:
        full["ema_halflife"] = None
    full["network"] = {**DEFAULTS["network"], **net}
    full = json.loads(json.dumps(full))  # tuples -> lists etc.
    _check_numbers(full)
    if (full["ema_halflife"] is None) == (full["ema_decay"] is None):
        raise ValueError("config: give exactly one of ema_halflife and ema_decay")
    if full["ema_decay"] is not None and not 0 <= full["ema_decay"] < 1:
        raise ValueError(f"config['ema_decay'] must be in [0, 1), got {full['ema_decay']!r}")
    if full["ema_halflife"] is not None and not full["ema_halflife"] > 0:
        raise ValueError(f"config['ema_halflife'] must be > 0, got {full['ema_halflife']!r}")
    if full["gap"] is not None:
        full["gap"] = list(checks.interval(full["gap"], "gap"))
        edm.sample_training_sigmas(1, full["P_mean"], full["P_std"], full["gap"])  # mass check
    if full["dummy_noise"] not in ("uniform", "gaussian"):
        raise ValueError(f"config['dummy_noise'] must be 'uniform' or 'gaussian', got {full['dummy_noise']!r}")
    snaps = full["snapshots"]
    if not all(isinstance(s, int) and 1 <= s <= full["steps"] for s in snaps):
        raise ValueError(f"config['snapshots'] must be steps in [1, steps={full['steps']}], got {snaps!r}")
    full["snapshots"] = sorted(set(snaps))
    if full["precision"] not in PRECISIONS:
        raise ValueError(f"config['precision'] must be one of {PRECISIONS}, got {full['precision']!r}")
    if not isinstance(full["channels_last"], bool):
        raise ValueError(f"config['channels_last'] must be True or False, got {full['channels_last']!r}")
    return full


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_numbers(full: dict) -> None:
    """Types and ranges of the numeric settings (booleans are not integers here; everything finite)."""
    for k in ("steps", "batch_size"):
        if not _is_int(full[k]) or full[k] < 1:
            raise ValueError(f"config[{k!r}] must be a positive integer, got {full[k]!r}")
    for k in ("warmup_steps", "seed"):
        if not _is_int(full[k]) or full[k] < 0:
            raise ValueError(f"config[{k!r}] must be a non-negative integer, got {full[k]!r}")
    for k in ("lr", "adam_eps", "sigma_data", "P_std"):
        if not (_is_num(full[k]) and full[k] > 0):
            raise ValueError(f"config[{k!r}] must be a finite number > 0, got {full[k]!r}")
    if not _is_num(full["P_mean"]):
        raise ValueError(f"config['P_mean'] must be a finite number, got {full['P_mean']!r}")
    b = full["adam_betas"]
    if not (isinstance(b, list) and len(b) == 2 and all(_is_num(v) and 0 <= v < 1 for v in b)):
        raise ValueError(f"config['adam_betas'] must be two numbers in [0, 1), got {b!r}")
    if full["grad_clip"] is not None and not (_is_num(full["grad_clip"]) and full["grad_clip"] > 0):
        raise ValueError(f"config['grad_clip'] must be None or a finite number > 0 (a max gradient norm), "
                         f"got {full['grad_clip']!r}")
    for k in ("ema_halflife", "ema_rampup", "ema_decay"):
        if full[k] is not None and not _is_num(full[k]):
            raise ValueError(f"config[{k!r}] must be None or a finite number, got {full[k]!r}")
    if full["ema_rampup"] is not None and not full["ema_rampup"] > 0:
        raise ValueError(f"config['ema_rampup'] must be None or > 0, got {full['ema_rampup']!r}")
    if not isinstance(full["dummy_class"], bool):
        raise ValueError(f"config['dummy_class'] must be True or False, got {full['dummy_class']!r}")
    if full["dummy_count"] is not None and not (_is_int(full["dummy_count"]) and full["dummy_count"] >= 1):
        raise ValueError(f"config['dummy_count'] must be None or a positive integer, got {full['dummy_count']!r}")
    if not isinstance(full["snapshots"], list) or not all(_is_int(v) for v in full["snapshots"]):
        raise ValueError(f"config['snapshots'] must be a list of integer steps, got {full['snapshots']!r}")
    for k, v in full["network"].items():
        if isinstance(v, bool) and isinstance(DEFAULTS["network"].get(k), int):
            raise ValueError(f"config['network'][{k!r}] must be an integer, got {v!r}")


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss; nothing of the run is cached as finished."""


def make_model(full: dict, data_shape) -> edm.Precond:
    """The EDM-preconditioned U-Net described by a resolved config, for images of ``data_shape = (C, H, W)``."""
    c, h, w = (int(v) for v in data_shape)
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    num_classes = 2 if full["dummy_class"] else 0
    net = networks.UNet(img_resolution=h, in_channels=c, num_classes=num_classes, **full["network"])
    return edm.Precond(net, sigma_data=full["sigma_data"], class_label=0 if num_classes else None)


def _dummy_images(full: dict, data: torch.Tensor) -> torch.Tensor:
    """The fixed random-noise images of the dummy class (Yoon et al.), seeded by the config's seed."""
    count = full["dummy_count"] if full["dummy_count"] is not None else data.shape[0]
    g = torch.Generator().manual_seed(full["seed"] + 7_919)
    shape = (count, *data.shape[1:])
    if full["dummy_noise"] == "uniform":
        return torch.rand(shape, generator=g) * 2 - 1
    return torch.randn(shape, generator=g) * full["sigma_data"]


def _ema_beta(full: dict, step: int) -> float:
    """EMA decay at (1-based) optimizer step ``step``."""
    if full["ema_decay"] is not None:
        return float(full["ema_decay"])
    halflife = full["ema_halflife"]
    if full["ema_rampup"] is not None:
        halflife = min(halflife, full["ema_rampup"] * step)
    return 0.5 ** (1.0 / max(halflife, 1e-8))


def _fingerprint(data: torch.Tensor) -> dict:
    return {"shape": list(data.shape), "sha256": cache.fingerprint(data.detach().to("cpu", torch.float32))[:16]}


def _check_data(data) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or data.ndim != 4:
        raise ValueError(f"data must be a tensor of images (n, C, H, W), got "
                         f"{getattr(data, 'shape', type(data).__name__)}")
    if not data.is_floating_point():
        raise ValueError(f"data must be floating-point images in [-1, 1], got dtype {data.dtype} "
                         "(for uint8 pixels 0..255 use x / 127.5 - 1)")
    edm._check_finite("data", data)
    lo, hi = float(data.amin()), float(data.amax())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"data must be images scaled to [-1, 1], got values in [{lo:.4g}, {hi:.4g}]"
                         + (" (pixels 0..255? use x / 127.5 - 1)" if hi > 2 and lo >= 0 else ""))
    return data.float()


def code_version() -> str:
    """Version of everything that determines a trained model (part of the cache key): this module and
    the paperlib modules it uses (:func:`paperlib.cache.module_closure`: ``edm``, ``networks``)."""
    return cache.code_version(sys.modules[__name__])


def cache_config(config: dict | None, data: torch.Tensor, device=None) -> dict:
    """The cache key's config for training on ``data`` on ``device`` (default
    :func:`paperlib.config.device`): resolved config, data fingerprint, code version. ``precision``
    is replaced by the effective one and left out when fp32, ``channels_last`` left out when False."""
    full = resolve_config(config)
    full["precision"] = effective_precision(full["precision"], device if device is not None else _config.device())
    for k, plain in (("precision", "fp32"), ("channels_last", False)):
        if full[k] == plain:
            del full[k]
    return {"train": full, "data": _fingerprint(_check_data(data)), "code": code_version()}


def _settings(full: dict) -> dict:
    """``full`` with the keys that :func:`cache_config` may leave out filled in again."""
    return {"precision": "fp32", "channels_last": False, **full}


def _next_batch(order: dict, n: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of the next batch: epochs of random permutations (state in ``order``, checkpointed)."""
    parts, need = [], batch_size
    while need:
        if order["pos"] >= n:
            order["perm"], order["pos"] = torch.randperm(n, generator=gen, device=gen.device), 0
        take = order["perm"][order["pos"]:order["pos"] + need]
        parts.append(take)
        order["pos"] += take.numel()
        need -= take.numel()
    return torch.cat(parts)


def _train_steps(model, ema, opt, full, images, labels, gen, order, start: int, scaler=None, dist=None):
    """Optimizer steps ``start + 1 .. steps`` (one Eq. 1 minibatch each), yielding ``(step, loss)`` after each.

    Between two yields the whole state (weights, EMA, Adam, RNGs, data order, loss scale) is that of
    a completed step, so it can be checkpointed there. ``scaler``: the fp16 loss scaler. ``dist``
    (:mod:`paperlib.distributed`): every process draws the whole global batch (same generator) and
    trains on its own equal share of it through ``dist.module`` (which averages the gradients).
    """
    n, bs = images.shape[0], full["batch_size"]
    amp_dtype = _AMP_DTYPES.get(full["precision"])
    forward = dist.module if dist is not None else model
    for step in range(start + 1, full["steps"] + 1):
        idx = _next_batch(order, n, bs, gen)
        sigma = edm.sample_training_sigmas(bs, full["P_mean"], full["P_std"], full["gap"], generator=gen,
                                           device=images.device)
        noise = torch.randn((bs, *images.shape[1:]), generator=gen, device=gen.device).to(images.device)
        if dist is not None:
            idx, sigma, noise = dist.share(idx), dist.share(sigma), dist.share(noise)
        x0 = images[idx]
        y = labels[idx] if labels is not None else None
        if full["channels_last"]:
            x0, noise = (t.contiguous(memory_format=torch.channels_last) for t in (x0, noise))
        for group in opt.param_groups:
            group["lr"] = full["lr"] * min(1.0, step / full["warmup_steps"]) if full["warmup_steps"] else full["lr"]
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = edm.edm_loss(forward, x0, sigma, full["sigma_data"], noise=noise, class_labels=y)
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None and full["grad_clip"] is not None:
            scaler.unscale_(opt)
        if full["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), full["grad_clip"])
        if scaler is not None:
            scaler.step(opt)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            opt.step()
        beta = _ema_beta(full, step)
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(ema.buffers(), model.buffers()):
                b_ema.copy_(b)
        value = float(dist.mean(loss.detach()) if dist is not None else loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"training diverged at step {step}: the loss is {value} (lr={full['lr']}, "
                                   f"grad_clip={full['grad_clip']}); lower config['lr'] or set config['grad_clip']. "
                                   "Nothing of this run was cached as finished.")
        yield step, value


def _ckpt_steps(folder: Path) -> list[int]:
    return sorted((int(p.stem.split("_")[1]) for p in folder.glob("ckpt_*.pt")), reverse=True)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".sha256")):
        p.unlink(missing_ok=True)


def _eval_copy(model: edm.Precond) -> edm.Precond:
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_snapshot(config: dict | None, data: torch.Tensor, step: int, *, name: str = "edm", device=None):
    """The EMA model saved at ``step`` (one of ``config['snapshots']`` or the last step) of a
    :func:`train` run, in eval mode; ``None`` if it has not been trained that far."""
    device = torch.device(device) if device is not None else _config.device()
    key_cfg = cache_config(config, data, device)
    full = _settings(key_cfg["train"])
    folder = cache.entry_dir(name, key_cfg)
    if step == full["steps"]:
        stored = cache.load(folder / "final.pt")
        state = stored["ema"] if stored is not None and stored.get("cfg") == key_cfg else None
    else:
        stored = cache.load(folder / f"snapshot_{step:08d}.pt")
        state = stored["ema"] if stored is not None and stored.get("cfg") == key_cfg else None
    if state is None:
        return None
    model = make_model(full, data.shape[1:])
    model.load_state_dict(state)
    return _eval_copy(model.to(device))


def train(config: dict | None, data: torch.Tensor, *, name: str = "edm", device=None, checkpoint_every: int = 500,
          progress: bool = True, callback: Callable[[int, float], None] | None = None,
          save_on_interrupt: bool = True, keep_checkpoints: bool = False, num_threads: int | None = None,
          dist=None):
    """Train an EDM denoiser on ``data`` (``(n, C, H, W)`` in [-1, 1]); see the module docstring.

    Returns ``(ema_model, history)``: the EMA :class:`~paperlib.edm.Precond` in eval mode on
    ``device`` (default :func:`paperlib.config.device`) and a dict with ``loss`` (per step),
    ``wall_time`` (seconds spent training, summed over resumed sessions), ``steps_per_s``,
    ``num_params``, ``snapshots`` (steps with a saved EMA snapshot), ``from_cache`` (no training
    was needed), ``resumed_from`` (the checkpoint step this call started from) and ``folder``.

    A checkpoint (model, EMA, Adam state, all RNG states, loss history) is written every
    ``checkpoint_every`` steps (the two newest are kept) and, with ``save_on_interrupt``, also when
    training is stopped: Ctrl-C (SIGINT, e.g. a Jupyter kernel interrupt) is held until the current
    step is complete, that step is checkpointed, then ``KeyboardInterrupt`` is raised. ``callback(step, loss)``
    runs after every step. Checkpoints are deleted once the final model is stored, unless
    ``keep_checkpoints``. ``num_threads`` sets torch's CPU threads while training (then restores
    them): on a shared 2-core machine 1 thread can be ~10x faster than 2 busy-waiting ones.
    ``dist`` is set by :func:`paperlib.distributed.train` (data-parallel training; only its rank 0
    writes checkpoints and the final model, in the same folder and format as a single process).
    """
    data = _check_data(data)
    device = torch.device(device) if device is not None else _config.device()
    key_cfg = cache_config(config, data, device)
    full = _settings(key_cfg["train"])
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    folder = cache.entry_dir(name, key_cfg)

    final = cache.load(folder / "final.pt")
    if final is not None and final.get("cfg") == key_cfg:
        model = make_model(full, data.shape[1:])
        model.load_state_dict(final["ema"])
        history = {**final["history"], "from_cache": True, "resumed_from": None, "folder": str(folder)}
        return _eval_copy(model.to(device)), history

    state = None
    for s in _ckpt_steps(folder):
        state = cache.load(folder / f"ckpt_{s:08d}.pt")
        if state is not None and state.get("cfg") == key_cfg:
            break
        warnings.warn(f"training checkpoint {folder / f'ckpt_{s:08d}.pt'} is unusable; trying an older one")
        state = None

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    # Ctrl-C is held to the end of the current step (then checkpointed), or of the final save
    with _HoldInterrupt(save_on_interrupt and dist is None) as hold:
        try:
            model, ema, losses, wall, start = _run(
                full, key_cfg, data, folder, device, state, fork_devices, name, checkpoint_every, progress,
                callback, save_on_interrupt, dist, hold)
        finally:
            torch.set_num_threads(threads_before)
        history = {
            "loss": losses, "wall_time": wall, "steps_per_s": full["steps"] / wall if wall > 0 else float("nan"),
            "num_params": networks.count_parameters(model), "snapshots": list(full["snapshots"]),
        }
        if dist is None or dist.rank == 0:
            cache.save({"cfg": key_cfg, "ema": ema.state_dict(), "model": model.state_dict(), "history": history},
                       folder / "final.pt")
            if not keep_checkpoints:
                for s in _ckpt_steps(folder):
                    _remove(folder / f"ckpt_{s:08d}.pt")
    if dist is not None:
        dist.barrier()
    history = {**history, "from_cache": False, "resumed_from": start or None, "folder": str(folder)}
    return _eval_copy(ema), history


_STOP = None  # in a worker process of train_many: the event that says to start no further job


def _init_worker(stop) -> None:
    global _STOP
    _STOP = stop


def _train_job(cfg: dict, x: torch.Tensor, kw: dict):
    if _STOP is not None and _STOP.is_set():
        raise KeyboardInterrupt("train_many was stopped before this training started")
    return train(cfg, x, **kw)


def train_many(jobs, *, workers: int = 1, **kwargs) -> list:
    """:func:`train` on each ``(config, data)`` of ``jobs`` with keyword arguments ``kwargs`` (a job
    ``(config, data, job_kwargs)`` overrides some, e.g. its ``name``), returning the results in order;
    on a CPU, ``workers`` trainings at a time in separate processes.

    On a 2-core machine two one-thread processes (``num_threads=1``) use both cores without the
    threads of one process waiting on each other; the models are those of training one after the
    other (CPU training is deterministic). When the caller is interrupted (Ctrl-C) or a training
    fails, trainings not yet started are cancelled and the running ones are interrupted, so each
    checkpoints its last step and a rerun resumes it."""
    jobs = [(job[0], job[1], {**kwargs, **(job[2] if len(job) > 2 else {})}) for job in jobs]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers == 1 or len(jobs) < 2 or any(torch.device(kw.get("device") or _config.device()).type != "cpu"
                                            for _, _, kw in jobs):
        return [train(cfg, x, **kw) for cfg, x, kw in jobs]
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()  # set when stopping: a job a worker has already taken from the queue does not start
    pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                                                  initializer=_init_worker, initargs=(stop,))
    try:
        futures = [pool.submit(_train_job, cfg, x, kw) for cfg, x, kw in jobs]
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        procs = list((pool._processes or {}).values())  # the executor has no public list of its processes
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # each running training finishes its step, checkpoints and stops
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
        raise
    finally:
        pool.shutdown()


class _HoldInterrupt:
    """While a single-process run trains in the main thread, the first SIGINT (Ctrl-C, a Jupyter
    kernel interrupt) is held until the current step is complete, so that the run can checkpoint that
    step and then raise ``KeyboardInterrupt`` (or, after the last step, until the final model is
    saved); a second SIGINT interrupts at once. A process that ignores SIGINT keeps ignoring it."""

    def __init__(self, active: bool):
        self.active, self.requested, self.previous = active, False, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if self.active and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous not in (signal.SIG_IGN, None):
                self.previous = previous
                signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, exc_type, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.requested and exc_type is None:  # the run finished during the held Ctrl-C: stop now
            raise KeyboardInterrupt


def _run(full, key_cfg, data, folder, device, state, fork_devices, name, checkpoint_every, progress, callback,
         save_on_interrupt, dist=None, hold=None):
    """The training session of :func:`train` (from ``state`` or scratch); returns model, EMA, losses, wall, start."""
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(full["seed"])  # model initialisation, then dropout
        model = make_model(full, data.shape[1:]).to(device)
        if full["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        ema = copy.deepcopy(model)
        for p in ema.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam(model.parameters(), lr=full["lr"], betas=tuple(full["adam_betas"]),
                               eps=full["adam_eps"])
        gen = torch.Generator(device=device).manual_seed(full["seed"])
        images = data.to(device)
        labels = None
        if full["dummy_class"]:
            dummy = _dummy_images(full, data).to(device)
            labels = torch.cat([torch.zeros(len(images), dtype=torch.long), torch.ones(len(dummy), dtype=torch.long)])
            images, labels = torch.cat([images, dummy]), labels.to(device)
        order = {"perm": None, "pos": images.shape[0]}
        scaler = torch.amp.GradScaler(device.type) if full["precision"] == "fp16" else None
        losses: list[float] = []
        wall, start = 0.0, 0
        if state is not None:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            order = {"perm": state["perm"].to(device) if state["perm"] is not None else None, "pos": state["pos"]}
            losses, wall, start = list(state["loss"]), float(state["wall"]), int(state["step"])
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
        model.train()
        writer = dist is None or dist.rank == 0  # the process that writes checkpoints
        if dist is not None:
            dist.attach(model)
        ema.eval()

        saved = {"step": start}
        t0 = time.perf_counter()

        def save_checkpoint(step: int) -> None:
            saved["step"] = step
            if not writer:
                return
            cache.save({
                "cfg": key_cfg, "step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "perm": order["perm"], "pos": order["pos"], "loss": losses,
                "wall": wall + time.perf_counter() - t0,
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
            }, folder / f"ckpt_{step:08d}.pt")
            for old in _ckpt_steps(folder)[2:]:
                _remove(folder / f"ckpt_{old:08d}.pt")

        if start and progress and writer:
            _progress.note(f"training {name}: resuming from the checkpoint at step {start:,} of {full['steps']:,}")
        bar = _progress.bar(total=full["steps"], initial=start, desc=f"training {name}",
                            disable=not (progress and writer), dynamic_ncols=True)
        done, clean = start, True  # `clean`: the state is that of the completed step `done`
        steps = _train_steps(model, ema, opt, full, images, labels, gen, order, start, scaler, dist)
        try:
            while True:
                clean = False
                try:
                    done, loss = next(steps)
                except StopIteration:
                    clean = True
                    break
                losses.append(loss)
                clean = True
                if done % checkpoint_every == 0 and done < full["steps"]:
                    save_checkpoint(done)
                if done in full["snapshots"] and done < full["steps"] and writer:
                    cache.save({"cfg": key_cfg, "step": done, "ema": ema.state_dict()},
                               folder / f"snapshot_{done:08d}.pt")
                bar.update(1)
                if done % 25 == 0 or done == full["steps"]:
                    bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
                if callback is not None:
                    callback(done, loss)
                if hold is not None and hold.requested and done < full["steps"]:  # Ctrl-C in this step: keep it
                    raise KeyboardInterrupt
        except BaseException:
            # Keep the finished steps when stopped between steps (Ctrl-C, held to the end of its
            # step; a callback raising); an exception inside an update leaves a half-done step.
            if save_on_interrupt and clean and len(losses) == done and saved["step"] < done < full["steps"]:
                save_checkpoint(done)
            raise
        finally:
            bar.close()

        wall += time.perf_counter() - t0
    return model, ema, losses, wall, start
