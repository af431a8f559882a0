"""Run chapter notebooks end to end and time them (the run-time table of book/running.md).

    PAPERLIB_PROFILE=gpu python benchmarks/time_chapters.py 03 04 05 --out timed/

Each notebook is executed with nbclient as the book build executes it (working directory
``notebooks/``), by default with an empty result cache so that the times are cold. One line per
chapter is printed and appended to ``<out>/times.jsonl``: profile, device, wall time, status and,
for a failure, the error. The executed notebooks are written to ``<out>`` so their printed
numbers can be read, and each chapter's scoreboard records (:mod:`paperlib.report`) to
``<out>/<chapter>.records.json`` with the run's device, time and commit: the archived GPU results
of the scoreboard page (``book/gpu_records/``) are such files. A failing chapter does not stop
the others.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def select(names: list[str]) -> list[Path]:
    """Chapter notebooks whose file names start with one of ``names`` (all when empty)."""
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return chapters
    picked = [p for p in chapters if any(p.name.startswith(n) for n in names)]
    unknown = [n for n in names if not any(p.name.startswith(n) for p in chapters)]
    if unknown:
        raise SystemExit(f"no chapter notebook starts with {unknown}; have {[p.stem for p in chapters]}")
    return picked


def commit() -> str:
    """The commit being run: ``PAPERLIB_COMMIT`` if set (a copied tree may carry a stale .git), else git's."""
    if os.environ.get("PAPERLIB_COMMIT"):
        return os.environ["PAPERLIB_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_records(row: dict, out: Path) -> None:
    """Copy the chapter's scoreboard records of this run to ``out``, with where and when it ran."""
    from paperlib import config
    src = config.cache_dir() / "scoreboard" / config.profile() / f"{row['chapter']}.json"
    if row["status"] == "ok" and src.exists():
        doc = json.loads(src.read_text())
        doc["run"] = {"device": row["device"], "seconds": row["seconds"], "commit": commit()}
        (out / f"{row['chapter']}.records.json").write_text(json.dumps(doc, indent=1) + "\n")


def run(path: Path, out: Path, cell_timeout: int) -> dict:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        client.execute()
    except CellTimeoutError as e:
        status, error = "cell timeout", str(e).splitlines()[0]
    except CellExecutionError as e:
        status, error = "error", f"{e.ename}: {e.evalue}"[:300]
    seconds = time.perf_counter() - t0
    nbformat.write(nb, out / path.name)
    return {"chapter": path.stem, "profile": os.environ.get("PAPERLIB_PROFILE", "(default)"),
            "device": device_name(), "seconds": round(seconds, 1), "status": status, "error": error}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="*", help="file-name prefixes, e.g. 03 04 (default: every chapter)")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "timed", help="folder for executed notebooks and times.jsonl")
    ap.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run")
    ap.add_argument("--cache", type=Path, default=None,
                    help="PAPERLIB_CACHE for the run (default: a fresh temporary folder, i.e. cold times)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paperlib-timing-") as tmp:
        os.environ["PAPERLIB_CACHE"] = str(args.cache or tmp)
        failed = 0
        for path in select(args.chapters):
            row = run(path, args.out, args.cell_timeout)
            failed += row["status"] != "ok"
            save_records(row, args.out)
            with open(args.out / "times.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['chapter']:22s} {row['profile']:6s} {row['seconds']:8.1f} s  {row['status']}"
                  + (f": {row['error']}" if row["error"] else "") + f"   [{row['device']}]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
