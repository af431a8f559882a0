"""Speed of paperlib.geometry / memorization at CIFAR-10 shapes, against plain matrix products.

    python benchmarks/bench_geometry.py            # d = 3072, n = 1k / 10k / 50k, b = 256 queries
    python benchmarks/bench_geometry.py --quick    # n = 1k / 10k, fewer repetitions
    python benchmarks/bench_geometry.py --device cuda

For each n it prints the best-of-``reps`` wall time of each function and its ratio to the plain
matrix product(s) of the same shape, timed interleaved with it (so that load from other processes
hits both alike):

* ``empirical_denoiser`` (Eq. 2) vs its two products ``x @ data.T`` (b x n) and ``w @ data`` (b x d);
* ``log_posterior_weights`` (Eq. 3, full (b, n) output), ``max_weight_at`` (streamed max_i w_i) and
  ``nearest_neighbors(k=2)`` (exact, float64 re-scoring) vs ``x @ data.T``;
* a per-query Python loop (``softmax(-||data - q||^2 / 2 sigma^2) @ data``, one query at a time) on a
  few queries, extrapolated to ``b``, and how many times slower it is than ``empirical_denoiser``;
* the Monte Carlo curve ``max_posterior_weight`` (n = 1k points x 4 noises, 40 sigmas) vs the two
  products it needs (``points @ data.T`` and ``noise @ data.T``).

Random data in [-1, 1] (the speed does not depend on the values). Torch uses MKL / oneDNN on CPU
(``OPENBLAS_NUM_THREADS`` has no effect; use ``--threads`` or ``OMP_NUM_THREADS``).
Not a test: nothing here is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paperlib import geometry  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def paired(fn, base, device, reps: int, warmup: int = 1):
    """Interleaved timings: (best fn, best base, best/best, median of per-repetition ratios)."""
    for _ in range(warmup):
        fn()
        base()
    tf, tb = [], []
    for _ in range(reps):
        tb.append(_time(base, device))
        tf.append(_time(fn, device))
    ratios = [a / b for a, b in zip(tf, tb)]
    return min(tf), min(tb), min(tf) / min(tb), statistics.median(ratios)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1k and 10k only, 3 repetitions")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ns", default=None, help="comma-separated training-set sizes (default 1000,10000,50000)")
    ap.add_argument("--b", type=int, default=256, help="number of queries")
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--loop-queries", type=int, default=4, help="queries timed in the Python-loop baseline")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ns = [int(v) for v in args.ns.split(",")] if args.ns else ([1000, 10000] if args.quick else [1000, 10000, 50000])
    reps = args.reps or (3 if args.quick else 5)
    b, d, s = args.b, args.d, args.sigma
    gen = torch.Generator(device="cpu").manual_seed(0)
    try:
        import os
        load = " load average %.2f %.2f %.2f," % os.getloadavg()
    except (OSError, AttributeError):
        load = ""
    print(f"{load} device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, float32, d={d}, b={b} queries, sigma={s}, best of {reps}")
    rows = []
    for n in ns:
        data = (torch.rand(n, d, generator=gen) * 2 - 1).to(device)
        x = (torch.rand(b, d, generator=gen) * 2 - 1).to(device)
        w = torch.softmax(torch.randn(b, n, generator=gen), dim=1).to(device)
        mm1 = lambda: x @ data.T  # noqa: E731
        mm2 = lambda: (x @ data.T, w @ data)  # noqa: E731

        t, tb, r, rm = paired(lambda: geometry.empirical_denoiser(x, data, s), mm2, device, reps)
        rows.append((n, "empirical_denoiser", t, "x@data.T + w@data", tb, r, rm))
        t_den = t
        t, tb, r, rm = paired(lambda: geometry.log_posterior_weights(x, data, s), mm1, device, reps)
        rows.append((n, "log_posterior_weights", t, "x@data.T", tb, r, rm))
        t, tb, r, rm = paired(lambda: geometry.max_weight_at(x, data, s), mm1, device, reps)
        rows.append((n, "max_weight_at", t, "x@data.T", tb, r, rm))
        t, tb, r, rm = paired(lambda: geometry.nearest_neighbors(x, data, 2), mm1, device, reps)
        rows.append((n, "nearest_neighbors k=2", t, "x@data.T", tb, r, rm))

        q = args.loop_queries

        def loop():
            outs = []
            for i in range(q):
                d2 = ((data - x[i]) ** 2).sum(dim=1)
                wi = torch.softmax(-d2 / (2 * s * s), dim=0)
                outs.append(wi @ data)
            return torch.stack(outs)
        loop()
        t_loop = min(_time(loop, device) for _ in range(max(2, reps // 2))) * b / q
        rows.append((n, f"per-query Python loop ({q} timed, x{b // q})", t_loop, "empirical_denoiser", t_den,
                     t_loop / t_den, float("nan")))
        del data, x, w

    # Monte Carlo curve: W(sigma) on 1k points x 4 noises, 40 sigmas
    n, m, r_ = 1000, 1000, 4
    data = (torch.rand(n, d, generator=gen) * 2 - 1).to(device)
    sig = torch.logspace(-2.7, 1.9, 40, dtype=torch.float64)
    noise = torch.randn(m * r_, d, generator=gen).to(device)
    g = torch.Generator(device=device).manual_seed(1)  # noise drawn where it is used, as the chapters do
    t, tb, rr, rm = paired(lambda: geometry.max_posterior_weight(data, sig, r_, g, progress=False),
                           lambda: (data @ data.T, noise @ data.T), device, max(2, reps // 2))
    rows.append((n, "max_posterior_weight 1k x 4, 40 sigmas", t, "pts@data.T + noise@data.T", tb, rr, rm))
    t, tb, rr, rm = paired(lambda: geometry.coverage(data, data[:500], sig, r_, g, progress=False),
                           lambda: (data[:500] @ data.T, noise[:2000] @ data.T), device, max(2, reps // 2))
    rows.append((n, "coverage 500 x 4, 40 sigmas", t, "pts@data.T + noise@data.T", tb, rr, rm))

    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[3]) for r in rows)
    print("\n| n | function | time (s) | baseline | baseline (s) | ratio (best/best) | ratio (median paired) |")
    print("|---:|:---|---:|:---|---:|---:|---:|")
    for n, name, t, bname, tb, r, rm in rows:
        med = "" if rm != rm else f"{rm:.2f}"
        print(f"| {n} | {name:<{w1}} | {t:.4f} | {bname:<{w2}} | {tb:.4f} | {r:.2f} | {med} |")


if __name__ == "__main__":
    main()
