"""Trained models that several chapters share, with their settings per profile.

Section 3's two EDM denoisers (chapter 02: EDM-small on the first ``n_small`` CIFAR-10 training images,
EDM-large on the first ``n_large``) are also studied by the local-coverage chapter, so their recipe
lives here, in one place: :data:`EMPIRICAL` holds the settings of every profile and
:func:`empirical_models` trains them (or loads them from the cache: training is keyed by config, data
and code, see :mod:`paperlib.training`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import config, data, training

_SMALL_UNET = dict(model_channels=16, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[8])
_DDPMPP = dict(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16])

#: Section 3's models per profile: image resolution, training-set sizes, steps and the U-Net.
EMPIRICAL = dict(
    smoke=dict(res=8, n_small=16, n_large=64, steps_small=40, steps_large=40, batch_size=16, lr=1e-3,
               warmup=10, ema_halflife=20, network=dict(model_channels=8, channel_mult=[1, 2], num_blocks=1,
                                                        attn_resolutions=[]), threads=2),
    cpu=dict(res=16, n_small=64, n_large=1000, steps_small=8000, steps_large=3000, batch_size=64, lr=1e-3,
             warmup=200, ema_halflife=500, network=_SMALL_UNET, threads=2),
    # gpu: one Colab session, <= 45 min for the whole chapter on a T4 (sizing in book/running.md): a 1.5M-parameter
    # U-Net at 32x32 (2.2 GFLOP per image and training step), 200 memorized images seen 3,200 times each.
    gpu=dict(res=32, n_small=200, n_large=50_000, steps_small=5_000, steps_large=2_500, batch_size=128, lr=1e-3,
             warmup=500, ema_halflife=500, network=dict(model_channels=32, channel_mult=[1, 2, 2], num_blocks=2,
                                                        attn_resolutions=[16]), threads=None),
    # paper: EDM's CIFAR-10 recipe (Karras et al. 2022, the paper's ref. [12]): DDPM++ (51M parameters here, 56M in
    # EDM), dropout 0.13, batch 512, lr 1e-3, 200M training images (10M of warm-up), EMA half-life 500k images.
    # No augmentation (EDM's non-leaky augmentation is not implemented). ~65 H100-hours per model in fp32; use
    # several GPUs: torchrun --nproc_per_node=8 -m paperlib.distributed --profile paper.
    paper=dict(res=32, n_small=1000, n_large=50_000, steps_small=390_625, steps_large=390_625, batch_size=512,
               lr=1e-3, warmup=19_531, ema_halflife=977, network=dict(_DDPMPP, dropout=0.13), threads=None),
)


def _settings(profile: str | None) -> dict:
    name = profile or config.profile()
    if name not in EMPIRICAL:
        raise ValueError(f"profile must be one of {tuple(EMPIRICAL)}, got {name!r}")
    return EMPIRICAL[name]


def empirical_data(profile: str | None = None, n_test: int | None = None):
    """``(X_small, X_large, X_test)``: the first ``n_small`` / ``n_large`` CIFAR-10 training images and
    the first ``n_test`` test images, at the profile's resolution (the images the models saw)."""
    P = _settings(profile)

    def load(split, n):
        x = data.load("cifar10", split, n=n)
        return F.avg_pool2d(x, 32 // P["res"]) if P["res"] < 32 else x

    return load("train", P["n_small"]), load("train", P["n_large"]), load("test", n_test)


def empirical_recipe(profile: str | None = None, which: str = "small", seed: int = 0) -> dict:
    """The training config (:func:`paperlib.training.train`) of EDM-small or EDM-large."""
    P = _settings(profile)
    if which not in ("small", "large"):
        raise ValueError(f"which must be 'small' or 'large', got {which!r}")
    return dict(steps=P[f"steps_{which}"], batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"],
                ema_halflife=P["ema_halflife"], network=P["network"], seed=seed)


def empirical_models(profile: str | None = None, *, device=None, seeds=(0,), progress: bool = True) -> dict:
    """Train (or load) Section 3's models: ``{("small" | "large", seed): (model, history)}``."""
    P = _settings(profile)
    X_small, X_large, _ = empirical_data(profile, n_test=1)
    device = torch.device(device) if device is not None else config.device()
    out = {}
    for which, x in (("small", X_small), ("large", X_large)):
        for seed in seeds:
            out[which, seed] = training.train(empirical_recipe(profile, which, seed), x, name=f"02_edm_{which}",
                                              device=device, num_threads=P["threads"], progress=progress)
    return out
