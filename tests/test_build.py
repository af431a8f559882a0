"""The book build driver (book/build.py): progress reaches the terminal and not the page, no time
limit for a cell that works, a stalled cell fails, chapter order, the site stage executes nothing."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def run(tmp_path, paths, capfd, **watch):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in
            {"stall_minutes": 0.1, "silent_minutes": 3, "progress_every": 0, "heartbeat_minutes": 10, **watch}.items()]
    rows = build.execute([str(p) for p in paths], tmp_path / "out", jobs=2, worker_args=args)
    return {Path(r["chapter"]).name: r for r in rows}, capfd.readouterr().err


@pytest.mark.slow
def test_progress_goes_to_the_terminal_a_stalled_cell_fails_a_busy_one_does_not(tmp_path, capfd):
    bars = notebook(tmp_path / "bars.ipynb",
                    "import time\nfrom paperlib import progress\n"
                    "for i in progress.bar(range(40), desc='work'):\n    time.sleep(0.5)\nprint('done')")
    busy = notebook(tmp_path / "busy.ipynb",  # silent but computing for longer than the stall limit
                    "import time\nt = time.process_time()\nwhile time.process_time() - t < 4: pass\nprint('busy done')")
    stalled = notebook(tmp_path / "stalled.ipynb", "import time\ntime.sleep(600)")
    rows, err = run(tmp_path, [bars, busy, stalled], capfd)
    assert rows["bars"]["status"] == "ok" and rows["busy"]["status"] == "ok", rows
    assert rows["stalled"]["status"] == "stalled" and "no CPU" in rows["stalled"]["error"], rows
    assert rows["stalled"]["seconds"] < 150
    assert "[bars" in err and "work: " in err and "100% 40/40" in err  # progress in the terminal
    page = nbformat.read(tmp_path / "out" / "bars.ipynb", as_version=4)
    outputs = page.cells[0].outputs
    assert [o.get("name") for o in outputs] == ["stdout"] and outputs[0].text == "done\n"  # not on the page


DRIVER = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("book_build", sys.argv[1])
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
build.stop_on_signals()
try:
    build.execute([sys.argv[2]], Path(sys.argv[3]), worker_args=["--progress-every=0"])
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_interrupts_the_kernel_and_stops_the_build_cleanly(tmp_path, sig):
    """Ctrl-C / kill: the kernel is interrupted (so a training run can checkpoint), the chapter is
    reported as interrupted, the build says how to resume, and no thread dies with a traceback; also
    when the build was started with SIGINT ignored, as a non-interactive shell starts background jobs."""
    nb = notebook(tmp_path / "long.ipynb", "import time\nfor _ in range(3000):\n    time.sleep(0.1)")
    (tmp_path / "driver.py").write_text(DRIVER)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(ROOT / "book" / "build.py"), str(nb),
                                 str(tmp_path / "out")], stderr=err, stdout=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        deadline = time.monotonic() + 120
        while "started (" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # inside the cell
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 130
    text = log.read_text()
    row = json.loads((tmp_path / "out" / "long.result.json").read_text())
    assert row["status"] == "interrupted", (row, text)
    assert row["seconds"] < 60
    assert "rerun the same command to resume" in text and "Traceback" not in text, text


def test_scoreboard_runs_last_and_declared_order_is_kept(tmp_path):
    chapters = build.toc_chapters()
    assert chapters[-1] == build.LAST or build.LAST in chapters
    assert build.after(build.LAST, chapters) == set(chapters) - {build.LAST}
    for c in chapters:
        assert build.after(c, chapters) <= set(chapters)


def test_cache_state_reports_an_interrupted_training(tmp_path):
    assert build.cache_state(tmp_path) is None
    run_dir = tmp_path / "02_edm_small" / "abc"
    run_dir.mkdir(parents=True)
    (run_dir / "ckpt_00003500.pt").write_bytes(b"x")
    done = tmp_path / "02_edm_large" / "def"
    done.mkdir(parents=True)
    (done / "final.pt").write_bytes(b"x")
    text = build.cache_state(tmp_path)
    assert "1 trained model" in text and "02_edm_small at step 3,500" in text and "resume" in text


def test_times_table():
    rows = [{"chapter": "02_empirical", "seconds": 1900.0, "status": "ok", "error": None},
            {"chapter": "03_bounds", "seconds": 95.0, "status": "error", "error": "ValueError: x"}]
    meta = {"date": "2026-12-02 10:00 UTC", "machine": "m", "profile": "cpu", "jobs": 1, "load_before": "1.0/1.0/1.0",
            "load_after": "2.0/2.0/2.0", "wall": 1995.0, "cold": True}
    table = build.times_table(rows, meta)
    assert "| 02_empirical | 31.7 min | ok |" in table and "| 03_bounds | 95 s | error: ValueError: x |" in table
    assert "33.2 min" in table and "cold" in table


@pytest.mark.parametrize("jobs, busy, cores, threads", [
    (1, 0.03, 2, 2),   # idle 2-core machine: both cores
    (1, None, 2, 2),   # /proc/stat unreadable: as if idle
    (1, 1.0, 2, 1),    # another process keeps one core busy: one thread, not two that spin-wait on each other
    (1, 0.6, 2, 1),
    (2, 0.03, 2, 1),   # two chapters at a time share the cores
    (2, 1.0, 2, 1),    # never fewer than one
    (1, 2.0, 2, 1),
    (1, 5.0, 2, 1),    # a reading above the core count is clipped
    (1, -0.2, 8, 8),
    (2, 0.0, 8, 4),
    (1, 2.4, 8, 6),
])
def test_kernel_threads(jobs, busy, cores, threads):
    assert build.kernel_threads(jobs, busy, cores) == threads


def test_busy_cores_reads_proc_stat(tmp_path):
    busy = build.busy_cores(0.2)
    if not Path("/proc/stat").exists():
        assert busy is None
    else:
        assert 0.0 <= busy <= os.cpu_count() + 1e-9
    assert build.busy_cores(0.01, stat=tmp_path / "missing") is None
    frozen = tmp_path / "stat"
    frozen.write_text("cpu  10 0 10 100 0 0 0 0 0 0\n")
    assert build.busy_cores(0.01, stat=frozen) is None  # no time passed: no reading
