"""Build the book in two stages: execute the chapters (with progress in the terminal), then the site.

    python book/build.py                       # what `make book` runs: every chapter at the cpu profile
    python book/build.py --only 03 05 --no-site
    python book/build.py --jobs 2              # two chapters at a time, one CPU thread each

**Stage 1, chapters.** Each chapter notebook is executed by nbclient in its own kernel (working
directory ``notebooks/``, the result cache ``PAPERLIB_CACHE``). The kernel's progress bars
(``paperlib.progress.bar`` and tqdm) arrive on its stderr stream; they are printed here, one line per
update at most every ``--progress-every`` seconds, prefixed with the chapter and its elapsed time, and
are kept out of the executed notebook (the pages stay clean). A cell that runs long without a bar gets a
heartbeat line with the kernel's CPU use.

There is no per-cell time limit: a legitimate long computation never fails on a timeout. A *stalled*
kernel still fails: when a cell has written nothing for ``--stall-minutes`` and the kernel used
(almost) no CPU in that time (a deadlock, a wait for input), or has written nothing at all for
``--silent-minutes`` while busy (a loop without end; long work shows a progress bar), the kernel is
interrupted and the chapter fails with the reason.

A build that is interrupted (Ctrl-C, a killed process, a reboot) loses no finished work: trained
models and curves are in the result cache and a training run resumes from its last checkpoint
(``paperlib.training`` checkpoints every 500 steps, and the step it is in when interrupted).
Rerunning the build says what it found there before it starts. Ctrl-C, SIGINT or SIGTERM interrupt
the kernels (they are not shut down), so that running trainings checkpoint before the build stops.

**Stage 2, site.** The executed notebooks are put beside a copy of ``book/`` in ``_build/site-src`` and
Jupyter Book builds the static site from them with execution off (nothing is executed twice), into
``_build/html``. Both stages write their times: ``_build/executed/times.json`` and ``times.md``.

Independent chapters can run in parallel (``--jobs``), and the scoreboard, which reads the other
chapters' records, always runs last. Each kernel gets ``OMP_NUM_THREADS`` (and ``PAPERLIB_THREADS``)
= the cores that other work leaves free, measured for a second before the chapter starts, shared by
the ``jobs`` kernels (:func:`kernel_threads`); an ``OMP_NUM_THREADS`` set by the user is kept. A chapter can ask to run after others with the notebook
metadata ``{"paperlib": {"after": ["02_empirical"]}}`` (e.g. one that reuses another's trained models).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "_build"
LAST = "99_scoreboard"  # reads the records every other chapter writes in this build


# ----------------------------------------------------------------------------------------------
# the chapters
# ----------------------------------------------------------------------------------------------
def toc_chapters(toc: Path = ROOT / "book" / "_toc.yml") -> list[str]:
    """Chapter notebooks of the table of contents, in order (names without ``.ipynb``)."""
    import yaml
    doc = yaml.safe_load(toc.read_text())
    files = [c["file"] for part in doc.get("parts", []) for c in part.get("chapters", [])]
    return [Path(f).name.removesuffix(".ipynb") for f in files
            if f.startswith("notebooks/") and (ROOT / (f.removesuffix(".ipynb") + ".ipynb")).exists()]


INTERRUPTED = "stopped by Ctrl-C or a signal (its kernel was interrupted)"


def select(names: list[str], chapters: list[str]) -> list[str]:
    """The chapters whose names start with one of ``names`` (all when empty)."""
    if not names:
        return chapters
    unknown = [n for n in names if not any(c.startswith(n) for c in chapters)]
    if unknown:
        raise SystemExit(f"no chapter starts with {unknown}; have {chapters}")
    return [c for c in chapters if any(c.startswith(n) for n in names)]


def after(chapter: str, chapters: list[str]) -> set[str]:
    """Chapters that must finish before ``chapter`` starts (notebook metadata ``paperlib.after``)."""
    if chapter == LAST:
        return set(chapters) - {chapter}
    meta = json.loads((NOTEBOOKS / f"{chapter}.ipynb").read_text()).get("metadata", {})
    return {c for c in meta.get("paperlib", {}).get("after", []) if c in chapters}


def cache_state(cache: Path) -> str | None:
    """What an earlier (possibly interrupted) build left in the result cache, in words."""
    if not cache.is_dir():
        return None
    finals = list(cache.glob("*/*/final.pt"))
    partial = []
    for folder in {p.parent for p in cache.glob("*/*/ckpt_*.pt")}:
        if not (folder / "final.pt").exists():
            step = max(int(p.stem.split("_")[1]) for p in folder.glob("ckpt_*.pt"))
            partial.append(f"{folder.parent.name} at step {step:,}")
    results = sum(1 for p in cache.glob("*/*/*") if p.suffix not in (".sha256", ".json") and p.name != "final.pt"
                  and not p.name.startswith(("ckpt_", "snapshot_", ".")))
    if not (finals or partial or results):
        return None
    words = [f"{len(finals)} trained model(s)"] if finals else []
    if partial:
        words.append(f"{len(partial)} interrupted training run(s) that will resume from their checkpoints ("
                     + ", ".join(sorted(partial)) + ")")
    if results:
        words.append(f"{results} cached result(s)")
    return "reusing what earlier builds left in " + str(cache) + ": " + "; ".join(words)


# ----------------------------------------------------------------------------------------------
# stage 1, worker: one chapter in one kernel (run as `build.py --worker CHAPTER`)
# ----------------------------------------------------------------------------------------------
BAR = re.compile(r"^(?P<desc>[^|]*?):?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<rest>.*)$")


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:2d}:{s:02d}"


class Console:
    """Lines for the terminal, prefixed with the chapter and its elapsed time; bars throttled."""

    def __init__(self, chapter: str, every: float):
        self.chapter, self.every, self.t0 = chapter, every, time.monotonic()
        self.last_bar: dict[str, float] = {}
        self.finished: set[str] = set()
        self.last_print = time.monotonic()
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.lock:
            print(f"[{self.chapter} {_fmt_s(time.monotonic() - self.t0)}] {text}", file=sys.stderr, flush=True)
            self.last_print = time.monotonic()

    def stderr(self, text: str) -> None:
        """A chunk of the kernel's stderr: progress-bar updates (``\\r``-separated) and other lines."""
        for piece in re.split(r"[\r\n]+", text):
            piece = piece.strip()
            if not piece:
                continue
            m = BAR.match(piece)
            if m is None:
                self.say(piece)  # a warning or a progress.note ("resuming from step ...")
                continue
            desc, done = m["desc"].strip() or "progress", m["pct"] == "100"
            now = time.monotonic()
            if done and desc in self.finished:
                continue  # the same bar's final refreshes (postfix, close)
            self.finished.discard(desc)
            if m["pct"] == "0":
                continue  # said at its first step
            first = desc not in self.last_bar
            if first or done or now - self.last_bar[desc] >= self.every:
                self.last_bar[desc] = now
                self.say(f"{desc}: {m['pct']:>3}% {m['rest']}")
            if done:
                self.last_bar.pop(desc, None)
                self.finished.add(desc)


