"""Command line for the long jobs, outside notebooks: ``python -m paperlib COMMAND ...`` (or ``paperlib``).

  danger-zone  posterior weight and coverage curves of a dataset or an image folder, and its danger zone
  train        train an EDM denoiser (cached by config, resumes after an interruption)
  sample       sample a trained model (same arguments as ``train``) and measure its memorization rate

Every command prints its progress and writes a JSON summary with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import config, data, memorization, regimes, sampling, training


def _images(args) -> torch.Tensor:
    """The training images named by ``--data`` (a dataset name or an image folder), resized to ``--size``."""
    if Path(args.data).is_dir():
        x = data.load_folder(args.data, size=args.size, grayscale=args.grayscale)
        return x[: args.n] if args.n else x
    if args.cls is None:
        x = data.load(args.data, "train", n=args.n)
    else:
        x = data.load(args.data, "train")[data.load_labels(args.data, "train") == args.cls][: args.n]
    if args.grayscale and x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if args.size:
        x = data.resize(x, args.size)
    return x


def _add_data_args(p):
    p.add_argument("data", help="dataset name (cifar10, mnist, fashion-mnist, olivetti) or a folder of images")
    p.add_argument("--n", type=int, default=None, help="number of training images (default: all)")
    p.add_argument("--cls", type=int, default=None, help="keep one class of a labelled dataset (e.g. 1 = CIFAR-10 cars)")
    p.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE")
    p.add_argument("--grayscale", action="store_true", help="convert to one channel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write a JSON summary here")


def _add_train_args(p):
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=16, help="U-Net base channels")
    p.add_argument("--gap", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="gap training: never train on noise levels in [LO, HI] (Sec. 5)")
    p.add_argument("--dummy-class", action="store_true", help="dummy-class baseline of Yoon et al. (2023)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training")


def _train_config(args) -> dict:
    cfg = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
           "gap": list(args.gap) if args.gap else None, "dummy_class": args.dummy_class,
           "network": {**training.DEFAULTS["network"], "model_channels": args.channels}}
    return cfg


def _write(args, summary: dict) -> None:
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


def cmd_danger_zone(args) -> None:
    x = _images(args).flatten(1)
    gen = torch.Generator().manual_seed(args.seed)
    zone = regimes.danger_zone(x.to(config.device()), None, regimes.default_sigmas(args.levels),
                               weight_level=args.weight_level, coverage_level=args.coverage_level,
                               n_noise=args.n_noise, generator=gen)
    print(zone)
    summary = {"n": x.shape[0], "d": x.shape[1], "interval": zone.interval, "crossing": zone.crossing,
               "ddpm_timesteps": None if zone.empty else regimes.ddpm_timesteps(zone),
               "sigmas": zone.sigmas.tolist(), "max_weight": zone.weight.tolist(), "coverage": zone.coverage.tolist()}
    _write(args, summary)


def cmd_train(args) -> None:
    x = _images(args)
    t0 = time.perf_counter()
    _, history = training.train(_train_config(args), x, name="cli", num_threads=args.threads)
    _write(args, {"n": x.shape[0], "shape": list(x.shape[1:]), "folder": history["folder"],
                  "from_cache": history["from_cache"], "train_seconds": history["wall_time"],
                  "this_call_seconds": time.perf_counter() - t0, "final_loss": history["loss"][-1]})


def cmd_sample(args) -> None:
    x = _images(args)
    model, history = training.train(_train_config(args), x, name="cli", num_threads=args.threads)
    gen = torch.Generator().manual_seed(args.seed + 1)
    samples = sampling.sample(model, args.samples, tuple(x.shape[1:]), steps=args.sampling_steps,
                              generator=gen, progress=True)
    rate = memorization.memorization_rate(samples, x.to(samples.device))
    _write(args, {"n": x.shape[0], "samples": args.samples, "memorization_rate": rate,
                  "model_folder": history["folder"]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="paperlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("danger-zone", help="curves W(sigma), C(sigma) and the danger zone of a dataset")
    _add_data_args(p)
    p.add_argument("--levels", type=int, default=40, help="number of noise levels in [0.002, 80]")
    p.add_argument("--n-noise", type=int, default=4, help="noise draws per point")
    p.add_argument("--weight-level", type=float, default=0.5)
    p.add_argument("--coverage-level", type=float, default=0.5)
    p.set_defaults(func=cmd_danger_zone)
    p = sub.add_parser("train", help="train an EDM denoiser (cached; resumes after an interruption)")
    _add_data_args(p)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sample", help="sample a trained model and measure its memorization rate")
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--sampling-steps", type=int, default=18)
    p.set_defaults(func=cmd_sample)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"paperlib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
