"""Command line for the long jobs, outside notebooks: ``python -m paperlib COMMAND ...`` (or ``paperlib``).

  danger-zone  posterior weight and coverage curves of a dataset or an image folder, and its danger zone
  train        train an EDM denoiser (cached by config, resumes after an interruption)
  sample       sample a trained model (same arguments as ``train``) and measure its memorization rate

Every command prints its progress and writes a JSON summary with ``--out``.

Settings come from the flags only: the CLI does not use profiles (``PAPERLIB_PROFILE``, if set, is
still checked, so that a typo is reported). ``PAPERLIB_DATA``, ``PAPERLIB_CACHE`` and
``PAPERLIB_DEVICE`` are used and checked before any computation, as is ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from . import config, data, memorization, regimes, sampling, training


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {v}")
        return v
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = True, high_open: bool = True):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            lb, hb = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {lb}{low:g}, {high:g}{hb}, got {text!r}")
        return v
    parse.__name__ = "number"
    return parse


def _is_folder_argument(text: str) -> bool:
    return Path(text).expanduser().is_dir()


def _images(args) -> torch.Tensor:
    """The training images named by ``--data`` (a dataset name or an image folder), resized to ``--size``."""
    if _is_folder_argument(args.data):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = data.load_folder(args.data, size=args.size, grayscale=args.grayscale)
        for w in caught:
            print(f"paperlib: warning: {w.message}", file=sys.stderr)
        return x[: args.n] if args.n else x
    if args.cls is None:
        x = data.load(args.data, "train", n=args.n)
    else:
        labels = data.load_labels(args.data, "train")
        if not int(labels.min()) <= args.cls <= int(labels.max()):
            raise ValueError(f"--cls {args.cls}: {args.data} has classes {int(labels.min())}..{int(labels.max())}")
        x = data.load(args.data, "train")[labels == args.cls][: args.n]
    if args.grayscale and x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if args.size:
        x = data.resize(x, args.size)
    return x


def _add_data_args(p):
    p.add_argument("data", help="dataset name (cifar10, mnist, fashion-mnist, olivetti) or a folder of images")
    p.add_argument("--n", type=_int_at_least(1), default=None, help="number of training images (default: all)")
    p.add_argument("--cls", type=_int_at_least(0), default=None,
                   help="keep one class of a labelled dataset (e.g. 1 = CIFAR-10 cars); not for folders")
    p.add_argument("--size", type=_int_at_least(1), default=None,
                   help="resize images to SIZE x SIZE (area average down, bilinear up: data.resize)")
    p.add_argument("--grayscale", action="store_true", help="convert to one channel")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", type=Path, default=None, help="write a JSON summary here (checked before computing)")


def _add_train_args(p):
    p.add_argument("--steps", type=_int_at_least(1), default=3000)
    p.add_argument("--batch-size", type=_int_at_least(1), default=64)
    p.add_argument("--lr", type=_float_in(0.0, math.inf), default=1e-3)
    p.add_argument("--channels", type=_int_at_least(1), default=16, help="U-Net base channels")
    p.add_argument("--gap", type=_float_in(0.0, math.inf), nargs=2, default=None, metavar=("LO", "HI"),
                   help="gap training: never train on noise levels in [LO, HI] (Sec. 5)")
    p.add_argument("--dummy-class", action="store_true", help="dummy-class baseline of Yoon et al. (2023)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="CPU threads for training")


def _preflight(args) -> None:
    """Check everything that can be checked before computing: the data argument, --out, the environment."""
    from . import config

    dataset_names = tuple(data.COPIES)
    if _is_folder_argument(args.data):
        if args.cls is not None:
            raise ValueError(f"--cls needs a labelled dataset ({', '.join(dataset_names)}), not the folder {args.data!r}")
        if args.data in dataset_names:
            print(f"paperlib: note: {args.data!r} is a local folder, so it is used instead of the {args.data} dataset "
                  f"(run from another directory to use the dataset)", file=sys.stderr)
    elif args.data not in dataset_names:
        if any(c in args.data for c in "/\\.~") or Path(args.data).expanduser().exists():
            raise ValueError(f"folder {args.data!r} does not exist (or is not a folder)")
        raise ValueError(f"{args.data!r} is neither a dataset ({', '.join(dataset_names)}) nor a folder of images")
    if args.out is not None:
        out = args.out.expanduser()
        if out.is_dir():
            raise ValueError(f"--out {str(args.out)!r} is a directory; give a file name (e.g. {out / 'summary.json'})")
        if not out.parent.is_dir():
            raise ValueError(f"--out {str(args.out)!r}: the folder {str(out.parent)!r} does not exist")
        if not os.access(out.parent, os.W_OK):
            raise ValueError(f"--out {str(args.out)!r}: the folder {str(out.parent)!r} is not writable")
    if os.environ.get("PAPERLIB_PROFILE", "").strip():
        config.profile()  # raises naming PAPERLIB_PROFILE; the CLI itself does not use profiles
    config.device()  # raises naming PAPERLIB_DEVICE
    for var, get in (("PAPERLIB_CACHE", config.cache_dir), ("PAPERLIB_DATA", config.data_dir)):
        folder = get()
        if var == "PAPERLIB_CACHE":
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"{var}={str(folder)!r}: cannot create the folder ({exc.strerror})") from None
            if not os.access(folder, os.W_OK):
                raise ValueError(f"{var}={str(folder)!r} is not writable")


def _train_config(args) -> dict:
    cfg = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
           "gap": list(args.gap) if args.gap else None, "dummy_class": args.dummy_class,
           "network": {**training.DEFAULTS["network"], "model_channels": args.channels}}
    return cfg


def _write(args, summary: dict) -> None:
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.expanduser().write_text(json.dumps(summary, indent=1))


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
    p.add_argument("--levels", type=_int_at_least(2), default=40, help="number of noise levels in [0.002, 80]")
    p.add_argument("--n-noise", type=_int_at_least(1), default=4, help="noise draws per point")
    p.add_argument("--weight-level", type=_float_in(0.0, 1.0), default=0.5)
    p.add_argument("--coverage-level", type=_float_in(0.0, 1.0), default=0.5)
    p.set_defaults(func=cmd_danger_zone)
    p = sub.add_parser("train", help="train an EDM denoiser (cached; resumes after an interruption)")
    _add_data_args(p)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sample", help="sample a trained model and measure its memorization rate")
    _add_data_args(p)
    _add_train_args(p)
    p.add_argument("--samples", type=_int_at_least(1), default=256)
    p.add_argument("--sampling-steps", type=_int_at_least(2), default=18, help="EDM sampler steps (>= 2)")
    p.set_defaults(func=cmd_sample)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "gap", None) is not None and not args.gap[0] < args.gap[1]:
            raise ValueError(f"--gap LO HI needs LO < HI, got {args.gap[0]:g} {args.gap[1]:g}")
        _preflight(args)
        args.func(args)
    except (ValueError, FileNotFoundError, training.TrainingDiverged) as exc:
        print(f"paperlib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