def _kernel_cpu(pid: int | None) -> float | None:
    """CPU seconds used by the kernel process and its children (None when unknown)."""
    if pid is None:
        return None
    try:
        import psutil
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: no CPU information
        return None


def run_chapter(path: Path, out: Path, *, stall_minutes: float, silent_minutes: float,
                progress_every: float, heartbeat_minutes: float) -> dict:
    """Execute the notebook ``path`` in its folder; write it (without stderr streams) to ``out``; return its row."""
    chapter = path.stem
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    console = Console(chapter, progress_every)
    state = {"cell": None, "cell_t0": None, "activity": time.monotonic(), "stalled": None, "cpu": []}

    class Client(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            state["activity"] = time.monotonic()
            if msg["msg_type"] == "stream" and msg["content"].get("name") == "stderr":
                console.stderr(msg["content"].get("text", ""))
                return None  # progress bars and warnings go to the terminal, not to the page
            return super().process_message(msg, cell, cell_index)

    nb = nbformat.read(path, as_version=4)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]

    def on_start(cell, cell_index, **_):
        state.update(cell=cell_index, cell_t0=time.monotonic(), activity=time.monotonic(), cpu=[])

    def on_done(cell, cell_index, **_):
        state.update(cell=None)

    def on_notebook_start(**_):  # the kernel process's own stderr (crash messages), minus a start-up notice
        def pump(stream):
            try:
                for raw in iter(stream.readline, b""):
                    line = raw.decode(errors="replace").rstrip()
                    if line and "running over TCP without encryption" not in line:
                        console.say(f"(kernel) {line}")
            except (ValueError, OSError):  # the stream was closed: the kernel has ended
                pass
        process = getattr(getattr(client.km, "provisioner", None), "process", None)
        if process is not None and process.stderr is not None:
            threading.Thread(target=pump, args=(process.stderr,), daemon=True).start()
        # nbclient's own SIGINT/SIGTERM handlers shut the kernel down; ours interrupt it instead, so that
        # the running cell stops cleanly (training runs write a checkpoint) and the chapter says so
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_sigint, sig, None)

    client = Client(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                    on_cell_execute=on_start, on_cell_executed=on_done, on_notebook_start=on_notebook_start)

    def kernel_pid():
        try:
            return client.km.provisioner.process.pid
        except AttributeError:
            return None

    def interrupt(reason: str) -> None:
        state["stalled"] = reason
        console.say(f"STALLED: {reason}; interrupting the kernel")
        pid = kernel_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state["cell"] is not None:
            time.sleep(1)
        if state["cell"] is not None:  # ignores the interrupt (stuck in native code): end it
            os.kill(pid, signal.SIGKILL)

    stop = threading.Event()

    def watchdog():
        last_beat = time.monotonic()
        while not stop.wait(min(5.0, stall_minutes * 10)):
            if state["cell"] is None or state["stalled"]:
                continue
            now = time.monotonic()
            cpu = _kernel_cpu(kernel_pid())
            if cpu is not None:
                state["cpu"].append((now, cpu))
                state["cpu"] = [(t, c) for t, c in state["cpu"] if t >= now - stall_minutes * 60 - 120]
            quiet = now - state["activity"]
            pos = code_cells.index(state["cell"]) + 1 if state["cell"] in code_cells else "?"
            if quiet > stall_minutes * 60 and cpu is not None:
                old = [(t, c) for t, c in state["cpu"] if t <= now - stall_minutes * 60]  # CPU then and now
                if old and cpu - old[-1][1] < 0.02 * (now - old[-1][0]):
                    interrupt(f"code cell {pos}/{len(code_cells)} wrote nothing and used no CPU for "
                              f"{stall_minutes:g} min")
                    continue
            if quiet > silent_minutes * 60:
                interrupt(f"code cell {pos}/{len(code_cells)} wrote nothing for {silent_minutes:g} min "
                          "(long work shows a progress bar; raise --silent-minutes if this is legitimate)")
                continue
            if (now - state["cell_t0"] > heartbeat_minutes * 60 and now - console.last_print > heartbeat_minutes * 60
                    and now - last_beat > heartbeat_minutes * 60):
                last_beat = now
                recent = [(t, c) for t, c in state["cpu"] if t >= now - 60]
                load = (f", kernel CPU {100 * (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0]):.0f}%"
                        if len(recent) > 1 and recent[-1][0] > recent[0][0] else "")
                first = next((ln for ln in nb.cells[state["cell"]].source.splitlines()
                              if ln.strip() and not ln.startswith("#")), "")[:60]
                console.say(f"code cell {pos}/{len(code_cells)} running for {_fmt_s(now - state['cell_t0']).strip()}"
                            f"{load}: {first}")

    def on_sigint(signum, frame):  # Ctrl-C / SIGTERM: interrupt the kernel (once) so that training checkpoints
        if state["stalled"]:
            return
        state["stalled"] = INTERRUPTED
        pid = kernel_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, on_sigint)  # until the kernel has started (then see on_notebook_start)
    signal.signal(signal.SIGTERM, on_sigint)
    threading.Thread(target=watchdog, daemon=True).start()
    console.say(f"started ({len(code_cells)} code cells)")
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        client.execute(stderr=subprocess.PIPE)
    except CellExecutionError as e:
        status, error = "error", f"{e.ename}: {e.evalue}"[:500]
    except DeadKernelError as e:
        status, error = "error", f"the kernel died: {e}"[:500]
    finally:
        stop.set()
    seconds = time.perf_counter() - t0
    if state["stalled"]:
        status, error = ("interrupted" if state["stalled"] == INTERRUPTED else "stalled"), state["stalled"]
    nbformat.write(nb, out / f"{chapter}.ipynb")
    row = {"chapter": chapter, "seconds": round(seconds, 1), "status": status, "error": error}
    console.say(f"{status} in {_fmt_s(seconds).strip()}" + (f": {error}" if error else ""))
    return row


