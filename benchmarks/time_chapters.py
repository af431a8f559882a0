"""Time the cold book build chapter by chapter (the run-time table of book/running.md).

    python benchmarks/time_chapters.py                                 # every chapter, cpu profile, cold
    PAPERLIB_PROFILE=gpu python benchmarks/time_chapters.py 03 04 05 --out timed/
    python benchmarks/time_chapters.py --jobs 2                        # as `make book JOBS=2` runs them

Each chapter is executed exactly as `make book` executes it (``book/build.py``: nbclient in a worker
process, working directory ``notebooks/``, progress in the terminal, no cell timeout, the stall
detector), by default in a fresh temporary result cache, so the times are cold (``--cache DIR`` reuses
one: a warm rebuild). Writes to ``--out``:

- ``times.md``: the table (date, machine, profile, load average before and after, one row per chapter,
  the wall time of all chapters), ready to paste into book/running.md;
- ``times.jsonl``: one JSON line per chapter (appended), with profile, device, seconds, status, error;
- the executed notebooks, and each chapter's scoreboard records with the device, time and commit as
  ``<chapter>.records.json`` (the archived GPU results of the scoreboard, ``book/gpu_records/``, are
  such files).

A failing chapter does not stop the others. The load average is printed because the times of a
shared machine are not those of an idle one: compare chapters within one run, and rerun on an idle
machine for the table of record.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({build.machine()})" if platform.system() == "Linux" else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def commit() -> str:
    """The commit being run: ``PAPERLIB_COMMIT`` if set (a copied tree may carry a stale .git), else git's."""
    if os.environ.get("PAPERLIB_COMMIT"):
        return os.environ["PAPERLIB_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_records(row: dict, cache: Path, profile: str, out: Path) -> None:
    """Copy the chapter's scoreboard records of this run to ``out``, with where and when it ran."""
    src = cache / "scoreboard" / profile / f"{row['chapter']}.json"
    if row["status"] == "ok" and src.exists():
        doc = json.loads(src.read_text())
        doc["run"] = {"device": row["device"], "seconds": row["seconds"], "commit": commit()}
        (out / f"{row['chapter']}.records.json").write_text(json.dumps(doc, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="*", help="chapter-name prefixes, e.g. 03 04 (default: every chapter)")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "timed", help="folder for the table, notebooks, records")
    ap.add_argument("--cache", type=Path, default=None,
                    help="PAPERLIB_CACHE for the run (default: a fresh temporary folder, i.e. cold times)")
    ap.add_argument("--jobs", type=int, default=1, help="chapters at a time (as `make book JOBS=...`)")
    ap.add_argument("--stall-minutes", type=float, default=10.0)
    ap.add_argument("--silent-minutes", type=float, default=60.0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    profile = os.environ.get("PAPERLIB_PROFILE") or ("gpu" if "cuda" in device_name().lower() else "cpu")
    chapters = build.select(args.chapters, build.toc_chapters())
    device = device_name()
    with tempfile.TemporaryDirectory(prefix="paperlib-timing-") as tmp:
        cache = (args.cache or Path(tmp)).resolve()
        env = dict(os.environ, PAPERLIB_PROFILE=profile, PAPERLIB_CACHE=str(cache))
        meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": device,
                "profile": profile, "jobs": args.jobs, "load_before": build.loadavg(),
                "cold": build.cache_state(cache) is None}
        t0 = time.perf_counter()
        worker_args = [f"--stall-minutes={args.stall_minutes}", f"--silent-minutes={args.silent_minutes}",
                       "--progress-every=30", "--heartbeat-minutes=2"]
        rows = build.execute(chapters, args.out, jobs=args.jobs, env=env, worker_args=worker_args)
        meta.update(wall=time.perf_counter() - t0, load_after=build.loadavg())
        failed = 0
        for row in rows:
            row.update(profile=profile, device=device)
            failed += row["status"] != "ok"
            save_records(row, cache, profile, args.out)
            with open(args.out / "times.jsonl", "a") as f:
                f.write(json.dumps({**row, "date": meta["date"], "jobs": args.jobs, "load": meta["load_before"]}) + "\n")
    table = build.times_table(rows, meta)
    (args.out / "times.md").write_text(table)
    print("\n" + table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
