"""Training and sampling throughput of the training chapters' U-Nets, at the active profile.

    PAPERLIB_PROFILE=gpu python benchmarks/bench_training.py --steps 200

The settings are read from each chapter's settings cell (the code cell that calls
``config.choose``), so they are the chapter's own. For every network the script trains ``--steps``
steps with :func:`paperlib.training.train` (the real loop: EMA, checkpoints, data on the device)
into a throw-away cache, then times one Heun sampling pass (18 steps, 35 network evaluations) of
``--samples`` images. It prints steps/s and images/s, and the time the chapter's training steps
would take at that rate: an extrapolation from a short run, not a measured chapter time.

Every network is timed in each precision / memory-layout variant the device supports (fp32, bf16,
fp16 with loss scaling, each contiguous or channels-last: ``training``'s ``precision`` and
``channels_last`` keys), interleaved over ``--rounds`` rounds, and reported as a speed-up over the
fp32 baseline *of the same run*, so that load from other jobs or clock boosts hit all alike. On CPUs
the default clock is this process's CPU time (robust to a loaded machine).

    python benchmarks/bench_training.py --only 02 --steps 30 --rounds 2 --samples 0   # CPU: fp32 vs bf16
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def chapter_settings(stem: str) -> dict:
    """``P`` of a chapter notebook at the active profile (its settings cell, executed)."""
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    cell = next(c for c in cells if "config.choose(" in c)
    ns: dict = {}
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(io.StringIO()):  # the cell prints its settings
        exec(compile(cell, f"{stem}:settings", "exec"), ns)  # imports, report.start (throw-away cache), P = ...
    torch.set_num_threads(threads)  # a settings cell may set the chapter's threads: keep the benchmark's
    return ns["P"]


def recipes() -> list[dict]:
    """(label, training config, image resolution, data channels, steps the chapter trains in all)."""
    p2, p6 = chapter_settings("02_empirical"), chapter_settings("06_gap_training")
    base2 = dict(batch_size=p2["batch_size"], lr=p2["lr"], warmup_steps=p2["warmup"], ema_halflife=p2["ema_halflife"],
                 network=p2["network"])
    base6 = dict(batch_size=p6["batch_size"], warmup_steps=p6["warmup"], ema_halflife=p6["ema_halflife"])
    n_face_runs = 1 + len(p6["sweep"])  # baseline + one gap per sweep fraction (06, cell "RUNS")
    return [
        dict(label="02 EDM-small/large U-Net", cfg=base2, res=p2["res"], channels=3,
             chapter_steps=p2["steps_small"] + p2["steps_large"]),
        dict(label="06 cars U-Net (x4 runs)", cfg=dict(base6, network=p6["network"]), res=p6["res"], channels=3,
             chapter_steps=4 * p6["steps"]),
        dict(label="06 cars U-Net, dummy class", cfg=dict(base6, network=p6["network"], dummy_class=True),
             res=p6["res"], channels=3, chapter_steps=0),
        dict(label=f"06 faces U-Net (x{n_face_runs} runs)", cfg=dict(base6, network=p6["faces_network"]),
             res=p6["res"], channels=1, chapter_steps=n_face_runs * p6["faces_steps"]),
    ]


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


#: (precision, channels_last) variants; the first is the baseline every ratio is taken against.
VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True), ("fp16", False), ("fp16", True)]


def supported(dev, precision: str) -> bool:
    """Whether ``precision`` runs as such on ``dev`` (no fallback to fp32)."""
    from paperlib import training
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return training.effective_precision(precision, dev) == precision


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="training steps timed per network and variant")
    ap.add_argument("--samples", type=int, default=1024, help="images in the timed sampling pass (0: none)")
    ap.add_argument("--only", nargs="+", default=None, help="labels (prefixes, e.g. 02 06) of the networks to time")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="precision[+cl] variants, e.g. fp32 bf16 fp16+cl (default: all the device runs)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds over the variants (best is kept)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default=None,
                    help="wall time (default on GPUs) or this process's CPU time (default on CPUs: robust to load)")
    ap.add_argument("--out", type=Path, default=None, help="append the rows as JSON lines to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="paperlib-bench-") as tmp:
        os.environ["PAPERLIB_CACHE"] = tmp
        from paperlib import config, sampling, training
        dev = config.device()
        name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        clock_name = args.clock or ("wall" if dev.type == "cuda" else "cpu")
        clock = time.perf_counter if clock_name == "wall" else time.process_time
        variants = VARIANTS if args.variants is None else [
            (v.split("+")[0], v.endswith("+cl")) for v in args.variants]
        if variants[0] != ("fp32", False):
            variants = [("fp32", False)] + [v for v in variants if v != ("fp32", False)]
        variants = [v for v in variants if supported(dev, v[0])]
        if dev.type == "cpu":
            variants = [v for v in variants if v[0] != "fp16"]
        print(f"profile {config.profile()}, device {name}, {clock_name} clock, variants "
              f"{', '.join(p + ('+cl' if cl else '') for p, cl in variants)}")
        rows = []
        for r in recipes():
            if args.only and not any(r["label"].startswith(o) for o in args.only):
                continue
            n_data = max(2 * r["cfg"]["batch_size"], 256)
            data = torch.rand(n_data, r["channels"], r["res"], r["res"], generator=torch.Generator().manual_seed(0)) * 2 - 1
            best: dict = {}
            for round_ in range(args.rounds):
                for prec, cl in variants:
                    cfg = dict(r["cfg"], precision=prec, channels_last=cl)
                    # a short untimed run pays for CUDA/cuDNN start-up, then the timed run starts from scratch
                    training.train(dict(cfg, steps=5, warmup_steps=1, seed=100 + round_), data, name="bench_warmup",
                                   device=dev, progress=False)
                    sync()
                    t0 = clock()
                    model, hist = training.train(dict(cfg, steps=args.steps, seed=round_), data, name="bench",
                                                 device=dev, checkpoint_every=10 ** 9, progress=False)
                    sync()
                    t = clock() - t0
                    best[prec, cl] = min(best.get((prec, cl), float("inf")), t)
            t_sample = float("nan")
            if args.samples:
                sampling.sample(model, 8, data.shape[1:], generator=torch.Generator().manual_seed(0))  # warm-up
                sync()
                t0 = clock()
                sampling.sample(model, args.samples, data.shape[1:], generator=torch.Generator().manual_seed(0))
                sync()
                t_sample = clock() - t0
            base = best[variants[0]]
            for (prec, cl), t in best.items():
                variant = prec + ("+cl" if cl else "")
                row = dict(label=r["label"], variant=variant, device=name, clock=clock_name, params=hist["num_params"],
                           res=r["res"], batch_size=r["cfg"]["batch_size"], steps_per_s=round(args.steps / t, 2),
                           images_per_s=round(args.steps * r["cfg"]["batch_size"] / t, 1),
                           speedup_vs_fp32=round(base / t, 3), sample_s=round(t_sample, 2), samples=args.samples,
                           chapter_steps=r["chapter_steps"],
                           chapter_train_h=round(r["chapter_steps"] / (args.steps / t) / 3600, 2))
                rows.append(row)
                print(f"{row['label']:30s} {variant:8s} {row['params'] / 1e6:6.2f}M params  {row['res']}px  "
                      f"batch {row['batch_size']}: {row['steps_per_s']:7.2f} steps/s ({row['images_per_s']:.0f} img/s), "
                      f"x{row['speedup_vs_fp32']:.2f} vs fp32;  {row['chapter_steps']:,} chapter steps -> "
                      f"{row['chapter_train_h']:.2f} h", flush=True)
            if args.samples:
                print(f"{'':30s} {args.samples} samples (18 Heun steps, fp32) in {t_sample:.1f} s", flush=True)
            del model
        if args.out:
            with open(args.out, "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