# ----------------------------------------------------------------------------------------------
# stage 1, driver: chapters in worker processes, at most `jobs` at a time
# ----------------------------------------------------------------------------------------------
def execute(chapters: list[str], out: Path, *, jobs: int = 1, env: dict | None = None,
            worker_args: list[str] = ()) -> list[dict]:
    """Execute ``chapters`` (each in a worker process), respecting :func:`after`; return their rows.

    A chapter is a name in ``notebooks/`` or the path of a notebook (``*.ipynb``)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env["PAPERLIB_PROGRESS"] = "auto"  # bars on the kernel's stderr stream, which the worker forwards
    fixed_threads = "OMP_NUM_THREADS" in env  # the user's own setting is kept
    needs = {c: set() if c.endswith(".ipynb") else after(c, chapters) for c in chapters}
    rows: dict[str, dict] = {}
    procs: dict[str, subprocess.Popen] = {}

    def work(chapter: str) -> dict:
        result = out / f"{Path(chapter).name.removesuffix('.ipynb')}.result.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", chapter, "--executed", str(out), *worker_args]
        cenv = dict(env)
        if not fixed_threads:
            cores, busy = os.cpu_count() or 1, busy_cores()
            threads = kernel_threads(jobs, busy, cores)
            cenv.update(PAPERLIB_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            if busy is not None and threads * jobs < cores:
                print(f"[{Path(chapter).stem}] other work keeps {busy:.1f} of {cores} cores busy: its kernel gets "
                      f"{threads} thread{'s' if threads > 1 else ''}", flush=True)
        proc = subprocess.Popen(cmd, env=cenv, cwd=ROOT)
        procs[chapter] = proc
        rc = proc.wait()
        if result.exists():
            return json.loads(result.read_text())
        return {"chapter": chapter, "seconds": None, "status": "error", "error": f"worker exited with {rc}"}

    pending = list(chapters)
    running = {}
    pool = ThreadPoolExecutor(max_workers=jobs)  # not `with`: its exit would wait for the chapters to end
    try:
        while pending or running:
            ready = [c for c in pending if needs[c] <= set(rows)]
            for c in ready[: jobs - len(running)]:
                pending.remove(c)
                running[pool.submit(work, c)] = c
            if not running:
                raise RuntimeError(f"chapters wait on each other: {pending}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                rows[running.pop(f)] = f.result()
        pool.shutdown()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # the worker interrupts its kernel (checkpoint), then stops
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("\nInterrupted. Finished work is in the result cache: rerun the same command to resume "
              "(training runs continue from their last checkpoint).", file=sys.stderr)
        raise
    return [rows[c] for c in chapters]


def stop_on_signals() -> None:
    """Make Ctrl-C, ``kill -INT`` and ``kill -TERM`` stop the build cleanly (KeyboardInterrupt in
    :func:`execute`, which interrupts the kernels so that training runs checkpoint). SIGINT is
    re-enabled explicitly: a non-interactive shell (a script, ``sh -c 'make book &'``) starts background
    jobs with SIGINT ignored, and Python then leaves it ignored."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)


def busy_cores(seconds: float = 1.0, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores kept busy by other processes: the non-idle share of all CPU time over ``seconds``, times
    the number of cores (Linux ``/proc/stat``; ``None`` where it cannot be read)."""
    def read():
        ticks = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait (guest time is inside user time)

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def kernel_threads(jobs: int, busy: float | None, cores: int) -> int:
    """CPU threads for each of ``jobs`` chapter kernels: the cores that other work leaves free, shared.

    Never more threads than free cores: torch's OpenMP threads spin while they wait for each other, and
    on 2 cores with one kept busy by another process a 2-thread kernel ran 20-50x slower than with one
    thread (book/running.md); on an idle machine two threads are ~1.4x faster than one."""
    free = cores - (0.0 if busy is None else min(max(busy, 0.0), cores))
    return max(1, int(free + 0.5) // max(1, jobs))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()}"


def loadavg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def times_table(rows: list[dict], meta: dict) -> str:
    """The per-chapter times as Markdown (with date, machine, profile and load)."""
    lines = [f"Measured {meta['date']} on {meta['machine']}; profile `{meta['profile']}`, {meta['jobs']} chapter(s) at a "
             f"time, result cache {'cold' if meta.get('cold') else 'as found'}; load average (1/5/15 min) "
             f"{meta['load_before']} before, {meta['load_after']} after.", "",
             "| chapter | time | status |", "|---|---:|---|"]
    for r in rows:
        t = "–" if r["seconds"] is None else (f"{r['seconds']:.0f} s" if r["seconds"] < 120 else f"{r['seconds'] / 60:.1f} min")
        lines.append(f"| {r['chapter']} | {t} | {r['status']}{': ' + r['error'] if r.get('error') else ''} |")
    lines.append(f"| **all chapters (wall)** | **{meta['wall'] / 60:.1f} min** | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# stage 2: the site from the executed notebooks
# ----------------------------------------------------------------------------------------------
def build_site(executed: Path, chapters: list[str], output: Path = ROOT) -> float:
    """Build the HTML site into ``output/_build/html`` from the executed notebooks, executing nothing."""
    import yaml
    src = output / "_build" / "site-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("build.py", "__pycache__"))
    (src / "notebooks").mkdir()
    for c in chapters:
        shutil.copy2(executed / f"{c}.ipynb", src / "notebooks" / f"{c}.ipynb")
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # already executed in stage 1
    (src / "book" / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    jb = Path(sys.executable).with_name("jupyter-book")
    t0 = time.perf_counter()
    cmd = [str(jb), "build", str(src), "--all", "--config", str(src / "book" / "_config.yml"),
           "--toc", str(src / "book" / "_toc.yml"), "--path-output", str(output)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log = output / "_build" / "site-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"the site build failed (log: {log}):\n" + (proc.stdout + proc.stderr)[-3000:])
    if "Executing notebook" in proc.stdout + proc.stderr:  # must not happen: every page was executed in stage 1
        raise SystemExit(f"the site build executed a notebook again (log: {log})")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--profile", default=os.environ.get("PAPERLIB_PROFILE") or "cpu")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("PAPERLIB_CACHE") or ROOT / ".cache" / "results"),
                    help="result cache (default: PAPERLIB_CACHE, else .cache/results)")
    ap.add_argument("--only", nargs="*", default=[], help="chapter-name prefixes (default: every chapter)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or 1), help="chapters at a time")
    ap.add_argument("--executed", type=Path, default=BUILD / "executed", help="folder for the executed notebooks")
    ap.add_argument("--output", type=Path, default=ROOT, help="the site goes to OUTPUT/_build/html")
    ap.add_argument("--no-site", action="store_true", help="only execute the chapters")
    ap.add_argument("--stall-minutes", type=float, default=10.0,
                    help="fail a cell that writes nothing and uses no CPU for this long")
    ap.add_argument("--silent-minutes", type=float, default=60.0,
                    help="fail a cell that writes nothing for this long even while busy")
    ap.add_argument("--progress-every", type=float, default=float(os.environ.get("PAPERLIB_PROGRESS_EVERY") or 15),
                    help="seconds between two lines of the same progress bar")
    ap.add_argument("--heartbeat-minutes", type=float, default=2.0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    watch = dict(stall_minutes=args.stall_minutes, silent_minutes=args.silent_minutes,
                 progress_every=args.progress_every, heartbeat_minutes=args.heartbeat_minutes)

    if args.worker:
        path = Path(args.worker) if args.worker.endswith(".ipynb") else NOTEBOOKS / f"{args.worker}.ipynb"
        row = run_chapter(path, args.executed, **watch)
        (args.executed / f"{path.stem}.result.json").write_text(json.dumps(row))
        return 0

    stop_on_signals()
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    chapters = toc_chapters()
    chosen = select(args.only, chapters)
    cache = args.cache.resolve()
    env = dict(os.environ, PAPERLIB_PROFILE=args.profile, PAPERLIB_CACHE=str(cache))
    if not args.only:  # the scoreboard shows only the chapters executed in this build
        shutil.rmtree(cache / "scoreboard" / args.profile, ignore_errors=True)
    print(f"Building the book: profile {args.profile}, {len(chosen)} chapter(s), {args.jobs} at a time, "
          f"result cache {cache}", file=sys.stderr)
    found = cache_state(cache)
    print(found or "Empty result cache: a cold build (every model is trained).", file=sys.stderr, flush=True)

    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "profile": args.profile, "jobs": args.jobs, "load_before": loadavg(), "cold": found is None}
    t0 = time.perf_counter()
    worker_args = [f"--{k.replace('_', '-')}={v}" for k, v in watch.items()]
    try:
        rows = execute(chosen, args.executed, jobs=args.jobs, env=env, worker_args=worker_args)
    except KeyboardInterrupt:
        return 130
    meta.update(wall=time.perf_counter() - t0, load_after=loadavg())
    (args.executed / "times.json").write_text(json.dumps({"meta": meta, "chapters": rows}, indent=1) + "\n")
    table = times_table(rows, meta)
    (args.executed / "times.md").write_text(table)
    print("\n" + table, file=sys.stderr)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} chapter(s) failed: {', '.join(r['chapter'] for r in failed)}. Executed notebooks "
              f"are in {args.executed}; rerun to resume from the cached results.", file=sys.stderr)
        return 1
    if args.no_site:
        return 0
    missing = [c for c in chapters if not (args.executed / f"{c}.ipynb").exists()]
    if missing:
        raise SystemExit(f"cannot build the site: chapters never executed: {missing} (run without --only)")
    print("Building the site from the executed notebooks (nothing is executed again) ...", file=sys.stderr, flush=True)
    seconds = build_site(args.executed, chapters, args.output)
    print(f"Site built in {seconds:.0f} s: {args.output / '_build' / 'html' / 'index.html'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
